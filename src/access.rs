//! Who may talk to the server, checked in one middleware in a fixed order (see [`check_access`]):
//! the Host check against DNS rebinding, the Origin check against cross-site changes (and, from
//! the socket route, against cross-site socket hijacking), the lockout of an address that keeps
//! guessing, the `--auth-token` (Bearer header or the login cookie) and the invites' tokens
//! (Bearer header or the invite cookie), each limited to its guest's track. Also the login
//! page, and the security headers every page carries.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::web::{self, ServiceConfig};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::domain::SessionId;
use crate::error::ApiError;
use crate::guests::{self, Guest, TokenCheck};
use crate::state::AppState;

/// The cookie `POST /login` sets; it carries the token itself, readable by no script.
pub const COOKIE: &str = "safetake_token";
/// The cookie `GET /join/<token>` sets (see [`invite_cookie`]).
pub const INVITE_COOKIE: &str = "safetake_invite";

/// Failed authentications an address may make within [`ATTEMPT_WINDOW`] before it is locked out.
pub const MAX_FAILED_ATTEMPTS: usize = 10;
pub const ATTEMPT_WINDOW: Duration = Duration::from_secs(60);
/// Addresses whose failures are remembered at once; beyond it the stalest are forgotten, so a
/// flood from many addresses costs bounded memory (about 200 bytes each).
const MAX_TRACKED_ADDRESSES: usize = 10_000;

/// Everything comes from this server: no inline script or style, no other origin, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; media-src 'self'; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.route("/login", web::get().to(login_page))
        .route("/login", web::post().to(login));
}

/// An HTML page with the headers every page carries (the history, the recorder, the login).
pub fn html_page(mut builder: HttpResponseBuilder, markup: Markup) -> HttpResponse {
    builder
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(markup.into_string())
}

/// Every request but `/healthz` passes these, in this order; the first that refuses answers:
/// 1. without `--auth-token`, `Host` must be an IP literal, `localhost` or an `--allowed-host`
///    (`403 forbidden_host`): a rebound name reaches nothing;
/// 2. a request other than GET or HEAD with a foreign `Origin` is `403 forbidden_origin`
///    (socket upgrades, which are GETs, are checked by their route with the same rule);
/// 3. for what needs authentication (with `--auth-token`, all but `/static/` and the login
///    page, and including `POST /login`; without it, a request presenting an invite's token and
///    the join page): an address with [`MAX_FAILED_ATTEMPTS`] failures in the last minute gets
///    `429 too_many_attempts`, the right token or not;
/// 4. the host's token (Bearer or login cookie) opens everything;
/// 5. otherwise an invite's token (a Bearer that is not the host's, or the invite cookie) opens
///    exactly what [`guest_may`] says, and anything else is `403 forbidden`; the request then
///    carries the [`Guest`] in its extensions;
/// 6. a token that opens nothing is `401` for the API and sockets, `303 /login` for pages with
///    `--auth-token`; an unknown one counts as a failure of its address.
pub async fn check_access(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    match decide(&req).await {
        Ok(guest) => {
            if let Some(guest) = guest {
                req.extensions_mut().insert(guest);
            }
            Ok(next.call(req).await?.map_into_left_body())
        }
        Err(response) => Ok(req.into_response(response).map_into_right_body()),
    }
}

