//! Queries on `tracks` and their `segments`. Only a track's writer records its segments and
//! its stored size, so these never race with each other.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::models::{BadRow, SegmentRow, TrackColumns, TrackRow};
use super::schema::{segments, sessions, tracks};
use super::sessions::COMPLETED;
use super::DbConnection;
use crate::audio::{AudioFormat, RequestedFormat};
use crate::domain::{SessionId, SessionStatus, TrackName};

pub fn find(
    conn: &mut DbConnection,
    session: &SessionId,
    name: &TrackName,
) -> QueryResult<Option<TrackRow>> {
    tracks::table
        .find((session.as_str(), name.as_str()))
        .first(conn)
        .optional()
}

pub fn count_for_session(conn: &mut DbConnection, session: &SessionId) -> QueryResult<i64> {
    tracks::table
        .filter(tracks::session_id.eq(session.as_str()))
        .count()
        .get_result(conn)
}

pub fn insert(conn: &mut DbConnection, row: &TrackRow) -> QueryResult<()> {
    diesel::insert_into(tracks::table)
        .values((
            tracks::session_id.eq(row.session_id.as_str()),
            tracks::name.eq(row.name.as_str()),
            tracks::sample_rate.eq(row.format.sample_rate as i32),
            tracks::channels.eq(i32::from(row.format.channels)),
            tracks::format.eq(row.format.sample.as_str()),
            tracks::data_bytes.eq(row.data_bytes as i64),
            tracks::created_at.eq(row.created_at),
            tracks::done.eq(row.done),
        ))
        .execute(conn)
        .map(drop)
}

pub fn for_session(conn: &mut DbConnection, session: &SessionId) -> QueryResult<Vec<TrackRow>> {
    tracks::table
        .filter(tracks::session_id.eq(session.as_str()))
        .order((tracks::created_at.asc(), tracks::name.asc()))
        .load(conn)
}

/// The tracks a crash may have left unfinished: those of every session not `completed` (a
/// finished session's tracks were synced and finalized). One query; each row is checked on
/// its own, so a row that does not parse is reported (naming it) and the others still come.
pub fn unfinished(conn: &mut DbConnection) -> QueryResult<Vec<Result<TrackRow, BadRow>>> {
    let rows: Vec<(TrackColumns, String)> = tracks::table
        .inner_join(sessions::table)
        .filter(sessions::status.ne(COMPLETED))
        .select((tracks::all_columns, sessions::status))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(track, status)| {
            if let Err(error) = status.parse::<SessionStatus>() {
                let key = track.0;
                return Err(BadRow {
                    table: "sessions",
                    key,
                    error,
                });
            }
            TrackRow::from_stored(track)
        })
        .collect())
}

pub fn segments_for_session(
    conn: &mut DbConnection,
    session: &SessionId,
) -> QueryResult<Vec<SegmentRow>> {
    segments::table
        .filter(segments::session_id.eq(session.as_str()))
        .order((
            segments::started_at.asc(),
            segments::start_offset.asc(),
            segments::seq.asc(),
        ))
        .load(conn)
}

pub fn set_data_bytes(
    conn: &mut DbConnection,
    session: &SessionId,
    name: &TrackName,
    data_bytes: u64,
) -> QueryResult<()> {
    diesel::update(tracks::table.find((session.as_str(), name.as_str())))
        .set(tracks::data_bytes.eq(data_bytes as i64))
        .execute(conn)
        .map(drop)
}

/// Records that a socket attached to the track at `offset`.
pub fn add_segment(
    conn: &mut DbConnection,
    session: &SessionId,
    name: &TrackName,
    offset: u64,
    at: NaiveDateTime,
) -> QueryResult<()> {
    let (session, name) = (session.as_str(), name.as_str());
    // Read-then-write, so take the write lock first (see sessions::delete).
    super::write_transaction(conn, session, |conn| {
        let last: Option<i32> = segments::table
            .filter(segments::session_id.eq(session))
            .filter(segments::track_name.eq(name))
            .select(diesel::dsl::max(segments::seq))
            .first(conn)?;
        diesel::insert_into(segments::table)
            .values((
                segments::session_id.eq(session),
                segments::track_name.eq(name),
                segments::seq.eq(last.map_or(0, |seq| seq + 1)),
                segments::start_offset.eq(offset as i64),
                segments::started_at.eq(at),
            ))
            .execute(conn)
            .map(drop)
    })
}

