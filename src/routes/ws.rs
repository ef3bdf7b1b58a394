//! `GET /api/session/{id}/ws`: the upgrade (every refusal happens before it) and the socket
//! loop, which decodes frames at the edge and passes them to the track's writer in order.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use actix_web::web::{self, ServiceConfig};
use actix_web::{HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError};
use serde_json::json;
use tokio::sync::mpsc;

use super::api::{parse_plain_number, session_id};
use crate::access;
use crate::audio::{AudioFormat, RequestedFormat};
use crate::domain::{SessionId, SessionStatus, TrackName};
use crate::error::ApiError;
use crate::ingest::frame::{self, Frame};
use crate::ingest::registry::now_ms;
use crate::ingest::writer::WriterHandle;
use crate::ingest::{close, ConnectionPermit, Outbound, SocketLink, SocketMsg, TrackKey};
use crate::lifecycle;
use crate::state::AppState;

/// Text messages are small commands; anything longer is refused.
const MAX_TEXT_BYTES: usize = 4096;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.route("/api/session/{id}/ws", web::get().to(stream_track));
}

fn parse_query(query: &str) -> Result<(TrackName, RequestedFormat), ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|_| ApiError::InvalidTrack("the query string is not valid".into()))?;
    let value = |name: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let track = value("track").and_then(TrackName::parse).ok_or_else(|| {
        ApiError::InvalidTrack("track is 1 to 64 of A-Z, a-z, 0-9, _ and -".into())
    })?;
    let bad = |what: &str| ApiError::InvalidFormat(what.to_string());
    let mut requested = RequestedFormat::default();
    if let Some(rate) = value("sampleRate") {
        let rate = parse_plain_number(rate)
            .and_then(|rate| u32::try_from(rate).ok())
            .filter(|rate| AudioFormat::SAMPLE_RATES.contains(rate))
            .ok_or_else(|| bad("sampleRate is a whole number from 8000 to 192000"))?;
        requested.sample_rate = Some(rate);
    }
    if let Some(channels) = value("channels") {
        let channels = parse_plain_number(channels)
            .and_then(|channels| u16::try_from(channels).ok())
            .filter(|channels| AudioFormat::CHANNELS.contains(channels))
            .ok_or_else(|| bad("channels is a whole number from 1 to 8"))?;
        requested.channels = Some(channels);
    }
    if let Some(sample) = value("format") {
        requested.sample = Some(
            sample
                .parse()
                .map_err(|_| bad("format is s16le or f32le"))?,
        );
    }
    Ok((track, requested))
}

async fn stream_track(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = session_id(&path)?;
    access::check_origin(&req, &state.config)?;
    let (track, requested) = parse_query(req.query_string())?;
    let permit = state.registry.try_reserve_connection().ok_or_else(|| {
        ApiError::TooManyConnections("the server holds as many sockets as it may".into())
    })?;
    let (response, ws_session, stream) = actix_ws::handle(&req, body)
        .map_err(|error| ApiError::InvalidBody(format!("not a WebSocket upgrade: {error}")))?;

    let (format, previous) = lifecycle::open_track(&state, &id, &track, requested).await?;

    let (outbound_tx, outbound_rx) = mpsc::unbounded_channel();
    let link = SocketLink {
        id: state.registry.next_socket_id(),
        outbound: outbound_tx,
    };
    let socket_id = link.id;
    let key = TrackKey {
        session: id.clone(),
        track: track.clone(),
    };
    let attachment = state
        .registry
        .attach(key, format, link)
        .await
        .map_err(|error| ApiError::Storage(error.to_string()))?;

    // A finish that raced this attach either saw this socket (and closes it) or is seen here.
    if lifecycle::is_over(&state, &id).await? {
        let _ = attachment
            .writer
            .socket_tx
            .send(SocketMsg::Detach { socket: socket_id })
            .await;
        return Err(ApiError::SessionCompleted(
            "the session was finished".into(),
        ));
    }
    if previous == SessionStatus::Incomplete {
        tracing::info!(session = %id, "session resumed by a socket (active)");
    }
    tracing::info!(session = %id, track = %track, socket = socket_id, offset = attachment.ready_offset, "socket attached");

    let socket = Socket {
        state: state.get_ref().clone(),
        session: id,
        track,
        format,
        socket_id,
        writer: attachment.writer,
        heartbeat_ms: attachment.heartbeat_ms,
        _permit: permit,
    };
    let max = state.config.max_frame_bytes;
    let stream = stream
        .max_frame_size(max)
        .aggregate_continuations()
        .max_continuation_size(max);
    actix_web::rt::spawn(socket.run(ws_session, stream, outbound_rx, attachment.ready_offset));
    Ok(response)
}

