//! One simulated recorder in raw mode, against the floor program (src/bin/floor.rs): the same
//! frame bytes as a WebSocket recorder sends (8-byte offset, then audio), paced the same way,
//! written straight to a TCP connection with no WebSocket framing. The floor answers with
//! 8-byte little-endian acks, each the count of stream bytes it has written and fdatasynced;
//! the first (0) once the connection's file exists is `ready`. Ending our side of the stream
//! is the `finish`: the floor syncs what is left, acks it, and closes.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior};

use crate::recorder::{
    build_frame, Gauges, InFlight, Pacing, StreamOutcome, StreamPlan, Target, CLOSE_TIMEOUT,
};

/// Bytes of one ack (and of `ready`).
const ACK_BYTES: usize = 8;
/// Offset header of every frame.
const HEADER_BYTES: u64 = 8;

pub async fn run(target: &Target, mut plan: StreamPlan, gauges: Arc<Gauges>) -> StreamOutcome {
    let started = Instant::now();
    let (reader, writer) = match connect(target).await {
        Ok(halves) => halves,
        Err(failure) => {
            gauges.failed.fetch_add(1, Ordering::Relaxed);
            return StreamOutcome {
                failure: Some(failure),
                ..StreamOutcome::default()
            };
        }
    };
    gauges.connected.fetch_add(1, Ordering::Relaxed);
    gauges.streaming.fetch_add(1, Ordering::Relaxed);
    plan.start_sending();
    let mut stream = RawStream {
        reader,
        writer,
        plan,
        gauges,
        outcome: StreamOutcome {
            connect: Some(started.elapsed()),
            ..StreamOutcome::default()
        },
        in_flight: InFlight::new(),
        pending: [0; ACK_BYTES],
        pending_len: 0,
        counted: true,
    };
    let hard_deadline =
        Instant::now() + stream.plan.pacing.sending_time() + target.ack_timeout + CLOSE_TIMEOUT;
    if tokio::time::timeout_at(hard_deadline, stream.stream())
        .await
        .is_err()
    {
        stream.note_problem("timed out before the floor ended the stream".into());
    }
    stream.stop_counting();
    if stream.outcome.closed_at.is_some() && stream.outcome.last_ack == stream.outcome.end_offset {
        // Everything acked, then the floor closed: the raw equivalent of `finished` + 1000.
        stream.outcome.finished_message = true;
        stream.outcome.close_code = Some(1000);
    }
    stream.outcome
}

async fn connect(target: &Target) -> Result<(OwnedReadHalf, OwnedWriteHalf), String> {
    let attempt = async {
        let socket = TcpStream::connect(&target.authority)
            .await
            .map_err(|e| format!("io: {:?}", e.kind()))?;
        socket
            .set_nodelay(true)
            .map_err(|e| format!("io: {:?}", e.kind()))?;
        let (mut reader, writer) = socket.into_split();
        let mut ready = [0u8; ACK_BYTES];
        reader
            .read_exact(&mut ready)
            .await
            .map_err(|_| "closed before ready".to_string())?;
        if u64::from_le_bytes(ready) != 0 {
            return Err("first message is not ready".to_string());
        }
        Ok((reader, writer))
    };
    tokio::time::timeout(target.connect_timeout, attempt)
        .await
        .map_err(|_| "no ready before the connect timeout".to_string())?
}

struct RawStream {
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    plan: StreamPlan,
    gauges: Arc<Gauges>,
    outcome: StreamOutcome,
    /// (audio offset after the frame, when it was sent), oldest first, until acked.
    in_flight: InFlight,
    /// A partly read ack.
    pending: [u8; ACK_BYTES],
    pending_len: usize,
    counted: bool,
}

