//! The track writer: one task per live track owns its file. The socket holding the track appends
//! each frame to the track's [`Intake`] itself, with no message and no wake per frame. Each
//! [`WRITE_BATCH`] that piles up the socket hands to the storage write thread, which writes it to
//! the file (the page cache), so a track holds little audio in memory and the writer is not
//! woken; at least every sync interval the writer hands the rest to a sync thread that writes it,
//! rewrites the header and fdatasyncs; only then does it ack. Every storage job takes the audio
//! from the intake while it holds the file, so bytes reach the file in the order they came, and
//! the header never runs ahead of the data.

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;

use super::frame::Frame;
use super::protocol::{CloseReason, Closing};
use super::storage;
use crate::audio::{AudioFormat, TrackFile};
use crate::db;
use crate::db::commit::Committer;
use crate::domain::InviteId;
use crate::domain::{self, SessionId, TrackName};

pub type SocketId = u64;

/// One track of one session: what a writer owns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrackKey {
    pub session: SessionId,
    pub track: TrackName,
}

/// The writer's one way back to whoever keeps it: "forget me if `still_idle` holds under your
/// lock". Attaches are sent under that same lock, so none is lost between the check and the stop.
pub type Retire = Box<dyn Fn(&dyn Fn() -> bool) -> bool + Send + Sync>;

/// Audio that goes to the file (unsynced) as soon as it has piled up, so what a live track
/// holds in memory does not grow with the sync interval or the format. A sixth of a second of
/// 48 kHz mono s16; each batch costs a write call, so smaller ones cost CPU.
pub const WRITE_BATCH: usize = 16 * 1024;

/// Past this much buffered audio (a storage job is slow, or the client sends faster than real
/// time) a sync starts before the interval is up, and the socket waits for it.
pub const EARLY_SYNC_BYTES: usize = 256 * 1024;

/// What a writer tells its socket. After a `Close` the writer no longer listens to that socket,
/// so nothing the socket sends afterwards can change why it closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    Ack(u64),
    /// Send `{"type":"finished"}`; a `Close` with [`CloseReason::Finished`] follows.
    Finished,
    /// Send `{"type":"stop"}`: the host stopped the recording for everyone.
    Stop,
    Close(Closing),
}

/// The writer's way back to one socket.
#[derive(Debug, Clone)]
pub struct SocketLink {
    pub id: SocketId,
    pub outbound: mpsc::UnboundedSender<Outbound>,
    /// The invite a guest's socket was opened with; revoking it closes the socket.
    pub invite: Option<InviteId>,
}

/// Messages a socket sends, in the order it received them (its frames go to the [`Intake`]
/// before any message sent after them).
#[derive(Debug)]
pub enum SocketMsg {
    /// The intake holds [`EARLY_SYNC_BYTES`]: sync now; the reply comes once the sync has
    /// started, and the socket reads nothing more until then (backpressure).
    Full {
        socket: SocketId,
        reply: oneshot::Sender<()>,
    },
    Flush {
        socket: SocketId,
    },
    /// The client sent everything: sync it all, ack it, save the size, store the track as done,
    /// then reply the offset acked. No reply if the socket no longer holds the track.
    Done {
        socket: SocketId,
        reply: oneshot::Sender<u64>,
    },
    Detach {
        socket: SocketId,
    },
}

/// Messages from the rest of the server.
#[derive(Debug)]
pub enum Control {
    /// A socket takes the track over; the reply is `ready.offset`, synced.
    Attach {
        link: SocketLink,
        reply: oneshot::Sender<io::Result<u64>>,
    },
    /// Sync, close the socket for `reason` and report the synced size.
    Close {
        reason: CloseReason,
        reply: oneshot::Sender<u64>,
    },
    /// The same as a close for [`CloseReason::Revoked`], only if the socket holding the track
    /// was opened with this invite.
    CloseInvite {
        invite: InviteId,
        reply: oneshot::Sender<()>,
    },
    /// Pass `stop` to the socket holding the track, if any.
    Stop,
}

/// What others may read of a live track without asking its writer.
#[derive(Debug, Default)]
pub struct TrackShared {
    /// The offset the next frame must carry.
    written: AtomicU64,
    /// Bytes on stable storage with a header to match.
    synced: AtomicU64,
    /// The writer has opened (and repaired) its file, so the two counts are the file's. Before,
    /// they read 0 while the file may hold hours: a view or a download then goes by the stored
    /// row and the file, as for a track without a writer.
    opened: AtomicBool,
    connected: AtomicBool,
}