/// One attached socket.
struct Socket {
    state: AppState,
    session: SessionId,
    track: TrackName,
    format: AudioFormat,
    socket_id: u64,
    writer: WriterHandle,
    heartbeat_ms: Arc<AtomicI64>,
    _permit: ConnectionPermit,
}

/// Why the loop ended: the close frame to send (if any) after an optional error message.
struct Ending {
    code: u16,
    error: Option<serde_json::Value>,
}

impl Ending {
    fn quiet(code: u16) -> Ending {
        Ending { code, error: None }
    }

    fn error(code: u16, error: &str, message: &str) -> Ending {
        Ending {
            code,
            error: Some(json!({"type": "error", "code": error, "message": message})),
        }
    }
}

impl Socket {
    async fn run(
        self,
        mut session: actix_ws::Session,
        mut stream: actix_ws::AggregatedMessageStream,
        mut outbound: mpsc::UnboundedReceiver<Outbound>,
        ready_offset: u64,
    ) {
        let ready = json!({
            "type": "ready",
            "sessionId": self.session.as_str(),
            "track": self.track.as_str(),
            "offset": ready_offset,
            "sampleRate": self.format.sample_rate,
            "channels": self.format.channels,
            "format": self.format.sample.as_str(),
        });
        let patience = self.state.config.ping_interval;
        let ending = if !sent_in_time(patience, session.text(ready.to_string())).await {
            Ending::quiet(close::FINISHED)
        } else {
            self.serve(&mut session, &mut stream, &mut outbound).await
        };
        let _ = self
            .writer
            .socket_tx
            .send(SocketMsg::Detach {
                socket: self.socket_id,
            })
            .await;
        if let Some(error) = &ending.error {
            sent_in_time(patience, session.text(error.to_string())).await;
        }
        let reason = CloseReason {
            code: CloseCode::from(ending.code),
            description: None,
        };
        sent_in_time(patience, session.close(Some(reason))).await;
        tracing::info!(session = %self.session, track = %self.track, socket = self.socket_id, code = ending.code, "socket detached");
    }

