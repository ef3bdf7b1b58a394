//! Rows as typed values. Every backend stores plain types (TEXT ids, statuses and formats, a
//! UTC `TIMESTAMP`); each row is checked as it is read, so a stored value that does not parse is
//! a query error naming the row, never a default.

use chrono::NaiveDateTime;
use diesel::backend::Backend;
use diesel::deserialize::{self, FromStaticSqlRow};
use diesel::Queryable;

use crate::audio::{AudioFormat, SampleFormat};
use crate::domain::InviteId;
use crate::domain::{InvalidValue, SessionId, SessionStatus, TrackName};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub id: SessionId,
    pub title: String,
    pub status: SessionStatus,
    pub created_at: NaiveDateTime,
    pub last_heartbeat: NaiveDateTime,
    pub completed_at: Option<NaiveDateTime>,
    /// A stop for everyone is pending since then.
    pub stop_requested_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackRow {
    pub session_id: SessionId,
    pub name: TrackName,
    pub format: AudioFormat,
    pub data_bytes: u64,
    pub created_at: NaiveDateTime,
    /// Its client said it has sent everything (since the last socket attached).
    pub done: bool,
}

/// An invite: one guest's credential for one track of one session. The token is never stored,
/// only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteRow {
    pub id: InviteId,
    pub session_id: SessionId,
    pub track: TrackName,
    pub name: String,
    pub token_hash: String,
    pub created_at: NaiveDateTime,
    pub revoked_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable)]
pub struct SegmentRow {
    #[diesel(deserialize_as = String)]
    pub session_id: SessionId,
    #[diesel(deserialize_as = String)]
    pub track_name: TrackName,
    pub seq: i32,
    #[diesel(deserialize_as = i64)]
    pub start_offset: u64,
    pub started_at: NaiveDateTime,
}

/// A stored row that does not parse: which row, and which value.
#[derive(Debug, thiserror::Error)]
#[error("stored {table} row {key}: {error}")]
pub struct BadRow {
    pub table: &'static str,
    pub key: String,
    pub error: InvalidValue,
}

type SessionColumns = (
    String,
    String,
    String,
    NaiveDateTime,
    NaiveDateTime,
    Option<NaiveDateTime>,
    Option<NaiveDateTime>,
);

impl<DB, ST> Queryable<ST, DB> for SessionRow
where
    DB: Backend,
    SessionColumns: FromStaticSqlRow<ST, DB>,
{
    type Row = SessionColumns;

    fn build(row: SessionColumns) -> deserialize::Result<SessionRow> {
        let (id, title, status, created_at, last_heartbeat, completed_at, stop_requested_at) = row;
        let bad = |error| BadRow {
            table: "sessions",
            key: id.clone(),
            error,
        };
        Ok(SessionRow {
            id: SessionId::try_from(id.clone()).map_err(bad)?,
            title,
            status: status.parse().map_err(bad)?,
            created_at,
            last_heartbeat,
            completed_at,
            stop_requested_at,
        })
    }
}

/// The columns of `tracks`, in order, as stored.
pub type TrackColumns = (String, String, i32, i32, String, i64, NaiveDateTime, bool);

impl<DB, ST> Queryable<ST, DB> for TrackRow
where
    DB: Backend,
    TrackColumns: FromStaticSqlRow<ST, DB>,
{
    type Row = TrackColumns;

    fn build(row: TrackColumns) -> deserialize::Result<TrackRow> {
        Ok(TrackRow::from_stored(row)?)
    }
}

impl TrackRow {
    /// The checked conversion from the stored columns.
    pub fn from_stored(row: TrackColumns) -> Result<TrackRow, BadRow> {
        let (session_id, name, sample_rate, channels, format, data_bytes, created_at, done) = row;
        let bad = |error| BadRow {
            table: "tracks",
            key: format!("{session_id}/{name}"),
            error,
        };
        let sample: SampleFormat = format.parse().map_err(bad)?;
        let format = u32::try_from(sample_rate)
            .ok()
            .zip(u16::try_from(channels).ok())
            .and_then(|(rate, channels)| AudioFormat::new(rate, channels, sample))
            .ok_or_else(|| {
                bad(InvalidValue::new(
                    "sample rate and channel count",
                    format!("{sample_rate} Hz, {channels} channel(s)"),
                ))
            })?;
        let data_bytes = u64::try_from(data_bytes)
            .map_err(|_| bad(InvalidValue::new("data size", data_bytes.to_string())))?;
        Ok(TrackRow {
            session_id: SessionId::try_from(session_id.clone()).map_err(bad)?,
            name: TrackName::try_from(name.clone()).map_err(bad)?,
            format,
            data_bytes,
            created_at,
            done,
        })
    }
}

type InviteColumns = (
    String,
    String,
    String,
    String,
    String,
    NaiveDateTime,
    Option<NaiveDateTime>,
);

impl<DB, ST> Queryable<ST, DB> for InviteRow
where
    DB: Backend,
    InviteColumns: FromStaticSqlRow<ST, DB>,
{
    type Row = InviteColumns;

    fn build(row: InviteColumns) -> deserialize::Result<InviteRow> {
        let (id, session_id, track, name, token_hash, created_at, revoked_at) = row;
        let bad = |error| BadRow {
            table: "invites",
            key: id.clone(),
            error,
        };
        Ok(InviteRow {
            id: InviteId::try_from(id.clone()).map_err(bad)?,
            session_id: SessionId::try_from(session_id).map_err(bad)?,
            track: TrackName::try_from(track).map_err(bad)?,
            name,
            token_hash,
            created_at,
            revoked_at,
        })
    }
}
