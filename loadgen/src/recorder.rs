//! One simulated recorder: a real WebSocket client that streams one track the way the browser
//! recorder does (frames at real-time pace, resend-safe offsets), then flushes, waits for the ack
//! covering everything and ends. One task per recorder, one loop, no allocation per frame beyond
//! the frame itself.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use safetake::ingest::frame::encode;

use crate::stats::micros_of;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// 48 kHz mono s16le: the format every simulated track uses.
pub const SAMPLE_RATE: u64 = 48_000;
pub const BYTES_PER_SECOND: u64 = SAMPLE_RATE * 2;
/// After `finish` or our close frame, how long the server has to answer with its close frame.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Once both close frames have crossed, how long we wait for the server to end the TCP
/// connection (RFC 6455 has the server close first) before closing it ourselves.
const TCP_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What the recorders speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// The contract's WebSocket protocol (safetake, the Node peer).
    Ws,
    /// The same frame bytes on a bare TCP connection, 8-byte little-endian acks back: the
    /// floor program (`floor`, src/bin/floor.rs), no WebSocket and no database.
    Raw,
}

/// Where and how to connect, shared by every recorder of a run.
pub struct Target {
    /// `ws://host:port`
    pub ws_base: String,
    /// `host:port`, for raw mode.
    pub authority: String,
    pub protocol: Protocol,
    pub token: Option<String>,
    pub connect_timeout: Duration,
    /// How long the final flush may wait for its ack.
    pub ack_timeout: Duration,
}

#[derive(Debug, Clone, Copy)]
pub enum Pacing {
    /// One frame every `period`, `frames` in all, on a schedule fixed from the start.
    RealTime { period: Duration, frames: u64 },
    /// As fast as the socket takes frames, until `duration` has passed.
    Unpaced { duration: Duration },
}

