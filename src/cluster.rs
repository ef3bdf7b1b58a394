//! Several nodes on one PostgreSQL database and one data directory: one node at a time writes a
//! track. A node writes a track only while it holds that track's PostgreSQL advisory lock, on a
//! connection of its own (the lock connection). A socket that attaches on node B to a track
//! node A holds makes B ask A (NOTIFY) to let go: A syncs the track, closes its socket with
//! 4001 and unlocks, and B's writer opens (and repairs) the file after that, so B's
//! `ready.offset` is A's last ack. A node that dies releases its locks with its connection; one
//! that hangs stops pinging its lock connection, which PostgreSQL then ends
//! (`idle_session_timeout`), so its locks go within [`HUNG_NODE_TIMEOUT`].
//!
//! The hooks elsewhere are few: [`crate::ingest::Registry::attach`] calls [`Cluster::acquire`]
//! before it starts a writer, start-up repairs only the tracks no other node holds, and a
//! sweep, a finish and a delete tell the other nodes which sessions they closed, and a finish
//! waits until those nodes have let go of the session's tracks.

use std::collections::HashMap;
use std::sync::{mpsc as std_mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::{Connection, QueryableByName, RunQueryDsl};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::domain::{InviteId, SessionId, TrackName};
use crate::ingest::registry::{BoxFuture, TrackClaims};
use crate::ingest::{CloseReason, Registry, TrackKey};

/// The NOTIFY channel every node listens on.
const CHANNEL: &str = "safetake_nodes";
/// A node that stops answering loses its locks within this (PostgreSQL ends its idle lock
/// connection); a healthy node pings it every [`PUMP_INTERVAL`].
pub const HUNG_NODE_TIMEOUT: Duration = Duration::from_secs(3);
const PUMP_INTERVAL: Duration = Duration::from_millis(100);
/// How long an attach waits for the node holding its track to let go (a hung holder's locks
/// go after [`HUNG_NODE_TIMEOUT`]); then the socket is refused.
const ACQUIRE_WAIT: Duration = Duration::from_secs(8);
/// How long a finish waits for the other nodes to close their sockets of the session, sync,
/// finalize and store its marks (a hung node's locks go after [`HUNG_NODE_TIMEOUT`]).
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// A held track with no live writer for this long is unlocked (the next attach anywhere
/// takes it without asking).
const IDLE_UNLOCK: Duration = Duration::from_secs(2);

/// The advisory lock key of a track: 64 bits of SHA-256 over session and track, in the
/// single-key space (the database's other locks use the two-key space).
pub fn lock_key(session: &str, track: &str) -> i64 {
    let digest = Sha256::new()
        .chain_update(session.as_bytes())
        .chain_update([0])
        .chain_update(track.as_bytes())
        .finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_le_bytes(bytes)
}

enum Command {
    /// The answer goes to the callback (a oneshot for async callers, a channel at start-up).
    TryLock(i64, Box<dyn FnOnce(Result<bool, String>) + Send>),
    Unlock(i64),
    Notify(String),
}

/// What the lock connection's thread tells the node.
enum Event {
    /// Another node wants this track.
    Release { node: String, key: TrackKey },
    /// Another node timed this session out (4408), finished it (1000) or deleted it (4403):
    /// its sockets here close for that reason, each track synced and finalized first.
    Closed(SessionId, CloseReason),
    /// The host stopped the recording for everyone on another node: the sockets here hear
    /// `stop`.
    Stop(SessionId),
    /// Another node revoked an invite: the socket here that it opened closes with 4403.
    Revoked(SessionId, TrackName, InviteId),
    /// The lock connection was lost (the database restarted, or this node hung): every lock
    /// is gone; the thread has a new connection, and the live tracks must be locked again.
    Reconnected,
}

struct Held {
    /// The last attach here that used the lock.
    touched: Instant,
}

pub struct Cluster {
    node: String,
    commands: Mutex<std_mpsc::Sender<Command>>,
    events: Mutex<Option<mpsc::UnboundedReceiver<Event>>>,
    held: Mutex<HashMap<TrackKey, Held>>,
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    locked: bool,
}

fn try_lock(conn: &mut PgConnection, key: i64) -> diesel::QueryResult<bool> {
    diesel::sql_query("SELECT pg_try_advisory_lock($1) AS locked")
        .bind::<diesel::sql_types::BigInt, _>(key)
        .get_result::<Locked>(conn)
        .map(|row| row.locked)
}

fn unlock(conn: &mut PgConnection, key: i64) -> diesel::QueryResult<()> {
    diesel::sql_query("SELECT pg_advisory_unlock($1)")
        .bind::<diesel::sql_types::BigInt, _>(key)
        .execute(conn)
        .map(drop)
}

fn open_lock_connection(url: &str) -> Result<PgConnection, String> {
    let mut conn = PgConnection::establish(url).map_err(|e| e.to_string())?;
    let timeout_ms = HUNG_NODE_TIMEOUT.as_millis();
    conn.batch_execute(&format!(
        "SET idle_session_timeout = {timeout_ms}; SET tcp_keepalives_idle = 1; \
         SET tcp_keepalives_interval = 1; SET tcp_keepalives_count = 2; LISTEN {CHANNEL};"
    ))
    .map_err(|e| e.to_string())?;
    Ok(conn)
}

impl TrackClaims for Cluster {
    fn claim<'a>(&'a self, key: &'a TrackKey) -> BoxFuture<'a, std::io::Result<()>> {
        Box::pin(self.acquire(key))
    }
}

impl Cluster {
    /// Opens the lock connection (an error names why) and starts its thread.
    pub fn start(url: &str) -> Result<Arc<Cluster>, String> {
        let conn = open_lock_connection(url)?;
        let node = uuid::Uuid::new_v4().simple().to_string();
        let (command_tx, command_rx) = std_mpsc::channel();
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        let (url, me) = (url.to_string(), node.clone());
        std::thread::Builder::new()
            .name("safetake-locks".into())
            .spawn(move || lock_thread(url, me, conn, command_rx, event_tx))
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(Cluster {
            node,
            commands: Mutex::new(command_tx),
            events: Mutex::new(Some(event_rx)),
            held: Mutex::new(HashMap::new()),
        }))
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    fn held(&self) -> MutexGuard<'_, HashMap<TrackKey, Held>> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn send(&self, command: Command) {
        let commands = self
            .commands
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = commands.send(command);
    }

    async fn try_lock(&self, key: &TrackKey) -> std::io::Result<bool> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::TryLock(
            lock_key(key.session.as_str(), key.track.as_str()),
            Box::new(move |locked| drop(reply.send(locked))),
        ));
        answer
            .await
            .map_err(|_| std::io::Error::other("the lock connection's thread stopped"))?
            .map_err(|error| std::io::Error::other(format!("track lock: {error}")))
    }

    /// Blocking, for start-up: whether this node may repair a track now (no node writes it).
    /// A track another node holds is that node's to keep in order.
    pub fn try_lock_blocking(&self, session: &SessionId, track: &TrackName) -> bool {
        let (reply, answer) = std_mpsc::channel();
        self.send(Command::TryLock(
            lock_key(session.as_str(), track.as_str()),
            Box::new(move |locked| drop(reply.send(locked))),
        ));
        matches!(answer.recv_timeout(Duration::from_secs(10)), Ok(Ok(true)))
    }

    pub fn unlock_blocking(&self, session: &SessionId, track: &TrackName) {
        self.send(Command::Unlock(lock_key(session.as_str(), track.as_str())));
    }

    /// Makes this node the track's only writer: at once if it holds the lock; otherwise asks
    /// the node that holds it to let go and waits (bounded) until it has.
    pub async fn acquire(&self, key: &TrackKey) -> std::io::Result<()> {
        if let Some(held) = self.held().get_mut(key) {
            held.touched = Instant::now();
            return Ok(());
        }
        let deadline = Instant::now() + ACQUIRE_WAIT;
        let mut asked: Option<Instant> = None;
        loop {
            if self.try_lock(key).await? {
                self.held().insert(
                    key.clone(),
                    Held {
                        touched: Instant::now(),
                    },
                );
                return Ok(());
            }
            // Asked again every second: a node that missed it (reconnecting) hears it then.
            if asked.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                self.send(Command::Notify(format!(
                    "release\t{}\t{}\t{}",
                    self.node, key.session, key.track
                )));
                asked = Some(Instant::now());
            }
            if Instant::now() >= deadline {
                return Err(std::io::Error::other(
                    "another node writes this track and did not let go",
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Tells every other node that this one timed these sessions out, finished or deleted
    /// them (`reason`): the sockets they hold of them close too.
    pub fn announce_closed(&self, sessions: &[SessionId], reason: CloseReason) {
        let word = match reason {
            CloseReason::Finished => "finished",
            CloseReason::Revoked => "deleted",
            _ => "timedout",
        };
        for session in sessions {
            self.send(Command::Notify(format!(
                "closed\t{}\t{session}\t{word}",
                self.node
            )));
        }
    }

    /// After [`Cluster::announce_closed`] for a finish: waits (bounded by [`CLOSE_WAIT`]) until
    /// no other node holds any of these tracks. A node lets go of a closed session's tracks
    /// once its sockets of it are closed, synced and finalized and their marks stored, so then
    /// the finish can answer as the contract says. False if a node was still holding on.
    pub async fn wait_closed_elsewhere(&self, session: &SessionId, tracks: &[TrackName]) -> bool {
        let deadline = Instant::now() + CLOSE_WAIT;
        for track in tracks {
            let key = TrackKey {
                session: session.clone(),
                track: track.clone(),
            };
            loop {
                match self.try_lock(&key).await {
                    // Locks nest: taken and given back at once, whether or not this node
                    // holds the track itself.
                    Ok(true) => {
                        self.unlock(&key);
                        break;
                    }
                    Ok(false) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(25)).await;
                    }
                    Ok(false) => return false,
                    // The database is away: so are the other nodes' locks.
                    Err(error) => {
                        tracing::warn!(%error, "could not tell whether other nodes closed the session");
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Tells every other node that the host stopped this session for everyone.
    pub fn announce_stop(&self, session: &SessionId) {
        self.send(Command::Notify(format!("stop\t{}\t{session}", self.node)));
    }

    /// Tells every other node that this invite (of `track`) was revoked.
    pub fn announce_revoked(&self, session: &SessionId, track: &TrackName, invite: &InviteId) {
        self.send(Command::Notify(format!(
            "revoked\t{}\t{session}\t{track}\t{invite}",
            self.node
        )));
    }

    /// The node's side of the protocol, until the server stops: lets go of tracks other nodes
    /// ask for, closes sockets of sessions other nodes timed out, unlocks idle tracks, and
    /// locks the live tracks again after the lock connection came back.
    /// `store_marks` stores the marks a closed session's sockets here sent, before its tracks
    /// are let go (the database is not this module's).
    pub async fn run(
        self: Arc<Self>,
        registry: Arc<Registry>,
        store_marks: impl Fn(SessionId) -> BoxFuture<'static, ()>,
    ) {
        let Some(mut events) = self
            .events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
        else {
            return;
        };
        let mut janitor = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(Event::Release { node, key }) if node != self.node => {
                        self.release(&registry, key).await;
                    }
                    Some(Event::Release { .. }) => {}
                    Some(Event::Closed(session, reason)) => {
                        let heard = Instant::now();
                        registry.close_session(&session, reason).await;
                        store_marks(session.clone()).await;
                        self.let_go_of_session(&session, heard);
                    }
                    Some(Event::Stop(session)) => registry.tell_stop(&session),
                    Some(Event::Revoked(session, track, invite)) => {
                        registry.close_invite(&session, &track, &invite).await;
                    }
                    Some(Event::Reconnected) => self.relock(&registry).await,
                    None => return,
                },
                _ = janitor.tick() => self.unlock_idle(&registry),
            }
        }
    }

    /// Another node asked for `key`: sync it, close its socket here with 4001, then unlock.
    async fn release(&self, registry: &Registry, key: TrackKey) {
        if self.held().remove(&key).is_none() {
            return;
        }
        tracing::info!(session = %key.session, track = %key.track, "another node takes the track over");
        registry.close_track(&key, CloseReason::Replaced).await;
        self.unlock(&key);
    }

    /// Another node closed this session (`heard` then): its tracks here are closed and stored,
    /// and let go at once (that node's finish waits for it). A track attached here again since
    /// (a resume after a time-out) keeps its lock. (A closed writer may not have retired yet,
    /// so whether it is live says nothing here.)
    fn let_go_of_session(&self, session: &SessionId, heard: Instant) {
        self.let_go_where(|key, held| &key.session == session && held.touched <= heard);
    }

    /// Tracks held without a live writer for a while are let go.
    fn unlock_idle(&self, registry: &Registry) {
        self.let_go_where(|key, held| {
            held.touched.elapsed() >= IDLE_UNLOCK
                && registry
                    .live_track(&key.session, key.track.as_str())
                    .is_none()
        });
    }

    /// Forgets and unlocks every held track that `let_go` picks.
    fn let_go_where(&self, let_go: impl Fn(&TrackKey, &Held) -> bool) {
        let keys: Vec<TrackKey> = {
            let mut held = self.held();
            let keys: Vec<TrackKey> = held
                .iter()
                .filter(|(key, entry)| let_go(key, entry))
                .map(|(key, _)| key.clone())
                .collect();
            for key in &keys {
                held.remove(key);
            }
            keys
        };
        for key in &keys {
            self.unlock(key);
        }
    }

    fn unlock(&self, key: &TrackKey) {
        self.send(Command::Unlock(lock_key(
            key.session.as_str(),
            key.track.as_str(),
        )));
    }

    /// After the lock connection came back: every track still live here is locked again; one
    /// another node took meanwhile is closed here with 4001 (that node writes it now).
    async fn relock(&self, registry: &Registry) {
        let keys: Vec<TrackKey> = self.held().keys().cloned().collect();
        for key in keys {
            match self.try_lock(&key).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(session = %key.session, track = %key.track, "another node took the track while the database was away");
                    self.held().remove(&key);
                    registry.close_track(&key, CloseReason::Replaced).await;
                }
                Err(error) => {
                    tracing::warn!(%error, "tracks not locked again yet");
                    return;
                }
            }
        }
    }
}

/// The lock connection's thread: runs the commands in order, pings every [`PUMP_INTERVAL`]
/// (which also reads the notifications), and reconnects when the connection is lost.
fn lock_thread(
    url: String,
    node: String,
    mut conn: PgConnection,
    commands: std_mpsc::Receiver<Command>,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut connected = true;
    let mut last_pump = Instant::now();
    loop {
        // The node's side stopped (the server is gone): so does this thread.
        if events.is_closed() {
            return;
        }
        let command = match commands.recv_timeout(PUMP_INTERVAL) {
            Ok(command) => Some(command),
            Err(std_mpsc::RecvTimeoutError::Timeout) => None,
            Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
        };
        if !connected {
            match open_lock_connection(&url) {
                Ok(fresh) => {
                    conn = fresh;
                    connected = true;
                    tracing::info!("lock connection back; locking the live tracks again");
                    let _ = events.send(Event::Reconnected);
                }
                Err(error) => {
                    tracing::debug!(%error, "lock connection still down");
                    if let Some(Command::TryLock(_, reply)) = command {
                        reply(Err(format!("no database connection: {error}")));
                    }
                    std::thread::sleep(Duration::from_millis(250));
                    continue;
                }
            }
        }
        let result = match command {
            Some(Command::TryLock(key, reply)) => match try_lock(&mut conn, key) {
                Ok(locked) => {
                    reply(Ok(locked));
                    Ok(())
                }
                Err(error) => {
                    reply(Err(error.to_string()));
                    Err(error)
                }
            },
            Some(Command::Unlock(key)) => unlock(&mut conn, key),
            Some(Command::Notify(payload)) => diesel::sql_query("SELECT pg_notify($1, $2)")
                .bind::<diesel::sql_types::Text, _>(CHANNEL)
                .bind::<diesel::sql_types::Text, _>(payload)
                .execute(&mut conn)
                .map(drop),
            None => Ok(()),
        };
        let result = result.and_then(|()| {
            if last_pump.elapsed() >= PUMP_INTERVAL {
                last_pump = Instant::now();
                conn.batch_execute("SELECT 1")?;
            }
            Ok(())
        });
        if let Err(error) = result {
            if conn.batch_execute("SELECT 1").is_err() {
                tracing::warn!(%error, "lock connection lost: this node's track locks are gone");
                connected = false;
                continue;
            }
            tracing::warn!(%error, "track lock command failed");
        }
        for notification in conn.notifications_iter() {
            let Ok(notification) = notification else {
                break;
            };
            if let Some(event) = parse_event(&notification.payload, &node) {
                let _ = events.send(event);
            }
        }
    }
}

/// A notification's event, unless it is this node's own or does not parse.
fn parse_event(payload: &str, node: &str) -> Option<Event> {
    let mut fields = payload.split('\t');
    let kind = fields.next()?;
    let from = fields.next()?;
    if from == node {
        return None;
    }
    match kind {
        "release" => {
            let session = SessionId::parse(fields.next()?)?;
            let track = TrackName::parse(fields.next()?)?;
            Some(Event::Release {
                node: from.to_string(),
                key: TrackKey { session, track },
            })
        }
        "closed" => {
            let session = SessionId::parse(fields.next()?)?;
            let reason = match fields.next()? {
                "finished" => CloseReason::Finished,
                "deleted" => CloseReason::Revoked,
                "timedout" => CloseReason::TimedOut,
                _ => return None,
            };
            Some(Event::Closed(session, reason))
        }
        "stop" => Some(Event::Stop(SessionId::parse(fields.next()?)?)),
        "revoked" => {
            let session = SessionId::parse(fields.next()?)?;
            let track = TrackName::parse(fields.next()?)?;
            let invite = InviteId::parse(fields.next()?)?;
            Some(Event::Revoked(session, track, invite))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_differ_by_session_and_track() {
        let session = "0b9a3f36-7c39-4f0e-9a4e-5d0d1a2b3c4d";
        assert_eq!(lock_key(session, "mic"), lock_key(session, "mic"));
        assert_ne!(lock_key(session, "mic"), lock_key(session, "mic2"));
        assert_ne!(
            lock_key(session, "mic"),
            lock_key("0b9a3f36-7c39-4f0e-9a4e-5d0d1a2b3c4e", "mic")
        );
    }
}
