//! Access: the Host check (DNS rebinding), cross-site changes, the lockout of an address that
//! keeps guessing, and `--auth-token` (Bearer header or login cookie) on API, pages and sockets.

use serde_json::Value;

use crate::helpers::{assert_error, spawn_app, spawn_app_with, TestApp, WsClient};

const TOKEN: &str = "correct horse battery staple";
const COOKIE: &str = "safetake_token";

#[tokio::test]
async fn the_api_needs_the_token_and_healthz_does_not() {
    let app = spawn_app_with(|config| config.auth_token = Some(TOKEN.into())).await;
    assert_error(app.get("/api/sessions").await, 401, "unauthorized").await;
    let wrong = app
        .http
        .get(app.url("/api/sessions"))
        .bearer_auth("correct horse")
        .send()
        .await
        .unwrap();
    assert_error(wrong, 401, "unauthorized").await;
    let right = app
        .http
        .get(app.url("/api/sessions"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    let created = app
        .http
        .post(app.url("/api/sessions"))
        .send()
        .await
        .unwrap();
    assert_error(created, 401, "unauthorized").await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    let asset = app.get("/static/style.css").await.status();
    assert!(
        asset != 401 && asset != 303,
        "static assets stay open: {asset}"
    );
}

#[tokio::test]
async fn pages_redirect_to_login_and_the_login_cookie_opens_everything() {
    let app = spawn_app_with(|config| config.auth_token = Some(TOKEN.into())).await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for page in ["/", "/record"] {
        let response = no_redirects.get(app.url(page)).send().await.unwrap();
        assert_eq!(response.status(), 303, "{page}");
        assert_eq!(response.headers()["location"], "/login");
    }
    let login_page = no_redirects.get(app.url("/login")).send().await.unwrap();
    assert_eq!(login_page.status(), 200);
    assert!(login_page.text().await.unwrap().contains("name=\"token\""));

    let refused = no_redirects
        .post(app.url("/login"))
        .form(&[("token", "guess")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().get("set-cookie").is_none());

    let accepted = no_redirects
        .post(app.url("/login"))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 303);
    assert_eq!(accepted.headers()["location"], "/");
    let cookie = accepted.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_string();

    let with_cookie = no_redirects
        .post(app.url("/api/sessions"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(with_cookie.status(), 201);
    let id = with_cookie.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let page = no_redirects
        .get(app.url("/"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);

    // Sockets: refused without the token, open with the cookie a browser sends, or a Bearer header.
    let url = app.ws_url(&id, "track=mic");
    let (status, body) = WsClient::connect(&url, &[])
        .await
        .err()
        .expect("refused without a token");
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );
    let (socket, _) = WsClient::connect(&url, &[("cookie", &pair)])
        .await
        .expect("cookie opens the socket");
    socket.close().await;
    let bearer = format!("Bearer {TOKEN}");
    let (socket, _) = WsClient::connect(&url, &[("authorization", &bearer)])
        .await
        .expect("bearer opens the socket");
    socket.close().await;
}

/// A request as a page on another name would send it: `Host` is whatever the browser was told.
async fn get_with_host(app: &TestApp, path: &str, host: &str) -> reqwest::Response {
    app.http
        .get(app.url(path))
        .header("host", host)
        .send()
        .await
        .unwrap()
}

async fn session_count(app: &TestApp) -> u64 {
    app.get_json("/api/sessions").await["total"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn a_foreign_host_is_refused_without_a_token_and_served_with_one() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    app.post(&format!("/api/session/{id}/finish"), None).await;
    for path in [
        "/",
        "/record",
        "/api/sessions",
        &format!("/api/session/{id}"),
    ] {
        let response = get_with_host(&app, path, "evil.example").await;
        assert_error(response, 403, "forbidden_host").await;
    }
    let download = get_with_host(&app, "/static/style.css", "evil.example:8080").await;
    assert_eq!(download.status(), 403, "static files are refused too");
    let delete = app
        .http
        .delete(app.url(&format!("/api/session/{id}")))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_error(delete, 403, "forbidden_host").await;
    assert_eq!(app.session(&id).await["id"], id.as_str(), "nothing deleted");
    let (status, body) =
        WsClient::connect(&app.ws_url(&id, "track=mic"), &[("host", "evil.example")])
            .await
            .err()
            .expect("socket refused");
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden_host"))
    );
    // A monitor may probe by any name.
    assert_eq!(
        get_with_host(&app, "/healthz", "evil.example")
            .await
            .status(),
        200
    );

    // With a token the token is the guard, and any name may be used (a proxy, a LAN name).
    let app = spawn_app_with(|config| config.auth_token = Some(TOKEN.into())).await;
    let with_token = app
        .http
        .get(app.url("/api/sessions"))
        .header("host", "studio.lan")
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(with_token.status(), 200);
    let without = get_with_host(&app, "/api/sessions", "studio.lan").await;
    assert_error(without, 401, "unauthorized").await;
}

#[tokio::test]
async fn ip_literals_localhost_and_allowed_hosts_are_served_and_nothing_else() {
    let app = spawn_app_with(|config| config.allowed_hosts = vec!["studio.example".into()]).await;
    let id = app.create_session().await;
    for host in [
        "localhost:1234",
        "LocalHost",
        "127.0.0.1",
        "192.168.1.20:8080",
        "[::1]",
        "[::1]:8080",
        "studio.example",
        "Studio.Example:9000",
    ] {
        assert_eq!(
            get_with_host(&app, "/api/sessions", host).await.status(),
            200,
            "{host}"
        );
    }
    for host in [
        "other.example",
        "localhost.evil.example",
        "studio.example.evil.example",
        "127.0.0.1.evil.example",
        "[::1",
        "",
    ] {
        let response = get_with_host(&app, "/api/sessions", host).await;
        assert_error(response, 403, "forbidden_host").await;
    }
    let (socket, _) =
        WsClient::connect(&app.ws_url(&id, "track=mic"), &[("host", "localhost:1234")])
            .await
            .expect("localhost opens a socket");
    socket.close().await;
}

#[tokio::test]
async fn cross_site_changes_are_refused_and_change_nothing() {
    let app =
        spawn_app_with(|config| config.allowed_origins = vec!["https://studio.example".into()])
            .await;
    let id = app.create_session().await;
    let cross_site = |path: String, origin: &'static str| {
        app.http
            .post(app.url(&path))
            .header("origin", origin)
            .header("content-type", "text/plain")
            .body("{}")
            .send()
    };
    for origin in ["http://evil.example", "null", "http://127.0.0.1:1"] {
        let created = cross_site("/api/sessions".into(), origin).await.unwrap();
        assert_error(created, 403, "forbidden_origin").await;
    }
    let finished = cross_site(format!("/api/session/{id}/finish"), "http://evil.example")
        .await
        .unwrap();
    assert_error(finished, 403, "forbidden_origin").await;
    assert_eq!(app.session(&id).await["status"], "active");
    assert_eq!(session_count(&app).await, 1, "no session created");

    let own = format!("http://127.0.0.1:{}", app.port);
    for origin in [own.as_str(), "https://studio.example"] {
        let created = app
            .http
            .post(app.url("/api/sessions"))
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201, "{origin}");
    }
    assert_eq!(
        app.post("/api/sessions", None).await.status(),
        201,
        "no Origin"
    );
    assert_eq!(session_count(&app).await, 4);

    // A cross-site login cannot plant a cookie either.
    let app = spawn_app_with(|config| config.auth_token = Some(TOKEN.into())).await;
    let login = app
        .http
        .post(app.url("/login"))
        .header("origin", "http://evil.example")
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 403);
    assert!(login.headers().get("set-cookie").is_none());
}

#[tokio::test]
async fn ten_failed_tokens_a_minute_lock_the_address_even_for_the_right_token() {
    let app = spawn_app_with(|config| config.auth_token = Some(TOKEN.into())).await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(crate::helpers::WAIT)
        .build()
        .unwrap();
    // Ten failures of every kind: Bearer, cookie, login form.
    for attempt in 0..10 {
        let request = no_redirects.get(app.url("/api/sessions"));
        let request = match attempt % 3 {
            0 => request.bearer_auth(format!("guess {attempt}")),
            1 => request.header("cookie", format!("{COOKIE}=guess{attempt}")),
            _ => {
                let refused = no_redirects
                    .post(app.url("/login"))
                    .form(&[("token", format!("guess {attempt}"))])
                    .send()
                    .await
                    .unwrap();
                assert_eq!(refused.status(), 401, "attempt {attempt}");
                continue;
            }
        };
        let refused = request.send().await.unwrap();
        assert_error(refused, 401, "unauthorized").await;
    }
    let locked = |response: reqwest::Response| async move {
        let retry_after: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry_after), "{retry_after}");
        assert_error(response, 429, "too_many_attempts").await;
    };
    let eleventh = no_redirects
        .get(app.url("/api/sessions"))
        .bearer_auth("guess 11")
        .send()
        .await
        .unwrap();
    locked(eleventh).await;
    for path in ["/api/sessions", "/"] {
        let right = no_redirects
            .get(app.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        locked(right).await;
    }
    let cookie = format!("{COOKIE}={TOKEN}");
    let with_cookie = no_redirects
        .get(app.url("/api/sessions"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    locked(with_cookie).await;
    let login = no_redirects
        .post(app.url("/login"))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert!(login.headers().get("set-cookie").is_none());
    locked(login).await;
    let bearer = format!("Bearer {TOKEN}");
    let (status, body) = WsClient::connect(
        &format!(
            "ws://127.0.0.1:{}/api/session/{}/ws?track=mic",
            app.port,
            uuid()
        ),
        &[("authorization", &bearer)],
    )
    .await
    .err()
    .expect("socket refused");
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("too_many_attempts"))
    );
    // What needs no authentication stays open.
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/login").await.status(), 200);
}

fn uuid() -> &'static str {
    "00000000-0000-4000-8000-000000000000"
}

#[tokio::test]
async fn the_login_page_carries_the_pages_security_headers() {
    let app = spawn_app_with(|config| config.auth_token = Some(TOKEN.into())).await;
    let history = app
        .http
        .get(app.url("/"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(history.status(), 200);
    let refused = app
        .http
        .post(app.url("/login"))
        .form(&[("token", "guess")])
        .send()
        .await
        .unwrap();
    let login = app.get("/login").await;
    for name in [
        "content-security-policy",
        "x-content-type-options",
        "referrer-policy",
        "cache-control",
    ] {
        let expected = history.headers().get(name).expect(name);
        assert_eq!(login.headers().get(name), Some(expected), "{name}");
        assert_eq!(refused.headers().get(name), Some(expected), "{name}");
    }
    assert!(history.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
}
