//! HTTP routes, one module per area: the REST API, track downloads, the socket, the pages.
//! Each area registers its own resources; what they all decode lives in `extract` and the page
//! pieces they share in `markup`, so no area imports another's helpers.

pub mod api;
pub mod archive;
pub mod assets;
pub mod download;
pub mod extract;
pub mod invites;
pub mod join;
pub mod marks;
pub mod markup;
pub mod metrics;
pub mod pages;
pub mod ws;

use actix_web::web::ServiceConfig;

pub fn configure(cfg: &mut ServiceConfig) {
    api::configure(cfg);
    archive::configure(cfg);
    download::configure(cfg);
    marks::configure(cfg);
    ws::configure(cfg);
    invites::configure(cfg);
    join::configure(cfg);
    pages::configure(cfg);
    assets::configure(cfg);
    metrics::configure(cfg);
}
