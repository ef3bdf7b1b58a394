//! The sweeper: flushes the in-memory heartbeats and marks in one batch, then marks `incomplete` every
//! active session silent past the timeout and closes its sockets with 4408. The periodic task
//! and `POST /api/session/check-timeouts` run the same code.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::db;
use crate::domain::{self, SessionId};
use crate::error::ApiError;
use crate::ingest::CloseReason;
use crate::state::AppState;

/// Writes every heartbeat heard and every mark accepted since the last batch, in one
/// transaction.
pub async fn flush_heartbeats(state: &AppState) -> Result<(), ApiError> {
    let beats = state.registry.unflushed_heartbeats();
    let marks = state.registry.unflushed_marks(None);
    if beats.is_empty() && marks.is_empty() {
        return Ok(());
    }
    let rows: Vec<_> = beats
        .iter()
        .map(|(id, millis)| (id.clone(), domain::from_millis(*millis)))
        .collect();
    let marks = state
        .db(move |conn| {
            diesel::Connection::transaction(conn, |conn| {
                db::sessions::flush_heartbeats(conn, &rows)?;
                db::marks::insert_batch(conn, &marks)
            })?;
            Ok(marks)
        })
        .await?;
    state.registry.mark_flushed(&beats);
    state.registry.marks_flushed(&marks);
    Ok(())
}

/// Times out every active session silent longer than `timeout`; returns their ids.
pub async fn sweep(state: &AppState, timeout: Duration) -> Result<Vec<SessionId>, ApiError> {
    flush_heartbeats(state).await?;
    let timeout = chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
    let cutoff = domain::now()
        .checked_sub_signed(timeout)
        .unwrap_or(chrono::NaiveDateTime::MIN);
    let timed_out = state
        .db(move |conn| db::sessions::time_out_silent(conn, cutoff))
        .await?;
    crate::metrics::sessions_timed_out(timed_out.len());
    // Several nodes: the others close these sessions' sockets they hold (src/cluster.rs).
    if let Some(cluster) = &state.cluster {
        cluster.announce_closed(&timed_out, CloseReason::TimedOut);
    }
    for id in &timed_out {
        tracing::info!(session = %id, "session timed out (incomplete)");
        state
            .registry
            .close_session(id, CloseReason::TimedOut)
            .await;
    }
    Ok(timed_out)
}

/// Completed sessions deleted per query; the sweep goes on until none is left.
const RETENTION_BATCH: i64 = 100;

/// `--retention`: deletes every completed session completed longer than `retention` ago, with
/// its files, in batches; returns how many. Active and incomplete sessions never match.
pub async fn delete_expired(state: &AppState, retention: Duration) -> Result<usize, ApiError> {
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let cutoff = domain::now()
        .checked_sub_signed(retention)
        .unwrap_or(chrono::NaiveDateTime::MIN);
    let mut deleted = 0;
    loop {
        let batch = state
            .db(move |conn| db::sessions::completed_before(conn, cutoff, RETENTION_BATCH))
            .await?;
        let full = batch.len() as i64 == RETENTION_BATCH;
        for id in &batch {
            crate::lifecycle::delete(state, id).await?;
            deleted += 1;
        }
        if !batch.is_empty() {
            tracing::info!(
                sessions = batch.len(),
                "retention: deleted completed sessions past --retention"
            );
        }
        if !full {
            return Ok(deleted);
        }
    }
}

/// The periodic task, until `stop` is cancelled.
pub async fn run(state: AppState, stop: CancellationToken) {
    let mut interval = tokio::time::interval(state.config.sweep_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = interval.tick() => {
                crate::metrics::upkeep();
                if let Err(error) = sweep(&state, state.config.session_timeout).await {
                    tracing::warn!(%error, "sweep failed; retrying at the next interval");
                }
                if let Some(retention) = state.config.retention {
                    if let Err(error) = delete_expired(&state, retention).await {
                        tracing::warn!(%error, "retention sweep failed; retrying at the next interval");
                    }
                }
            }
        }
    }
}
