//! The REST API of the contract. Handlers decode and validate, call `lifecycle`, and answer;
//! they never touch a file (the data directory is `audio::TrackStore`'s).

use actix_web::web::{self, Bytes, ServiceConfig};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::extract::{optional_json, parse_plain_number, session_id};
use crate::db;
use crate::domain::{SessionId, SessionStatus};
use crate::error::ApiError;
use crate::lifecycle::{self, MAX_TITLE_CHARS};
use crate::state::AppState;
use crate::sweeper;

const DEFAULT_PAGE: u64 = 100;
const MAX_PAGE: u64 = 1000;

/// One `web::resource` per path, each with its methods.
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(web::resource("/healthz").get(healthz))
        .service(
            web::resource("/api/sessions")
                .post(create_session)
                .get(list_sessions),
        )
        .service(web::resource("/api/session/check-timeouts").post(check_timeouts))
        .service(
            web::resource("/api/session/{id}")
                .get(get_session)
                .delete(delete_session),
        )
        .service(web::resource("/api/session/{id}/keepalive").post(keepalive))
        .service(web::resource("/api/session/{id}/resume").post(resume))
        .service(web::resource("/api/session/{id}/finish").post(finish));
}

async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    match state.db(db::ping).await {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "ok"})),
        Err(error) => HttpResponse::ServiceUnavailable().json(json!({
            "status": "unavailable",
            "error": error.code(),
            "message": error.to_string(),
        })),
    }
}

#[derive(Deserialize)]
struct CreateBody {
    title: Option<String>,
}

async fn create_session(state: web::Data<AppState>, body: Bytes) -> Result<HttpResponse, ApiError> {
    let body: Option<CreateBody> = optional_json(&body)?;
    let title = body.and_then(|body| body.title);
    if let Some(title) = &title {
        if title.chars().count() > MAX_TITLE_CHARS {
            return Err(ApiError::InvalidTitle(format!(
                "a title holds at most {MAX_TITLE_CHARS} characters"
            )));
        }
    }
    let row = lifecycle::create(&state, title).await?;
    Ok(HttpResponse::Created().json(lifecycle::view(&state, &row)))
}

async fn list_sessions(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = ListQuery::parse(req.query_string())?;
    let (rows, total) = state
        .db(move |conn| {
            db::sessions::list(conn, query.status, query.limit as i64, query.offset as i64)
        })
        .await?;
    let sessions: Vec<_> = rows
        .iter()
        .map(|row| lifecycle::view(&state, row))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"sessions": sessions, "total": total})))
}

struct ListQuery {
    status: Option<SessionStatus>,
    limit: u64,
    offset: u64,
}

impl ListQuery {
    fn parse(query: &str) -> Result<ListQuery, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|_| ApiError::InvalidPage("the query string is not valid".into()))?;
        let mut parsed = ListQuery {
            status: None,
            limit: DEFAULT_PAGE,
            offset: 0,
        };
        for (name, value) in pairs {
            match name.as_str() {
                "status" => {
                    parsed.status = Some(value.parse().map_err(|_| {
                        ApiError::InvalidStatus(
                            "status is one of active, incomplete, completed".into(),
                        )
                    })?)
                }
                "limit" => parsed.limit = page_number("limit", &value, MAX_PAGE)?,
                "offset" => parsed.offset = page_number("offset", &value, i64::MAX as u64)?,
                _ => {}
            }
        }
        Ok(parsed)
    }
}

fn page_number(name: &str, value: &str, max: u64) -> Result<u64, ApiError> {
    parse_plain_number(value)
        .filter(|n| *n <= max)
        .ok_or_else(|| ApiError::InvalidPage(format!("{name} is a whole number from 0 to {max}")))
}

async fn get_session(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = session_id(&path)?;
    Ok(HttpResponse::Ok().json(lifecycle::detail(&state, &id).await?))
}

async fn keepalive(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = session_id(&path)?;
    let row = lifecycle::keepalive(&state, &id).await?;
    Ok(HttpResponse::Ok().json(lifecycle::view(&state, &row)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CheckTimeoutsBody {
    timeout_ms: Option<serde_json::Value>,
}

async fn check_timeouts(state: web::Data<AppState>, body: Bytes) -> Result<HttpResponse, ApiError> {
    let body: Option<CheckTimeoutsBody> = optional_json(&body)?;
    let timeout = match body.and_then(|body| body.timeout_ms) {
        None | Some(serde_json::Value::Null) => state.config.session_timeout,
        Some(value) => {
            let millis = value.as_u64().ok_or_else(|| {
                ApiError::InvalidTimeout(
                    "timeoutMs is a whole number of milliseconds, 0 or more".into(),
                )
            })?;
            std::time::Duration::from_millis(millis)
        }
    };
    let ids = sweeper::sweep(&state, timeout).await?;
    let ids: Vec<&str> = ids.iter().map(SessionId::as_str).collect();
    Ok(HttpResponse::Ok().json(json!({"timedOut": ids.len(), "sessionIds": ids})))
}

async fn resume(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = session_id(&path)?;
    let row = lifecycle::resume(&state, &id).await?;
    Ok(HttpResponse::Ok().json(lifecycle::view(&state, &row)))
}

async fn finish(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = session_id(&path)?;
    let row = lifecycle::finish(&state, &id).await?;
    Ok(HttpResponse::Ok().json(lifecycle::view(&state, &row)))
}

async fn delete_session(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = session_id(&path)?;
    lifecycle::delete(&state, &id).await?;
    Ok(HttpResponse::NoContent().finish())
}
