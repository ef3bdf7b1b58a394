//! `--auth-token`: Bearer header or login cookie on every API request, page and socket.

use serde_json::Value;

use crate::helpers::{assert_error, spawn_app_with, WsClient};

const TOKEN: &str = "correct horse battery staple";

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
