//! One test per REST row of the contract.

use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app};

fn is_timestamp(value: &Value) -> bool {
    let Some(text) = value.as_str() else {
        return false;
    };
    text.len() == 24
        && text.ends_with('Z')
        && text.as_bytes()[19] == b'.'
        && chrono::DateTime::parse_from_rfc3339(text).is_ok()
}

#[tokio::test]
async fn create_session_is_active_with_a_readable_default_title() {
    let app = spawn_app().await;
    let response = app.post("/api/sessions", None).await;
    assert_eq!(response.status(), 201);
    let session: Value = response.json().await.unwrap();
    let id = session["id"].as_str().unwrap();
    assert!(
        safetake::domain::SessionId::parse(id).is_some(),
        "lower-case hyphenated uuid: {id}"
    );
    assert_eq!(session["status"], "active");
    assert!(session["title"].as_str().unwrap().starts_with("Recording "));
    assert!(is_timestamp(&session["createdAt"]), "{session}");
    assert!(is_timestamp(&session["lastHeartbeat"]), "{session}");
    assert_eq!(session["completedAt"], Value::Null);
}

#[tokio::test]
async fn titles_are_kept_exactly_up_to_200_characters() {
    let app = spawn_app().await;
    let title = format!("Épisode 12 — <b>\"ß\"</b> {}", "🎙".repeat(176));
    assert_eq!(title.chars().count(), 200);
    let response = app
        .post("/api/sessions", Some(json!({ "title": title })))
        .await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let fetched = app.session(created["id"].as_str().unwrap()).await;
    assert_eq!(fetched["title"], title.as_str());

    let too_long = "a".repeat(201);
    assert_error(
        app.post("/api/sessions", Some(json!({ "title": too_long })))
            .await,
        400,
        "invalid_title",
    )
    .await;
    assert_error(
        app.post_raw("/api/sessions", "{\"title\": ").await,
        400,
        "invalid_body",
    )
    .await;
    assert_error(
        app.post_raw("/api/sessions", "{\"title\": 42}").await,
        400,
        "invalid_body",
    )
    .await;
    assert_error(
        app.post_raw("/api/sessions", "[1,2]").await,
        400,
        "invalid_body",
    )
    .await;
}

#[tokio::test]
async fn list_is_newest_first_filtered_and_paged() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(app.create_session().await);
    }
    app.post(&format!("/api/session/{}/finish", ids[0]), None)
        .await;
    let all = app.get_json("/api/sessions").await;
    assert_eq!(all["total"], 5);
    let listed: Vec<&str> = all["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    assert_eq!(listed, newest_first);

    let page = app.get_json("/api/sessions?limit=2&offset=1").await;
    assert_eq!(page["total"], 5);
    assert_eq!(page["sessions"].as_array().unwrap().len(), 2);
    assert_eq!(page["sessions"][0]["id"], ids[3].as_str());

    let completed = app.get_json("/api/sessions?status=completed").await;
    assert_eq!(completed["total"], 1);
    assert_eq!(completed["sessions"][0]["id"], ids[0].as_str());
    let active = app.get_json("/api/sessions?status=active").await;
    assert_eq!(active["total"], 4);
}

#[tokio::test]
async fn list_refuses_bad_status_and_page_numbers() {
    let app = spawn_app().await;
    assert_error(
        app.get("/api/sessions?status=paused").await,
        400,
        "invalid_status",
    )
    .await;
    for query in [
        "limit=-1",
        "limit=abc",
        "limit=1001",
        "offset=-5",
        "offset=1.5",
        "limit=99999999999999999999999",
        "limit=",
    ] {
        assert_error(
            app.get(&format!("/api/sessions?{query}")).await,
            400,
            "invalid_page",
        )
        .await;
    }
    assert_eq!(
        app.get("/api/sessions?limit=1000&offset=0").await.status(),
        200
    );
}

#[tokio::test]
async fn unknown_or_misspelled_ids_are_404() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    for bad in [
        "00000000-0000-4000-8000-000000000000".to_string(),
        id.to_uppercase(),
        id.replace('-', ""),
        format!("{{{id}}}"),
        "not-a-uuid".to_string(),
        "..%2F..%2Fetc%2Fpasswd".to_string(),
    ] {
        assert_error(
            app.get(&format!("/api/session/{bad}")).await,
            404,
            "not_found",
        )
        .await;
        assert_error(
            app.post(&format!("/api/session/{bad}/finish"), None).await,
            404,
            "not_found",
        )
        .await;
    }
}

