//! Session transitions shared by the REST API, the sockets and the sweeper: the database says
//! whether a transition happens, then the live tracks are told.

use crate::audio::archive::Staged;
use crate::audio::{AudioFormat, RequestedFormat};
use crate::db::models::{InviteRow, SessionRow, TrackRow};
use crate::db::sessions::Refusal;
use crate::db::tracks::{OpenRefusal, MAX_TRACKS};
use crate::db::{self};
use crate::domain::{self, SessionId, SessionStatus, TrackName};
use crate::error::ApiError;
use crate::ingest::CloseReason;
use crate::state::AppState;
use crate::views::{self, SessionDetail, SessionView};

pub const MAX_TITLE_CHARS: usize = 200;

pub async fn create(state: &AppState, title: Option<String>) -> Result<SessionRow, ApiError> {
    let now = domain::now();
    let title = title.unwrap_or_else(|| default_title(now));
    let row = SessionRow {
        id: SessionId::new_random(),
        title,
        status: SessionStatus::Active,
        created_at: now,
        last_heartbeat: now,
        completed_at: None,
        stop_requested_at: None,
    };
    let stored = row.clone();
    state
        .write(move |conn| db::sessions::insert(conn, &stored))
        .await?;
    tracing::info!(session = %row.id, "session created (active)");
    Ok(row)
}

/// A readable default, such as "Recording 2026-11-25 16:37 UTC".
fn default_title(now: chrono::NaiveDateTime) -> String {
    format!("Recording {} UTC", now.format("%Y-%m-%d %H:%M"))
}

pub async fn detail(state: &AppState, id: &SessionId) -> Result<SessionDetail, ApiError> {
    let key = id.clone();
    let registry = state.registry.clone();
    // Live counters are taken before the rows: a writer saves its size before it stops, so a
    // track not live now has its final size in the row read next.
    let live = registry.live_tracks(id);
    let store = state.store.clone();
    let found = state
        .db(move |conn| {
            let Some(row) = db::sessions::find(conn, &key)? else {
                return Ok(None);
            };
            let tracks = db::tracks::for_session(conn, &key)?;
            let segments = db::tracks::segments_for_session(conn, &key)?;
            let invites = db::invites::for_session(conn, &key)?;
            // Already on a blocking thread: the files' sizes are read here too.
            let sizes: Vec<_> = tracks
                .iter()
                .map(|track| store.size(&key, &track.name))
                .collect();
            Ok(Some((row, tracks, segments, invites, sizes)))
        })
        .await?;
    let (row, tracks, segments, invites, sizes) = found.ok_or_else(ApiError::session_not_found)?;
    let backlogs = registry.backlogs(id);
    let tracks = tracks
        .iter()
        .zip(sizes)
        .map(|(track, size)| {
            let live = live
                .iter()
                .find(|(name, _)| *name == track.name)
                .map(|(_, shared)| shared.as_ref());
            let guest = views::Guest {
                participant: participant(&invites, &track.name),
                client_backlog_bytes: backlogs.get(&track.name).copied(),
            };
            views::track_view(track, &segments, size, live, guest)
        })
        .collect();
    Ok(SessionDetail {
        session: views::session_view(&row, registry.heartbeat(id), state.config.retention),
        tracks,
    })
}

/// The guest of a track: the name of the invite that holds it now, or else of the newest one
/// that did.
fn participant(invites: &[InviteRow], track: &TrackName) -> Option<String> {
    let of_track = || invites.iter().filter(|invite| invite.track == *track);
    of_track()
        .filter(|invite| invite.revoked_at.is_none())
        .chain(of_track().rev())
        .next()
        .map(|invite| invite.name.clone())
}

pub fn view(state: &AppState, row: &SessionRow) -> SessionView {
    views::session_view(
        row,
        state.registry.heartbeat(&row.id),
        state.config.retention,
    )
}

