//! Who may talk to the server: the `--auth-token` check on every API request, page and socket
//! (Bearer header or the login cookie), the login page, and the WebSocket origin check against
//! cross-site socket hijacking.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::web::{self, ServiceConfig};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use maud::{html, DOCTYPE};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::error::ApiError;
use crate::state::AppState;

/// The cookie `POST /login` sets; it carries the token itself, readable by no script.
pub const COOKIE: &str = "safetake_token";

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.route("/login", web::get().to(login_page))
        .route("/login", web::post().to(login));
}

/// Lets a request through if no token is configured, if it is for something always open, or
/// if it carries the token; otherwise `401` for the API and sockets, `303 /login` for pages.
pub async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let expected = req
        .app_data::<web::Data<AppState>>()
        .and_then(|state| state.config.auth_token.clone());
    let allowed = match &expected {
        None => true,
        Some(token) => {
            is_open_path(req.path())
                || presented_token(req.request()).is_some_and(|t| tokens_match(&t, token))
        }
    };
    if allowed {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let response = if req.path().starts_with("/api/") {
        ApiError::Unauthorized(
            "a valid token is required (Authorization: Bearer, or log in)".into(),
        )
        .error_response()
    } else {
        HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/login"))
            .finish()
    };
    Ok(req.into_response(response).map_into_right_body())
}

fn is_open_path(path: &str) -> bool {
    path == "/healthz" || path == "/login" || path.starts_with("/static/")
}

fn presented_token(req: &HttpRequest) -> Option<String> {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|token| token.trim().to_string());
    bearer.or_else(|| req.cookie(COOKIE).map(|cookie| cookie.value().to_string()))
}

/// Constant time in the token's content, so a timing attack learns nothing of it.
fn tokens_match(presented: &str, expected: &str) -> bool {
    presented.as_bytes().ct_eq(expected.as_bytes()).into()
}

async fn login_page() -> HttpResponse {
    login_response(HttpResponse::Ok(), None)
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(state: web::Data<AppState>, form: Option<web::Form<LoginForm>>) -> HttpResponse {
    let Some(expected) = &state.config.auth_token else {
        return HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/"))
            .finish();
    };
    match form {
        Some(form) if tokens_match(&form.token, expected) => {
            let cookie = Cookie::build(COOKIE, form.token.clone())
                .path("/")
                .http_only(true)
                .same_site(SameSite::Strict)
                .finish();
            HttpResponse::SeeOther()
                .insert_header((header::LOCATION, "/"))
                .cookie(cookie)
                .finish()
        }
        _ => login_response(
            HttpResponse::Unauthorized(),
            Some("That token is not right."),
        ),
    }
}

fn login_response(
    mut builder: actix_web::HttpResponseBuilder,
    error: Option<&str>,
) -> HttpResponse {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Log in · safetake" }
                link rel="stylesheet" href="/static/style.css";
            }
            body {
                main class="login" {
                    h1 { "safetake" }
                    form method="post" action="/login" {
                        label for="token" { "Access token" }
                        input id="token" name="token" type="password" autocomplete="current-password" required autofocus;
                        @if let Some(error) = error { p class="error" role="alert" { (error) } }
                        button type="submit" data-testid="login" { "Log in" }
                    }
                }
            }
        }
    };
    builder
        .content_type("text/html; charset=utf-8")
        .body(page.into_string())
}

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