#[tokio::test]
async fn get_session_lists_its_tracks() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let session = app.session(&id).await;
    assert_eq!(session["id"], id.as_str());
    assert_eq!(session["tracks"], json!([]));

    // Two tracks: `mic` in the default format, attached twice and now detached; `guest` in
    // 44.1 kHz stereo float, still attached. Lengths that make `durationMs` round down.
    use crate::helpers::{pcm, read_wav_data, WAIT};
    let before = chrono::Utc::now();
    let mic = pcm(60, 1600);
    let (mut socket, _) = app.connect(&id, "track=mic").await;
    socket.send_frame(0, &mic[..1000]).await;
    socket.flush(1000).await;
    socket.close().await;
    let (mut socket, ready) = app.connect(&id, "track=mic").await;
    assert_eq!(ready["offset"], 1000);
    socket.send_frame(1000, &mic[1000..]).await;
    socket.flush(1600).await;
    socket.close().await;
    let guest = pcm(61, 8000);
    let (mut guest_socket, _) = app
        .connect(&id, "track=guest&sampleRate=44100&channels=2&format=f32le")
        .await;
    guest_socket.send_frame(0, &guest).await;
    guest_socket.flush(8000).await;

    // Segments are recorded in the background and a detach lands a moment after the close.
    let deadline = std::time::Instant::now() + WAIT;
    let tracks = loop {
        let session = app.session(&id).await;
        let tracks = session["tracks"].as_array().cloned().unwrap_or_default();
        let settled = |name: &str, segments: usize, connected: bool| {
            tracks.iter().any(|track| {
                track["name"] == name
                    && track["connected"] == connected
                    && track["segments"].as_array().map(Vec::len) == Some(segments)
            })
        };
        if settled("mic", 2, false) && settled("guest", 1, true) {
            break tracks;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tracks did not settle: {session}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let after = chrono::Utc::now();
    assert_eq!(tracks.len(), 2, "{tracks:?}");
    let track = |name: &str| {
        tracks
            .iter()
            .find(|track| track["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no track {name} in {tracks:?}"))
    };
    let started_at = |segment: &Value| {
        assert!(is_timestamp(&segment["startedAt"]), "{segment}");
        let at = chrono::DateTime::parse_from_rfc3339(segment["startedAt"].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc);
        // The server's clock at the attach, in milliseconds.
        assert!(
            at >= before - chrono::Duration::milliseconds(1) && at <= after,
            "{segment} outside {before}..{after}"
        );
        at
    };

    let mic_track = track("mic");
    let mic_file = std::fs::read(app.track_path(&id, "mic")).unwrap();
    assert_eq!(mic_track["path"], format!("sessions/{id}/mic.wav"));
    assert_eq!(mic_track["sizeBytes"], mic_file.len());
    assert_eq!(mic_track["sizeBytes"], 44 + 1600);
    assert_eq!(mic_track["dataBytes"], 1600);
    assert_eq!(mic_track["sampleRate"], 48000);
    assert_eq!(mic_track["channels"], 1);
    assert_eq!(mic_track["format"], "s16le");
    // 800 samples at 48 kHz: 16.67 ms.
    assert_eq!(mic_track["durationMs"], 16);
    assert_eq!(mic_track["connected"], false);
    let segments = mic_track["segments"].as_array().unwrap();
    assert_eq!(segments[0]["offset"], 0);
    assert_eq!(segments[1]["offset"], 1000);
    assert!(started_at(&segments[0]) <= started_at(&segments[1]));
    assert_eq!(read_wav_data(&app.track_path(&id, "mic")), mic);

    let guest_track = track("guest");
    let guest_file = std::fs::read(app.track_path(&id, "guest")).unwrap();
    assert_eq!(guest_track["path"], format!("sessions/{id}/guest.wav"));
    assert_eq!(guest_track["sizeBytes"], guest_file.len());
    assert_eq!(guest_track["dataBytes"], 8000);
    assert_eq!(guest_track["sampleRate"], 44100);
    assert_eq!(guest_track["channels"], 2);
    assert_eq!(guest_track["format"], "f32le");
    // 1000 frames of 8 bytes at 44.1 kHz: 22.68 ms.
    assert_eq!(guest_track["durationMs"], 22);
    assert_eq!(guest_track["connected"], true);
    let segments = guest_track["segments"].as_array().unwrap();
    assert_eq!(segments[0]["offset"], 0);
    started_at(&segments[0]);
    assert_eq!(read_wav_data(&app.track_path(&id, "guest")), guest);
    guest_socket.close().await;
}

#[tokio::test]
async fn keepalive_moves_the_heartbeat_only_while_active() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let before = app.session(&id).await["lastHeartbeat"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let response = app
        .post(&format!("/api/session/{id}/keepalive"), None)
        .await;
    assert_eq!(response.status(), 200);
    let after: Value = response.json().await.unwrap();
    assert!(after["lastHeartbeat"].as_str().unwrap() > before.as_str());
    app.post(&format!("/api/session/{id}/finish"), None).await;
    assert_error(
        app.post(&format!("/api/session/{id}/keepalive"), None)
            .await,
        400,
        "not_active",
    )
    .await;
}

#[tokio::test]
async fn check_timeouts_marks_silent_sessions_incomplete() {
    let app = spawn_app().await;
    let silent = app.create_session().await;
    let response = app
        .post(
            "/api/session/check-timeouts",
            Some(json!({"timeoutMs": 3_600_000})),
        )
        .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["timedOut"], 0);

    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let response = app
        .post(
            "/api/session/check-timeouts",
            Some(json!({"timeoutMs": 10})),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["timedOut"], 1);
    assert_eq!(body["sessionIds"], json!([silent]));
    assert_eq!(app.session(&silent).await["status"], "incomplete");
    // The server's own timeout (an hour here) leaves a fresh session alone.
    let fresh = app.create_session().await;
    let body: Value = app
        .post("/api/session/check-timeouts", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["timedOut"], 0);
    assert_eq!(app.session(&fresh).await["status"], "active");
}