impl Pacing {
    pub fn sending_time(self) -> Duration {
        match self {
            Pacing::RealTime { period, frames } => period * frames as u32,
            Pacing::Unpaced { duration } => duration,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EndMode {
    /// `{"type":"finish"}`: the session is completed and the server closes with 1000.
    Finish,
    /// A client close frame (1000): the session stays active, as after a closed tab.
    Close,
}

pub struct StreamPlan {
    pub session: String,
    pub track: String,
    pub pacing: Pacing,
    pub frame_bytes: usize,
    pub end: EndMode,
    /// Real-time pacing only: send until this moment instead of `frames` frames, however long
    /// the connect took (the finish burst: every stream ends together).
    pub send_until: Option<Instant>,
}

impl StreamPlan {
    /// Called once `ready` has come: fixes the frame count for `send_until`.
    pub fn start_sending(&mut self) {
        if let (Some(until), Pacing::RealTime { period, .. }) = (self.send_until, self.pacing) {
            let left = until.saturating_duration_since(Instant::now());
            let frames = (left.as_secs_f64() / period.as_secs_f64()).round() as u64;
            self.pacing = Pacing::RealTime { period, frames };
        }
    }
}

/// Live counters for progress lines and the sampler.
#[derive(Default)]
pub struct Gauges {
    /// Recorders in their sending phase right now.
    pub streaming: Arc<AtomicUsize>,
    pub connected: AtomicUsize,
    pub failed: AtomicUsize,
    pub bytes_sent: AtomicU64,
    pub bytes_acked: AtomicU64,
}

/// Frames sent and not yet acked, oldest first: `(offset after the frame, when it was sent)`.
pub type InFlight = VecDeque<(u64, Instant)>;

/// What one recorder saw.
#[derive(Debug, Default)]
pub struct StreamOutcome {
    /// Why it never streamed (connect refused, no `ready`, ...).
    pub failure: Option<String>,
    /// From opening the TCP connection to receiving `ready`.
    pub connect: Option<Duration>,
    pub ready_offset: u64,
    /// The offset after the last frame sent.
    pub end_offset: u64,
    /// The highest acked offset.
    pub last_ack: u64,
    /// Per frame: from sending it to the first ack covering its last byte.
    pub lags_us: Vec<u32>,
    /// How far the send schedule slipped at worst.
    pub max_slip: Duration,
    /// The server's close code; 1005 for a close frame without one; `None` when none came.
    pub close_code: Option<u16>,
    /// The `code` of a `{"type":"error"}` the server sent.
    pub server_error: Option<String>,
    /// Something that went wrong after `ready` (send failed, final ack never came, ...).
    pub problem: Option<String>,
    pub finished_message: bool,
    /// The close handshake completed but the server left the TCP connection open.
    pub tcp_left_open: bool,
    pub first_frame_at: Option<Instant>,
    pub final_ack_at: Option<Instant>,
    /// When our `finish` (or close frame; in raw mode our end of the stream) went out.
    pub end_sent_at: Option<Instant>,
    /// When the server's close frame (in raw mode: its end of the stream) arrived.
    pub closed_at: Option<Instant>,
}

impl StreamOutcome {
    /// Takes an ack of `offset` at `now`: the lag of every frame in `in_flight` it covers, and
    /// the bytes it acks for the first time (counted in `gauges` too).
    pub fn take_ack(
        &mut self,
        offset: u64,
        now: Instant,
        in_flight: &mut InFlight,
        gauges: &Gauges,
    ) {
        while let Some(&(end, sent_at)) = in_flight.front() {
            if end > offset {
                break;
            }
            self.lags_us.push(micros_of(now - sent_at));
            in_flight.pop_front();
        }
        if offset > self.last_ack {
            gauges
                .bytes_acked
                .fetch_add(offset - self.last_ack, Ordering::Relaxed);
            self.last_ack = offset;
        }
    }

    pub fn bytes_sent(&self) -> u64 {
        self.end_offset.saturating_sub(self.ready_offset)
    }

    /// The last ack is exactly the bytes sent: less is loss, more would be a server bug.
    pub fn fully_acked(&self) -> bool {
        self.failure.is_none() && self.last_ack == self.end_offset
    }

    /// From sending `finish` (or our close) to the server's close; `None` when either is missing.
    pub fn end_to_close(&self) -> Option<Duration> {
        Some(self.closed_at?.saturating_duration_since(self.end_sent_at?))
    }
}

/// Connects over WebSocket, streams per `plan`, ends, and reports. Never panics on a server
/// misbehaving. (The floor's raw TCP stream is `raw::run`.)
pub async fn run(target: &Target, plan: StreamPlan, gauges: Arc<Gauges>) -> StreamOutcome {
    let started = Instant::now();
    let (ws, ready_offset) = match connect(target, &plan).await {
        Ok(connected) => connected,
        Err(failure) => {
            gauges.failed.fetch_add(1, Ordering::Relaxed);
            return StreamOutcome {
                failure: Some(failure),
                ..StreamOutcome::default()
            };
        }
    };
    gauges.connected.fetch_add(1, Ordering::Relaxed);
    let outcome = StreamOutcome {
        connect: Some(started.elapsed()),
        ready_offset,
        end_offset: ready_offset,
        last_ack: ready_offset,
        ..StreamOutcome::default()
    };
    let mut recorder = Recorder::new(ws, plan, target, gauges, outcome);
    recorder.stream().await;
    recorder.stop_sending();
    recorder.outcome
}

async fn connect(target: &Target, plan: &StreamPlan) -> Result<(Ws, u64), String> {
    let url = format!(
        "{}/api/session/{}/ws?track={}&sampleRate={SAMPLE_RATE}&channels=1&format=s16le",
        target.ws_base, plan.session, plan.track
    );
    let mut request = url
        .into_client_request()
        .map_err(|e| format!("bad url: {e}"))?;
    if let Some(token) = &target.token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| "bad token".to_string())?;
        request.headers_mut().insert(AUTHORIZATION, value);
    }
    // Nagle off: a recorder writes one small frame every 20 ms and must not wait for ACKs.
    let handshake = tokio_tungstenite::connect_async_with_config(request, None, true);
    let (mut ws, _) = tokio::time::timeout(target.connect_timeout, handshake)
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(describe_handshake_error)?;
    let first = tokio::time::timeout(target.connect_timeout, ws.next())
        .await
        .map_err(|_| "no ready before the connect timeout".to_string())?;
    match first {
        Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerMessage>(&text) {
            Ok(ServerMessage {
                kind,
                offset: Some(offset),
                ..
            }) if kind == "ready" => Ok((ws, offset)),
            _ => Err("first message is not ready".to_string()),
        },
        Some(Ok(Message::Close(frame))) => Err(format!(
            "closed {} before ready",
            close_code(frame.as_ref())
        )),
        Some(Ok(_)) => Err("first message is not ready".to_string()),
        Some(Err(error)) => Err(describe_ws_error(&error)),
        None => Err("closed before ready".to_string()),
    }
}

/// Few distinct strings, so failures group well: `http 503 too_many_connections`, `io: ...`.
fn describe_handshake_error(error: WsError) -> String {
    match error {
        WsError::Http(response) => {
            let code = response
                .body()
                .as_deref()
                .and_then(|body| serde_json::from_slice::<serde_json::Value>(body).ok())
                .and_then(|json| {
                    json.get("error")
                        .and_then(|e| e.as_str())
                        .map(str::to_owned)
                })
                .unwrap_or_default();
            format!("http {} {code}", response.status().as_u16())
                .trim_end()
                .to_string()
        }
        other => describe_ws_error(&other),
    }
}

fn describe_ws_error(error: &WsError) -> String {
    match error {
        WsError::Io(io) => format!("io: {:?}", io.kind()),
        WsError::ConnectionClosed | WsError::AlreadyClosed => "connection closed".to_string(),
        other => {
            let mut text = other.to_string();
            text.truncate(80);
            text
        }
    }
}

fn close_code(frame: Option<&CloseFrame<'_>>) -> u16 {
    frame.map_or(1005, |frame| u16::from(frame.code))
}

/// The server's text messages, only the fields the recorder reads.
#[derive(Deserialize)]
struct ServerMessage {
    #[serde(rename = "type")]
    kind: String,
    offset: Option<u64>,
    code: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Sending,
    /// `flush` sent; waiting for the ack that covers every byte sent.
    Flushing,
    /// `finish` or a close frame sent (or the server closed): waiting for the socket to end.
    Ending,
}

struct Recorder {
    ws: Ws,
    plan: StreamPlan,
    gauges: Arc<Gauges>,
    outcome: StreamOutcome,
    phase: Phase,
    /// Whether this recorder is counted in `gauges.streaming`.
    counted: bool,
    /// The server's close frame arrived and the TCP grace period has started.
    closing: bool,
    frames_sent: u64,
    /// (offset after the frame, when it was sent), oldest first, until acked.
    in_flight: InFlight,
    ack_timeout: Duration,
    /// A send blocked past this (the server stopped reading) gives up.
    hard_deadline: Instant,
}

impl Recorder {
    fn new(
        ws: Ws,
        mut plan: StreamPlan,
        target: &Target,
        gauges: Arc<Gauges>,
        outcome: StreamOutcome,
    ) -> Recorder {
        gauges.streaming.fetch_add(1, Ordering::Relaxed);
        plan.start_sending();
        let hard_deadline =
            Instant::now() + plan.pacing.sending_time() + target.ack_timeout + CLOSE_TIMEOUT * 3;
        Recorder {
            ws,
            plan,
            gauges,
            outcome,
            phase: Phase::Sending,
            counted: true,
            closing: false,
            frames_sent: 0,
            in_flight: VecDeque::new(),
            ack_timeout: target.ack_timeout,
            hard_deadline,
        }
    }

