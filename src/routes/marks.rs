//! `GET /api/session/{id}/tracks/{name}/marks`: where a track's bytes sit on the server's
//! clock, in offset order, the stored marks and those waiting for the next batch alike.

use actix_web::web::{self, ServiceConfig};
use actix_web::HttpResponse;
use serde::Serialize;

use super::extract::session_id;
use crate::db;
use crate::db::marks::Mark;
use crate::domain::TrackName;
use crate::error::ApiError;
use crate::ingest::registry::Registry;
use crate::state::AppState;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(web::resource("/api/session/{id}/tracks/{name}/marks").get(track_marks));
}

#[derive(Serialize)]
struct MarksView {
    marks: Vec<Mark>,
}

async fn track_marks(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, name) = path.into_inner();
    let id = session_id(&id)?;
    let track = TrackName::parse(&name)
        .ok_or_else(|| ApiError::NotFound("no track by that name".into()))?;
    // Pending first: a batch stored before the read below shows there, or here, or in both.
    let pending = state.registry.pending_marks(&id, &track);
    let (session, key) = (id.clone(), track.clone());
    let stored = state
        .db(move |conn| {
            if db::tracks::find(conn, &session, &key)?.is_none() {
                return Ok(None);
            }
            db::marks::for_track(conn, &session, &key).map(Some)
        })
        .await?
        .ok_or_else(|| ApiError::NotFound("no track by that name".into()))?;
    let marks = Registry::merge_marks(stored, pending);
    Ok(HttpResponse::Ok().json(MarksView { marks }))
}