/// Stores a session's segments as they were (an import), inside the caller's transaction.
pub fn insert_segments(
    conn: &mut DbConnection,
    session: &SessionId,
    name: &TrackName,
    segments_at: &[(u64, NaiveDateTime)],
) -> QueryResult<()> {
    for (seq, (offset, at)) in segments_at.iter().enumerate() {
        diesel::insert_into(segments::table)
            .values((
                segments::session_id.eq(session.as_str()),
                segments::track_name.eq(name.as_str()),
                segments::seq.eq(seq as i32),
                segments::start_offset.eq(*offset as i64),
                segments::started_at.eq(*at),
            ))
            .execute(conn)?;
    }
    Ok(())
}

pub fn set_done(
    conn: &mut DbConnection,
    session: &SessionId,
    name: &TrackName,
    done: bool,
) -> QueryResult<()> {
    diesel::update(tracks::table.find((session.as_str(), name.as_str())))
        .set(tracks::done.eq(done))
        .execute(conn)
        .map(drop)
}

/// Whether a stop for everyone is pending on a session that is not completed and every one of
/// its tracks is done: then the session finishes by itself.
pub fn stop_is_complete(conn: &mut DbConnection, session: &SessionId) -> QueryResult<bool> {
    let Some(row) = super::sessions::find(conn, session)? else {
        return Ok(false);
    };
    if row.status == SessionStatus::Completed || row.stop_requested_at.is_none() {
        return Ok(false);
    }
    let waiting: i64 = tracks::table
        .filter(tracks::session_id.eq(session.as_str()))
        .filter(tracks::done.eq(false))
        .count()
        .get_result(conn)?;
    Ok(waiting == 0)
}

/// A session holds at most this many tracks, counting every track ever opened.
pub const MAX_TRACKS: i64 = 16;

/// Why a socket may not open a track.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenRefusal {
    SessionNotFound,
    SessionCompleted,
    /// The track exists with this other format.
    FormatMismatch(AudioFormat),
    TooManyTracks,
}

/// A socket opens a track: checks the session and the track, creates the track's row if it is
/// new, and marks the session active with a fresh heartbeat, in one transaction. Returns the
/// track's format and the session's former status.
pub fn open_for_socket(
    conn: &mut DbConnection,
    session: &SessionId,
    track: &TrackName,
    requested: RequestedFormat,
    now: NaiveDateTime,
) -> QueryResult<Result<(AudioFormat, SessionStatus), OpenRefusal>> {
    // Two sockets opening new tracks at once cannot both pass the track limit.
    super::write_transaction(conn, session.as_str(), |conn| {
        let Some(row) = super::sessions::find(conn, session)? else {
            return Ok(Err(OpenRefusal::SessionNotFound));
        };
        if row.status == SessionStatus::Completed {
            return Ok(Err(OpenRefusal::SessionCompleted));
        }
        let format = match find(conn, session, track)? {
            Some(existing) => {
                if requested.resolve(existing.format) != existing.format {
                    return Ok(Err(OpenRefusal::FormatMismatch(existing.format)));
                }
                if existing.done {
                    // A socket attaches: whatever its client said before, it is sending again.
                    // (A writer still holding the track clears what it stored itself, in order
                    // with the attach; this clears what an earlier writer left.)
                    set_done(conn, session, track, false)?;
                }
                existing.format
            }
            None => {
                if count_for_session(conn, session)? >= MAX_TRACKS {
                    return Ok(Err(OpenRefusal::TooManyTracks));
                }
                let format = requested.resolve(AudioFormat::DEFAULT);
                let row = TrackRow {
                    session_id: session.clone(),
                    name: track.clone(),
                    format,
                    data_bytes: 0,
                    created_at: now,
                    done: false,
                };
                insert(conn, &row)?;
                format
            }
        };
        match super::sessions::activate(conn, session, now)? {
            Ok(_) => Ok(Ok((format, row.status))),
            Err(_) => Ok(Err(OpenRefusal::SessionCompleted)),
        }
    })
}
