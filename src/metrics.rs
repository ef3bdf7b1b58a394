//! What the server counts, for `GET /metrics` (Prometheus text). Every call site is one line
//! naming a function here. The handles are taken once, when the recorder is installed, so
//! recording is an atomic add: no registry lookup and no lock on the audio path.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::domain::SessionStatus;
use crate::ingest::CloseReason;

/// Writes per group commit: one alone, or a burst of finishes or attaches sharing one fsync.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// An fdatasync of a local disk takes from well under a millisecond to a second or more.
const SYNC_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

struct Handles {
    exporter: PrometheusHandle,
    received: Counter,
    acked: Counter,
    sync: Histogram,
    commit_batch: Histogram,
    sockets: Gauge,
    takeovers: Counter,
    repairs: Counter,
    timed_out: Counter,
    refused_gap: Counter,
    refused_bad_frame: Counter,
    refused_too_big: Counter,
    refused_track_full: Counter,
    sessions: [(SessionStatus, Gauge); 3],
}

static HANDLES: OnceLock<Option<Handles>> = OnceLock::new();

/// Installs the process-wide recorder, once; later calls (more apps in one test process) share
/// it. Nothing is recorded before this runs. Returns false when another recorder was there.
pub fn install() -> bool {
    HANDLES.get_or_init(build).is_some()
}

fn build() -> Option<Handles> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("safetake_sync_duration_seconds".into()),
            SYNC_BUCKETS,
        )
        .ok()?
        .set_buckets_for_metric(
            Matcher::Full("safetake_commit_batch_size".into()),
            BATCH_BUCKETS,
        )
        .ok()?
        .build_recorder();
    let exporter = recorder.handle();
    if let Err(error) = metrics::set_global_recorder(recorder) {
        tracing::warn!(%error, "metrics not recorded: another recorder is installed");
        return None;
    }
    describe();
    let refused = |reason: &'static str| metrics::counter!("safetake_frames_refused_total", "reason" => reason);
    let status = |status: SessionStatus| {
        (
            status,
            metrics::gauge!("safetake_sessions", "status" => status.as_str()),
        )
    };
    Some(Handles {
        exporter,
        received: metrics::counter!("safetake_audio_bytes_received_total"),
        acked: metrics::counter!("safetake_audio_bytes_acked_total"),
        sync: metrics::histogram!("safetake_sync_duration_seconds"),
        commit_batch: metrics::histogram!("safetake_commit_batch_size"),
        sockets: metrics::gauge!("safetake_sockets"),
        takeovers: metrics::counter!("safetake_takeovers_total"),
        repairs: metrics::counter!("safetake_repairs_total"),
        timed_out: metrics::counter!("safetake_sessions_timed_out_total"),
        refused_gap: refused("gap"),
        refused_bad_frame: refused("bad_frame"),
        refused_too_big: refused("too_big"),
        refused_track_full: refused("track_full"),
        sessions: [
            status(SessionStatus::Active),
            status(SessionStatus::Incomplete),
            status(SessionStatus::Completed),
        ],
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "safetake_audio_bytes_received_total",
        Unit::Bytes,
        "New PCM bytes taken from sockets (resent bytes already stored not counted)"
    );
    describe_counter!(
        "safetake_audio_bytes_acked_total",
        Unit::Bytes,
        "PCM bytes fsynced and acknowledged"
    );
    describe_histogram!(
        "safetake_sync_duration_seconds",
        Unit::Seconds,
        "One append and fdatasync of a track"
    );
    describe_histogram!(
        "safetake_commit_batch_size",
        "Session-state writes that shared one database commit"
    );
    describe_gauge!("safetake_sockets", "Sockets streaming a track now");
    describe_gauge!("safetake_sessions", "Sessions by status");
    describe_counter!(
        "safetake_takeovers_total",
        "Sockets that took a track over from another"
    );
    describe_counter!(
        "safetake_repairs_total",
        "Track files repaired after a crash"
    );
    describe_counter!(
        "safetake_frames_refused_total",
        "Sockets closed for a refused frame, by reason"
    );
    describe_counter!(
        "safetake_sessions_timed_out_total",
        "Sessions marked incomplete after silence"
    );
}

fn handles() -> Option<&'static Handles> {
    HANDLES.get().and_then(Option::as_ref)
}

pub fn bytes_received(bytes: usize) {
    if let Some(m) = handles() {
        m.received.increment(bytes as u64);
    }
}

/// The ack offset moved from `before` to `after`.
pub fn bytes_acked(before: u64, after: u64) {
    if let Some(m) = handles() {
        m.acked.increment(after.saturating_sub(before));
    }
}

/// Runs one append-and-sync (on its blocking thread) and records how long it took.
pub fn timed_sync<T>(sync: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let result = sync();
    sync_took(started.elapsed());
    result
}

pub fn sync_took(duration: Duration) {
    if let Some(m) = handles() {
        m.sync.record(duration.as_secs_f64());
    }
}

/// One group commit of `writes` writes (see `db::commit`).
pub fn commit_batch(writes: usize) {
    if let Some(m) = handles() {
        m.commit_batch.record(writes as f64);
    }
}

pub fn takeover() {
    if let Some(m) = handles() {
        m.takeovers.increment(1);
    }
}

pub fn repaired() {
    if let Some(m) = handles() {
        m.repairs.increment(1);
    }
}

pub fn sessions_timed_out(count: usize) {
    if let Some(m) = handles() {
        m.timed_out.increment(count as u64);
    }
}

/// A socket closed by the server: counts the closes that refuse a frame.
pub fn socket_closed(reason: CloseReason) {
    let Some(m) = handles() else { return };
    let counter = match reason {
        CloseReason::Gap => &m.refused_gap,
        CloseReason::BadFrame => &m.refused_bad_frame,
        CloseReason::TooBig => &m.refused_too_big,
        CloseReason::TrackFull => &m.refused_track_full,
        _ => return,
    };
    counter.increment(1);
}

/// Counts a streaming socket for as long as it lives: `let _open = metrics::SocketOpen::new();`.
pub struct SocketOpen(());

impl SocketOpen {
    #[allow(clippy::new_without_default)]
    pub fn new() -> SocketOpen {
        if let Some(m) = handles() {
            m.sockets.increment(1.0);
        }
        SocketOpen(())
    }
}

impl Drop for SocketOpen {
    fn drop(&mut self) {
        if let Some(m) = handles() {
            m.sockets.decrement(1.0);
        }
    }
}

/// Drains the histograms' buffers; the sweeper calls it so memory stays flat between scrapes.
pub fn upkeep() {
    if let Some(m) = handles() {
        m.exporter.run_upkeep();
    }
}

/// The scrape: the session counts, read from the database by the caller, then everything.
pub fn render(sessions: &[(SessionStatus, i64)]) -> String {
    let Some(m) = handles() else {
        return String::new();
    };
    for (status, count) in sessions {
        if let Some((_, gauge)) = m.sessions.iter().find(|(s, _)| s == status) {
            gauge.set(*count as f64);
        }
    }
    m.exporter.render()
}