/// A socket opens a track (see `db::tracks::open_for_socket`): the track's format, and the
/// session's status before the socket made it active.
pub async fn open_track(
    state: &AppState,
    id: &SessionId,
    track: &TrackName,
    requested: RequestedFormat,
) -> Result<(AudioFormat, SessionStatus), ApiError> {
    let (session, name) = (id.clone(), track.clone());
    let now = domain::now();
    let outcome = state
        .write(move |conn| db::tracks::open_for_socket(conn, &session, &name, requested, now))
        .await?;
    outcome.map_err(|refusal| match refusal {
        OpenRefusal::SessionNotFound => ApiError::session_not_found(),
        OpenRefusal::SessionCompleted => {
            ApiError::SessionCompleted("the session is completed".into())
        }
        OpenRefusal::FormatMismatch(stored) => ApiError::FormatMismatch(format!(
            "the track is {} Hz, {} channel(s), {}",
            stored.sample_rate, stored.channels, stored.sample
        )),
        OpenRefusal::TooManyTracks => {
            ApiError::TooManyTracks(format!("a session holds at most {MAX_TRACKS} tracks"))
        }
    })
}

/// The session as stored now, unless it is gone or completed (a finish may race a socket's
/// attach, and so may a stop for everyone).
pub async fn still_open(state: &AppState, id: &SessionId) -> Result<Option<SessionRow>, ApiError> {
    let key = id.clone();
    let row = state.db(move |conn| db::sessions::find(conn, &key)).await?;
    Ok(row.filter(|row| row.status != SessionStatus::Completed))
}

pub async fn keepalive(state: &AppState, id: &SessionId) -> Result<SessionRow, ApiError> {
    let key = id.clone();
    let now = domain::now();
    let row = state
        .db(move |conn| {
            db::sessions::touch_heartbeat(conn, &key, now)?;
            db::sessions::find(conn, &key)
        })
        .await?
        .ok_or_else(ApiError::session_not_found)?;
    if row.status != SessionStatus::Active {
        return Err(ApiError::NotActive(format!(
            "the session is {}, not active",
            row.status
        )));
    }
    Ok(row)
}

pub async fn resume(state: &AppState, id: &SessionId) -> Result<SessionRow, ApiError> {
    let key = id.clone();
    let now = domain::now();
    let outcome = state
        .write(move |conn| db::sessions::resume(conn, &key, now))
        .await?;
    let row = refused_as_error(outcome)?;
    tracing::info!(session = %id, "session resumed (active)");
    Ok(row)
}

/// Finishes a session: completed in the database first (so no socket can attach any more),
/// then every live track synced, finalized and its socket closed with 1000.
pub async fn finish(state: &AppState, id: &SessionId) -> Result<SessionRow, ApiError> {
    let key = id.clone();
    let now = domain::now();
    let outcome = state
        .write(move |conn| db::sessions::finish(conn, &key, now))
        .await?;
    let row = refused_as_error(outcome)?;
    state
        .registry
        .close_session(id, CloseReason::Finished)
        .await;
    // Several nodes (src/cluster.rs): the others close this session's sockets they hold too.
    if let Some(cluster) = &state.cluster {
        cluster.announce_closed(std::slice::from_ref(id), CloseReason::Finished);
        let key = id.clone();
        let names = state
            .db(move |conn| db::tracks::for_session(conn, &key))
            .await
            .map(|tracks| {
                tracks
                    .into_iter()
                    .map(|track| track.name)
                    .collect::<Vec<_>>()
            });
        let closed = match names {
            Ok(names) => cluster.wait_closed_elsewhere(id, &names).await,
            Err(error) => {
                tracing::warn!(session = %id, %error, "its tracks could not be listed");
                false
            }
        };
        if !closed {
            tracing::warn!(session = %id, "finished, but other nodes may still be closing its tracks");
        }
    }
    // Its sockets are closed: every mark they sent is stored before the finish answers.
    if let Err(error) = flush_marks(state, id).await {
        tracing::warn!(session = %id, %error, "marks not stored at finish; the next sweep retries");
    }
    state.registry.forget_backlogs(id);
    tracing::info!(session = %id, "session finished (completed)");
    Ok(row)
}