    /// The one loop: read whatever the server says, send when the schedule says, and move
    /// through the phases. Returns when the socket has ended or a phase timed out.
    async fn stream(&mut self) {
        let start = Instant::now();
        let (mut ticker, send_until) = match self.plan.pacing {
            Pacing::RealTime { period, .. } => {
                let mut ticker = tokio::time::interval_at(start, period);
                // Burst: a late tick is followed at once by the ones it held up, so the
                // schedule stays tied to the start time and never drifts.
                ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
                (Some(ticker), None)
            }
            Pacing::Unpaced { duration } => (None, Some(start + duration)),
        };
        let paced = ticker.is_some();
        let mut phase_timer = pin!(tokio::time::sleep_until(self.hard_deadline));
        loop {
            let sending = self.phase == Phase::Sending;
            tokio::select! {
                biased;
                message = self.ws.next() => match message {
                    Some(Ok(message)) => self.on_message(message),
                    Some(Err(error)) => {
                        self.note_problem(format!("read: {}", describe_ws_error(&error)));
                        return;
                    }
                    None => {
                        if self.outcome.close_code.is_none() && self.phase != Phase::Ending {
                            self.note_problem("the connection ended without a close frame".into());
                        }
                        return;
                    }
                },
                due = next_tick(&mut ticker), if sending && paced => {
                    if !self.send_frame(Some(due)).await {
                        return;
                    }
                }
                () = std::future::ready(()), if sending && !paced => {
                    if !self.send_frame(None).await {
                        return;
                    }
                }
                () = &mut phase_timer, if !sending => {
                    match (self.closing, self.phase) {
                        (true, _) => self.outcome.tcp_left_open = true,
                        (false, Phase::Flushing) => self.note_problem("the final ack timed out".into()),
                        (false, _) => self.note_problem("no close frame from the server".into()),
                    }
                    return;
                }
            }
            if !self.advance(send_until, phase_timer.as_mut()).await {
                return;
            }
        }
    }

