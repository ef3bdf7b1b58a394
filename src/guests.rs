//! Guests: invites (a token per guest, kept only as a hash, for one track of one session), who
//! a request presenting one is, and the stop for everyone that waits until every track is done.

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::db::invites::CreateRefusal;
use crate::db::models::{InviteRow, SessionRow};
use crate::db::{self};
pub use crate::domain::InviteId;
use crate::domain::{self, SessionId, SessionStatus, TrackName};
use crate::error::ApiError;
use crate::lifecycle;
use crate::state::AppState;

/// A guest's name is at most this many characters (Unicode scalar values).
pub const MAX_NAME_CHARS: usize = 100;
/// Random bytes in a token: 256 bits, well past the contract's 128.
const TOKEN_BYTES: usize = 32;

/// A fresh token: random bytes from the operating system, as unpadded base64url (43 characters).
fn new_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|error| {
        tracing::error!(%error, "no randomness from the operating system");
        ApiError::Storage("no randomness for a token".into())
    })?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// What is stored of a token: its SHA-256, lower-case hex. The token has 256 random bits, so
/// a plain hash (no salt, no stretching) is enough: nothing about it can be guessed.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Who a request that presents a working invite is: that guest, limited to one track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guest {
    pub invite: InviteId,
    pub session: SessionId,
    pub track: TrackName,
    pub name: String,
}

/// What an invite token turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    /// A working invite, its session, and the session as stored.
    Valid(Guest, SessionRow),
    /// A real invite that no longer works: revoked, or its session completed.
    Ended(SessionRow),
    /// No invite has this token (the only kind that counts as a guess).
    Unknown,
}

/// Looks a token up by its hash, then compares the hashes in constant time. The lookup itself
/// goes through an index, so its timing can tell at most something of a hash, never of a token.
pub async fn check_token(state: &AppState, token: &str) -> Result<TokenCheck, ApiError> {
    let hash = token_hash(token);
    let key = hash.clone();
    let found = state
        .db(move |conn| db::invites::find_by_token_hash(conn, &key))
        .await?;
    let Some((invite, session)) = found else {
        return Ok(TokenCheck::Unknown);
    };
    if !bool::from(invite.token_hash.as_bytes().ct_eq(hash.as_bytes())) {
        return Ok(TokenCheck::Unknown);
    }
    if invite.revoked_at.is_some() || session.status == SessionStatus::Completed {
        return Ok(TokenCheck::Ended(session));
    }
    let guest = Guest {
        invite: invite.id,
        session: invite.session_id,
        track: invite.track,
        name: invite.name,
    };
    Ok(TokenCheck::Valid(guest, session))
}

/// A new invite, with the token the server will never see again.
pub struct Created {
    pub invite: InviteRow,
    pub token: String,
}

pub async fn create_invite(
    state: &AppState,
    session: &SessionId,
    track: TrackName,
    name: Option<String>,
) -> Result<Created, ApiError> {
    let token = new_token()?;
    let row = InviteRow {
        id: InviteId::new_random(),
        session_id: session.clone(),
        name: name.unwrap_or_else(|| track.to_string()),
        track,
        token_hash: token_hash(&token),
        created_at: domain::now(),
        revoked_at: None,
    };
    let stored = row.clone();
    let outcome = state
        .db(move |conn| db::invites::create(conn, &stored))
        .await?;
    outcome.map_err(|refusal| match refusal {
        CreateRefusal::SessionNotFound => ApiError::session_not_found(),
        CreateRefusal::SessionCompleted => {
            ApiError::SessionCompleted("the session is completed".into())
        }
        CreateRefusal::TrackTaken => ApiError::TrackTaken(format!(
            "an invite that is not revoked holds track {}",
            row.track
        )),
    })?;
    tracing::info!(session = %session, invite = %row.id, track = %row.track, "invite created");
    Ok(Created { invite: row, token })
}