/// `Ok(None)`: the host's rights (or an open path); `Ok(Some)`: a guest's; `Err`: the refusal.
async fn decide(req: &ServiceRequest) -> Result<Option<Guest>, HttpResponse> {
    if req.path() == "/healthz" {
        return Ok(None);
    }
    let (Some(state), Some(attempts)) = (
        req.app_data::<web::Data<AppState>>(),
        req.app_data::<web::Data<Attempts>>(),
    ) else {
        tracing::error!("access check without its state; refusing");
        return Err(HttpResponse::InternalServerError().finish());
    };
    let config = &state.config;
    let request = req.request();
    if config.auth_token.is_none() && !host_allowed(request_host(request), &config.allowed_hosts) {
        return Err(ApiError::ForbiddenHost(
            "this server answers to IP addresses, localhost and --allowed-host names only".into(),
        )
        .error_response());
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        if let Err(error) = check_origin(request, config) {
            return Err(error.error_response());
        }
    }
    let path = req.path();
    let is_login = path == "/login";
    let is_join = path.starts_with("/join/");
    if path.starts_with("/static/") || (is_login && req.method() != Method::POST) {
        return Ok(None);
    }
    let presented = Presented::of(request);
    let expected = config.auth_token.as_deref();
    let needs_authentication = expected.is_some()
        || is_join
        || presented.bearer.is_some()
        || presented.invite_cookie.is_some();
    if !needs_authentication || (is_login && expected.is_none()) {
        // Without --auth-token, anyone has the host's rights.
        return Ok(None);
    }
    let address = client_address(request);
    if let Some(wait) = address.and_then(|ip| attempts.locked_for(ip, Instant::now())) {
        return Err(too_many_attempts(wait));
    }
    if is_login || is_join {
        // The login handler compares the form's token, the join page the link's; each counts
        // a wrong one.
        return Ok(None);
    }
    if let Some(expected) = expected {
        if presented.is_host(expected) {
            return Ok(None);
        }
    }
    let unauthorized = || {
        // Scrapers and scripts (API, /metrics) read a status; people on pages are sent to log in.
        if path.starts_with("/api/") || path == "/metrics" || expected.is_none() {
            ApiError::Unauthorized(
                "a valid token is required (Authorization: Bearer, or log in)".into(),
            )
            .error_response()
        } else {
            HttpResponse::SeeOther()
                .insert_header((header::LOCATION, "/login"))
                .finish()
        }
    };
    let count_failure = || {
        if let Some(ip) = address {
            attempts.record_failure(ip, Instant::now());
        }
    };
    let Some(token) = presented.bearer.or(presented.invite_cookie) else {
        if presented.login_cookie.is_some() {
            count_failure();
        }
        return Err(unauthorized());
    };
    match guests::check_token(state, &token).await {
        Ok(TokenCheck::Valid(guest, _)) if guest_may(req, &guest) => Ok(Some(guest)),
        Ok(TokenCheck::Valid(..)) => Err(ApiError::Forbidden(
            "an invite opens only its own track of its own session".into(),
        )
        .error_response()),
        // A real invite that ended is no guess: its guest's page may still be asking.
        Ok(TokenCheck::Ended(_)) => Err(unauthorized()),
        Ok(TokenCheck::Unknown) => {
            count_failure();
            Err(unauthorized())
        }
        Err(error) => Err(error.error_response()),
    }
}

/// What an invite allows (besides its join page): the socket of its own session with its own
/// track, `GET /api/session/{id}` and `POST /api/session/{id}/keepalive` of its own session.
fn guest_may(req: &ServiceRequest, guest: &Guest) -> bool {
    let Some(rest) = req
        .path()
        .strip_prefix("/api/session/")
        .and_then(|rest| rest.strip_prefix(guest.session.as_str()))
    else {
        return false;
    };
    let method = req.method();
    match rest {
        "" => matches!(*method, Method::GET | Method::HEAD),
        "/keepalive" => method == Method::POST,
        "/ws" => {
            method == Method::GET
                && query_track(req.query_string()) == Some(guest.track.as_str().to_string())
        }
        _ => false,
    }
}

/// The `track` of a socket's query, read as the socket route reads it (the first one).
fn query_track(query: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).ok()?;
    pairs
        .into_iter()
        .find(|(key, _)| key == "track")
        .map(|(_, value)| value)
}

/// The credentials a request carries.
struct Presented {
    bearer: Option<String>,
    login_cookie: Option<String>,
    invite_cookie: Option<String>,
}

impl Presented {
    fn of(req: &HttpRequest) -> Presented {
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(|token| token.trim().to_string());
        let cookie = |name| req.cookie(name).map(|cookie| cookie.value().to_string());
        Presented {
            bearer,
            login_cookie: cookie(COOKIE),
            invite_cookie: cookie(INVITE_COOKIE),
        }
    }

    fn is_host(&self, expected: &str) -> bool {
        [&self.bearer, &self.login_cookie]
            .into_iter()
            .flatten()
            .any(|token| tokens_match(token, expected))
    }
}