impl TrackShared {
    /// The offset the next frame must carry, once the file is open.
    pub fn written(&self) -> Option<u64> {
        self.is_open().then(|| self.written.load(Ordering::Acquire))
    }

    /// Bytes on stable storage with a header to match, once the file is open.
    pub fn synced(&self) -> Option<u64> {
        self.is_open().then(|| self.synced.load(Ordering::Acquire))
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    fn is_open(&self) -> bool {
        self.opened.load(Ordering::Acquire)
    }
}

/// The audio a track's socket handed over and no sync has taken yet. Only the socket the writer
/// names as `owner` may append, so a replaced socket's late frames, or any after the writer told
/// its socket to go, are moot.
#[derive(Debug)]
pub struct Intake {
    owner: Option<SocketId>,
    pending: Chunks,
    /// The offset the next frame must carry.
    written: u64,
    max_data: u64,
    /// The writer was told that `pending` holds a batch.
    batch_told: bool,
}

impl Intake {
    /// Everything pending, for a storage job.
    fn take(&mut self) -> Chunks {
        self.batch_told = false;
        std::mem::take(&mut self.pending)
    }
}

/// Pending audio is kept in chunks this large, allocated as they fill: a track's memory follows
/// what it holds, not the most a sync interval could bring.
const CHUNK: usize = 4 * 1024;

/// Audio waiting for a storage job, in order.
#[derive(Debug, Default)]
struct Chunks {
    chunks: Vec<Vec<u8>>,
    len: usize,
}

impl Chunks {
    fn extend(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len();
        while !bytes.is_empty() {
            match self.chunks.last_mut() {
                Some(chunk) if chunk.len() < CHUNK => {
                    let (now, later) = bytes.split_at((CHUNK - chunk.len()).min(bytes.len()));
                    chunk.extend_from_slice(now);
                    bytes = later;
                }
                _ => self.chunks.push(Vec::with_capacity(CHUNK)),
            }
        }
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// What became of a frame handed to [`WriterHandle::append`].
#[derive(Debug, PartialEq, Eq)]
pub enum Appended {
    /// Taken (or all of it was stored already).
    Taken,
    /// Taken, and a [`WRITE_BATCH`] waits: the socket calls [`WriterHandle::write_batch`]
    /// (once per batch).
    Batch,
    /// Taken, and [`EARLY_SYNC_BYTES`] wait: the socket waits for the writer to take them.
    MustWait,
    /// The socket no longer holds the track: the writer has queued why.
    NotHolder,
    /// The frame starts past the end of what is stored.
    Gap { offset: u64, stored: u64 },
    /// The frame would take the file past what a WAV can hold.
    Full,
}

/// The senders to one writer, kept in the registry.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    pub socket_tx: mpsc::Sender<SocketMsg>,
    pub control_tx: mpsc::UnboundedSender<Control>,
    pub shared: Arc<TrackShared>,
    intake: Arc<Mutex<Intake>>,
    file: FileSlot,
}

/// The track's file, shared by the storage jobs that write to it: `None` until the writer has
/// opened it and once it let go, so no job writes to a file another writer may be repairing.
type FileSlot = Arc<Mutex<Option<OpenFile>>>;

#[derive(Debug)]
struct OpenFile {
    file: TrackFile,
    /// A batch could not be written: nothing more is, and the next sync fails with this (the
    /// bytes after it would otherwise land where the lost ones belong).
    failed: Option<io::Error>,
}

/// A storage job's one way to take audio from the intake: while it holds the file.
fn take_pending(open: &mut OpenFile, intake: &Mutex<Intake>) -> Chunks {
    let pending = lock(intake).take();
    crate::metrics::bytes_received(pending.len());
    if open.failed.is_some() {
        return Chunks::default();
    }
    pending
}

/// A storage job: writes what the intake holds to the file (the page cache), unsynced.
fn write_pending(slot: &Mutex<Option<OpenFile>>, intake: &Mutex<Intake>) {
    let mut slot = match slot.try_lock() {
        Ok(slot) => slot,
        Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        // A sync holds the file: this thread does not wait for its fdatasync. The audio goes
        // with the next batch the socket hands over, or the next sync.
        Err(TryLockError::WouldBlock) => {
            lock(intake).batch_told = false;
            return;
        }
    };
    let Some(open) = slot.as_mut() else {
        return;
    };
    let pending = take_pending(open, intake);
    if let Err(error) = open.file.append(&pending.chunks) {
        open.failed = Some(error);
    }
}

/// A storage job: writes what the intake holds, rewrites the header and fdatasyncs; answers the
/// offset synced.
fn sync_pending(slot: &Mutex<Option<OpenFile>>, intake: &Mutex<Intake>) -> io::Result<u64> {
    let mut slot = lock(slot);
    let open = slot
        .as_mut()
        .ok_or_else(|| io::Error::other("the track's file is closed"))?;
    let pending = take_pending(open, intake);
    if let Some(error) = open.failed.take() {
        return Err(error);
    }
    crate::metrics::timed_sync(|| open.file.append_and_sync(&pending.chunks))
}

impl WriterHandle {
    /// The socket's one step per frame: the new bytes join the track's pending audio, on the
    /// socket's own task. A resend may overlap what is stored: only the bytes past it are new.
    pub fn append(&self, socket: SocketId, frame: &Frame) -> Appended {
        let mut intake = lock(&self.intake);
        if intake.owner != Some(socket) {
            return Appended::NotHolder;
        }
        let stored = intake.written;
        if frame.offset > stored {
            return Appended::Gap {
                offset: frame.offset,
                stored,
            };
        }
        let overlap = stored - frame.offset;
        let fresh = frame.payload.get(overlap as usize..).unwrap_or_default();
        if stored + fresh.len() as u64 > intake.max_data {
            return Appended::Full;
        }
        if !fresh.is_empty() {
            intake.pending.extend(fresh);
            intake.written += fresh.len() as u64;
            self.shared.written.store(intake.written, Ordering::Release);
        }
        let pending = intake.pending.len();
        if pending >= EARLY_SYNC_BYTES {
            Appended::MustWait
        } else if pending >= WRITE_BATCH && !intake.batch_told {
            intake.batch_told = true;
            Appended::Batch
        } else {
            Appended::Taken
        }
    }

