//! Queries on the `sessions` table. Every transition is one conditional UPDATE, so two racing
//! requests can never both win, and a refused transition changes nothing.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::models::SessionRow;
use super::schema::{invites, marks, segments, sessions, tracks};
use super::DbConnection;
use crate::domain::{SessionId, SessionStatus};

const ACTIVE: &str = SessionStatus::Active.as_str();
const INCOMPLETE: &str = SessionStatus::Incomplete.as_str();
pub(crate) const COMPLETED: &str = SessionStatus::Completed.as_str();
/// Spelled out rather than `!= completed`: a stored status that is none of the three must not
/// take part in a transition (reading it back then fails, and says which row).
const NOT_COMPLETED: [&str; 2] = [ACTIVE, INCOMPLETE];

/// Why a transition did not happen.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    NotFound,
    WrongStatus(SessionStatus),
}

pub type Transition = QueryResult<Result<SessionRow, Refusal>>;

pub fn insert(conn: &mut DbConnection, row: &SessionRow) -> QueryResult<()> {
    diesel::insert_into(sessions::table)
        .values((
            sessions::id.eq(row.id.as_str()),
            sessions::title.eq(&row.title),
            sessions::status.eq(row.status.as_str()),
            sessions::created_at.eq(row.created_at),
            sessions::last_heartbeat.eq(row.last_heartbeat),
            sessions::completed_at.eq(row.completed_at),
            sessions::stop_requested_at.eq(row.stop_requested_at),
        ))
        .execute(conn)
        .map(drop)
}

pub fn find(conn: &mut DbConnection, id: &SessionId) -> QueryResult<Option<SessionRow>> {
    sessions::table.find(id.as_str()).first(conn).optional()
}

/// A page of sessions, newest first (`created_at`, then `id`, both descending: a total order),
/// and how many match in all. Exactly `ORDER BY created_at DESC, id DESC LIMIT limit OFFSET
/// offset`, but without reading `offset` whole rows: the count and the key of the row at the
/// offset come from index-only scans of the covering (`status`,) `created_at`, `id` indexes,
/// walked from whichever end is nearer, and the page is then read by keyset from that key. One
/// read transaction, so the total and the page see the same snapshot.
pub fn list(
    conn: &mut DbConnection,
    status: Option<SessionStatus>,
    limit: i64,
    offset: i64,
) -> QueryResult<(Vec<SessionRow>, i64)> {
    conn.transaction(|conn| {
        let mut count = sessions::table.into_boxed();
        if let Some(status) = status {
            count = count.filter(sessions::status.eq(status.as_str()));
        }
        let total: i64 = count.count().get_result(conn)?;
        let offset = offset.max(0);
        if limit <= 0 || offset >= total {
            return Ok((Vec::new(), total));
        }
        let Some((created_at, id)) = key_at(conn, status, offset, total)? else {
            return Ok((Vec::new(), total));
        };
        let mut page = sessions::table.into_boxed();
        if let Some(status) = status {
            page = page.filter(sessions::status.eq(status.as_str()));
        }
        // (created_at, id) <= the key: a range on the index, the tie on created_at by id.
        let rows = page
            .filter(sessions::created_at.le(created_at))
            .filter(sessions::created_at.lt(created_at).or(sessions::id.le(id)))
            .order((sessions::created_at.desc(), sessions::id.desc()))
            .limit(limit)
            .load(conn)?;
        Ok((rows, total))
    })
}

/// The (`created_at`, `id`) of the row at `offset` in the newest-first order, `offset < total`:
/// an index-only walk of `offset` entries from the newest, or of `total - 1 - offset` from the
/// oldest when that is shorter, so the deepest page costs as little as the first.
fn key_at(
    conn: &mut DbConnection,
    status: Option<SessionStatus>,
    offset: i64,
    total: i64,
) -> QueryResult<Option<(NaiveDateTime, String)>> {
    let mut keys = sessions::table
        .select((sessions::created_at, sessions::id))
        .into_boxed();
    if let Some(status) = status {
        keys = keys.filter(sessions::status.eq(status.as_str()));
    }
    let from_oldest = total - 1 - offset;
    let keys = if from_oldest < offset {
        keys.order((sessions::created_at.asc(), sessions::id.asc()))
            .offset(from_oldest)
    } else {
        keys.order((sessions::created_at.desc(), sessions::id.desc()))
            .offset(offset)
    };
    keys.limit(1).first(conn).optional()
}

pub fn count_with_status(conn: &mut DbConnection, status: SessionStatus) -> QueryResult<i64> {
    sessions::table
        .filter(sessions::status.eq(status.as_str()))
        .count()
        .get_result(conn)
}

/// Moves the heartbeat forward, never back, and only while the session is active.
pub fn touch_heartbeat(
    conn: &mut DbConnection,
    id: &SessionId,
    at: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::update(
        sessions::table
            .filter(sessions::id.eq(id.as_str()))
            .filter(sessions::status.eq(ACTIVE))
            .filter(sessions::last_heartbeat.lt(at)),
    )
    .set(sessions::last_heartbeat.eq(at))
    .execute(conn)
}

/// Writes a batch of in-memory heartbeats in one transaction.
pub fn flush_heartbeats(
    conn: &mut DbConnection,
    beats: &[(SessionId, NaiveDateTime)],
) -> QueryResult<()> {
    if beats.is_empty() {
        return Ok(());
    }
    // In id order, as the sweep's updates are: two nodes' batches lock rows in one order and
    // cannot deadlock (PostgreSQL).
    let mut beats: Vec<_> = beats.iter().collect();
    beats.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    conn.transaction(|conn| {
        for (id, at) in beats {
            touch_heartbeat(conn, id, *at)?;
        }
        Ok(())
    })
}

