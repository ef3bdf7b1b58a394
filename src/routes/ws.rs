//! `GET /api/session/{id}/ws`: the upgrade (every refusal happens before it) and the socket
//! loop, which decodes frames at the edge and appends them, in order, to the track's intake.

use std::any::Any;
use std::future::Future;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::web::{self, ServiceConfig};
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode, ProtocolError};
use tokio::sync::{mpsc, oneshot};

use super::extract::{parse_plain_number, session_id};
use crate::access;
use crate::audio::{AudioFormat, RequestedFormat};
use crate::domain::{SessionId, SessionStatus, TrackName};
use crate::error::ApiError;
use crate::guests::{self, Guest};
use crate::ingest::frame;
use crate::ingest::protocol::{ClientCommand, CloseReason, Closing, ServerMessage};
use crate::ingest::registry::now_ms;
use crate::ingest::writer::{Appended, WriterHandle};
use crate::ingest::{ConnectionPermit, Outbound, SocketLink, SocketMsg, TrackKey};
use crate::lifecycle;
use crate::state::AppState;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(web::resource("/api/session/{id}/ws").get(stream_track));
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
    // Set by the access check, which let a guest in only to its own track of its own session.
    let guest = req.extensions().get::<Guest>().cloned();
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
        invite: guest.as_ref().map(|guest| guest.invite.clone()),
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

    // A finish (or a stop) that raced this attach either saw this socket (and closes it, or
    // tells it to stop) or is seen here.
    let Some(row) = lifecycle::still_open(&state, &id).await? else {
        let _ = attachment
            .writer
            .socket_tx
            .send(SocketMsg::Detach { socket: socket_id })
            .await;
        return Err(ApiError::SessionCompleted(
            "the session was finished".into(),
        ));
    };
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
        connection: Connection::of(&req),
        permit,
        guest,
        stop_pending: row.stop_requested_at.is_some(),
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
    connection: Option<Connection>,
    permit: ConnectionPermit,
    /// A guest's socket may not finish the session.
    guest: Option<Guest>,
    /// A stop for everyone was pending when it attached: it hears `stop` right after `ready`.
    stop_pending: bool,
}

/// How the socket loop ended.
enum Ending {
    /// The server closes, for this reason (with the error message before it, if it has one).
    Close(Closing),
    /// The client closed first; its close frame is echoed.
    Echo(Option<actix_ws::CloseReason>),
    /// The peer is dead or reads nothing: no close frame is owed, the socket is let go.
    Drop(&'static str),
}

/// After our close frame, unread bytes from a client that is still sending would make the
/// kernel answer with a reset, and the client would lose the close frame and the error before
/// it. So the server reads and discards for at most this long, until the client's close.
const LINGER: Duration = Duration::from_secs(2);

impl Socket {
    async fn run(
        self,
        mut session: actix_ws::Session,
        mut stream: actix_ws::AggregatedMessageStream,
        mut outbound: mpsc::UnboundedReceiver<Outbound>,
        ready_offset: u64,
    ) {
        let _open = crate::metrics::SocketOpen::new();
        let ready = ServerMessage::Ready {
            session_id: self.session.as_str(),
            track: self.track.as_str(),
            offset: ready_offset,
            sample_rate: self.format.sample_rate,
            channels: self.format.channels,
            format: self.format.sample.as_str(),
        };
        let patience = self.state.config.ping_interval;
        let mut greeting = vec![ready.to_json()];
        if self.stop_pending {
            greeting.push(ServerMessage::Stop.to_json());
        }
        let mut greeted = true;
        for text in greeting {
            greeted = greeted && sent_in_time(patience, session.text(text)).await;
        }
        let ending = if greeted {
            self.serve(&mut session, &mut stream, &mut outbound).await
        } else {
            Ending::Drop("ready could not be sent in time")
        };
        let _ = self
            .writer
            .socket_tx
            .send(SocketMsg::Detach {
                socket: self.socket_id,
            })
            .await;
        // The track is let go: its connection place is free before any goodbye.
        drop(self.permit);
        let connection = self.connection.as_ref();
        let code = match ending {
            Ending::Close(closing) => {
                crate::metrics::socket_closed(closing.reason);
                if let Some(error) = closing.error_message() {
                    sent_in_time(patience, session.text(error.to_json())).await;
                }
                let reason = closing.reason;
                close_lingering(session, stream, reason, patience).await;
                end_connection(connection);
                Some(reason.code())
            }
            Ending::Echo(reason) => {
                let code = reason.as_ref().map(|reason| u16::from(reason.code));
                sent_in_time(patience, session.close(reason)).await;
                end_connection(connection);
                code
            }
            Ending::Drop(why) => {
                tracing::info!(session = %self.session, track = %self.track, socket = self.socket_id, why, "socket dropped");
                end_connection(connection);
                None
            }
        };
        tracing::info!(session = %self.session, track = %self.track, socket = self.socket_id, code, "socket detached");
    }