/// Writes a session's pending marks (a finish: nothing accepted is left to a later sweep).
pub async fn flush_marks(state: &AppState, session: &SessionId) -> Result<(), ApiError> {
    let marks = state.registry.unflushed_marks(Some(session));
    if marks.is_empty() {
        return Ok(());
    }
    let marks = state
        .write(move |conn| {
            db::marks::insert_batch(conn, &marks)?;
            Ok(marks)
        })
        .await?;
    state.registry.marks_flushed(&marks);
    Ok(())
}

pub async fn delete(state: &AppState, id: &SessionId) -> Result<(), ApiError> {
    let key = id.clone();
    match state
        .db(move |conn| db::sessions::delete(conn, &key))
        .await?
    {
        Ok(()) => {}
        Err(Refusal::NotFound) => return Err(ApiError::session_not_found()),
        Err(Refusal::WrongStatus(_)) => {
            return Err(ApiError::SessionActive(
                "an active session cannot be deleted; finish it first".into(),
            ))
        }
    }
    // Only a session that is not active can be deleted, so a socket here is a late one.
    state.registry.close_session(id, CloseReason::Revoked).await;
    if let Some(cluster) = &state.cluster {
        cluster.announce_closed(std::slice::from_ref(id), CloseReason::Revoked);
    }
    state.registry.forget_backlogs(id);
    state.registry.forget_marks(id);
    let (store, session) = (state.store.clone(), id.clone());
    let removed = tokio::task::spawn_blocking(move || store.remove_session(&session)).await;
    if let Ok(Err(error)) = removed {
        tracing::warn!(session = %id, %error, "session deleted but its files were not all removed");
    }
    tracing::info!(session = %id, "session deleted");
    Ok(())
}

/// A transition the database refused, as the API says it.
pub(crate) fn refused_as_error(
    outcome: Result<SessionRow, Refusal>,
) -> Result<SessionRow, ApiError> {
    outcome.map_err(|refusal| match refusal {
        Refusal::NotFound => ApiError::session_not_found(),
        Refusal::WrongStatus(status) => {
            ApiError::InvalidTransition(format!("the session is {}", status.as_str()))
        }
    })
}

/// Makes a checked import a new `completed` session: its files become the session's, then its
/// rows are written in one transaction (on failure the files go again, so nothing is left).
pub async fn import(state: &AppState, staged: Staged) -> Result<SessionRow, ApiError> {
    if staged.title.chars().count() > MAX_TITLE_CHARS {
        return Err(ApiError::InvalidArchive(format!(
            "session.json: a title is at most {MAX_TITLE_CHARS} characters"
        )));
    }
    let now = domain::now();
    let row = SessionRow {
        id: SessionId::new_random(),
        title: staged.title.clone(),
        status: SessionStatus::Completed,
        created_at: staged.created_at,
        last_heartbeat: now,
        completed_at: Some(now),
        stop_requested_at: None,
    };
    let (store, dir, id) = (state.store.clone(), staged.dir.clone(), row.id.clone());
    actix_web::web::block(move || store.adopt(&dir, &id))
        .await?
        .map_err(|error| ApiError::Storage(error.to_string()))?;
    let (stored, track_count) = (row.clone(), staged.tracks.len());
    let written = state
        .db(move |conn| {
            db::write_transaction(conn, stored.id.as_str(), |conn| {
                db::sessions::insert(conn, &stored)?;
                for (order, track) in staged.tracks.iter().enumerate() {
                    // Tracks are listed by creation: keep the archive's order.
                    let track_row = TrackRow {
                        session_id: stored.id.clone(),
                        name: track.name.clone(),
                        format: track.format,
                        data_bytes: track.data_bytes,
                        created_at: now + chrono::Duration::microseconds(order as i64),
                        done: track.done,
                    };
                    db::tracks::insert(conn, &track_row)?;
                    db::tracks::insert_segments(conn, &stored.id, &track.name, &track.segments)?;
                    db::marks::insert(conn, &stored.id, &track.name, &track.marks)?;
                }
                Ok(())
            })
        })
        .await;
    if let Err(error) = written {
        let (store, id) = (state.store.clone(), row.id.clone());
        let _ = actix_web::web::block(move || store.remove_session(&id)).await;
        return Err(error);
    }
    tracing::info!(session = %row.id, tracks = track_count, "session imported (completed)");
    Ok(row)
}