impl RawStream {
    async fn stream(&mut self) {
        let (period, frames) = match self.plan.pacing {
            Pacing::RealTime { period, frames } => (period, frames),
            Pacing::Unpaced { .. } => {
                self.note_problem("raw mode paces in real time only".into());
                return;
            }
        };
        let mut ticker = tokio::time::interval_at(Instant::now(), period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut sent = 0;
        let mut buffer = [0u8; 256];
        loop {
            let sending = sent < frames;
            tokio::select! {
                biased;
                read = self.reader.read(&mut buffer) => match read {
                    Ok(0) => {
                        self.outcome.closed_at = Some(Instant::now());
                        if sending {
                            self.note_problem("the floor closed while we were sending".into());
                        }
                        return;
                    }
                    Ok(n) => self.on_bytes(&buffer[..n]),
                    Err(error) => {
                        self.note_problem(format!("read: io: {:?}", error.kind()));
                        return;
                    }
                },
                due = ticker.tick(), if sending => {
                    if !self.send_frame(due).await {
                        return;
                    }
                    sent += 1;
                    if sent == frames {
                        self.stop_counting();
                        self.outcome.end_sent_at = Some(Instant::now());
                        if let Err(error) = self.writer.shutdown().await {
                            self.note_problem(format!("shutdown: io: {:?}", error.kind()));
                            return;
                        }
                    }
                }
            }
        }
    }

    async fn send_frame(&mut self, due: Instant) -> bool {
        let offset = self.outcome.end_offset;
        let frame = build_frame(offset, self.plan.frame_bytes);
        let end = offset + self.plan.frame_bytes as u64;
        let sent_at = Instant::now();
        self.outcome.first_frame_at.get_or_insert(sent_at);
        self.in_flight.push_back((end, sent_at));
        if let Err(error) = self.writer.write_all(&frame).await {
            self.note_problem(format!("send: io: {:?}", error.kind()));
            return false;
        }
        self.outcome.end_offset = end;
        self.gauges
            .bytes_sent
            .fetch_add(self.plan.frame_bytes as u64, Ordering::Relaxed);
        let slip = Instant::now().saturating_duration_since(due);
        self.outcome.max_slip = self.outcome.max_slip.max(slip);
        true
    }

    /// Acks may arrive split across reads.
    fn on_bytes(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = (ACK_BYTES - self.pending_len).min(bytes.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&bytes[..take]);
            self.pending_len += take;
            bytes = &bytes[take..];
            if self.pending_len == ACK_BYTES {
                self.pending_len = 0;
                let wire = u64::from_le_bytes(self.pending);
                self.on_ack(self.audio_offset(wire));
            }
        }
    }

    fn audio_offset(&self, wire: u64) -> u64 {
        audio_offset(wire, self.plan.frame_bytes as u64)
    }

    fn on_ack(&mut self, offset: u64) {
        let now = Instant::now();
        self.outcome
            .take_ack(offset, now, &mut self.in_flight, &self.gauges);
        if self.outcome.end_sent_at.is_some() && offset >= self.outcome.end_offset {
            self.outcome.final_ack_at = Some(now);
        }
    }

    fn stop_counting(&mut self) {
        if std::mem::take(&mut self.counted) {
            self.gauges.streaming.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn note_problem(&mut self, problem: String) {
        self.outcome.problem.get_or_insert(problem);
    }
}

/// Stream bytes (every frame's 8-byte header included) to the audio offset they cover.
fn audio_offset(wire: u64, frame_bytes: u64) -> u64 {
    let wire_frame = HEADER_BYTES + frame_bytes;
    let rest = wire % wire_frame;
    wire / wire_frame * frame_bytes + rest.saturating_sub(HEADER_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_count_audio_without_the_frame_headers() {
        assert_eq!(audio_offset(0, 1920), 0);
        assert_eq!(audio_offset(8, 1920), 0);
        assert_eq!(audio_offset(1928, 1920), 1920);
        assert_eq!(audio_offset(1928 + 4, 1920), 1920);
        assert_eq!(audio_offset(1928 * 3 + 8 + 100, 1920), 1920 * 3 + 100);
    }
}