#[tokio::test]
async fn check_timeouts_refuses_bad_timeouts() {
    let app = spawn_app().await;
    for body in [
        r#"{"timeoutMs": -1}"#,
        r#"{"timeoutMs": 1.5}"#,
        r#"{"timeoutMs": "10"}"#,
    ] {
        assert_error(
            app.post_raw("/api/session/check-timeouts", body).await,
            400,
            "invalid_timeout",
        )
        .await;
    }
    assert_error(
        app.post_raw("/api/session/check-timeouts", "{").await,
        400,
        "invalid_body",
    )
    .await;
}

#[tokio::test]
async fn resume_reactivates_an_incomplete_session_only() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let unchanged: Value = app
        .post(&format!("/api/session/{id}/resume"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(unchanged["status"], "active");

    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    app.post("/api/session/check-timeouts", Some(json!({"timeoutMs": 0})))
        .await;
    assert_eq!(app.session(&id).await["status"], "incomplete");
    let response = app.post(&format!("/api/session/{id}/resume"), None).await;
    assert_eq!(response.status(), 200);
    let resumed: Value = response.json().await.unwrap();
    assert_eq!(resumed["status"], "active");

    app.post(&format!("/api/session/{id}/finish"), None).await;
    assert_error(
        app.post(&format!("/api/session/{id}/resume"), None).await,
        409,
        "invalid_transition",
    )
    .await;
    assert_eq!(app.session(&id).await["status"], "completed");
}

#[tokio::test]
async fn finish_is_final() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let response = app.post(&format!("/api/session/{id}/finish"), None).await;
    assert_eq!(response.status(), 200);
    let finished: Value = response.json().await.unwrap();
    assert_eq!(finished["status"], "completed");
    assert!(is_timestamp(&finished["completedAt"]));
    assert_error(
        app.post(&format!("/api/session/{id}/finish"), None).await,
        409,
        "invalid_transition",
    )
    .await;
}

#[tokio::test]
async fn delete_refuses_active_sessions_and_removes_the_files_of_others() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let (mut socket, _) = app.connect(&id, "track=mic").await;
    socket.send_frame(0, &[1, 2, 3, 4]).await;
    socket.flush(4).await;
    socket.close().await;
    let response = app
        .http
        .delete(app.url(&format!("/api/session/{id}")))
        .send()
        .await
        .unwrap();
    assert_error(response, 409, "session_active").await;
    assert!(app.track_path(&id, "mic").exists());

    app.post(&format!("/api/session/{id}/finish"), None).await;
    let response = app
        .http
        .delete(app.url(&format!("/api/session/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(
        !app.track_path(&id, "mic").parent().unwrap().exists(),
        "the session's files are gone"
    );
    assert_error(
        app.get(&format!("/api/session/{id}")).await,
        404,
        "not_found",
    )
    .await;
    let response = app
        .http
        .delete(app.url(&format!("/api/session/{id}")))
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "not_found").await;
}

#[tokio::test]
async fn healthz_answers_with_a_database_round_trip() {
    let app = spawn_app().await;
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );
}
