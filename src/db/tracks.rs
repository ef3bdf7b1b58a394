//! Queries on `tracks` and their `segments`. Only a track's writer records its segments and
//! its stored size, so these never race with each other.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::models::{SegmentRow, TrackRow};
use super::schema::{segments, tracks};
use super::DbConnection;

pub fn find(
    conn: &mut DbConnection,
    session_id: &str,
    name: &str,
) -> QueryResult<Option<TrackRow>> {
    tracks::table
        .find((session_id, name))
        .first(conn)
        .optional()
}

pub fn count_for_session(conn: &mut DbConnection, session_id: &str) -> QueryResult<i64> {
    tracks::table
        .filter(tracks::session_id.eq(session_id))
        .count()
        .get_result(conn)
}

pub fn insert(conn: &mut DbConnection, row: &TrackRow) -> QueryResult<()> {
    diesel::insert_into(tracks::table)
        .values(row)
        .execute(conn)
        .map(drop)
}

pub fn for_session(conn: &mut DbConnection, session_id: &str) -> QueryResult<Vec<TrackRow>> {
    tracks::table
        .filter(tracks::session_id.eq(session_id))
        .order((tracks::created_at.asc(), tracks::name.asc()))
        .load(conn)
}

/// Every track, for the repair scan at start.
pub fn all(conn: &mut DbConnection) -> QueryResult<Vec<TrackRow>> {
    tracks::table.load(conn)
}

pub fn segments_for_session(
    conn: &mut DbConnection,
    session_id: &str,
) -> QueryResult<Vec<SegmentRow>> {
    segments::table
        .filter(segments::session_id.eq(session_id))
        .order((
            segments::started_at.asc(),
            segments::start_offset.asc(),
            segments::seq.asc(),
        ))
        .load(conn)
}

pub fn set_data_bytes(
    conn: &mut DbConnection,
    session_id: &str,
    name: &str,
    data_bytes: u64,
) -> QueryResult<()> {
    diesel::update(tracks::table.find((session_id, name)))
        .set(tracks::data_bytes.eq(data_bytes as i64))
        .execute(conn)
        .map(drop)
}

/// Records that a socket attached to the track at `offset`.
pub fn add_segment(
    conn: &mut DbConnection,
    session_id: &str,
    name: &str,
    offset: u64,
    at: NaiveDateTime,
) -> QueryResult<()> {
    // Immediate: read-then-write, so take the write lock first (see sessions::delete).
    conn.immediate_transaction(|conn| {
        let last: Option<i32> = segments::table
            .filter(segments::session_id.eq(session_id))
            .filter(segments::track_name.eq(name))
            .select(diesel::dsl::max(segments::seq))
            .first(conn)?;
        let row = SegmentRow {
            session_id: session_id.to_string(),
            track_name: name.to_string(),
            seq: last.map_or(0, |seq| seq + 1),
            start_offset: offset as i64,
            started_at: at,
        };
        diesel::insert_into(segments::table)
            .values(&row)
            .execute(conn)
            .map(drop)
    })
}
