//! Queries on `invites`: a guest's credential for one track of one session, found by the hash
//! of its token. Invites end with their session (deleted with it; a completed session's are
//! refused where they are checked).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::models::{InviteRow, SessionRow};
use super::schema::{invites, sessions};
use super::DbConnection;
use crate::domain::InviteId;
use crate::domain::{SessionId, SessionStatus, TrackName};

/// Why an invite was not created.
#[derive(Debug, PartialEq, Eq)]
pub enum CreateRefusal {
    SessionNotFound,
    SessionCompleted,
    /// An invite not revoked holds that track.
    TrackTaken,
}

/// Creates an invite, unless its session is gone or completed or its track is held by another
/// invite not revoked; one write transaction, so two racing invites cannot both win.
pub fn create(conn: &mut DbConnection, row: &InviteRow) -> QueryResult<Result<(), CreateRefusal>> {
    super::write_transaction(conn, row.session_id.as_str(), |conn| {
        let Some(session) = super::sessions::find(conn, &row.session_id)? else {
            return Ok(Err(CreateRefusal::SessionNotFound));
        };
        if session.status == SessionStatus::Completed {
            return Ok(Err(CreateRefusal::SessionCompleted));
        }
        if holder_of_track(conn, &row.session_id, &row.track)?.is_some() {
            return Ok(Err(CreateRefusal::TrackTaken));
        }
        diesel::insert_into(invites::table)
            .values((
                invites::id.eq(row.id.as_str()),
                invites::session_id.eq(row.session_id.as_str()),
                invites::track.eq(row.track.as_str()),
                invites::name.eq(&row.name),
                invites::token_hash.eq(&row.token_hash),
                invites::created_at.eq(row.created_at),
                invites::revoked_at.eq(row.revoked_at),
            ))
            .execute(conn)?;
        Ok(Ok(()))
    })
}

/// The invite not revoked that holds a track, if any.
pub fn holder_of_track(
    conn: &mut DbConnection,
    session: &SessionId,
    track: &TrackName,
) -> QueryResult<Option<InviteRow>> {
    invites::table
        .filter(invites::session_id.eq(session.as_str()))
        .filter(invites::track.eq(track.as_str()))
        .filter(invites::revoked_at.is_null())
        .first(conn)
        .optional()
}

/// A session's invites, oldest first.
pub fn for_session(conn: &mut DbConnection, session: &SessionId) -> QueryResult<Vec<InviteRow>> {
    invites::table
        .filter(invites::session_id.eq(session.as_str()))
        .order((invites::created_at.asc(), invites::id.asc()))
        .load(conn)
}

/// The invite whose token hashes to `token_hash`, with its session.
pub fn find_by_token_hash(
    conn: &mut DbConnection,
    token_hash: &str,
) -> QueryResult<Option<(InviteRow, SessionRow)>> {
    invites::table
        .inner_join(sessions::table)
        .filter(invites::token_hash.eq(token_hash))
        .select((invites::all_columns, sessions::all_columns))
        .first(conn)
        .optional()
}

/// Revokes an invite of a session: `Some` with the invite (revoked now or before), `None` if
/// the session has no invite with that id.
pub fn revoke(
    conn: &mut DbConnection,
    session: &SessionId,
    id: &InviteId,
    now: NaiveDateTime,
) -> QueryResult<Option<InviteRow>> {
    let of_session = || {
        invites::table
            .filter(invites::id.eq(id.as_str()))
            .filter(invites::session_id.eq(session.as_str()))
    };
    diesel::update(of_session().filter(invites::revoked_at.is_null()))
        .set(invites::revoked_at.eq(Some(now)))
        .execute(conn)?;
    of_session().first(conn).optional()
}