    /// Moves to the next phase when the current one is done; `false` when a send failed.
    async fn advance(
        &mut self,
        send_until: Option<Instant>,
        timer: std::pin::Pin<&mut tokio::time::Sleep>,
    ) -> bool {
        if self.outcome.close_code.is_some() {
            if !self.closing {
                // The server closed (on its own, or answering us): nothing more will be acked,
                // and only the TCP connection is left to end.
                self.closing = true;
                self.stop_sending();
                self.phase = Phase::Ending;
                timer.reset(Instant::now() + TCP_CLOSE_GRACE);
            }
            return true;
        }
        match self.phase {
            Phase::Sending if self.done_sending(send_until) => {
                self.stop_sending();
                self.phase = Phase::Flushing;
                timer.reset(Instant::now() + self.ack_timeout);
                self.send(Message::Text(r#"{"type":"flush"}"#.into())).await
            }
            Phase::Flushing if self.outcome.last_ack >= self.outcome.end_offset => {
                self.phase = Phase::Ending;
                timer.reset(Instant::now() + CLOSE_TIMEOUT);
                self.outcome.end_sent_at = Some(Instant::now());
                let end = match self.plan.end {
                    EndMode::Finish => Message::Text(r#"{"type":"finish"}"#.into()),
                    EndMode::Close => Message::Close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "".into(),
                    })),
                };
                self.send(end).await
            }
            _ => true,
        }
    }

    fn done_sending(&self, send_until: Option<Instant>) -> bool {
        match (self.plan.pacing, send_until) {
            (Pacing::RealTime { frames, .. }, _) => self.frames_sent >= frames,
            (Pacing::Unpaced { .. }, Some(until)) => Instant::now() >= until,
            (Pacing::Unpaced { .. }, None) => true,
        }
    }

    /// Sends the next frame; `due` is when the schedule wanted it. `false` when the send failed.
    async fn send_frame(&mut self, due: Option<Instant>) -> bool {
        let offset = self.outcome.end_offset;
        let frame = build_frame(offset, self.plan.frame_bytes);
        let end = offset + self.plan.frame_bytes as u64;
        let sent_at = Instant::now();
        self.outcome.first_frame_at.get_or_insert(sent_at);
        self.in_flight.push_back((end, sent_at));
        if !self.send(Message::Binary(frame)).await {
            return false;
        }
        self.outcome.end_offset = end;
        self.frames_sent += 1;
        self.gauges
            .bytes_sent
            .fetch_add(self.plan.frame_bytes as u64, Ordering::Relaxed);
        if let Some(due) = due {
            let slip = Instant::now().saturating_duration_since(due);
            self.outcome.max_slip = self.outcome.max_slip.max(slip);
        }
        true
    }