/// The cookie `GET /join/<token>` sets: the invite's token, sent only with the requests of its
/// own session's API (so a browser can hold one per session, and the host's pages never carry
/// one), readable by no script.
pub fn invite_cookie(token: &str, session: &SessionId, secure: bool) -> Cookie<'static> {
    Cookie::build(INVITE_COOKIE, token.to_string())
        .path(format!("/api/session/{session}"))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .finish()
}

/// A join link whose token is no invite counts as a failed authentication of its address.
pub fn count_failed_invite(req: &HttpRequest) {
    if let (Some(attempts), Some(ip)) = (req.app_data::<web::Data<Attempts>>(), client_address(req))
    {
        attempts.record_failure(ip, Instant::now());
    }
}

fn too_many_attempts(wait: Duration) -> HttpResponse {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut response = ApiError::TooManyAttempts(format!(
        "too many failed attempts from this address; try again in {seconds} s"
    ))
    .error_response();
    response.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from(seconds.max(1)),
    );
    response
}

/// The peer's address (a proxy's `X-Forwarded-For` is anyone's to write), IPv4-mapped IPv6
/// counted as the IPv4 address it is.
fn client_address(req: &HttpRequest) -> Option<IpAddr> {
    req.peer_addr().map(|address| address.ip().to_canonical())
}

/// The authority the client asked for: `Host`, or the URI's (HTTP/2). Never `X-Forwarded-Host`,
/// which a page on a rebound name could set on its own same-origin requests.
fn request_host(req: &HttpRequest) -> Option<&str> {
    match req.headers().get(header::HOST) {
        Some(host) => host.to_str().ok(),
        None => req.uri().authority().map(|authority| authority.as_str()),
    }
}

/// An IP literal (`127.0.0.1`, `[::1]`) or `localhost`, any case, any port, or an allowed host:
/// an entry `name` allows `name` on any port, `name:port` that port only.
fn host_allowed(host: Option<&str>, allowed: &[String]) -> bool {
    let Some((name, port)) = host.and_then(split_host) else {
        return false;
    };
    name.parse::<Ipv4Addr>().is_ok()
        || name.starts_with('[')
        || name.eq_ignore_ascii_case("localhost")
        || allowed
            .iter()
            .filter_map(|entry| split_host(entry.trim()))
            .any(|(allowed_name, allowed_port)| {
                allowed_name.eq_ignore_ascii_case(name)
                    && (allowed_port.is_none() || allowed_port == port)
            })
}

/// `name[:port]` or `[v6][:port]`; `None` for anything else. A bracketed name is a valid IPv6
/// address.
fn split_host(host: &str) -> Option<(&str, Option<&str>)> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        inside.parse::<Ipv6Addr>().ok()?;
        let name = &host[..inside.len() + 2];
        match after {
            "" => (name, None),
            _ => (name, Some(after.strip_prefix(':')?)),
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    let port_ok = port.is_none_or(|port| port.parse::<u16>().is_ok() && !port.starts_with('+'));
    (!name.is_empty() && port_ok).then_some((name, port))
}