    async fn serve(
        &self,
        session: &mut actix_ws::Session,
        stream: &mut actix_ws::AggregatedMessageStream,
        outbound: &mut mpsc::UnboundedReceiver<Outbound>,
    ) -> Ending {
        let period = self.state.config.ping_interval;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tokio::select! {
                biased;
                message = outbound.recv() => {
                    let Some(message) = message else { return Ending::quiet(close::SHUTDOWN) };
                    if let Some(ending) = self.deliver(session, message).await {
                        return ending;
                    }
                }
                message = stream.recv() => {
                    self.heartbeat_ms.fetch_max(now_ms(), Ordering::Relaxed);
                    if let Some(ending) = self.receive(session, message).await {
                        return ending;
                    }
                }
                _ = ping.tick() => {
                    if !sent_in_time(period, session.ping(b"")).await {
                        return Ending::quiet(close::FINISHED);
                    }
                }
            }
        }
    }

    /// Passes a writer's message to the client; `Some` when the socket must close.
    async fn deliver(&self, session: &mut actix_ws::Session, message: Outbound) -> Option<Ending> {
        let text = match message {
            Outbound::Ack(offset) => json!({"type": "ack", "offset": offset}),
            Outbound::Finished => json!({"type": "finished"}),
            Outbound::Close(code) => return Some(Ending::quiet(code)),
            Outbound::Error {
                code,
                message,
                expected_offset,
                close,
            } => {
                let mut error = json!({"type": "error", "code": code, "message": message});
                if let Some(expected) = expected_offset {
                    error["expectedOffset"] = json!(expected);
                }
                return Some(Ending {
                    code: close,
                    error: Some(error),
                });
            }
        };
        let patience = self.state.config.ping_interval;
        let sent = sent_in_time(patience, session.text(text.to_string())).await;
        (!sent).then(|| Ending::quiet(close::TIMED_OUT))
    }

    /// Handles one message from the client; `Some` when the socket must close.
    async fn receive(
        &self,
        session: &mut actix_ws::Session,
        message: Option<Result<AggregatedMessage, ProtocolError>>,
    ) -> Option<Ending> {
        match message? {
            Ok(AggregatedMessage::Binary(bytes)) => self.on_binary(bytes).await,
            Ok(AggregatedMessage::Text(text)) => self.on_text(text.as_ref()).await,
            Ok(AggregatedMessage::Ping(payload)) => {
                let patience = self.state.config.ping_interval;
                let sent = sent_in_time(patience, session.pong(&payload)).await;
                (!sent).then(|| Ending::quiet(close::TIMED_OUT))
            }
            Ok(AggregatedMessage::Pong(_)) => None,
            Ok(AggregatedMessage::Close(_)) => Some(Ending::quiet(close::FINISHED)),
            Err(ProtocolError::Overflow) => Some(too_big()),
            Err(ProtocolError::Io(error))
                if error.to_string().contains("maximum continuation size") =>
            {
                Some(too_big())
            }
            Err(error) => {
                tracing::debug!(session = %self.session, %error, "websocket protocol error");
                Some(Ending::quiet(1002))
            }
        }
    }

    async fn on_binary(&self, bytes: actix_web::web::Bytes) -> Option<Ending> {
        let frame: Frame = match frame::decode(bytes, self.format.block_size()) {
            Ok(frame) => frame,
            Err(error) => return Some(Ending::error(1007, "bad_frame", error.message())),
        };
        self.to_writer(SocketMsg::Frame {
            socket: self.socket_id,
            frame,
        })
        .await
    }

    async fn on_text(&self, text: &str) -> Option<Ending> {
        if text.len() > MAX_TEXT_BYTES {
            return Some(Ending::error(
                1009,
                "too_big",
                "a text message is at most 4 KiB",
            ));
        }
        let kind = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|value| {
                value
                    .get("type")
                    .and_then(|kind| kind.as_str())
                    .map(str::to_owned)
            });
        match kind.as_deref() {
            Some("flush") => {
                self.to_writer(SocketMsg::Flush {
                    socket: self.socket_id,
                })
                .await
            }
            Some("finish") => {
                // Finishing drains this track with the others; the writer then sends
                // `finished` and the close through the outbound channel.
                if let Err(error) = lifecycle::finish(&self.state, &self.session).await {
                    tracing::info!(session = %self.session, %error, "finish over the socket refused");
                }
                None
            }
            _ => Some(Ending::error(
                1003,
                "bad_message",
                "expected {\"type\": \"flush\"} or {\"type\": \"finish\"}",
            )),
        }
    }

    async fn to_writer(&self, message: SocketMsg) -> Option<Ending> {
        match self.writer.socket_tx.send(message).await {
            Ok(()) => None,
            Err(_) => Some(Ending::error(
                close::STORAGE_FAILED,
                "storage_failed",
                "the track's writer stopped",
            )),
        }
    }
}

/// A client that reads nothing fills its TCP window and then this socket's queue; waiting on
/// it forever would pin the socket. Within `patience` the message is sent, or the client is
/// treated as gone.
async fn sent_in_time<E>(
    patience: std::time::Duration,
    send: impl std::future::Future<Output = Result<(), E>>,
) -> bool {
    matches!(tokio::time::timeout(patience, send).await, Ok(Ok(())))
}

fn too_big() -> Ending {
    Ending::error(1009, "too_big", "the frame is over the size limit")
}
