//! The contract's words as types: a session id, a track name and a status only exist valid,
//! whether they come from a client or back from the database.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};

/// A session id: a lower-case hyphenated UUID, exactly as the server hands them out.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    pub fn new_random() -> SessionId {
        SessionId(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    /// Any other spelling (upper case, braces, no hyphens) is not a session id.
    pub fn parse(text: &str) -> Option<SessionId> {
        let uuid = uuid::Uuid::try_parse(text).ok()?;
        let canonical = uuid.hyphenated().to_string();
        (canonical == text).then_some(SessionId(canonical))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SessionId {
    type Error = InvalidValue;

    /// The checked way in from a stored row.
    fn try_from(text: String) -> Result<SessionId, InvalidValue> {
        SessionId::parse(&text).ok_or(InvalidValue::new("session id", text))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A track name: `^[A-Za-z0-9_-]{1,64}$`, so it is always a safe file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrackName(String);

impl TrackName {
    pub fn parse(text: &str) -> Option<TrackName> {
        let valid = (1..=64).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        valid.then(|| TrackName(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TrackName {
    type Error = InvalidValue;

    fn try_from(text: String) -> Result<TrackName, InvalidValue> {
        TrackName::parse(&text).ok_or(InvalidValue::new("track name", text))
    }
}

impl fmt::Display for TrackName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    Active,
    Incomplete,
    Completed,
}

impl SessionStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Active => "active",
            SessionStatus::Incomplete => "incomplete",
            SessionStatus::Completed => "completed",
        }
    }
}

impl FromStr for SessionStatus {
    type Err = InvalidValue;

    fn from_str(text: &str) -> Result<Self, InvalidValue> {
        match text {
            "active" => Ok(SessionStatus::Active),
            "incomplete" => Ok(SessionStatus::Incomplete),
            "completed" => Ok(SessionStatus::Completed),
            _ => Err(InvalidValue::new("session status", text)),
        }
    }
}

impl TryFrom<String> for SessionStatus {
    type Error = InvalidValue;

    fn try_from(text: String) -> Result<Self, InvalidValue> {
        text.parse()
    }
}

impl serde::Serialize for SessionStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value that is not one of the contract's: from a client it is refused, and read back from
/// the database it stops the operation (it never becomes a default).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a valid {what}")]
pub struct InvalidValue {
    pub what: &'static str,
    pub text: String,
}

impl InvalidValue {
    pub fn new(what: &'static str, text: impl Into<String>) -> InvalidValue {
        InvalidValue {
            what,
            text: text.into(),
        }
    }
}

/// Now, in UTC, at the microsecond precision every database keeps.
pub fn now() -> NaiveDateTime {
    Utc::now().naive_utc().trunc_subsecs(6)
}

pub fn from_millis(millis: i64) -> NaiveDateTime {
    DateTime::from_timestamp_millis(millis)
        .unwrap_or_default()
        .naive_utc()
}

pub fn to_millis(at: NaiveDateTime) -> i64 {
    at.and_utc().timestamp_millis()
}

/// Reads a timestamp as the contract writes it (RFC 3339; any offset becomes UTC).
pub fn parse_timestamp(text: &str) -> Option<NaiveDateTime> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|at| at.naive_utc())
}

/// RFC 3339, UTC, milliseconds: `2026-11-25T16:37:35.123Z`.
pub fn format_timestamp(at: NaiveDateTime) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// An invite's id: a lower-case hyphenated UUID, as the server hands them out.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InviteId(String);

impl InviteId {
    pub fn new_random() -> InviteId {
        InviteId(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    pub fn parse(text: &str) -> Option<InviteId> {
        let canonical = uuid::Uuid::try_parse(text).ok()?.hyphenated().to_string();
        (canonical == text).then_some(InviteId(canonical))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for InviteId {
    type Error = InvalidValue;

    fn try_from(text: String) -> Result<InviteId, InvalidValue> {
        InviteId::parse(&text).ok_or(InvalidValue::new("invite id", text))
    }
}

impl fmt::Display for InviteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_uuids_are_session_ids() {
        let id = SessionId::new_random();
        assert!(SessionId::parse(id.as_str()).is_some());
        assert!(SessionId::parse(&id.as_str().to_uppercase()).is_none());
        assert!(SessionId::parse(&id.as_str().replace('-', "")).is_none());
        assert!(SessionId::parse("../../etc/passwd").is_none());
    }

    #[test]
    fn track_names_are_safe_file_names() {
        assert!(TrackName::parse("mic").is_some());
        assert!(TrackName::parse("guest_2-b").is_some());
        assert!(TrackName::parse("").is_none());
        assert!(TrackName::parse("../mic").is_none());
        assert!(TrackName::parse("mïc").is_none());
        assert!(TrackName::parse(&"a".repeat(65)).is_none());
    }

    #[test]
    fn timestamps_have_milliseconds_and_z() {
        let at = from_millis(1_795_000_000_123);
        assert_eq!(format_timestamp(at), "2026-11-18T11:06:40.123Z");
    }
}
