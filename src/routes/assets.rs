//! The recorder's scripts and styles, embedded in the binary at build time: one file to deploy,
//! whatever directory the server starts in. Served at `/static/` with a content hash as ETag.

use actix_web::http::header::{self, EntityTag, IfNoneMatch};
use actix_web::web::{self, ServiceConfig};
use actix_web::{HttpRequest, HttpResponse};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "static/"]
struct Static;

/// `no-cache` revalidates (ETag): an upgraded server never runs a stale recorder, and an
/// unchanged file costs a 304.
const CACHE_CONTROL: &str = "no-cache";

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(
        web::resource("/static/{path:.*}")
            .route(web::get().to(asset))
            .route(web::head().to(asset)),
    );
}

/// The names of every embedded asset, for the pages' tests and tools.
pub fn names() -> impl Iterator<Item = String> {
    Static::iter().map(|name| name.into_owned())
}

async fn asset(request: HttpRequest, path: web::Path<String>) -> HttpResponse {
    let Some(file) = Static::get(&path) else {
        return HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("not found");
    };
    let hash = file.metadata.sha256_hash();
    let tag = EntityTag::new_strong(hex(&hash[..16]));
    let matches = match request.headers().get(header::IF_NONE_MATCH) {
        None => false,
        Some(_) => match header::Header::parse(&request) {
            Ok(IfNoneMatch::Any) => true,
            Ok(IfNoneMatch::Items(tags)) => tags.iter().any(|t| t.weak_eq(&tag)),
            Err(_) => false,
        },
    };
    let mut response = if matches {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header(header::ETag(tag))
        .insert_header((header::CACHE_CONTROL, CACHE_CONTROL));
    if matches {
        return response.finish();
    }
    response
        .content_type(content_type(file.metadata.mimetype()))
        .body(file.data.into_owned())
}

/// Text types carry their charset, so a script is never read in the wrong encoding.
fn content_type(mime: &str) -> String {
    let text = mime.starts_with("text/") || mime == "application/javascript";
    if text && !mime.contains("charset") {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
