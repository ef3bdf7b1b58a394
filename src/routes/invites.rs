//! Guests' REST API: a session's invites (create, list, revoke) and the stop for everyone.

use actix_web::web::{self, Bytes, ServiceConfig};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::extract::{optional_json, session_id};
use crate::domain::TrackName;
use crate::error::ApiError;
use crate::guests::{self, InviteId, MAX_NAME_CHARS};
use crate::lifecycle;
use crate::state::AppState;
use crate::views;

/// One `web::resource` per path, each with its methods.
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(
        web::resource("/api/session/{id}/invites")
            .post(create_invite)
            .get(list_invites),
    )
    .service(web::resource("/api/session/{id}/invites/{invite}").delete(revoke_invite))
    .service(web::resource("/api/session/{id}/stop").post(stop));
}

#[derive(Deserialize)]
struct InviteBody {
    /// Checked as a track name, so anything that is not one is `invalid_track`.
    track: Option<serde_json::Value>,
    name: Option<String>,
}

async fn create_invite(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = session_id(&path)?;
    let body: InviteBody = optional_json(&body)?.ok_or_else(|| {
        ApiError::InvalidBody("the body is {\"track\": ..., \"name\": ...}".into())
    })?;
    let track = body
        .track
        .as_ref()
        .and_then(serde_json::Value::as_str)
        .and_then(TrackName::parse)
        .ok_or_else(|| {
            ApiError::InvalidTrack("track is 1 to 64 of A-Z, a-z, 0-9, _ and -".into())
        })?;
    if let Some(name) = &body.name {
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(ApiError::InvalidBody(format!(
                "a name holds at most {MAX_NAME_CHARS} characters"
            )));
        }
    }
    let created = guests::create_invite(&state, &id, track, body.name).await?;
    let info = req.connection_info();
    let url = format!("{}://{}/join/{}", info.scheme(), info.host(), created.token);
    let mut view = views::invite_view(&created.invite);
    view.token = Some(created.token);
    view.url = Some(url);
    Ok(HttpResponse::Created().json(view))
}

async fn list_invites(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = session_id(&path)?;
    let invites = guests::list_invites(&state, &id).await?;
    let invites: Vec<_> = invites.iter().map(views::invite_view).collect();
    Ok(HttpResponse::Ok().json(json!({"invites": invites})))
}

async fn revoke_invite(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, invite) = path.into_inner();
    let id = session_id(&id)?;
    let invite = InviteId::parse(&invite)
        .ok_or_else(|| ApiError::NotFound("no invite with that id in this session".into()))?;
    guests::revoke_invite(&state, &id, &invite).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn stop(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = session_id(&path)?;
    let row = guests::stop(&state, &id).await?;
    Ok(HttpResponse::Accepted().json(lifecycle::view(&state, &row)))
}