    async fn serve(
        &self,
        session: &mut actix_ws::Session,
        stream: &mut actix_ws::AggregatedMessageStream,
        outbound: &mut mpsc::UnboundedReceiver<Outbound>,
    ) -> Ending {
        let period = self.state.config.ping_interval;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let mut last_heard = tokio::time::Instant::now();
        loop {
            tokio::select! {
                biased;
                message = outbound.recv() => {
                    let Some(message) = message else {
                        return Ending::Close(writer_stopped());
                    };
                    if let Some(ending) = self.deliver(session, message).await {
                        return ending;
                    }
                }
                message = stream.recv() => {
                    last_heard = tokio::time::Instant::now();
                    self.heartbeat_ms.fetch_max(now_ms(), Ordering::Relaxed);
                    if let Some(ending) = self.receive(session, outbound, message).await {
                        return ending;
                    }
                }
                _ = ping.tick() => {
                    // Liveness is per socket: one that answered nothing (not even a pong) for
                    // two ping intervals is gone, whatever the session's other tracks do.
                    if last_heard.elapsed() > 2 * period {
                        return Ending::Drop("no answer to pings for two ping intervals");
                    }
                    if !sent_in_time(period, session.ping(b"")).await {
                        return Ending::Drop("a ping could not be sent in time");
                    }
                }
            }
        }
    }

    /// Passes a writer's message to the client; `Some` when the socket must close.
    async fn deliver(&self, session: &mut actix_ws::Session, message: Outbound) -> Option<Ending> {
        let message = match message {
            Outbound::Ack(offset) => ServerMessage::Ack { offset },
            Outbound::Finished => ServerMessage::Finished,
            Outbound::Stop => ServerMessage::Stop,
            Outbound::Close(closing) => return Some(Ending::Close(closing)),
        };
        self.say(session, &message).await
    }

    /// Sends one message to the client; `Some` when it reads nothing (it is then dropped).
    async fn say(
        &self,
        session: &mut actix_ws::Session,
        message: &ServerMessage<'_>,
    ) -> Option<Ending> {
        let patience = self.state.config.ping_interval;
        let sent = sent_in_time(patience, session.text(message.to_json())).await;
        (!sent).then_some(Ending::Drop("the client reads nothing"))
    }

    /// Handles one message from the client; `Some` when the socket must close.
    async fn receive(
        &self,
        session: &mut actix_ws::Session,
        outbound: &mut mpsc::UnboundedReceiver<Outbound>,
        message: Option<Result<AggregatedMessage, ProtocolError>>,
    ) -> Option<Ending> {
        let Some(message) = message else {
            return Some(Ending::Drop("the client went away"));
        };
        match message {
            Ok(AggregatedMessage::Binary(bytes)) => {
                let frame = match frame::decode(bytes, self.format.block_size()) {
                    Ok(frame) => frame,
                    Err(error) => {
                        return Some(Ending::Close(Closing::new(
                            CloseReason::BadFrame,
                            error.message(),
                        )))
                    }
                };
                self.append(session, outbound, &frame).await
            }
            Ok(AggregatedMessage::Text(text)) => match ClientCommand::parse(&text) {
                Ok(command) => self.command(session, outbound, command).await,
                Err(closing) => Some(Ending::Close(closing)),
            },
            Ok(AggregatedMessage::Ping(payload)) => {
                let patience = self.state.config.ping_interval;
                let sent = sent_in_time(patience, session.pong(&payload)).await;
                (!sent).then_some(Ending::Drop("a pong could not be sent in time"))
            }
            Ok(AggregatedMessage::Pong(_)) => None,
            Ok(AggregatedMessage::Close(reason)) => Some(Ending::Echo(reason)),
            Err(ProtocolError::Overflow) => Some(Ending::Close(too_big())),
            Err(ProtocolError::Io(error))
                if error.to_string().contains("maximum continuation size") =>
            {
                Some(Ending::Close(too_big()))
            }
            Err(error) => {
                tracing::debug!(session = %self.session, %error, "websocket protocol error");
                Some(Ending::Close(Closing::quiet(CloseReason::ProtocolError)))
            }
        }
    }

