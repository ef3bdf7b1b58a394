//! The registry of live tracks: which writer owns each track, each session's latest heartbeat
//! and each track's new marks (kept in memory and written in batches), and how many sockets are
//! open.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::NaiveDateTime;
use tokio::sync::oneshot;

use super::protocol::CloseReason;
use super::writer::{self, Control, SocketLink, TrackKey, TrackShared, WriterHandle, WriterSetup};
use crate::audio::{AudioFormat, TrackStore};
use crate::db::commit::Committer;
use crate::db::marks::Mark;
use crate::domain::InviteId;
use crate::domain::{self, SessionId, TrackName};

#[derive(Default)]
struct SessionEntry {
    /// Milliseconds since the epoch of the last frame any of its sockets sent.
    heartbeat_ms: Arc<AtomicI64>,
    flushed_ms: i64,
    tracks: HashMap<TrackName, WriterHandle>,
}

/// The last `backlog` each track's client reported, by session; kept after its socket goes
/// (the host sees what a vanished guest still holds) until the session is finished or deleted.
type Backlogs = HashMap<SessionId, HashMap<TrackName, u64>>;

/// A track's marks not yet in the database, and the offset of its last accepted mark (stored
/// or not): a mark not past it is ignored.
struct MarkBuffer {
    last: Option<u64>,
    pending: Vec<Mark>,
}

/// Marks a track holds in memory between two batches at most; more are ignored.
pub const MAX_PENDING_MARKS: usize = 10_000;

/// A track's marks as the socket hands them over, by track.
type Marks = HashMap<(SessionId, TrackName), MarkBuffer>;

/// What happened to a mark handed to the registry.
#[derive(Debug, PartialEq, Eq)]
pub enum MarkOutcome {
    Accepted,
    /// Not past the track's last mark.
    Ignored,
    /// The track's last stored mark is not known yet: load it (`seed_last_mark`), then retry.
    Unknown,
}

pub struct Registry {
    sessions: Mutex<HashMap<SessionId, SessionEntry>>,
    backlogs: Mutex<Backlogs>,
    marks: Mutex<Marks>,
    commits: Committer,
    store: TrackStore,
    sync_interval: Duration,
    max_connections: usize,
    connections: AtomicUsize,
    next_socket_id: AtomicU64,
    shutting_down: AtomicBool,
    /// Several nodes (src/cluster.rs): set once at start with PostgreSQL.
    claims: std::sync::OnceLock<Arc<dyn TrackClaims>>,
}

/// Who else may write tracks: the other nodes on one database (src/cluster.rs implements it).
/// Before a writer here takes a track, this node must hold it.
pub trait TrackClaims: Send + Sync {
    /// Makes this node the track's one writer (another node holding it syncs, closes its socket
    /// with 4001 and lets go), or says why not.
    fn claim<'a>(&'a self, key: &'a TrackKey) -> BoxFuture<'a, std::io::Result<()>>;
}

pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// One open socket's place under `--max-connections`; given back when dropped.
pub struct ConnectionPermit(Arc<Registry>);

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a socket holds once attached.
pub struct Attachment {
    pub writer: WriterHandle,
    pub heartbeat_ms: Arc<AtomicI64>,
    pub ready_offset: u64,
}