/// The last failed authentications of each client address, to lock out one that keeps guessing.
/// A sliding log rather than a rate limiter: only failures count, a locked address must be
/// recognized without spending anything, and the promise is simple to state: no address gets
/// more than [`MAX_FAILED_ATTEMPTS`] wrong guesses in any [`ATTEMPT_WINDOW`].
#[derive(Default)]
pub struct Attempts {
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl Attempts {
    /// How long `ip` stays locked out, if it is: until its oldest remembered failure is a
    /// window old.
    pub fn locked_for(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let failures = self.lock();
        let log = failures.get(&ip)?;
        let oldest = *log.front()?;
        let until = oldest + ATTEMPT_WINDOW;
        (log.len() >= MAX_FAILED_ATTEMPTS && now < until).then(|| until - now)
    }

    pub fn record_failure(&self, ip: IpAddr, now: Instant) {
        let mut failures = self.lock();
        if !failures.contains_key(&ip) && failures.len() >= MAX_TRACKED_ADDRESSES {
            failures.retain(|_, log| log.back().is_some_and(|last| now < *last + ATTEMPT_WINDOW));
            if failures.len() >= MAX_TRACKED_ADDRESSES {
                let stalest = failures
                    .iter()
                    .min_by_key(|(_, log)| log.back().copied())
                    .map(|(ip, _)| *ip);
                if let Some(stalest) = stalest {
                    failures.remove(&stalest);
                }
            }
        }
        let log = failures.entry(ip).or_default();
        while log
            .front()
            .is_some_and(|first| now >= *first + ATTEMPT_WINDOW)
        {
            log.pop_front();
        }
        log.push_back(now);
        while log.len() > MAX_FAILED_ATTEMPTS {
            log.pop_front();
        }
        if log.len() == MAX_FAILED_ATTEMPTS {
            tracing::warn!(%ip, "too many failed authentications; address locked out for a minute");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, VecDeque<Instant>>> {
        // A panic elsewhere while holding it leaves plain data behind, still usable.
        self.failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
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

async fn login(
    state: web::Data<AppState>,
    attempts: web::Data<Attempts>,
    req: HttpRequest,
    form: Option<web::Form<LoginForm>>,
) -> HttpResponse {
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
        _ => {
            if let (Some(_), Some(ip)) = (&form, client_address(&req)) {
                attempts.record_failure(ip, Instant::now());
            }
            login_response(
                HttpResponse::Unauthorized(),
                Some("That token is not right."),
            )
        }
    }
}

fn login_response(builder: HttpResponseBuilder, error: Option<&str>) -> HttpResponse {
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
    html_page(builder, page)
}

/// An `Origin` must name this server (same host and port as `Host`) or an allowed origin; a
/// request without one (a script, not a browser) passes.
pub fn check_origin(req: &HttpRequest, config: &Config) -> Result<(), ApiError> {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let forbidden = || {
        ApiError::ForbiddenOrigin(
            "requests from this origin are not allowed here (see --allowed-origin)".into(),
        )
    };
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
    let host = request_host(req).ok_or_else(forbidden)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    const ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

    #[test]
    fn ten_failures_lock_an_address_until_the_first_is_a_minute_old() {
        let attempts = Attempts::default();
        let start = Instant::now();
        for second in 0..MAX_FAILED_ATTEMPTS as u64 {
            assert_eq!(attempts.locked_for(ADDRESS, start), None);
            attempts.record_failure(ADDRESS, start + Duration::from_secs(second));
        }
        let later = start + Duration::from_secs(20);
        assert_eq!(
            attempts.locked_for(ADDRESS, later),
            Some(Duration::from_secs(40))
        );
        let other = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 8));
        assert_eq!(attempts.locked_for(other, later), None);
        // The minute is over: one more guess, and locked again until the second is a minute old.
        let after = start + ATTEMPT_WINDOW;
        assert_eq!(attempts.locked_for(ADDRESS, after), None);
        attempts.record_failure(ADDRESS, after);
        assert_eq!(
            attempts.locked_for(ADDRESS, after),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn many_addresses_cost_bounded_memory() {
        let attempts = Attempts::default();
        let now = Instant::now();
        for n in 0..(MAX_TRACKED_ADDRESSES as u32 + 500) {
            attempts.record_failure(IpAddr::V4(Ipv4Addr::from(n)), now);
        }
        assert_eq!(attempts.lock().len(), MAX_TRACKED_ADDRESSES);
    }

    #[test]
    fn hosts_are_ip_literals_localhost_or_allowed() {
        let allowed = ["studio.example".to_string(), "lan.example:8443".to_string()];
        let ok = |host: &str| host_allowed(Some(host), &allowed);
        for host in [
            "127.0.0.1",
            "10.0.0.2:8080",
            "[::1]",
            "[fe80::1]:80",
            "localhost",
            "LOCALHOST:1",
            "studio.example:1",
            "lan.example:8443",
        ] {
            assert!(ok(host), "{host}");
        }
        for host in [
            "",
            "evil.example",
            "localhost.evil.example",
            "lan.example:8080",
            "lan.example",
            "127.1",
            "::1",
            "[::1",
            "[evil.example]",
            "[::1]x",
            "localhost:",
            "localhost:+80",
            "localhost:99999",
        ] {
            assert!(!ok(host), "{host}");
        }
        assert!(!host_allowed(None, &allowed));
    }
}