    /// Carries out one text command; `Some` when the socket must close.
    async fn command(
        &self,
        session: &mut actix_ws::Session,
        outbound: &mut mpsc::UnboundedReceiver<Outbound>,
        command: ClientCommand,
    ) -> Option<Ending> {
        let socket = self.socket_id;
        match command {
            ClientCommand::Flush => {
                self.to_writer(session, outbound, SocketMsg::Flush { socket })
                    .await
            }
            ClientCommand::Finish if self.guest.is_some() => {
                let refusal = ServerMessage::forbidden("a guest cannot finish the session");
                self.say(session, &refusal).await
            }
            ClientCommand::Finish => {
                // Finishing drains this track with the others; the writer then sends
                // `finished` and the close through the outbound channel.
                if let Err(error) = lifecycle::finish(&self.state, &self.session).await {
                    tracing::info!(session = %self.session, %error, "finish over the socket refused");
                }
                None
            }
            ClientCommand::Backlog { bytes } => {
                self.state
                    .registry
                    .set_backlog(&self.session, &self.track, bytes);
                None
            }
            ClientCommand::Done => self.done(session, outbound).await,
            ClientCommand::Clock { client_time } => {
                let server_time = chrono::Utc::now().timestamp_micros() as f64 / 1000.0;
                let answer = ServerMessage::Clock {
                    client_time,
                    server_time,
                };
                self.say(session, &answer).await
            }
            ClientCommand::Mark {
                offset,
                captured_at,
            } => {
                // A mark must name a whole block; anything else is a malformed message.
                if !offset.is_multiple_of(self.format.block_size()) || offset > i64::MAX as u64 {
                    return Some(Ending::Close(Closing::new(
                        CloseReason::BadMessage,
                        "a mark's offset is a whole number of blocks",
                    )));
                }
                self.mark(crate::db::marks::Mark {
                    offset,
                    captured_at,
                })
                .await;
                None
            }
        }
    }

    /// The client sent everything: the writer syncs it all and acks it; then the track is done,
    /// and the session finishes if a stop for everyone waited only for this.
    async fn done(
        &self,
        session: &mut actix_ws::Session,
        outbound: &mut mpsc::UnboundedReceiver<Outbound>,
    ) -> Option<Ending> {
        let (reply, synced) = oneshot::channel();
        let message = SocketMsg::Done {
            socket: self.socket_id,
            reply,
        };
        if let Some(ending) = self.to_writer(session, outbound, message).await {
            return Some(ending);
        }
        // No reply: the socket was replaced or told to close; its `done` is moot.
        let offset = synced.await.ok()?;
        tracing::info!(session = %self.session, track = %self.track, offset, "client done");
        if let Err(error) = guests::track_done(&self.state, &self.session, &self.track).await {
            tracing::warn!(session = %self.session, track = %self.track, %error, "track not marked done");
        }
        None
    }

    /// Hands a mark to the registry's buffer (stored with the next batch). The track's last
    /// stored mark is read once, when its first mark since it was loaded arrives.
    async fn mark(&self, mark: crate::db::marks::Mark) {
        use crate::ingest::registry::MarkOutcome;
        let registry = &self.state.registry;
        if registry.push_mark(&self.session, &self.track, mark) != MarkOutcome::Unknown {
            return;
        }
        let (session, track) = (self.session.clone(), self.track.clone());
        match self
            .state
            .db(move |conn| crate::db::marks::last_offset(conn, &session, &track))
            .await
        {
            Ok(last) => {
                registry.seed_last_mark(&self.session, &self.track, last);
                registry.push_mark(&self.session, &self.track, mark);
            }
            Err(error) => {
                tracing::warn!(session = %self.session, track = %self.track, %error, "a mark was dropped: its track's marks cannot be read");
            }
        }
    }

    /// One frame into the track's intake, on this task: the writer takes it at the next sync.
    async fn append(
        &self,
        session: &mut actix_ws::Session,
        outbound: &mut mpsc::UnboundedReceiver<Outbound>,
        frame: &frame::Frame,
    ) -> Option<Ending> {
        match self.writer.append(self.socket_id, frame) {
            Appended::Batch => {
                // One storage job per batch, never per frame; the writer is not woken.
                self.writer.write_batch();
                None
            }
            Appended::MustWait => {
                // Backpressure: nothing more is read until the writer took this much.
                let (reply, started) = oneshot::channel();
                let socket = self.socket_id;
                let full = SocketMsg::Full { socket, reply };
                if let Some(ending) = self.to_writer(session, outbound, full).await {
                    return Some(ending);
                }
                let _ = started.await;
                None
            }
            // Not the holder: replaced, or told to close; that close is on its way.
            Appended::Taken | Appended::NotHolder => None,
            Appended::Gap { offset, stored } => Some(Ending::Close(Closing::gap(offset, stored))),
            Appended::Full => Some(Ending::Close(Closing::new(
                CloseReason::TrackFull,
                "a WAV file holds at most 4 GiB: continue in a new track",
            ))),
        }
    }