impl Registry {
    pub fn new(
        commits: Committer,
        store: TrackStore,
        sync_interval: Duration,
        max_connections: usize,
    ) -> Arc<Registry> {
        Arc::new(Registry {
            sessions: Mutex::new(HashMap::new()),
            backlogs: Mutex::new(HashMap::new()),
            marks: Mutex::new(HashMap::new()),
            commits,
            store,
            sync_interval,
            max_connections,
            connections: AtomicUsize::new(0),
            next_socket_id: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            claims: std::sync::OnceLock::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SessionId, SessionEntry>> {
        // A panic while holding this lock leaves plain data behind; keep serving.
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn try_reserve_connection(self: &Arc<Self>) -> Option<ConnectionPermit> {
        let taken = self.connections.fetch_add(1, Ordering::AcqRel);
        let permit = ConnectionPermit(self.clone());
        (taken < self.max_connections && !self.is_shutting_down()).then_some(permit)
    }

    pub fn open_connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    pub fn next_socket_id(&self) -> u64 {
        self.next_socket_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Hands the track to a new socket: the writer (started if need be) drains what the old
    /// socket sent, closes it with 4001 and answers with the synced offset.
    pub async fn attach(
        self: &Arc<Self>,
        key: TrackKey,
        format: AudioFormat,
        link: SocketLink,
    ) -> std::io::Result<Attachment> {
        // Several nodes: this node becomes the track's one writer first (another node holding
        // it syncs, closes its socket with 4001 and lets go). See src/cluster.rs.
        if let Some(claims) = self.claims.get() {
            claims.claim(&key).await?;
        }
        let (reply_tx, reply_rx) = oneshot::channel();
        let (writer, heartbeat_ms) = {
            let mut sessions = self.lock();
            let entry = sessions.entry(key.session.clone()).or_default();
            entry.heartbeat_ms.fetch_max(now_ms(), Ordering::AcqRel);
            let writer = entry
                .tracks
                .entry(key.track.clone())
                .or_insert_with(|| {
                    let setup = WriterSetup {
                        path: self.store.track_path(&key.session, &key.track),
                        key: key.clone(),
                        format,
                        commits: self.commits.clone(),
                        sync_interval: self.sync_interval,
                    };
                    writer::spawn(setup, self.retirement(key.clone()))
                })
                .clone();
            // Sent under the lock, so a writer deciding to stop sees it waiting.
            writer
                .control_tx
                .send(Control::Attach {
                    link,
                    reply: reply_tx,
                })
                .map_err(|_| std::io::Error::other("the track's writer stopped"))?;
            (writer, entry.heartbeat_ms.clone())
        };
        let ready_offset = reply_rx
            .await
            .map_err(|_| std::io::Error::other("the track's writer stopped"))??;
        Ok(Attachment {
            writer,
            heartbeat_ms,
            ready_offset,
        })
    }

    /// How the writer of `key` lets go of its track: it is forgotten (if it is still the one
    /// registered) only when `still_idle` holds under the lock every attach sends under.
    fn retirement(self: &Arc<Self>, key: TrackKey) -> writer::Retire {
        let registry = Arc::downgrade(self);
        Box::new(move |still_idle: &dyn Fn() -> bool| {
            let Some(registry) = registry.upgrade() else {
                return true;
            };
            let mut sessions = registry.lock();
            if !still_idle() {
                return false;
            }
            if let Some(entry) = sessions.get_mut(&key.session) {
                entry.tracks.remove(&key.track);
            }
            true
        })
    }

    /// The live state of a track, if a writer holds it.
    pub fn live_track(&self, session: &SessionId, track: &str) -> Option<Arc<TrackShared>> {
        let sessions = self.lock();
        let entry = sessions.get(session)?;
        entry
            .tracks
            .iter()
            .find(|(name, _)| name.as_str() == track)
            .map(|(_, writer)| writer.shared.clone())
    }

    /// The live state of every track of a session that a writer holds now.
    pub fn live_tracks(&self, session: &SessionId) -> Vec<(TrackName, Arc<TrackShared>)> {
        let sessions = self.lock();
        sessions.get(session).map_or_else(Vec::new, |entry| {
            entry
                .tracks
                .iter()
                .map(|(name, writer)| (name.clone(), writer.shared.clone()))
                .collect()
        })
    }

    /// The latest heartbeat heard in memory for a session.
    pub fn heartbeat(&self, session: &SessionId) -> Option<NaiveDateTime> {
        let sessions = self.lock();
        let millis = sessions.get(session)?.heartbeat_ms.load(Ordering::Acquire);
        (millis > 0).then(|| domain::from_millis(millis))
    }

    /// Heartbeats newer than the database's, for one batched write.
    pub fn unflushed_heartbeats(&self) -> Vec<(SessionId, i64)> {
        let sessions = self.lock();
        sessions
            .iter()
            .filter_map(|(id, entry)| {
                let beat = entry.heartbeat_ms.load(Ordering::Acquire);
                (beat > entry.flushed_ms).then(|| (id.clone(), beat))
            })
            .collect()
    }

    /// After a batch reached the database: remember it, and forget sessions with nothing live.
    pub fn mark_flushed(&self, flushed: &[(SessionId, i64)]) {
        let mut sessions = self.lock();
        for (id, beat) in flushed {
            if let Some(entry) = sessions.get_mut(id) {
                entry.flushed_ms = entry.flushed_ms.max(*beat);
            }
        }
        sessions.retain(|_, entry| {
            !entry.tracks.is_empty()
                || entry.heartbeat_ms.load(Ordering::Acquire) > entry.flushed_ms
        });
    }

    /// Joins the other nodes (src/cluster.rs); once, at start.
    pub fn set_claims(&self, claims: Arc<dyn TrackClaims>) {
        let _ = self.claims.set(claims);
    }

    /// Syncs one live track and closes its socket for `reason` (another node takes it over).
    pub async fn close_track(&self, key: &TrackKey, reason: CloseReason) {
        let writer = self
            .lock()
            .get(&key.session)
            .and_then(|entry| entry.tracks.get(&key.track))
            .cloned();
        close_writers(writer.into_iter().collect(), reason).await;
    }

    /// Syncs and finalizes every live track of a session and closes its sockets for `reason`.
    pub async fn close_session(&self, session: &SessionId, reason: CloseReason) {
        close_writers(self.writers_of(session), reason).await;
    }

    fn writers_of(&self, session: &SessionId) -> Vec<WriterHandle> {
        let sessions = self.lock();
        sessions
            .get(session)
            .map(|entry| entry.tracks.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Tells every socket of a session (the one holding each live track) to stop: the host
    /// stopped the recording for everyone.
    pub fn tell_stop(&self, session: &SessionId) {
        for writer in self.writers_of(session) {
            let _ = writer.control_tx.send(Control::Stop);
        }
    }

    /// Closes with 4403 (after syncing) the socket holding `track` if `invite` opened it.
    pub async fn close_invite(&self, session: &SessionId, track: &TrackName, invite: &InviteId) {
        let writer = {
            let sessions = self.lock();
            sessions
                .get(session)
                .and_then(|entry| entry.tracks.get(track))
                .cloned()
        };
        let Some(writer) = writer else {
            return;
        };
        let (reply, done) = oneshot::channel();
        let invite = invite.clone();
        if writer
            .control_tx
            .send(Control::CloseInvite { invite, reply })
            .is_ok()
        {
            let _ = done.await;
        }
    }

    fn lock_backlogs(&self) -> MutexGuard<'_, Backlogs> {
        self.backlogs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn set_backlog(&self, session: &SessionId, track: &TrackName, bytes: u64) {
        self.lock_backlogs()
            .entry(session.clone())
            .or_default()
            .insert(track.clone(), bytes);
    }

    /// The last backlog each track of a session reported.
    pub fn backlogs(&self, session: &SessionId) -> HashMap<TrackName, u64> {
        self.lock_backlogs()
            .get(session)
            .cloned()
            .unwrap_or_default()
    }

    /// A finished or deleted session's backlogs are forgotten: its clients have nothing to add.
    pub fn forget_backlogs(&self, session: &SessionId) {
        self.lock_backlogs().remove(session);
    }

    fn lock_marks(&self) -> MutexGuard<'_, Marks> {
        self.marks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A socket's mark: kept for the next batch if it is past the track's last one.
    pub fn push_mark(&self, session: &SessionId, track: &TrackName, mark: Mark) -> MarkOutcome {
        let mut marks = self.lock_marks();
        let Some(buffer) = marks.get_mut(&(session.clone(), track.clone())) else {
            return MarkOutcome::Unknown;
        };
        // A recorder sends one every few seconds; a client sending thousands between two
        // sweeps is not lining anything up, and must not grow the server's memory.
        if buffer.last.is_some_and(|last| mark.offset <= last)
            || buffer.pending.len() >= MAX_PENDING_MARKS
        {
            return MarkOutcome::Ignored;
        }
        buffer.last = Some(mark.offset);
        buffer.pending.push(mark);
        MarkOutcome::Accepted
    }

    /// The offset of the track's last stored mark, as read from the database; kept unless the
    /// registry knows the track's marks already.
    pub fn seed_last_mark(&self, session: &SessionId, track: &TrackName, last: Option<u64>) {
        self.lock_marks()
            .entry((session.clone(), track.clone()))
            .or_insert(MarkBuffer {
                last,
                pending: Vec::new(),
            });
    }

    /// A track's marks not yet stored, in offset order.
    pub fn pending_marks(&self, session: &SessionId, track: &TrackName) -> Vec<Mark> {
        self.lock_marks()
            .get(&(session.clone(), track.clone()))
            .map(|buffer| buffer.pending.clone())
            .unwrap_or_default()
    }

    /// A track's marks: `stored` (read after `pending`, taken from [`Self::pending_marks`]
    /// before, so a batch written in between shows in one or both) and those pending, merged
    /// in offset order.
    pub fn merge_marks(stored: Vec<Mark>, pending: Vec<Mark>) -> Vec<Mark> {
        let mut all = stored;
        all.extend(pending);
        all.sort_by_key(|mark| mark.offset);
        all.dedup_by_key(|mark| mark.offset);
        all
    }

    /// Marks not yet stored (of one session, or of all), for one batched write.
    pub fn unflushed_marks(
        &self,
        only: Option<&SessionId>,
    ) -> Vec<(SessionId, TrackName, Vec<Mark>)> {
        self.lock_marks()
            .iter()
            .filter(|((session, _), buffer)| {
                !buffer.pending.is_empty() && only.is_none_or(|only| only == session)
            })
            .map(|((session, track), buffer)| {
                (session.clone(), track.clone(), buffer.pending.clone())
            })
            .collect()
    }

    /// After a batch of marks reached the database: they are no longer pending (marks
    /// accepted meanwhile stay), and tracks with nothing pending and no writer are forgotten
    /// (their last mark is read again if one comes).
    pub fn marks_flushed(&self, flushed: &[(SessionId, TrackName, Vec<Mark>)]) {
        let live: std::collections::HashSet<(SessionId, TrackName)> = {
            let sessions = self.lock();
            sessions
                .iter()
                .flat_map(|(id, entry)| {
                    entry.tracks.keys().map(|track| (id.clone(), track.clone()))
                })
                .collect()
        };
        let mut marks = self.lock_marks();
        for (session, track, batch) in flushed {
            let Some(stored) = batch.last().map(|mark| mark.offset) else {
                continue;
            };
            if let Some(buffer) = marks.get_mut(&(session.clone(), track.clone())) {
                buffer.pending.retain(|mark| mark.offset > stored);
            }
        }
        marks.retain(|key, buffer| !buffer.pending.is_empty() || live.contains(key));
    }

    /// A deleted session's marks are forgotten: there is nowhere to store them.
    pub fn forget_marks(&self, session: &SessionId) {
        self.lock_marks().retain(|(id, _), _| id != session);
    }

    /// Shutdown: refuse new sockets, then sync, finalize and close every track with 1001.
    pub async fn close_all(&self) {
        self.shutting_down.store(true, Ordering::Release);
        let writers: Vec<WriterHandle> = {
            let sessions = self.lock();
            sessions
                .values()
                .flat_map(|entry| entry.tracks.values().cloned())
                .collect()
        };
        close_writers(writers, CloseReason::ShuttingDown).await;
    }
}

async fn close_writers(writers: Vec<WriterHandle>, reason: CloseReason) {
    let replies: Vec<_> = writers
        .into_iter()
        .filter_map(|writer| {
            let (reply, done) = oneshot::channel();
            writer
                .control_tx
                .send(Control::Close { reason, reply })
                .ok()
                .map(|_| done)
        })
        .collect();
    for done in replies {
        let _ = done.await;
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