pub async fn list_invites(
    state: &AppState,
    session: &SessionId,
) -> Result<Vec<InviteRow>, ApiError> {
    let key = session.clone();
    let found = state
        .db(move |conn| {
            let Some(_) = db::sessions::find(conn, &key)? else {
                return Ok(None);
            };
            db::invites::for_session(conn, &key).map(Some)
        })
        .await?;
    found.ok_or_else(ApiError::session_not_found)
}

/// Revokes an invite: its link stops working at once, and a socket opened with it is closed
/// with 4403.
pub async fn revoke_invite(
    state: &AppState,
    session: &SessionId,
    invite: &InviteId,
) -> Result<(), ApiError> {
    let (key, id) = (session.clone(), invite.clone());
    let now = domain::now();
    let revoked = state
        .db(move |conn| db::invites::revoke(conn, &key, &id, now))
        .await?
        .ok_or_else(|| ApiError::NotFound("no invite with that id in this session".into()))?;
    state
        .registry
        .close_invite(session, &revoked.track, invite)
        .await;
    // Several nodes (src/cluster.rs): the guest's socket may be on another one.
    if let Some(cluster) = &state.cluster {
        cluster.announce_revoked(session, &revoked.track, invite);
    }
    tracing::info!(session = %session, invite = %invite, track = %revoked.track, "invite revoked");
    // A revoked guest sends nothing more: a stop for everyone no longer waits for that track.
    let (key, track) = (session.clone(), revoked.track.clone());
    state
        .write(move |conn| db::tracks::set_done(conn, &key, &track, true))
        .await?;
    finish_if_all_done(state, session).await.map(drop)
}

/// Stop for everyone: the stop is recorded, every socket of the session hears `stop`, and the
/// session finishes by itself once every track is done (at once if all already are).
pub async fn stop(state: &AppState, session: &SessionId) -> Result<SessionRow, ApiError> {
    let key = session.clone();
    let now = domain::now();
    let outcome = state
        .write(move |conn| db::sessions::request_stop(conn, &key, now))
        .await?;
    let row = lifecycle::refused_as_error(outcome)?;
    tracing::info!(session = %session, "stop for everyone requested");
    state.registry.tell_stop(session);
    if let Some(cluster) = &state.cluster {
        cluster.announce_stop(session);
    }
    Ok(finish_if_all_done(state, session).await?.unwrap_or(row))
}

/// A track's client said it sent everything, and its writer synced, acked and stored the track
/// as done: the session finishes if a stop waits for nothing else.
pub async fn track_done(
    state: &AppState,
    session: &SessionId,
    track: &TrackName,
) -> Result<(), ApiError> {
    tracing::info!(session = %session, track = %track, "track done");
    finish_if_all_done(state, session).await.map(drop)
}

/// Finishes the session (as `finish` does) if a stop is pending and every track is done; the
/// finished session if it did. Two tracks done at once may both try: the second is refused,
/// quietly.
async fn finish_if_all_done(
    state: &AppState,
    session: &SessionId,
) -> Result<Option<SessionRow>, ApiError> {
    let key = session.clone();
    let complete = state
        .db(move |conn| db::tracks::stop_is_complete(conn, &key))
        .await?;
    if !complete {
        return Ok(None);
    }
    match lifecycle::finish(state, session).await {
        Ok(row) => {
            tracing::info!(session = %session, "every track done after the stop: session finished");
            Ok(Some(row))
        }
        Err(ApiError::InvalidTransition(_)) => Ok(None),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_url_safe_and_different() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }

    #[test]
    fn only_the_hash_is_kept_and_it_is_sha256_hex() {
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn only_canonical_uuids_are_invite_ids() {
        let id = InviteId::new_random();
        assert!(InviteId::parse(id.as_str()).is_some());
        assert!(InviteId::parse(&id.as_str().to_uppercase()).is_none());
        assert!(InviteId::parse("x").is_none());
    }
}