    async fn send(&mut self, message: Message) -> bool {
        match tokio::time::timeout_at(self.hard_deadline, self.ws.send(message)).await {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                self.note_problem(format!("send: {}", describe_ws_error(&error)));
                false
            }
            Err(_) => {
                self.note_problem("send stalled: the server stopped reading".to_string());
                false
            }
        }
    }

    fn on_message(&mut self, message: Message) {
        match message {
            Message::Text(text) => match serde_json::from_str::<ServerMessage>(&text) {
                Ok(ServerMessage { kind, offset, code }) => match (kind.as_str(), offset) {
                    ("ack", Some(offset)) => self.on_ack(offset),
                    ("finished", _) => self.outcome.finished_message = true,
                    ("error", _) => {
                        self.outcome.server_error = Some(code.unwrap_or_else(|| "?".into()))
                    }
                    _ => {}
                },
                Err(_) => self.note_problem("the server sent text that is not JSON".to_string()),
            },
            Message::Close(frame) => {
                self.outcome.closed_at.get_or_insert_with(Instant::now);
                self.outcome.close_code = Some(close_code(frame.as_ref()));
            }
            // tungstenite answers pings by itself.
            Message::Binary(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }

    fn on_ack(&mut self, offset: u64) {
        let now = Instant::now();
        self.outcome
            .take_ack(offset, now, &mut self.in_flight, &self.gauges);
        if self.phase == Phase::Flushing && offset >= self.outcome.end_offset {
            self.outcome.final_ack_at = Some(now);
        }
    }

    fn stop_sending(&mut self) {
        if std::mem::take(&mut self.counted) {
            self.gauges.streaming.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn note_problem(&mut self, problem: String) {
        self.outcome.problem.get_or_insert(problem);
    }
}

async fn next_tick(ticker: &mut Option<Interval>) -> Instant {
    match ticker {
        Some(ticker) => ticker.tick().await,
        None => std::future::pending().await,
    }
}

/// One binary message: the offset, then audio, built by the server's own frame encoder. The
/// only allocation per frame for frames up to a second long (every mode's default).
pub fn build_frame(offset: u64, payload_bytes: usize) -> Vec<u8> {
    let tone = two_seconds_of_tone();
    let second = tone.len() / 2;
    // The same byte offset always carries the same sample, so a resend would be identical.
    let position = (offset % second as u64) as usize;
    if payload_bytes <= second {
        return encode(offset, &tone[position..position + payload_bytes]);
    }
    let payload: Vec<u8> = tone[..second]
        .iter()
        .cycle()
        .skip(position)
        .take(payload_bytes)
        .copied()
        .collect();
    encode(offset, &payload)
}

/// A quiet 440 Hz tone: one second holds exactly 440 cycles, so it loops without a click. Two
/// seconds of it, so that any frame up to a second long is one slice from any starting sample.
fn two_seconds_of_tone() -> &'static [u8] {
    static TONE: OnceLock<Vec<u8>> = OnceLock::new();
    TONE.get_or_init(|| {
        (0..SAMPLE_RATE * 2)
            .flat_map(|n| {
                let phase = 2.0 * std::f64::consts::PI * 440.0 * n as f64 / SAMPLE_RATE as f64;
                ((phase.sin() * 3000.0) as i16).to_le_bytes()
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_their_offset_then_whole_samples() {
        let frame = build_frame(96_000 + 4, 1920);
        assert_eq!(frame.len(), 8 + 1920);
        assert_eq!(u64::from_le_bytes(frame[..8].try_into().unwrap()), 96_004);
        assert_eq!(&frame[8..], &two_seconds_of_tone()[4..4 + 1920]);
        // Across the end of a second: the tone goes on where it started.
        let frame = build_frame(96_000 - 2, 4);
        assert_eq!(&frame[8..10], &two_seconds_of_tone()[95_998..96_000]);
        assert_eq!(&frame[10..], &two_seconds_of_tone()[..2]);
        // Larger than a second: it wraps around.
        let frame = build_frame(2, 200_000);
        assert_eq!(frame.len(), 200_008);
        assert_eq!(&frame[8..8 + 96_000], &two_seconds_of_tone()[2..96_002]);
        assert_eq!(&frame[8 + 96_000..8 + 96_004], &two_seconds_of_tone()[2..6]);
    }
}
