//! Marks: where a track's bytes sit on the server's clock. Written in batches (the sweeper's,
//! a finish's, shutdown's), read in offset order.

use diesel::prelude::*;

use super::schema::{marks, tracks};
use super::DbConnection;
use crate::domain::{SessionId, TrackName};

/// One mark: the sample at byte `offset` was captured at `captured_at` (ms since the epoch).
/// Serialized as the API and `session.json` show it: `capturedAt` exactly as the client sent it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mark {
    pub offset: u64,
    pub captured_at: f64,
}

/// A track's marks, in offset order.
pub fn for_track(
    conn: &mut DbConnection,
    session: &SessionId,
    track: &TrackName,
) -> QueryResult<Vec<Mark>> {
    marks::table
        .filter(marks::session_id.eq(session.as_str()))
        .filter(marks::track_name.eq(track.as_str()))
        .order(marks::byte_offset.asc())
        .select((marks::byte_offset, marks::captured_at))
        .load::<(i64, f64)>(conn)
        .map(|rows| rows.into_iter().map(to_mark).collect())
}

/// Every mark of a session, by track, each track's in offset order.
pub fn for_session(
    conn: &mut DbConnection,
    session: &SessionId,
) -> QueryResult<Vec<(String, Mark)>> {
    marks::table
        .filter(marks::session_id.eq(session.as_str()))
        .order((marks::track_name.asc(), marks::byte_offset.asc()))
        .select((marks::track_name, marks::byte_offset, marks::captured_at))
        .load::<(String, i64, f64)>(conn)
        .map(|rows| {
            rows.into_iter()
                .map(|(track, offset, at)| (track, to_mark((offset, at))))
                .collect()
        })
}

/// The offset of a track's last stored mark, if it has any.
pub fn last_offset(
    conn: &mut DbConnection,
    session: &SessionId,
    track: &TrackName,
) -> QueryResult<Option<u64>> {
    marks::table
        .filter(marks::session_id.eq(session.as_str()))
        .filter(marks::track_name.eq(track.as_str()))
        .select(diesel::dsl::max(marks::byte_offset))
        .first::<Option<i64>>(conn)
        .map(|offset| offset.map(|offset| offset.max(0) as u64))
}

/// Stores one batch in one transaction. A track that is gone (its session deleted meanwhile)
/// is skipped; a mark already stored is kept as it was.
pub fn insert_batch(
    conn: &mut DbConnection,
    batch: &[(SessionId, TrackName, Vec<Mark>)],
) -> QueryResult<()> {
    if batch.iter().all(|(_, _, pending)| pending.is_empty()) {
        return Ok(());
    }
    conn.transaction(|conn| {
        for (session, track, pending) in batch {
            let exists = tracks::table
                .filter(tracks::session_id.eq(session.as_str()))
                .filter(tracks::name.eq(track.as_str()))
                .count()
                .get_result::<i64>(conn)?
                > 0;
            if exists {
                insert(conn, session, track, pending)?;
            }
        }
        Ok(())
    })
}

/// Stores marks inside the caller's transaction (the batch, or an import).
pub fn insert(
    conn: &mut DbConnection,
    session: &SessionId,
    track: &TrackName,
    pending: &[Mark],
) -> QueryResult<()> {
    for mark in pending {
        let values = (
            marks::session_id.eq(session.as_str()),
            marks::track_name.eq(track.as_str()),
            marks::byte_offset.eq(mark.offset as i64),
            marks::captured_at.eq(mark.captured_at),
        );
        // "Keep the stored one" is spelled per backend (the shared dialect has no ON CONFLICT).
        match conn {
            DbConnection::Sqlite(conn) => diesel::insert_or_ignore_into(marks::table)
                .values(values)
                .execute(conn)?,
            DbConnection::Postgres(conn) => diesel::insert_into(marks::table)
                .values(values)
                .on_conflict_do_nothing()
                .execute(conn)?,
        };
    }
    Ok(())
}

fn to_mark((offset, captured_at): (i64, f64)) -> Mark {
    Mark {
        offset: offset.max(0) as u64,
        captured_at,
    }
}
