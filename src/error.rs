//! The one API error type: each variant is a contract error code with its HTTP status.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidBody(String),
    #[error("{0}")]
    InvalidTitle(String),
    #[error("{0}")]
    InvalidStatus(String),
    #[error("{0}")]
    InvalidPage(String),
    #[error("{0}")]
    InvalidTimeout(String),
    #[error("{0}")]
    NotActive(String),
    #[error("{0}")]
    InvalidTransition(String),
    #[error("{0}")]
    SessionActive(String),
    #[error("{0}")]
    SessionCompleted(String),
    #[error("{0}")]
    InvalidTrack(String),
    #[error("{0}")]
    InvalidFormat(String),
    #[error("{0}")]
    FormatMismatch(String),
    #[error("{0}")]
    TooManyTracks(String),
    #[error("{0}")]
    TrackTaken(String),
    /// An invite's token asked for something beyond its one track of its one session.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    ForbiddenOrigin(String),
    #[error("{0}")]
    ForbiddenHost(String),
    #[error("{0}")]
    TooManyConnections(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    TooManyAttempts(String),
    #[error("{0}")]
    RangeNotSatisfiable(String),
    /// The cause is for the log (written where the error is made); the client reads only that
    /// the database is unavailable, never the driver's text.
    #[error("the database is unavailable")]
    Database(String),
    /// A stored value that does not parse (a status, a format, an id): the operation stops
    /// rather than guess. The cause names the row, for the log.
    #[error("a stored record cannot be read; the server log names it")]
    StoredData(String),
    #[error("storage failed: {0}")]
    Storage(String),
    #[error("{0}")]
    InvalidArchive(String),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::NotFound(_) => "not_found",
            ApiError::InvalidBody(_) => "invalid_body",
            ApiError::InvalidTitle(_) => "invalid_title",
            ApiError::InvalidStatus(_) => "invalid_status",
            ApiError::InvalidPage(_) => "invalid_page",
            ApiError::InvalidTimeout(_) => "invalid_timeout",
            ApiError::NotActive(_) => "not_active",
            ApiError::InvalidTransition(_) => "invalid_transition",
            ApiError::SessionActive(_) => "session_active",
            ApiError::SessionCompleted(_) => "session_completed",
            ApiError::InvalidTrack(_) => "invalid_track",
            ApiError::InvalidFormat(_) => "invalid_format",
            ApiError::FormatMismatch(_) => "format_mismatch",
            ApiError::TooManyTracks(_) => "too_many_tracks",
            ApiError::TrackTaken(_) => "track_taken",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::ForbiddenOrigin(_) => "forbidden_origin",
            ApiError::ForbiddenHost(_) => "forbidden_host",
            ApiError::TooManyConnections(_) => "too_many_connections",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::TooManyAttempts(_) => "too_many_attempts",
            ApiError::RangeNotSatisfiable(_) => "range_not_satisfiable",
            ApiError::Database(_) => "database_unavailable",
            ApiError::StoredData(_) => "stored_data_invalid",
            ApiError::Storage(_) => "storage_failed",
            ApiError::InvalidArchive(_) => "invalid_archive",
        }
    }

    pub fn session_not_found() -> ApiError {
        ApiError::NotFound("no session with that id".into())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::InvalidBody(_)
            | ApiError::InvalidTitle(_)
            | ApiError::InvalidStatus(_)
            | ApiError::InvalidPage(_)
            | ApiError::InvalidTimeout(_)
            | ApiError::NotActive(_)
            | ApiError::InvalidTrack(_)
            | ApiError::InvalidFormat(_)
            | ApiError::InvalidArchive(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidTransition(_)
            | ApiError::SessionActive(_)
            | ApiError::SessionCompleted(_)
            | ApiError::FormatMismatch(_)
            | ApiError::TooManyTracks(_)
            | ApiError::TrackTaken(_) => StatusCode::CONFLICT,
            ApiError::Forbidden(_) | ApiError::ForbiddenOrigin(_) | ApiError::ForbiddenHost(_) => {
                StatusCode::FORBIDDEN
            }
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::TooManyAttempts(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::TooManyConnections(_) | ApiError::Database(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Storage(_) | ApiError::StoredData(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(json!({
            "error": self.code(),
            "message": self.to_string(),
        }))
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(error: diesel::result::Error) -> Self {
        if let diesel::result::Error::DeserializationError(cause) = &error {
            tracing::error!(error = %cause, "a stored value does not parse; the operation stops");
            return ApiError::StoredData(cause.to_string());
        }
        tracing::error!(%error, "database query failed");
        ApiError::Database(error.to_string())
    }
}

impl From<diesel::r2d2::PoolError> for ApiError {
    fn from(error: diesel::r2d2::PoolError) -> Self {
        tracing::error!(%error, "no database connection");
        ApiError::Database(error.to_string())
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(error: crate::db::DbError) -> Self {
        match error {
            crate::db::DbError::Pool(error) => error.into(),
            crate::db::DbError::Query(error) => error.into(),
            error @ (crate::db::DbError::Gone | crate::db::DbError::Batch(_)) => {
                tracing::error!(%error, "database write failed");
                ApiError::Database(error.to_string())
            }
        }
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(_: actix_web::error::BlockingError) -> Self {
        ApiError::Database("the blocking thread pool is gone".into())
    }
}