    /// Hands a message to the writer. A writer that stopped has always said why first (storage
    /// failed): that reason, not "the writer stopped", is what the client hears, after every ack
    /// queued before it.
    async fn to_writer(
        &self,
        session: &mut actix_ws::Session,
        outbound: &mut mpsc::UnboundedReceiver<Outbound>,
        message: SocketMsg,
    ) -> Option<Ending> {
        if self.writer.socket_tx.send(message).await.is_ok() {
            return None;
        }
        while let Ok(message) = outbound.try_recv() {
            if let Some(ending) = self.deliver(session, message).await {
                return Some(ending);
            }
        }
        Some(Ending::Close(writer_stopped()))
    }
}

/// Sends the close frame, then keeps reading (and discarding) until the client's close, its
/// end of stream, or [`LINGER`].
async fn close_lingering(
    session: actix_ws::Session,
    mut stream: actix_ws::AggregatedMessageStream,
    reason: CloseReason,
    patience: Duration,
) {
    let close = actix_ws::CloseReason {
        code: CloseCode::from(reason.code()),
        description: None,
    };
    // A clone keeps the response open while we linger: actix ends the connection's outgoing
    // side when the last session handle is dropped.
    let keep_open = session.clone();
    if sent_in_time(patience, session.close(Some(close))).await {
        let _ = tokio::time::timeout(LINGER, async {
            while let Some(Ok(message)) = stream.recv().await {
                if matches!(message, AggregatedMessage::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
    drop(keep_open);
}

/// Once the WebSocket is over, actix would keep the TCP connection open until the client drops
/// it; the server ends it instead, as RFC 6455 says it should.
fn end_connection(connection: Option<&Connection>) {
    if let Some(connection) = connection {
        connection.end_reading();
    }
}

fn writer_stopped() -> Closing {
    Closing::new(CloseReason::StorageFailed, "the track's writer stopped")
}

/// A client that reads nothing fills its TCP window and then this socket's queue; waiting on
/// it forever would pin the socket. Within `patience` the message is sent, or the client is
/// treated as gone.
async fn sent_in_time<E>(patience: Duration, send: impl Future<Output = Result<(), E>>) -> bool {
    matches!(tokio::time::timeout(patience, send).await, Ok(Ok(())))
}

fn too_big() -> Closing {
    Closing::new(CloseReason::TooBig, "the frame is over the size limit")
}

/// The TCP connection under a socket, held as a duplicate of its descriptor so that the number
/// can never name another connection, whatever actix does with its own.
struct Connection(OwnedFd);

impl Connection {
    fn of(req: &HttpRequest) -> Option<Connection> {
        let fd = req.conn_data::<ConnectionFd>()?.0;
        // SAFETY: the request is being handled, so its connection (and fd) is open right now;
        // the duplicate is ours to close.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        borrowed.try_clone_to_owned().ok().map(Connection)
    }

    /// Shuts the read side: actix then sees the end of the client's stream, flushes what it
    /// still has to send (our close frame) and closes the connection.
    fn end_reading(&self) {
        // SAFETY: shutdown on a descriptor we own; it touches no memory.
        unsafe {
            libc::shutdown(self.0.as_raw_fd(), libc::SHUT_RD);
        }
    }
}

/// The raw descriptor of a plain TCP connection, stored by [`remember_connection`].
#[derive(Clone, Copy)]
struct ConnectionFd(RawFd);

/// `HttpServer::on_connect` hook: notes each connection's descriptor for [`Connection::of`].
pub fn remember_connection(connection: &dyn Any, data: &mut actix_web::dev::Extensions) {
    use actix_tls::accept::rustls_0_23::TlsStream;
    use actix_web::rt::net::TcpStream;
    if let Some(stream) = connection.downcast_ref::<TcpStream>() {
        data.insert(ConnectionFd(stream.as_raw_fd()));
    } else if let Some(stream) = connection.downcast_ref::<TlsStream<TcpStream>>() {
        data.insert(ConnectionFd(stream.get_ref().0.as_raw_fd()));
    }
}
