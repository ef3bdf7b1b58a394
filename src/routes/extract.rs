//! What every route decodes the same way: session ids in paths, plain numbers in queries and
//! optional JSON bodies. Decoded once, at the edge; handlers get typed values.

use crate::domain::SessionId;
use crate::error::ApiError;

/// Any spelling but the canonical one is an unknown session.
pub fn session_id(text: &str) -> Result<SessionId, ApiError> {
    SessionId::parse(text).ok_or_else(ApiError::session_not_found)
}

/// A non-negative integer written as plain digits: no sign, no fraction, no overflow.
pub fn parse_plain_number(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// An optional JSON body: empty is `None`; anything else must be exactly the expected shape.
pub fn optional_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<Option<T>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body).map(Some).map_err(|error| {
        ApiError::InvalidBody(format!("the body is not the expected JSON: {error}"))
    })
}