    /// After [`Appended::Batch`]: the storage write thread writes the batch to the file, unsynced,
    /// at its next tick. Nobody waits for it; a write that fails fails the next sync, so nothing
    /// after it is acked.
    pub fn write_batch(&self) {
        let (file, intake) = (self.file.clone(), self.intake.clone());
        storage::write(move || write_pending(&file, &intake));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data: a panic elsewhere while holding it leaves nothing half-done worth refusing.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub struct WriterSetup {
    pub key: TrackKey,
    pub path: PathBuf,
    pub format: AudioFormat,
    pub commits: Committer,
    pub sync_interval: Duration,
}

/// The track's one sync in flight: the offset it synced, to come.
type Syncing = oneshot::Receiver<io::Result<u64>>;

struct Writer {
    setup: WriterSetup,
    shared: Arc<TrackShared>,
    intake: Arc<Mutex<Intake>>,
    file: FileSlot,
    sync: Option<Syncing>,
    synced: u64,
    /// The socket holding the track; the intake's `owner` names the same one.
    current: Option<SocketLink>,
    /// For each flush not yet answered, the offset its ack must cover.
    flush_targets: VecDeque<u64>,
    /// This writer stored the track as `done`: the next socket to attach makes it not done.
    /// Both happen here, in order, so a `done` and a new socket racing cannot leave a track
    /// marked done while a client sends to it.
    marked_done: bool,
}

/// Starts a writer task; it opens (and repairs) the file before it takes any message.
pub fn spawn(setup: WriterSetup, retire: Retire) -> WriterHandle {
    let (socket_tx, socket_rx) = mpsc::channel(64);
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(TrackShared::default());
    let intake = Arc::new(Mutex::new(Intake {
        owner: None,
        pending: Chunks::default(),
        written: 0,
        max_data: 0,
        batch_told: false,
    }));
    let file = FileSlot::default();
    let handle = WriterHandle {
        socket_tx,
        control_tx,
        shared: shared.clone(),
        intake: intake.clone(),
        file: file.clone(),
    };
    tokio::spawn(run(
        setup, shared, intake, file, retire, socket_rx, control_rx,
    ));
    handle
}

async fn run(
    setup: WriterSetup,
    shared: Arc<TrackShared>,
    intake: Arc<Mutex<Intake>>,
    file: FileSlot,
    retire: Retire,
    mut socket_rx: mpsc::Receiver<SocketMsg>,
    mut control_rx: mpsc::UnboundedReceiver<Control>,
) {
    let key = setup.key.clone();
    let mut writer = match Writer::open(setup, shared.clone(), intake, file).await {
        Ok(writer) => writer,
        Err(error) => {
            tracing::error!(session = %key.session, track = %key.track, %error, "cannot open track file");
            retire(&|| true);
            refuse_attaches(&mut control_rx, &error);
            return;
        }
    };
    let interval = writer.setup.sync_interval;
    let mut tick = tokio::time::interval_at(first_tick(&key, interval), interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let step = tokio::select! {
            biased;
            control = control_rx.recv() => match control {
                Some(control) => writer.on_control(control).await,
                None => break,
            },
            done = wait_sync(&mut writer.sync) => writer.on_synced(done),
            msg = socket_rx.recv() => match msg {
                Some(msg) => writer.on_socket(msg).await,
                None => break,
            },
            _ = tick.tick() => writer.on_tick(),
        };
        if let Err(error) = step {
            writer.fail(error).await;
            retire(&|| true);
            refuse_attaches(
                &mut control_rx,
                &io::Error::other("the track's writer failed"),
            );
            return;
        }
        if writer.is_idle() && retire(&|| socket_rx.is_empty() && control_rx.is_empty()) {
            break;
        }
    }
    // Idle: every byte is synced, so no batch job has anything to write; nobody waits.
    drop(writer.close_file());
    writer.shared.connected.store(false, Ordering::Release);
    tracing::debug!(session = %key.session, track = %key.track, "writer stopped");
}

/// Tracks that attach in the same instant (a burst of connects) would otherwise all sync on the
/// same tick: each track's first sync is put at its own point of the interval.
fn first_tick(key: &TrackKey, interval: Duration) -> tokio::time::Instant {
    use std::hash::{BuildHasher, RandomState};
    let phase = RandomState::new().hash_one(key) % 1024;
    tokio::time::Instant::now() + interval.mul_f64(phase as f64 / 1024.0)
}

async fn wait_sync(
    sync: &mut Option<Syncing>,
) -> Result<io::Result<u64>, oneshot::error::RecvError> {
    match sync {
        Some(sync) => sync.await,
        None => std::future::pending().await,
    }
}

fn refuse_attaches(control_rx: &mut mpsc::UnboundedReceiver<Control>, error: &io::Error) {
    control_rx.close();
    while let Ok(control) = control_rx.try_recv() {
        match control {
            Control::Attach { reply, .. } => {
                drop(reply.send(Err(io::Error::new(error.kind(), error.to_string()))))
            }
            Control::Close { reply, .. } => drop(reply.send(0)),
            Control::CloseInvite { reply, .. } => drop(reply.send(())),
            Control::Stop => {}
        }
    }
}

impl Writer {
    async fn open(
        setup: WriterSetup,
        shared: Arc<TrackShared>,
        intake: Arc<Mutex<Intake>>,
        slot: FileSlot,
    ) -> io::Result<Writer> {
        let path = setup.path.clone();
        let format = setup.format;
        let file =
            tokio::task::spawn_blocking(move || crate::audio::open_for_append(&path, format))
                .await
                .map_err(io::Error::other)??;
        let synced = file.synced();
        shared.written.store(synced, Ordering::Release);
        shared.synced.store(synced, Ordering::Release);
        shared.opened.store(true, Ordering::Release);
        {
            let mut intake = lock(&intake);
            intake.written = synced;
            intake.max_data = file.max_data_bytes();
        }
        // No job can hold the slot yet: no socket holds the track.
        *lock(&slot) = Some(OpenFile { file, failed: None });
        Ok(Writer {
            setup,
            shared,
            intake,
            file: slot,
            sync: None,
            synced,
            current: None,
            flush_targets: VecDeque::new(),
            marked_done: false,
        })
    }

    fn is_idle(&self) -> bool {
        self.current.is_none() && self.sync.is_none() && lock(&self.intake).written == self.synced
    }

    /// Names the socket whose frames the intake takes (none: it takes nothing).
    fn hold_for(&mut self, link: Option<SocketLink>) {
        lock(&self.intake).owner = link.as_ref().map(|link| link.id);
        self.shared
            .connected
            .store(link.is_some(), Ordering::Release);
        self.current = link;
    }

    async fn on_control(&mut self, control: Control) -> io::Result<()> {
        match control {
            Control::Attach { link, reply } => {
                // The old socket's frames stop here; what it handed over is synced (and acked
                // to it) before it hears 4001.
                lock(&self.intake).owner = None;
                if let Err(error) = self.drain().await {
                    let _ = reply.send(Err(io::Error::new(error.kind(), error.to_string())));
                    return Err(error);
                }
                if let Some(old) = self.current.take() {
                    crate::metrics::takeover();
                    let _ = old
                        .outbound
                        .send(Outbound::Close(Closing::quiet(CloseReason::Replaced)));
                }
                self.flush_targets.clear();
                self.hold_for(Some(link));
                self.record_segment();
                if self.marked_done {
                    self.marked_done = false;
                    self.store_done(false).await;
                }
                let _ = reply.send(Ok(self.synced));
            }
            Control::Close { reason, reply } => {
                let drained = self.close_synced(reason).await;
                let _ = reply.send(self.synced);
                drained?;
            }
            Control::CloseInvite { invite, reply } => {
                let opened_with = |link: &SocketLink| link.invite.as_ref() == Some(&invite);
                let drained = if self.current.as_ref().is_some_and(opened_with) {
                    self.close_synced(CloseReason::Revoked).await
                } else {
                    Ok(())
                };
                let _ = reply.send(());
                drained?;
            }
            Control::Stop => self.send(Outbound::Stop),
        }
        Ok(())
    }

    /// Syncs everything, closes the socket holding the track for `reason` and saves the size.
    async fn close_synced(&mut self, reason: CloseReason) -> io::Result<()> {
        lock(&self.intake).owner = None;
        let drained = self.drain().await;
        let link = self.current.take();
        self.hold_for(None);
        if let Some(link) = link {
            if reason == CloseReason::Finished {
                let _ = link.outbound.send(Outbound::Finished);
            }
            let _ = link.outbound.send(Outbound::Close(Closing::quiet(reason)));
        }
        self.persist_size().await;
        drained
    }

    async fn on_socket(&mut self, msg: SocketMsg) -> io::Result<()> {
        match msg {
            SocketMsg::Full { socket, reply } if self.is_current(socket) => {
                // Never more than one sync's worth waits while another runs.
                self.finish_sync().await?;
                self.start_sync();
                let _ = reply.send(());
            }
            SocketMsg::Flush { socket } if self.is_current(socket) => self.on_flush(),
            SocketMsg::Done { socket, reply } if self.is_current(socket) => {
                self.drain().await?;
                // The ack covering everything, even when nothing was left to sync.
                self.send(Outbound::Ack(self.synced));
                self.persist_size().await;
                self.store_done(true).await;
                self.marked_done = true;
                let _ = reply.send(self.synced);
            }
            SocketMsg::Detach { socket } if self.is_current(socket) => {
                self.hold_for(None);
                self.drain().await?;
                self.persist_size().await;
            }
            // A socket that was replaced or told to close: what it still sends is moot.
            _ => {}
        }
        Ok(())
    }

    fn is_current(&self, socket: SocketId) -> bool {
        self.current.as_ref().is_some_and(|link| link.id == socket)
    }

    fn on_flush(&mut self) {
        let written = lock(&self.intake).written;
        if written == self.synced {
            self.send(Outbound::Ack(self.synced));
            return;
        }
        self.flush_targets.push_back(written);
        self.start_sync();
    }

    fn on_tick(&mut self) -> io::Result<()> {
        self.start_sync();
        Ok(())
    }

    /// Hands what the intake holds to a storage thread that writes it, rewrites the header and
    /// fdatasyncs, unless a sync runs or nothing is unsynced.
    fn start_sync(&mut self) {
        if self.sync.is_none() && lock(&self.intake).written > self.synced {
            let (file, intake) = (self.file.clone(), self.intake.clone());
            let done = storage::run(move || sync_pending(&file, &intake));
            self.sync = Some(done);
        }
    }

    /// The sync in flight answered (`done`): it is over, and what it synced is acked.
    fn on_synced(
        &mut self,
        done: Result<io::Result<u64>, oneshot::error::RecvError>,
    ) -> io::Result<()> {
        self.sync = None;
        let result = done.map_err(|_| io::Error::other("a storage job stopped"))?;
        crate::metrics::bytes_acked(self.synced, *result.as_ref().unwrap_or(&self.synced));
        self.synced = result?;
        self.shared.synced.store(self.synced, Ordering::Release);
        self.ack_synced();
        if !self.flush_targets.is_empty() {
            self.start_sync();
        }
        Ok(())
    }

    /// One ack per flush this sync answered, or one for the sync itself.
    fn ack_synced(&mut self) {
        let mut acks = 0;
        while self
            .flush_targets
            .front()
            .is_some_and(|&target| target <= self.synced)
        {
            self.flush_targets.pop_front();
            acks += 1;
        }
        for _ in 0..acks.max(1) {
            self.send(Outbound::Ack(self.synced));
        }
    }

    /// Waits for the running sync, if any, and takes its result.
    async fn finish_sync(&mut self) -> io::Result<()> {
        if self.sync.is_none() {
            return Ok(());
        }
        let done = wait_sync(&mut self.sync).await;
        self.on_synced(done)
    }

    /// Waits for the running sync and syncs whatever is left: afterwards all written is synced.
    async fn drain(&mut self) -> io::Result<()> {
        loop {
            self.finish_sync().await?;
            self.start_sync();
            if self.sync.is_none() {
                return Ok(());
            }
        }
    }

    fn send(&self, outbound: Outbound) {
        if let Some(link) = &self.current {
            let _ = link.outbound.send(outbound);
        }
    }

    /// Tells the socket why it must go, and stops listening to it.
    fn close_current(&mut self, closing: Closing) {
        self.send(Outbound::Close(closing));
        self.hold_for(None);
    }

    /// Storage failed: the socket hears 1011; unsynced audio is dropped (the client still holds
    /// it, since it was never acked) and the file is left for the next writer's repair, once no
    /// batch job can write to it any more.
    async fn fail(&mut self, error: io::Error) {
        tracing::error!(session = %self.setup.key.session, track = %self.setup.key.track, %error, "storage failed");
        self.close_current(Closing::new(
            CloseReason::StorageFailed,
            format!("the server could not store audio: {error}"),
        ));
        {
            let mut intake = lock(&self.intake);
            intake.take();
            intake.written = self.synced;
        }
        self.shared.written.store(self.synced, Ordering::Release);
        let _ = self.close_file().await;
    }

    /// Closes the file on a sync thread, where a batch job may still hold it for a moment; once
    /// the answer comes, no batch job writes to it any more.
    fn close_file(&self) -> oneshot::Receiver<()> {
        let file = self.file.clone();
        storage::run(move || drop(lock(&file).take()))
    }

    /// Records the attach in the background: the socket's `ready` does not wait for the database,
    /// and a database that is down costs a segment entry, never audio.
    fn record_segment(&self) {
        let commits = self.setup.commits.clone();
        let key = self.setup.key.clone();
        let offset = self.synced;
        let at = domain::now();
        tokio::spawn(async move {
            let (session, track) = (key.session.clone(), key.track.clone());
            let query = move |conn: &mut db::DbConnection| {
                db::tracks::add_segment(conn, &session, &track, offset, at)
            };
            if let Err(error) = commits.write(query).await {
                tracing::warn!(session = %key.session, track = %key.track, %error, "segment not recorded");
            }
        });
    }

    /// The database's `data_bytes` follows the file at each detach and close (never per frame).
    async fn persist_size(&self) {
        let (session, track) = (self.setup.key.session.clone(), self.setup.key.track.clone());
        let synced = self.synced;
        let query = move |conn: &mut db::DbConnection| {
            db::tracks::set_data_bytes(conn, &session, &track, synced)
        };
        if let Err(error) = self.setup.commits.write(query).await {
            tracing::warn!(session = %self.setup.key.session, track = %self.setup.key.track, %error, "track size not saved; the file stays the truth");
        }
    }

    /// Stores whether the track's client is done. A database that is down costs the flag (a
    /// stop then waits for `finish`), never audio.
    async fn store_done(&self, done: bool) {
        let key = self.setup.key.clone();
        let query = move |conn: &mut db::DbConnection| {
            db::tracks::set_done(conn, &key.session, &key.track, done)
        };
        if let Err(error) = self.setup.commits.write(query).await {
            tracing::warn!(session = %self.setup.key.session, track = %self.setup.key.track, done, %error, "track's done flag not saved");
        }
    }
}
