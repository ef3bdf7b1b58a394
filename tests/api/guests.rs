//! Guests: invites (create, list, revoke), what an invite's token may do with and without
//! `--auth-token`, the join page, and the stop for everyone over real sockets: each track sends
//! the rest and `done`, and the session completes by itself with every byte in its WAV.

use serde_json::{json, Value};

use crate::helpers::{
    assert_error, pcm, read_wav_data, spawn_app, spawn_app_with, TestApp, WsClient, WAIT,
};

const TOKEN: &str = "host token for the guests tests";

/// The host's requests: with the token when the server has one.
struct Host<'a> {
    app: &'a TestApp,
    token: Option<&'static str>,
}

impl Host<'_> {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.app.http.request(method, self.app.url(path));
        match self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn post(&self, path: &str, body: Option<Value>) -> reqwest::Response {
        let request = self.request(reqwest::Method::POST, path);
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        request.send().await.expect("request")
    }

    async fn get_json(&self, path: &str) -> Value {
        let response = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    async fn create_session(&self) -> String {
        let response = self
            .post("/api/sessions", Some(json!({"title": "Episode 12"})))
            .await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().to_string()
    }

    /// Creates an invite and returns it (with its token and url).
    async fn invite(&self, id: &str, track: &str, name: &str) -> Value {
        let response = self
            .post(
                &format!("/api/session/{id}/invites"),
                Some(json!({"track": track, "name": name})),
            )
            .await;
        assert_eq!(response.status(), 201, "invite {track}");
        response.json().await.unwrap()
    }

    async fn revoke(&self, id: &str, invite: &str) -> reqwest::Response {
        self.request(
            reqwest::Method::DELETE,
            &format!("/api/session/{id}/invites/{invite}"),
        )
        .send()
        .await
        .unwrap()
    }

    async fn socket(&self, id: &str, track: &str) -> (WsClient, u64) {
        let bearer = self.token.map(|token| format!("Bearer {token}"));
        let headers: Vec<(&str, &str)> = bearer
            .iter()
            .map(|value| ("authorization", value.as_str()))
            .collect();
        let (client, ready) =
            WsClient::connect(&self.app.ws_url(id, &format!("track={track}")), &headers)
                .await
                .unwrap_or_else(|(status, body)| panic!("host socket refused {status}: {body}"));
        (client, ready["offset"].as_u64().unwrap())
    }

    async fn track(&self, id: &str, name: &str) -> Value {
        let session = self.get_json(&format!("/api/session/{id}")).await;
        session["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|track| track["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no track {name} in {session}"))
    }
}

fn token_of(invite: &Value) -> String {
    invite["token"].as_str().expect("a token").to_string()
}

/// A guest's socket on `track`, with its token as a Bearer header: accepted or refused.
async fn guest_socket(
    app: &TestApp,
    id: &str,
    track: &str,
    token: &str,
) -> Result<(WsClient, Value), (u16, Value)> {
    let bearer = format!("Bearer {token}");
    WsClient::connect(
        &app.ws_url(id, &format!("track={track}")),
        &[("authorization", &bearer)],
    )
    .await
}

async fn as_guest(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
) -> reqwest::Response {
    app.http
        .request(method, app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// Reads past acks to the next message of another type, which must be `kind`, within `WAIT`
/// in all (the server's pings would otherwise keep a per-message wait going).
async fn next_besides_acks(client: &mut WsClient, kind: &str) -> Value {
    let next = async {
        loop {
            let message = client.next_json().await.expect("socket open");
            if message["type"] != "ack" {
                return message;
            }
        }
    };
    let message = tokio::time::timeout(WAIT, next)
        .await
        .unwrap_or_else(|_| panic!("no {kind} in time"));
    assert_eq!(message["type"], kind, "{message}");
    message
}

/// Polls the session until `check` holds on it (the server's state changes after a message).
async fn wait_for(host: &Host<'_>, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let session = host.get_json(&format!("/api/session/{id}")).await;
        if check(&session) {
            return session;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {session}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn invites_are_created_listed_and_revoked_in_the_contracts_shapes() {
    let app = spawn_app().await;
    let host = Host {
        app: &app,
        token: None,
    };
    let id = host.create_session().await;
    let sam = host.invite(&id, "sam", "Sam Jones").await;
    assert_eq!(sam["track"], "sam");
    assert_eq!(sam["name"], "Sam Jones");
    assert!(sam["revokedAt"].is_null());
    assert!(sam["createdAt"].as_str().unwrap().ends_with('Z'));
    let token = token_of(&sam);
    assert!(token.len() >= 22, "at least 128 bits: {token}");
    assert!(token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(
        sam["url"],
        format!("http://127.0.0.1:{}/join/{token}", app.port)
    );
    // Without a name, the track's.
    let response = host
        .post(
            &format!("/api/session/{id}/invites"),
            Some(json!({"track": "alex"})),
        )
        .await;
    assert_eq!(response.status(), 201);
    let alex: Value = response.json().await.unwrap();
    assert_eq!(alex["name"], "alex");
    assert_ne!(token_of(&alex), token);

    let listed = host.get_json(&format!("/api/session/{id}/invites")).await;
    let invites = listed["invites"].as_array().unwrap();
    assert_eq!(invites.len(), 2);
    assert_eq!(invites[0]["id"], sam["id"], "oldest first");
    assert_eq!(invites[1]["id"], alex["id"]);
    for invite in invites {
        assert!(
            invite.get("token").is_none(),
            "no token in a list: {invite}"
        );
        assert!(invite.get("url").is_none());
    }

    // A track held by an invite that is not revoked cannot be given again.
    let taken = host
        .post(
            &format!("/api/session/{id}/invites"),
            Some(json!({"track": "sam", "name": "Someone else"})),
        )
        .await;
    assert_error(taken, 409, "track_taken").await;

    let sam_id = sam["id"].as_str().unwrap();
    assert_eq!(host.revoke(&id, sam_id).await.status(), 204);
    let listed = host.get_json(&format!("/api/session/{id}/invites")).await;
    assert!(listed["invites"][0]["revokedAt"]
        .as_str()
        .is_some_and(|at| at.ends_with('Z')));
    // Revoked, the track can be given to a new invite.
    host.invite(&id, "sam", "Sam again").await;

    let unknown = uuid_like();
    assert_error(host.revoke(&id, &unknown).await, 404, "not_found").await;
    assert_error(host.revoke(&id, "not-an-id").await, 404, "not_found").await;
    // An invite of one session is not found under another.
    let other = host.create_session().await;
    let alex_id = alex["id"].as_str().unwrap();
    assert_error(host.revoke(&other, alex_id).await, 404, "not_found").await;
}

fn uuid_like() -> String {
    "6b1f4c8e-2d3a-4b5c-8d9e-0f1a2b3c4d5e".to_string()
}

#[tokio::test]
async fn invites_refuse_bad_tracks_bodies_and_completed_sessions() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let path = format!("/api/session/{id}/invites");
    for body in [
        json!({"track": "../etc"}),
        json!({"track": ""}),
        json!({"track": 7}),
        json!({"name": "No track"}),
        json!({"track": "a".repeat(65)}),
    ] {
        assert_error(app.post(&path, Some(body)).await, 400, "invalid_track").await;
    }
    assert_error(app.post_raw(&path, "{not json").await, 400, "invalid_body").await;
    assert_error(app.post_raw(&path, "").await, 400, "invalid_body").await;
    let long_name = json!({"track": "sam", "name": "n".repeat(101)});
    assert_error(app.post(&path, Some(long_name)).await, 400, "invalid_body").await;
    let wrong_name = json!({"track": "sam", "name": 5});
    assert_error(app.post(&path, Some(wrong_name)).await, 400, "invalid_body").await;
    // 100 characters, not bytes.
    let ok = json!({"track": "sam", "name": "é".repeat(100)});
    assert_eq!(app.post(&path, Some(ok)).await.status(), 201);

    let unknown = format!("/api/session/{}/invites", uuid_like());
    let body = json!({"track": "sam"});
    assert_error(
        app.post(&unknown, Some(body.clone())).await,
        404,
        "not_found",
    )
    .await;
    assert_error(app.get(&unknown).await, 404, "not_found").await;

    assert_eq!(
        app.post(&format!("/api/session/{id}/finish"), None)
            .await
            .status(),
        200
    );
    let late = json!({"track": "alex"});
    assert_error(app.post(&path, Some(late)).await, 409, "session_completed").await;
}

/// Everything the contract lists as beyond an invite, asked with its token: 403 `forbidden`.
async fn assert_guest_limited(app: &TestApp, id: &str, other: &str, token: &str) {
    use reqwest::Method;
    let beyond = [
        (Method::GET, "/api/sessions".to_string()),
        (Method::POST, "/api/sessions".to_string()),
        (Method::GET, format!("/api/session/{other}")),
        (Method::POST, format!("/api/session/{other}/keepalive")),
        (Method::POST, format!("/api/session/{id}/finish")),
        (Method::POST, format!("/api/session/{id}/resume")),
        (Method::POST, format!("/api/session/{id}/stop")),
        (Method::DELETE, format!("/api/session/{id}")),
        (Method::POST, format!("/api/session/{id}/invites")),
        (Method::GET, format!("/api/session/{id}/invites")),
        (Method::GET, format!("/api/session/{id}/tracks/sam.wav")),
        (Method::POST, "/api/session/check-timeouts".to_string()),
        (Method::GET, "/".to_string()),
        (Method::GET, "/record".to_string()),
    ];
    for (method, path) in beyond {
        let response = as_guest(app, method.clone(), &path, token).await;
        let body = assert_error(response, 403, "forbidden").await;
        assert!(body["message"].is_string(), "{method} {path}");
    }
    let (status, body) = guest_socket(app, id, "mic", token)
        .await
        .err()
        .expect("another track refused");
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    let (status, _) = guest_socket(app, other, "sam", token)
        .await
        .err()
        .expect("another session refused");
    assert_eq!(status, 403);
}

async fn assert_guest_rights(host: Host<'_>) {
    let app = host.app;
    let id = host.create_session().await;
    let other = host.create_session().await;
    let sam = host.invite(&id, "sam", "Sam").await;
    let token = token_of(&sam);

    // What an invite may do: its session, its keepalive, its own track's socket.
    let own = as_guest(
        app,
        reqwest::Method::GET,
        &format!("/api/session/{id}"),
        &token,
    )
    .await;
    assert_eq!(own.status(), 200);
    let own: Value = own.json().await.unwrap();
    assert_eq!(own["id"], id.as_str());
    let keepalive = as_guest(
        app,
        reqwest::Method::POST,
        &format!("/api/session/{id}/keepalive"),
        &token,
    )
    .await;
    assert_eq!(keepalive.status(), 200);
    let (mut socket, ready) = guest_socket(app, &id, "sam", &token)
        .await
        .expect("its own track opens");
    assert_eq!(ready["track"], "sam");
    socket.send_frame(0, &pcm(1, 960)).await;
    assert_eq!(socket.flush(960).await, 960);

    assert_guest_limited(app, &id, &other, &token).await;

    // The host still does everything (with its token when there is one).
    let sessions = host.get_json("/api/sessions").await;
    assert_eq!(sessions["total"], 2);
    let track = host.track(&id, "sam").await;
    assert_eq!(track["participant"], "Sam");
    assert_eq!(track["dataBytes"], 960);
    socket.close().await;

    // A token no invite has is 401, as is one for a host that has no such token.
    let unknown = as_guest(
        app,
        reqwest::Method::GET,
        &format!("/api/session/{id}"),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    )
    .await;
    assert_error(unknown, 401, "unauthorized").await;
}

#[tokio::test]
async fn an_invite_opens_only_its_own_track_of_its_own_session() {
    let app = spawn_app().await;
    assert_guest_rights(Host {
        app: &app,
        token: None,
    })
    .await;
}

#[tokio::test]
async fn an_invite_opens_only_its_own_track_with_auth_token_too() {
    let app = spawn_app_with(|config| config.auth_token = Some(TOKEN.into())).await;
    assert_guest_rights(Host {
        app: &app,
        token: Some(TOKEN),
    })
    .await;
    // The invite's token is no host token: without the host's, the host's API stays closed.
    let anonymous = app.get("/api/sessions").await;
    assert_error(anonymous, 401, "unauthorized").await;
}

#[tokio::test]
async fn the_join_page_sets_a_cookie_that_opens_the_guests_track() {
    let app = spawn_app_with(|config| config.auth_token = Some(TOKEN.into())).await;
    let host = Host {
        app: &app,
        token: Some(TOKEN),
    };
    let id = host.create_session().await;
    let sam = host.invite(&id, "sam", "Sam <b>Jones</b>").await;
    let token = token_of(&sam);

    // The join page needs no host token: the link is the credential.
    let page = app.get(&format!("/join/{token}")).await;
    assert_eq!(page.status(), 200);
    let cookie = page.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with(&format!("safetake_invite={token}")),
        "{cookie}"
    );
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(
        cookie.contains(&format!("Path=/api/session/{id}")),
        "{cookie}"
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("Episode 12"));
    assert!(
        html.contains("Sam &lt;b&gt;Jones&lt;/b&gt;"),
        "the name is text"
    );
    assert!(html.contains(&format!("data-session-id=\"{id}\"")));
    assert!(html.contains("data-track=\"sam\""));
    assert!(html.contains("data-sample-rate=\"48000\""));
    assert!(html.contains("/static/join.js"));
    assert!(html.contains("data-testid=\"guest-state\">ready</p>"));
    assert!(
        html.contains(r#"data-testid="join" disabled>"#),
        "Join waits for the page script, which alone can record"
    );

    // What a browser sends with that cookie: its own socket opens, another track does not.
    let pair = format!("safetake_invite={token}");
    let (socket, _) = WsClient::connect(&app.ws_url(&id, "track=sam"), &[("cookie", &pair)])
        .await
        .expect("the cookie opens the guest's socket");
    socket.close().await;
    let (status, _) = WsClient::connect(&app.ws_url(&id, "track=mic"), &[("cookie", &pair)])
        .await
        .err()
        .expect("another track refused");
    assert_eq!(status, 403);
    let finish = app
        .http
        .post(app.url(&format!("/api/session/{id}/finish")))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_error(finish, 403, "forbidden").await;
}

/// The page that says a link no longer works.
async fn assert_ended_page(app: &TestApp, token: &str, status: u16) {
    let page = app.get(&format!("/join/{token}")).await;
    assert_eq!(page.status(), status);
    assert!(page.headers().get("set-cookie").is_none());
    let html = page.text().await.unwrap();
    assert!(
        html.contains(r#"data-testid="guest-state">ended</p>"#),
        "{html}"
    );
    // A real invite's ended page loads join.js with its track, to offer what the browser kept;
    // an unknown link's has no script.
    assert_eq!(html.contains("/static/join.js"), status == 410, "{html}");
    assert_eq!(
        html.contains(r#"data-state="ended""#),
        status == 410,
        "{html}"
    );
}

#[tokio::test]
async fn unknown_revoked_and_ended_links_show_the_ended_page() {
    let app = spawn_app().await;
    assert_ended_page(&app, "no-such-token-at-all", 404).await;
    let id = app.create_session().await;
    let host = Host {
        app: &app,
        token: None,
    };
    let sam = host.invite(&id, "sam", "Sam").await;
    let alex = host.invite(&id, "alex", "Alex").await;
    host.revoke(&id, sam["id"].as_str().unwrap()).await;
    assert_ended_page(&app, &token_of(&sam), 410).await;
    assert_eq!(
        app.get(&format!("/join/{}", token_of(&alex)))
            .await
            .status(),
        200
    );
    app.post(&format!("/api/session/{id}/finish"), None).await;
    assert_ended_page(&app, &token_of(&alex), 410).await;
    // A completed session's invite opens nothing any more.
    let own = as_guest(
        &app,
        reqwest::Method::GET,
        &format!("/api/session/{id}"),
        &token_of(&alex),
    )
    .await;
    assert_error(own, 401, "unauthorized").await;
}

#[tokio::test]
async fn unknown_invite_tokens_count_as_guesses() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    for attempt in 0..10 {
        let path = if attempt % 2 == 0 {
            format!("/join/guess-{attempt}")
        } else {
            format!("/api/session/{id}")
        };
        let response = as_guest(
            &app,
            reqwest::Method::GET,
            &path,
            &format!("guess-{attempt}"),
        )
        .await;
        assert!(matches!(response.status().as_u16(), 401 | 404), "{path}");
    }
    let sam = app
        .post(
            &format!("/api/session/{id}/invites"),
            Some(json!({"track": "sam"})),
        )
        .await;
    let sam: Value = sam.json().await.unwrap();
    // Locked out: even the right invite waits out the minute.
    let locked = as_guest(
        &app,
        reqwest::Method::GET,
        &format!("/api/session/{id}"),
        &token_of(&sam),
    )
    .await;
    assert_error(locked, 429, "too_many_attempts").await;
    // Without --auth-token, a request with no credentials is the host's and needs none.
    assert_eq!(app.get("/api/sessions").await.status(), 200);
}

#[tokio::test]
async fn revoking_an_invite_closes_its_socket_with_4403_and_its_token_is_refused() {
    let app = spawn_app().await;
    let host = Host {
        app: &app,
        token: None,
    };
    let id = host.create_session().await;
    let sam = host.invite(&id, "sam", "Sam").await;
    let token = token_of(&sam);
    let (mut socket, _) = guest_socket(&app, &id, "sam", &token).await.unwrap();
    let audio = pcm(7, 4800);
    socket.send_frame(0, &audio).await;
    assert_eq!(socket.flush(4800).await, 4800);
    // The host's own socket on another track is not touched.
    let (mut mic, _) = host.socket(&id, "mic").await;

    assert_eq!(
        host.revoke(&id, sam["id"].as_str().unwrap()).await.status(),
        204
    );
    let closed = socket.expect_close().await;
    assert_eq!(closed.code, 4403, "{:?}", closed.messages);
    let refused = as_guest(
        &app,
        reqwest::Method::GET,
        &format!("/api/session/{id}"),
        &token,
    )
    .await;
    assert_error(refused, 401, "unauthorized").await;
    let (status, _) = guest_socket(&app, &id, "sam", &token)
        .await
        .err()
        .expect("a revoked invite opens no socket");
    assert_eq!(status, 401);
    // What was acked stays.
    let track = host.track(&id, "sam").await;
    assert_eq!(track["dataBytes"], 4800);
    assert_eq!(track["connected"], false);
    mic.send_frame(0, &pcm(8, 960)).await;
    assert_eq!(mic.flush(960).await, 960);
    mic.close().await;
}

#[tokio::test]
async fn a_guests_finish_is_forbidden_and_its_socket_stays_open() {
    let app = spawn_app().await;
    let host = Host {
        app: &app,
        token: None,
    };
    let id = host.create_session().await;
    let token = token_of(&host.invite(&id, "sam", "Sam").await);
    let (mut socket, _) = guest_socket(&app, &id, "sam", &token).await.unwrap();
    socket.send_text(r#"{"type":"finish"}"#).await;
    let refusal = next_besides_acks(&mut socket, "error").await;
    assert_eq!(refusal["code"], "forbidden", "{refusal}");
    // Still open, still recording; the session is not finished.
    socket.send_frame(0, &pcm(3, 960)).await;
    assert_eq!(socket.flush(960).await, 960);
    let session = host.get_json(&format!("/api/session/{id}")).await;
    assert_eq!(session["status"], "active");
    socket.close().await;
}

#[tokio::test]
async fn backlog_participant_and_done_are_shown_on_each_track() {
    let app = spawn_app().await;
    let host = Host {
        app: &app,
        token: None,
    };
    let id = host.create_session().await;
    let token = token_of(&host.invite(&id, "sam", "Sam").await);
    let (mut sam, _) = guest_socket(&app, &id, "sam", &token).await.unwrap();
    let (mut mic, _) = host.socket(&id, "mic").await;
    sam.send_text(r#"{"type":"backlog","bytes":96000}"#).await;
    let session = wait_for(&host, &id, "backlog shown", |session| {
        session["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|track| track["name"] == "sam" && track["clientBacklogBytes"] == 96000)
    })
    .await;
    assert!(session["stopRequestedAt"].is_null());
    let mic_track = host.track(&id, "mic").await;
    assert!(mic_track["clientBacklogBytes"].is_null(), "{mic_track}");
    assert!(mic_track["participant"].is_null(), "{mic_track}");
    assert_eq!(mic_track["done"], false);
    assert_eq!(host.track(&id, "sam").await["participant"], "Sam");

    // `done` syncs, acks everything, and marks the track done; a new socket makes it not done.
    mic.send_frame(0, &pcm(4, 1920)).await;
    mic.send_text(r#"{"type":"done"}"#).await;
    assert_eq!(mic.wait_ack(1920).await, 1920);
    wait_for(&host, &id, "mic done", |session| {
        session["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|track| track["name"] == "mic" && track["done"] == true)
    })
    .await;
    // Without a stop pending, done ends nothing.
    assert_eq!(
        host.get_json(&format!("/api/session/{id}")).await["status"],
        "active"
    );
    mic.close().await;
    let (again, offset) = host.socket(&id, "mic").await;
    assert_eq!(offset, 1920);
    assert_eq!(host.track(&id, "mic").await["done"], false);
    again.close().await;
    sam.close().await;
}

/// Sends `audio` from `from` in frames of 960 bytes.
async fn send_audio(client: &mut WsClient, from: u64, audio: &[u8]) {
    for (index, chunk) in audio.chunks(960).enumerate() {
        client.send_frame(from + (index * 960) as u64, chunk).await;
    }
}

/// After `stop`: the rest, then `done`; returns once the ack covering all of it arrived.
async fn send_rest_and_done(client: &mut WsClient, from: u64, rest: &[u8]) {
    send_audio(client, from, rest).await;
    client.send_text(r#"{"type":"done"}"#).await;
    let total = from + rest.len() as u64;
    assert_eq!(client.wait_ack(total).await, total);
}

#[tokio::test]
async fn stop_for_everyone_completes_the_session_once_every_track_is_done() {
    let app = spawn_app().await;
    let host = Host {
        app: &app,
        token: None,
    };
    let id = host.create_session().await;
    let token = token_of(&host.invite(&id, "sam", "Sam").await);
    let (mut mic, _) = host.socket(&id, "mic").await;
    let (mut sam, _) = guest_socket(&app, &id, "sam", &token).await.unwrap();
    let (mic_audio, sam_audio) = (pcm(10, 96_000), pcm(11, 48_000));
    send_audio(&mut mic, 0, &mic_audio[..48_000]).await;
    send_audio(&mut sam, 0, &sam_audio[..24_000]).await;
    mic.wait_ack(48_000).await;
    sam.wait_ack(24_000).await;

    let response = host.post(&format!("/api/session/{id}/stop"), None).await;
    assert_eq!(response.status(), 202);
    let stopped: Value = response.json().await.unwrap();
    assert_eq!(stopped["status"], "active");
    assert!(stopped["stopRequestedAt"]
        .as_str()
        .is_some_and(|at| at.ends_with('Z')));
    next_besides_acks(&mut mic, "stop").await;
    next_besides_acks(&mut sam, "stop").await;

    // The guest sends what it still holds and says done: the host's track still records.
    send_rest_and_done(&mut sam, 24_000, &sam_audio[24_000..]).await;
    let waiting = host.get_json(&format!("/api/session/{id}")).await;
    assert_eq!(waiting["status"], "active", "waits for mic");
    send_rest_and_done(&mut mic, 48_000, &mic_audio[48_000..]).await;

    for socket in [&mut mic, &mut sam] {
        let closed = socket.expect_close().await;
        assert_eq!(closed.code, 1000);
        assert!(
            closed.messages.iter().any(|m| m["type"] == "finished"),
            "{:?}",
            closed.messages
        );
    }
    let session = host.get_json(&format!("/api/session/{id}")).await;
    assert_eq!(session["status"], "completed");
    assert!(session["completedAt"].is_string());
    assert_eq!(read_wav_data(&app.track_path(&id, "mic")), mic_audio);
    assert_eq!(read_wav_data(&app.track_path(&id, "sam")), sam_audio);
}

#[tokio::test]
async fn a_stop_waits_for_a_gone_client_that_comes_back_and_gets_stop_after_ready() {
    let app = spawn_app().await;
    let host = Host {
        app: &app,
        token: None,
    };
    let id = host.create_session().await;
    let token = token_of(&host.invite(&id, "sam", "Sam").await);
    let (mut mic, _) = host.socket(&id, "mic").await;
    let (mut sam, _) = guest_socket(&app, &id, "sam", &token).await.unwrap();
    let sam_audio = pcm(21, 19_200);
    send_audio(&mut sam, 0, &sam_audio[..9_600]).await;
    sam.flush(9_600).await;
    // Sam's browser is gone (its socket dropped without a word).
    drop(sam);
    wait_for(&host, &id, "sam disconnected", |session| {
        session["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|track| track["name"] == "sam" && track["connected"] == false)
    })
    .await;

    assert_eq!(
        host.post(&format!("/api/session/{id}/stop"), None)
            .await
            .status(),
        202
    );
    next_besides_acks(&mut mic, "stop").await;
    let mic_audio = pcm(20, 4_800);
    send_rest_and_done(&mut mic, 0, &mic_audio).await;
    // Sam's track is not done: the session waits.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let waiting = host.get_json(&format!("/api/session/{id}")).await;
    assert_eq!(waiting["status"], "active", "{waiting}");
    assert!(waiting["stopRequestedAt"].is_string());

    // Sam reopens the link: `stop` right after `ready`, then the rest and done.
    let (mut sam, ready) = guest_socket(&app, &id, "sam", &token).await.unwrap();
    assert_eq!(ready["offset"], 9_600);
    let stop = tokio::time::timeout(WAIT, sam.next_json())
        .await
        .expect("a message right after ready")
        .expect("stop after ready");
    assert_eq!(stop["type"], "stop", "{stop}");
    send_rest_and_done(&mut sam, 9_600, &sam_audio[9_600..]).await;
    assert_eq!(sam.expect_close().await.code, 1000);
    assert_eq!(mic.expect_close().await.code, 1000);
    let session = host.get_json(&format!("/api/session/{id}")).await;
    assert_eq!(session["status"], "completed");
    assert_eq!(read_wav_data(&app.track_path(&id, "sam")), sam_audio);
    assert_eq!(read_wav_data(&app.track_path(&id, "mic")), mic_audio);
}

#[tokio::test]
async fn revoking_a_gone_guest_ends_the_wait_of_a_stop() {
    let app = spawn_app().await;
    let host = Host {
        app: &app,
        token: None,
    };
    let id = host.create_session().await;
    let invite = host.invite(&id, "sam", "Sam").await;
    let token = token_of(&invite);
    let (mut mic, _) = host.socket(&id, "mic").await;
    let (mut sam, _) = guest_socket(&app, &id, "sam", &token).await.unwrap();
    let sam_audio = pcm(22, 9_600);
    send_audio(&mut sam, 0, &sam_audio).await;
    sam.flush(9_600).await;
    drop(sam);
    assert_eq!(
        host.post(&format!("/api/session/{id}/stop"), None)
            .await
            .status(),
        202
    );
    next_besides_acks(&mut mic, "stop").await;
    send_rest_and_done(&mut mic, 0, &pcm(23, 4_800)).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        host.get_json(&format!("/api/session/{id}")).await["status"],
        "active"
    );
    // The host gives up on Sam by revoking the invite: nothing more can come from that track.
    let revoke = format!(
        "/api/session/{id}/invites/{}",
        invite["id"].as_str().unwrap()
    );
    let response = app.http.delete(app.url(&revoke)).send().await.unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(mic.expect_close().await.code, 1000);
    let session = host.get_json(&format!("/api/session/{id}")).await;
    assert_eq!(session["status"], "completed", "{session}");
    assert_eq!(read_wav_data(&app.track_path(&id, "sam")), sam_audio);
    // The history page names who recorded the track.
    let history = app.get("/").await.text().await.unwrap();
    assert!(history.contains(r#"<span class="participant">Sam</span>"#));
}

#[tokio::test]
async fn finish_ends_the_wait_and_resume_calls_the_stop_off() {
    let app = spawn_app().await;
    let host = Host {
        app: &app,
        token: None,
    };
    let id = host.create_session().await;
    let (mut mic, _) = host.socket(&id, "mic").await;
    let (guest, _) = host.socket(&id, "guest").await;
    guest.close().await;
    let stop = format!("/api/session/{id}/stop");
    assert_eq!(host.post(&stop, None).await.status(), 202);
    next_besides_acks(&mut mic, "stop").await;

    // Resume calls the stop off: done on every track then finishes nothing.
    let resumed = host.post(&format!("/api/session/{id}/resume"), None).await;
    assert_eq!(resumed.status(), 200);
    let resumed: Value = resumed.json().await.unwrap();
    assert!(resumed["stopRequestedAt"].is_null(), "{resumed}");

    // Stop again, and Mark complete ends the wait for the guest that never comes back.
    assert_eq!(host.post(&stop, None).await.status(), 202);
    next_besides_acks(&mut mic, "stop").await;
    send_rest_and_done(&mut mic, 0, &pcm(30, 960)).await;
    let finished = host.post(&format!("/api/session/{id}/finish"), None).await;
    assert_eq!(finished.status(), 200);
    assert_eq!(mic.expect_close().await.code, 1000);
    let refused = host.post(&stop, None).await;
    assert_error(refused, 409, "invalid_transition").await;
}

#[tokio::test]
async fn a_stop_when_every_track_is_done_completes_at_once() {
    let app = spawn_app().await;
    let host = Host {
        app: &app,
        token: None,
    };
    let id = host.create_session().await;
    let (mut mic, _) = host.socket(&id, "mic").await;
    send_rest_and_done(&mut mic, 0, &pcm(40, 960)).await;
    // The ack that covers everything may come from a sync before `done` is handled: wait
    // until the track shows done, as a host's roster would.
    wait_for(&host, &id, "mic done", |session| {
        session["tracks"][0]["done"] == true
    })
    .await;
    let response = host.post(&format!("/api/session/{id}/stop"), None).await;
    assert_eq!(response.status(), 202);
    let session: Value = response.json().await.unwrap();
    assert_eq!(session["status"], "completed", "{session}");
    assert_eq!(mic.expect_close().await.code, 1000);
    let missing = format!("/api/session/{}/stop", uuid_like());
    assert_error(host.post(&missing, None).await, 404, "not_found").await;
}

/// A data directory from before guests: its sessions and tracks read back with the new fields
/// (no stop pending, not done, no participant) and take invites.
#[tokio::test]
async fn a_database_from_before_guests_upgrades_in_place() {
    use diesel::connection::SimpleConnection;
    use diesel::migration::{MigrationConnection, MigrationSource};
    use diesel::{Connection, SqliteConnection};
    use diesel_migrations::{FileBasedMigrations, MigrationHarness};

    let old = tempfile::tempdir().unwrap();
    let id = "0b9a3f36-7c39-4f0e-9a4e-5d0d1a2b3c4d";
    {
        let path = old.path().join("safetake.db");
        let mut conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        conn.setup().unwrap();
        let source = FileBasedMigrations::from_path(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/migrations/sqlite"
        ))
        .unwrap();
        let mut migrations =
            MigrationSource::<diesel::sqlite::Sqlite>::migrations(&source).unwrap();
        migrations.sort_by_key(|migration| migration.name().to_string());
        for migration in migrations
            .iter()
            .filter(|migration| migration.name().to_string().as_str() < "2026-12-01")
        {
            conn.run_migration(migration).unwrap();
        }
        conn.batch_execute(&format!(
            "INSERT INTO sessions VALUES ('{id}', 'Old episode', 'incomplete', \
             '2026-11-25 10:00:00', '2026-11-25 10:30:00', NULL); \
             INSERT INTO tracks VALUES ('{id}', 'mic', 48000, 1, 's16le', 0, '2026-11-25 10:00:00');"
        ))
        .unwrap();
    }
    let data_dir = old.path().to_path_buf();
    let app = spawn_app_with(move |config| config.data_dir = data_dir).await;
    let session = app.session(id).await;
    assert_eq!(session["title"], "Old episode");
    assert!(session["stopRequestedAt"].is_null(), "{session}");
    let mic = &session["tracks"][0];
    assert_eq!(mic["done"], false, "{mic}");
    assert!(mic["participant"].is_null());
    assert!(mic["clientBacklogBytes"].is_null());
    let invite = app
        .post(
            &format!("/api/session/{id}/invites"),
            Some(json!({"track": "sam"})),
        )
        .await;
    assert_eq!(invite.status(), 201);
}