/// A socket attaches: `active` from anything but `completed`, heartbeat now.
pub fn activate(conn: &mut DbConnection, id: &SessionId, now: NaiveDateTime) -> Transition {
    let updated = diesel::update(
        sessions::table
            .filter(sessions::id.eq(id.as_str()))
            .filter(sessions::status.eq_any(NOT_COMPLETED)),
    )
    .set((
        sessions::status.eq(ACTIVE),
        sessions::last_heartbeat.eq(now),
    ))
    .execute(conn)?;
    outcome(conn, id, updated)
}

/// `incomplete -> active`; an active session keeps its status. Either way a pending stop for
/// everyone is called off: the host goes on recording.
pub fn resume(conn: &mut DbConnection, id: &SessionId, now: NaiveDateTime) -> Transition {
    diesel::update(
        sessions::table
            .filter(sessions::id.eq(id.as_str()))
            .filter(sessions::status.eq_any(NOT_COMPLETED)),
    )
    .set(sessions::stop_requested_at.eq(None::<NaiveDateTime>))
    .execute(conn)?;
    let updated = diesel::update(
        sessions::table
            .filter(sessions::id.eq(id.as_str()))
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

pub fn finish(conn: &mut DbConnection, id: &SessionId, now: NaiveDateTime) -> Transition {
    let updated = diesel::update(
        sessions::table
            .filter(sessions::id.eq(id.as_str()))
            .filter(sessions::status.eq_any(NOT_COMPLETED)),
    )
    .set((
        sessions::status.eq(COMPLETED),
        sessions::completed_at.eq(Some(now)),
    ))
    .execute(conn)?;
    outcome(conn, id, updated)
}

/// A stop for everyone: `stopRequestedAt` set (the first request's time is kept), unless the
/// session is completed.
pub fn request_stop(conn: &mut DbConnection, id: &SessionId, now: NaiveDateTime) -> Transition {
    diesel::update(
        sessions::table
            .filter(sessions::id.eq(id.as_str()))
            .filter(sessions::status.eq_any(NOT_COMPLETED))
            .filter(sessions::stop_requested_at.is_null()),
    )
    .set(sessions::stop_requested_at.eq(Some(now)))
    .execute(conn)?;
    Ok(match find(conn, id)? {
        None => Err(Refusal::NotFound),
        Some(row) if row.status == SessionStatus::Completed => {
            Err(Refusal::WrongStatus(row.status))
        }
        Some(row) => Ok(row),
    })
}

/// Deletes a session that is not active, with its tracks, segments and invites.
pub fn delete(conn: &mut DbConnection, id: &SessionId) -> QueryResult<Result<(), Refusal>> {
    // A read-then-write transaction no other writer of the session can interleave with.
    super::write_transaction(conn, id.as_str(), |conn| {
        let Some(row) = find(conn, id)? else {
            return Ok(Err(Refusal::NotFound));
        };
        if row.status == SessionStatus::Active {
            return Ok(Err(Refusal::WrongStatus(SessionStatus::Active)));
        }
        let key = id.as_str();
        diesel::delete(invites::table.filter(invites::session_id.eq(key))).execute(conn)?;
        diesel::delete(segments::table.filter(segments::session_id.eq(key))).execute(conn)?;
        diesel::delete(marks::table.filter(marks::session_id.eq(key))).execute(conn)?;
        diesel::delete(tracks::table.filter(tracks::session_id.eq(key))).execute(conn)?;
        let deleted = diesel::delete(
            sessions::table
                .filter(sessions::id.eq(key))
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
pub fn time_out_silent(
    conn: &mut DbConnection,
    cutoff: NaiveDateTime,
) -> QueryResult<Vec<SessionId>> {
    let candidates: Vec<String> = sessions::table
        .filter(sessions::status.eq(ACTIVE))
        .filter(sessions::last_heartbeat.lt(cutoff))
        .order(sessions::id.asc())
        .select(sessions::id)
        .load(conn)?;
    if candidates.is_empty() {
        return Ok(Vec::new());
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
                // The id was just matched by its stored text; one that is not a session id
                // stops the sweep (and is logged) rather than being skipped.
                let id = SessionId::try_from(id).map_err(|error| {
                    diesel::result::Error::DeserializationError(Box::new(error))
                })?;
                timed_out.push(id);
            }
        }
        Ok(timed_out)
    })
}

/// Up to `limit` completed sessions completed before `cutoff`, the oldest first: what
/// `--retention` deletes next. Only `completed` rows ever match.
pub fn completed_before(
    conn: &mut DbConnection,
    cutoff: NaiveDateTime,
    limit: i64,
) -> QueryResult<Vec<SessionId>> {
    let ids: Vec<String> = sessions::table
        .filter(sessions::status.eq(COMPLETED))
        .filter(sessions::completed_at.lt(cutoff))
        .order(sessions::completed_at.asc())
        .limit(limit)
        .select(sessions::id)
        .load(conn)?;
    ids.into_iter()
        .map(|id| {
            SessionId::try_from(id)
                .map_err(|error| diesel::result::Error::DeserializationError(Box::new(error)))
        })
        .collect()
}

/// After a conditional UPDATE: the row if it happened, otherwise why not.
fn outcome(conn: &mut DbConnection, id: &SessionId, updated: usize) -> Transition {
    let row = find(conn, id)?;
    Ok(match row {
        None => Err(Refusal::NotFound),
        Some(row) if updated == 1 => Ok(row),
        Some(row) => Err(Refusal::WrongStatus(row.status)),
    })
}
