//! HTTP routes, one module per area: the REST API, track downloads, the socket, the pages.

pub mod api;
pub mod download;
pub mod pages;
pub mod ws;

use actix_web::web::ServiceConfig;

pub fn configure(cfg: &mut ServiceConfig) {
    api::configure(cfg);
    ws::configure(cfg);
    pages::configure(cfg);
}
