//! Queries on the `sessions` table. Every transition is one conditional UPDATE, so two racing
//! requests can never both win, and a refused transition changes nothing.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::models::SessionRow;
use super::schema::{segments, sessions, tracks};
use super::DbConnection;
use crate::domain::SessionStatus;

const ACTIVE: &str = "active";
const INCOMPLETE: &str = "incomplete";
const COMPLETED: &str = "completed";

/// Why a transition did not happen.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    NotFound,
    WrongStatus(SessionStatus),
}

pub type Transition = QueryResult<Result<SessionRow, Refusal>>;

pub fn insert(conn: &mut DbConnection, row: &SessionRow) -> QueryResult<()> {
    diesel::insert_into(sessions::table)
        .values(row)
        .execute(conn)
        .map(drop)
}

pub fn find(conn: &mut DbConnection, id: &str) -> QueryResult<Option<SessionRow>> {
    sessions::table.find(id).first(conn).optional()
}

/// A page of sessions, newest first, and how many match in all.
pub fn list(
    conn: &mut DbConnection,
    status: Option<SessionStatus>,
    limit: i64,
    offset: i64,
) -> QueryResult<(Vec<SessionRow>, i64)> {
    let mut page = sessions::table.into_boxed();
    let mut count = sessions::table.into_boxed();
    if let Some(status) = status {
        page = page.filter(sessions::status.eq(status.as_str()));
        count = count.filter(sessions::status.eq(status.as_str()));
    }
    let rows = page
        .order((sessions::created_at.desc(), sessions::id.desc()))
        .limit(limit)
        .offset(offset)
        .load(conn)?;
    let total = count.count().get_result(conn)?;
    Ok((rows, total))
}

pub fn count_with_status(conn: &mut DbConnection, status: SessionStatus) -> QueryResult<i64> {
    sessions::table
        .filter(sessions::status.eq(status.as_str()))
        .count()
        .get_result(conn)
}

/// Moves the heartbeat forward, never back, and only while the session is active.
pub fn touch_heartbeat(conn: &mut DbConnection, id: &str, at: NaiveDateTime) -> QueryResult<usize> {
    diesel::update(
        sessions::table
            .filter(sessions::id.eq(id))
            .filter(sessions::status.eq(ACTIVE))
            .filter(sessions::last_heartbeat.lt(at)),
    )
    .set(sessions::last_heartbeat.eq(at))
    .execute(conn)
}

/// Writes a batch of in-memory heartbeats in one transaction.
pub fn flush_heartbeats(
    conn: &mut DbConnection,
    beats: &[(String, NaiveDateTime)],
) -> QueryResult<()> {
    if beats.is_empty() {
        return Ok(());
    }
    conn.transaction(|conn| {
        for (id, at) in beats {
            touch_heartbeat(conn, id, *at)?;
        }
        Ok(())
    })
}

/// A socket attaches: `active` from anything but `completed`, heartbeat now.
pub fn activate(conn: &mut DbConnection, id: &str, now: NaiveDateTime) -> Transition {
    let updated = diesel::update(
        sessions::table
            .filter(sessions::id.eq(id))
            .filter(sessions::status.ne(COMPLETED)),
    )
    .set((
        sessions::status.eq(ACTIVE),
        sessions::last_heartbeat.eq(now),
    ))
    .execute(conn)?;
    outcome(conn, id, updated)
}

/// `incomplete -> active`; an active session is returned unchanged.
pub fn resume(conn: &mut DbConnection, id: &str, now: NaiveDateTime) -> Transition {
    let updated = diesel::update(
        sessions::table
            .filter(sessions::id.eq(id))
            .filter(sessions::status.eq(INCOMPLETE)),
    )
    .set((
        sessions::status.eq(ACTIVE),
        sessions::last_heartbeat.eq(now),
    ))
    .execute(conn)?;
    match outcome(conn, id, updated)? {
        Ok(row) => Ok(Ok(row)),
        Err(Refusal::WrongStatus(SessionStatus::Active)) => {
            Ok(find(conn, id)?.ok_or(Refusal::NotFound))
        }
        Err(refusal) => Ok(Err(refusal)),
    }
}

pub fn finish(conn: &mut DbConnection, id: &str, now: NaiveDateTime) -> Transition {
    let updated = diesel::update(
        sessions::table
            .filter(sessions::id.eq(id))
            .filter(sessions::status.ne(COMPLETED)),
    )
    .set((
        sessions::status.eq(COMPLETED),
        sessions::completed_at.eq(Some(now)),
    ))
    .execute(conn)?;
    outcome(conn, id, updated)
}

/// Deletes a session that is not active, with its tracks and segments.
pub fn delete(conn: &mut DbConnection, id: &str) -> QueryResult<Result<(), Refusal>> {
    // Immediate: a read-then-write transaction that waits for the write lock up front, instead
    // of failing with "database is locked" when another write lands between its read and write.
    conn.immediate_transaction(|conn| {
        let Some(row) = find(conn, id)? else {
            return Ok(Err(Refusal::NotFound));
        };
        if row.status == ACTIVE {
            return Ok(Err(Refusal::WrongStatus(SessionStatus::Active)));
        }
        diesel::delete(segments::table.filter(segments::session_id.eq(id))).execute(conn)?;
        diesel::delete(tracks::table.filter(tracks::session_id.eq(id))).execute(conn)?;
        let deleted = diesel::delete(
            sessions::table
                .filter(sessions::id.eq(id))
                .filter(sessions::status.ne(ACTIVE)),
        )
        .execute(conn)?;
        Ok(if deleted == 1 {
            Ok(())
        } else {
            Err(Refusal::WrongStatus(SessionStatus::Active))
        })
    })
}

/// Marks `incomplete` every active session whose heartbeat is older than `cutoff`; returns their
/// ids. Uses the (status, last_heartbeat) index.
pub fn time_out_silent(conn: &mut DbConnection, cutoff: NaiveDateTime) -> QueryResult<Vec<String>> {
    let candidates: Vec<String> = sessions::table
        .filter(sessions::status.eq(ACTIVE))
        .filter(sessions::last_heartbeat.lt(cutoff))
        .select(sessions::id)
        .load(conn)?;
    if candidates.is_empty() {
        return Ok(candidates);
    }
    conn.transaction(|conn| {
        let mut timed_out = Vec::with_capacity(candidates.len());
        for id in candidates {
            let updated = diesel::update(
                sessions::table
                    .filter(sessions::id.eq(&id))
                    .filter(sessions::status.eq(ACTIVE))
                    .filter(sessions::last_heartbeat.lt(cutoff)),
            )
            .set(sessions::status.eq(INCOMPLETE))
            .execute(conn)?;
            if updated == 1 {
                timed_out.push(id);
            }
        }
        Ok(timed_out)
    })
}

/// After a conditional UPDATE: the row if it happened, otherwise why not.
fn outcome(conn: &mut DbConnection, id: &str, updated: usize) -> Transition {
    let row = find(conn, id)?;
    Ok(match row {
        None => Err(Refusal::NotFound),
        Some(row) if updated == 1 => Ok(row),
        Some(row) => Err(Refusal::WrongStatus(
            row.status.parse().unwrap_or(SessionStatus::Completed),
        )),
    })
}
