//! Who may talk to the server: the WebSocket origin check (against cross-site socket
//! hijacking). Token authentication joins it here.

use actix_web::http::header;
use actix_web::HttpRequest;

use crate::config::Config;
use crate::error::ApiError;

/// An `Origin` must name this server (same host and port as `Host`) or an allowed origin; a
/// request without one (a script, not a browser) passes.
pub fn check_origin(req: &HttpRequest, config: &Config) -> Result<(), ApiError> {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let forbidden = || ApiError::ForbiddenOrigin("this origin may not open sockets here".into());
    let origin = origin.to_str().map_err(|_| forbidden())?.trim();
    let origin_key = origin.trim_end_matches('/').to_ascii_lowercase();
    if config
        .allowed_origins
        .iter()
        .any(|allowed| allowed.trim().trim_end_matches('/').to_ascii_lowercase() == origin_key)
    {
        return Ok(());
    }
    let (scheme, authority) = origin_key.split_once("://").ok_or_else(forbidden)?;
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .ok_or_else(forbidden)?;
    if without_default_port(scheme, authority)
        == without_default_port(scheme, &host.to_ascii_lowercase())
    {
        Ok(())
    } else {
        Err(forbidden())
    }
}

fn without_default_port<'a>(scheme: &str, authority: &'a str) -> &'a str {
    let default = match scheme {
        "http" | "ws" => ":80",
        "https" | "wss" => ":443",
        _ => return authority,
    };
    authority.strip_suffix(default).unwrap_or(authority)
}
