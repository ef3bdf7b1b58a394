//! `GET /metrics`: Prometheus text, with the host's rights (the access check runs first).

use actix_web::web::{self, ServiceConfig};
use actix_web::HttpResponse;

use crate::db;
use crate::domain::SessionStatus;
use crate::error::ApiError;
use crate::state::AppState;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.route("/metrics", web::get().to(scrape));
}

async fn scrape(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let sessions = state
        .db(|conn| {
            [
                SessionStatus::Active,
                SessionStatus::Incomplete,
                SessionStatus::Completed,
            ]
            .into_iter()
            .map(|status| Ok((status, db::sessions::count_with_status(conn, status)?)))
            .collect::<diesel::QueryResult<Vec<_>>>()
        })
        .await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::metrics::render(&sessions)))
}
