//! One test per WebSocket rule of the contract: what the client sees and what is on disk.

use serde_json::{json, Value};

use crate::helpers::{frame, pcm, read_wav_data, spawn_app, spawn_app_with, WsClient};

#[tokio::test]
async fn ready_reports_the_stored_offset_and_the_format() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let (socket, ready) = app.connect(&id, "track=mic").await;
    assert_eq!(
        ready,
        json!({"type": "ready", "sessionId": id, "track": "mic", "offset": 0,
               "sampleRate": 48000, "channels": 1, "format": "s16le"})
    );
    socket.close().await;
    let (_socket, ready) = app
        .connect(&id, "track=guest&sampleRate=44100&channels=2&format=f32le")
        .await;
    assert_eq!(ready["sampleRate"], 44100);
    assert_eq!(ready["channels"], 2);
    assert_eq!(ready["format"], "f32le");
}

#[tokio::test]
async fn acked_frames_are_on_disk_byte_for_byte() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let (mut socket, _) = app.connect(&id, "track=mic").await;
    let audio = pcm(1, 1920 * 50);
    for (i, chunk) in audio.chunks(1920).enumerate() {
        socket.send_frame((i * 1920) as u64, chunk).await;
    }
    assert_eq!(socket.flush(audio.len() as u64).await, audio.len() as u64);
    assert_eq!(read_wav_data(&app.track_path(&id, "mic")), audio);
    let track = app.track(&id, "mic").await;
    assert_eq!(track["dataBytes"], audio.len());
    assert_eq!(track["sizeBytes"], audio.len() + 44);
    assert_eq!(track["durationMs"], 1000);
    assert_eq!(track["connected"], true);
    assert_eq!(track["path"], format!("sessions/{id}/mic.wav"));
}

#[tokio::test]
async fn audio_is_acked_within_the_sync_interval_without_a_flush() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let (mut socket, _) = app.connect(&id, "track=mic").await;
    socket.send_frame(0, &pcm(2, 960)).await;
    assert_eq!(socket.wait_ack(960).await, 960);
}

#[tokio::test]
async fn resent_bytes_are_stored_once() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let (mut socket, _) = app.connect(&id, "track=mic").await;
    let audio = pcm(3, 4000);
    socket.send_frame(0, &audio[..2000]).await;
    socket.send_frame(0, &audio[..1000]).await; // entirely old: ignored
    socket.send_frame(1000, &audio[1000..3000]).await; // half old, half new
    socket.send_frame(3000, &audio[3000..]).await;
    socket.send_frame(2000, &audio[2000..]).await; // entirely old again
    assert_eq!(socket.flush(4000).await, 4000);
    assert_eq!(read_wav_data(&app.track_path(&id, "mic")), audio);
}

#[tokio::test]
async fn a_gap_is_refused_with_4009_and_nothing_written() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let (mut socket, _) = app.connect(&id, "track=mic").await;
    socket.send_frame(0, &[1, 2, 3, 4]).await;
    socket.send_frame(8, &[5, 6]).await;
    let closed = socket.expect_close().await;
    assert_eq!(closed.code, 4009);
    let error = closed
        .messages
        .iter()
        .find(|m| m["type"] == "error")
        .expect("an error message");
    assert_eq!(error["code"], "gap");
    assert_eq!(error["expectedOffset"], 4);
    let (_socket, ready) = app.connect(&id, "track=mic").await;
    assert_eq!(ready["offset"], 4);
    assert_eq!(read_wav_data(&app.track_path(&id, "mic")), vec![1, 2, 3, 4]);
}

#[tokio::test]
async fn malformed_binary_frames_are_refused_with_1007() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    for bad in [
        vec![0u8; 7],
        frame(0, &[1, 2, 3]),
        frame(1, &[1, 2]),
        vec![],
    ] {
        let (mut socket, _) = app.connect(&id, "track=mic").await;
        socket.send_raw(bad).await;
        let closed = socket.expect_close().await;
        assert_eq!(closed.code, 1007);
        assert_eq!(closed.messages.last().unwrap()["code"], "bad_frame");
    }
    // An absurd offset is well-formed, so it is a gap.
    let (mut socket, _) = app.connect(&id, "track=mic").await;
    socket.send_frame(u64::MAX - 1, &[1, 2]).await;
    assert_eq!(socket.expect_close().await.code, 4009);
    assert_eq!(app.track(&id, "mic").await["dataBytes"], 0);
}

#[tokio::test]
async fn oversized_frames_are_refused_with_1009() {
    let app = spawn_app_with(|config| config.max_frame_bytes = 1024).await;
    let id = app.create_session().await;
    let (mut socket, _) = app.connect(&id, "track=mic").await;
    socket.send_frame(0, &pcm(4, 1016)).await; // exactly the limit with the header
    assert_eq!(socket.flush(1016).await, 1016);
    socket.send_frame(1016, &pcm(5, 1018)).await;
    let closed = socket.expect_close().await;
    assert_eq!(closed.code, 1009);
    assert_eq!(closed.messages.last().unwrap()["code"], "too_big");
    assert_eq!(app.track(&id, "mic").await["dataBytes"], 1016);
}

#[tokio::test]
async fn unknown_and_oversized_text_messages_close_the_socket() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    for (text, code, error) in [
        (r#"{"type":"dance"}"#.to_string(), 1003, "bad_message"),
        ("not json".to_string(), 1003, "bad_message"),
        (
            format!(r#"{{"type":"flush","pad":"{}"}}"#, "x".repeat(5000)),
            1009,
            "too_big",
        ),
    ] {
        let (mut socket, _) = app.connect(&id, "track=mic").await;
        socket.send_text(&text).await;
        let closed = socket.expect_close().await;
        assert_eq!(closed.code, code, "{text:.40}");
        assert_eq!(closed.messages.last().unwrap()["code"], error);
    }
}

#[tokio::test]
async fn each_flush_gets_one_ack_at_once() {
    let app =
        spawn_app_with(|config| config.sync_interval = std::time::Duration::from_secs(60)).await;
    let id = app.create_session().await;
    let (mut socket, _) = app.connect(&id, "track=mic").await;
    socket.send_frame(0, &[1, 2]).await;
    socket.send_text(r#"{"type":"flush"}"#).await;
    socket.send_text(r#"{"type":"flush"}"#).await;
    assert_eq!(socket.wait_ack(2).await, 2);
    assert_eq!(socket.wait_ack(2).await, 2);
}

#[tokio::test]
async fn a_second_socket_takes_the_track_over_without_losing_a_byte() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let audio = pcm(6, 9600);
    let (mut old, _) = app.connect(&id, "track=mic").await;
    old.send_frame(0, &audio[..4800]).await;
    old.flush(4800).await;
    old.send_frame(4800, &audio[4800..6400]).await;
    // Once the writer holds the frame (not necessarily synced), a new socket takes over: the
    // frame in the TCP buffers would otherwise race the attach.
    let deadline = std::time::Instant::now() + crate::helpers::WAIT;
    while app.track(&id, "mic").await["dataBytes"] != 6400 {
        assert!(
            std::time::Instant::now() < deadline,
            "the frame never reached the writer"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let (mut new, ready) = app.connect(&id, "track=mic").await;
    // The old socket's frames were drained before ready was read.
    assert_eq!(ready["offset"], 6400);
    assert_eq!(old.expect_close().await.code, 4001);
    new.send_frame(4800, &audio[4800..]).await;
    assert_eq!(new.flush(9600).await, 9600);
    assert_eq!(read_wav_data(&app.track_path(&id, "mic")), audio);
}

#[tokio::test]
async fn reconnecting_continues_at_ready_offset_and_records_a_segment() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let audio = pcm(7, 3000);
    let (mut socket, _) = app.connect(&id, "track=mic").await;
    socket.send_frame(0, &audio[..1000]).await;
    socket.flush(1000).await;
    socket.close().await;
    let (mut socket, ready) = app.connect(&id, "track=mic").await;
    assert_eq!(ready["offset"], 1000);
    socket.send_frame(1000, &audio[1000..]).await;
    socket.flush(3000).await;
    // Segments are written off the attach path (`ready` never waits for the database): give
    // the second one a bounded moment to land.
    let deadline = std::time::Instant::now() + crate::helpers::WAIT;
    let (track, offsets) = loop {
        let track = app.track(&id, "mic").await;
        let offsets: Vec<u64> = track["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["offset"].as_u64().unwrap())
            .collect();
        if offsets.len() >= 2 || std::time::Instant::now() > deadline {
            break (track, offsets);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(offsets, vec![0, 1000]);
    let segments = track["segments"].as_array().unwrap();
    assert!(
        segments[0]["startedAt"].as_str().unwrap() <= segments[1]["startedAt"].as_str().unwrap()
    );
    assert_eq!(read_wav_data(&app.track_path(&id, "mic")), audio);
}

#[tokio::test]
async fn finish_over_the_socket_completes_the_session_and_closes_1000() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let (mut mic, _) = app.connect(&id, "track=mic").await;
    let (mut guest, _) = app.connect(&id, "track=guest&channels=2").await;
    guest.send_frame(0, &pcm(8, 400)).await;
    mic.send_frame(0, &pcm(9, 800)).await;
    mic.send_text(r#"{"type":"finish"}"#).await;
    let closed = mic.expect_close().await;
    assert_eq!(closed.code, 1000);
    assert!(
        closed.messages.iter().any(|m| m["type"] == "finished"),
        "{:?}",
        closed.messages
    );
    assert_eq!(guest.expect_close().await.code, 1000);
    let session = app.session(&id).await;
    assert_eq!(session["status"], "completed");
    assert_eq!(read_wav_data(&app.track_path(&id, "mic")), pcm(9, 800));
    assert_eq!(read_wav_data(&app.track_path(&id, "guest")), pcm(8, 400));
}

#[tokio::test]
async fn rest_finish_finalizes_tracks_and_closes_sockets_1000() {
    let app =
        spawn_app_with(|config| config.sync_interval = std::time::Duration::from_secs(60)).await;
    let id = app.create_session().await;
    let (mut socket, _) = app.connect(&id, "track=mic").await;
    socket.send_frame(0, &pcm(10, 2000)).await;
    // The sync interval is a minute: only the finish can have written these bytes.
    let response = app.post(&format!("/api/session/{id}/finish"), None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(read_wav_data(&app.track_path(&id, "mic")), pcm(10, 2000));
    assert_eq!(socket.expect_close().await.code, 1000);
    assert_eq!(app.track(&id, "mic").await["dataBytes"], 2000);
}

#[tokio::test]
async fn attaching_resumes_an_incomplete_session() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    app.post("/api/session/check-timeouts", Some(json!({"timeoutMs": 0})))
        .await;
    assert_eq!(app.session(&id).await["status"], "incomplete");
    let (_socket, _) = app.connect(&id, "track=mic").await;
    assert_eq!(app.session(&id).await["status"], "active");
}

#[tokio::test]
async fn every_format_is_written_as_a_playable_wav() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    for (track, query, block) in [
        ("mono16", "sampleRate=8000&channels=1&format=s16le", 2),
        ("stereo32", "sampleRate=96000&channels=2&format=f32le", 8),
        ("surround", "sampleRate=48000&channels=6&format=s16le", 12),
        ("wide32", "sampleRate=192000&channels=8&format=f32le", 32),
    ] {
        let (mut socket, ready) = app.connect(&id, &format!("track={track}&{query}")).await;
        assert_eq!(ready["offset"], 0);
        let audio = pcm(11, block * 100);
        socket.send_frame(0, &audio).await;
        socket.flush(audio.len() as u64).await;
        assert_eq!(read_wav_data(&app.track_path(&id, track)), audio, "{track}");
        let reader = hound::WavReader::open(app.track_path(&id, track)).unwrap();
        assert_eq!(reader.duration(), 100, "{track}");
    }
}

async fn refused(
    app: &crate::helpers::TestApp,
    id: &str,
    query: &str,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    match WsClient::connect(&app.ws_url(id, query), headers).await {
        Ok(_) => panic!("{query} should be refused"),
        Err(refusal) => refusal,
    }
}

#[tokio::test]
async fn bad_upgrades_are_refused_before_the_upgrade() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let (status, body) = refused(
        &app,
        "00000000-0000-4000-8000-000000000000",
        "track=mic",
        &[],
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    for query in [
        "",
        "track=",
        "track=../etc",
        "track=m%C3%AFc",
        &format!("track={}", "a".repeat(65)),
    ] {
        let (status, body) = refused(&app, &id, query, &[]).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_track")),
            "{query}"
        );
    }
    for query in [
        "sampleRate=7999",
        "sampleRate=192001",
        "sampleRate=-1",
        "sampleRate=4x",
        "channels=0",
        "channels=9",
        "format=u8",
        "sampleRate=99999999999999999999999",
    ] {
        let (status, body) = refused(&app, &id, &format!("track=mic&{query}"), &[]).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_format")),
            "{query}"
        );
    }
    let (socket, _) = app.connect(&id, "track=mic&sampleRate=48000").await;
    socket.close().await;
    let (status, body) = refused(&app, &id, "track=mic&sampleRate=44100", &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("format_mismatch"))
    );
    app.post(&format!("/api/session/{id}/finish"), None).await;
    let (status, body) = refused(&app, &id, "track=mic", &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("session_completed"))
    );
}

#[tokio::test]
async fn a_session_holds_at_most_16_tracks() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    for n in 0..16 {
        let (socket, _) = app.connect(&id, &format!("track=t{n}")).await;
        socket.close().await;
    }
    let (status, body) = refused(&app, &id, "track=t16", &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("too_many_tracks"))
    );
    let (_socket, ready) = app.connect(&id, "track=t3").await;
    assert_eq!(ready["track"], "t3");
}

#[tokio::test]
async fn foreign_origins_are_refused_and_allowed_ones_pass() {
    let app =
        spawn_app_with(|config| config.allowed_origins = vec!["https://studio.example".into()])
            .await;
    let id = app.create_session().await;
    let (status, body) = refused(
        &app,
        &id,
        "track=mic",
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden_origin"))
    );
    let (status, _) = refused(&app, &id, "track=mic", &[("origin", "http://127.0.0.1:1")]).await;
    assert_eq!(status, 403);
    let own = format!("http://127.0.0.1:{}", app.port);
    let (socket, _) = WsClient::connect(&app.ws_url(&id, "track=mic"), &[("origin", &own)])
        .await
        .unwrap();
    socket.close().await;
    let (_socket, _) = WsClient::connect(
        &app.ws_url(&id, "track=mic"),
        &[("origin", "https://studio.example")],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn sockets_beyond_max_connections_get_503() {
    let app = spawn_app_with(|config| config.max_connections = 2).await;
    let id = app.create_session().await;
    let (_a, _) = app.connect(&id, "track=a").await;
    let (b, _) = app.connect(&id, "track=b").await;
    let (status, body) = refused(&app, &id, "track=c", &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("too_many_connections"))
    );
    b.close().await;
    // The place is given back once the socket is gone.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match WsClient::connect(&app.ws_url(&id, "track=c"), &[]).await {
            Ok(_) => break,
            Err((503, _)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Err(other) => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_full_track_refuses_the_frame_with_4413() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let (socket, _) = app.connect(&id, "track=mic").await;
    socket.close().await;
    // Make the track nearly 4 GiB without writing it: a sparse file, repaired on the next open.
    let path = app.track_path(&id, "mic");
    let max_data = u64::from(u32::MAX) - 36 - 1; // both size fields stay within 32 bits
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(44 + max_data - 4).unwrap();
    drop(file);
    // The writer of the first socket may still be finishing; the next one repairs and sees the size.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let (mut socket, offset) = loop {
        let (socket, ready) = app.connect(&id, "track=mic").await;
        let offset = ready["offset"].as_u64().unwrap();
        if offset == max_data - 4 || std::time::Instant::now() > deadline {
            break (socket, offset);
        }
        socket.close().await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(offset, max_data - 4);
    socket.send_frame(offset, &[1, 2, 3, 4]).await;
    assert_eq!(socket.flush(max_data).await, max_data);
    socket.send_frame(max_data, &[5, 6]).await;
    let closed = socket.expect_close().await;
    assert_eq!(closed.code, 4413);
    assert_eq!(closed.messages.last().unwrap()["code"], "track_full");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 44 + max_data);
}

#[tokio::test]
async fn clock_is_answered_at_once_and_marks_are_checked() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let (mut socket, _) = app.connect(&id, "track=mic").await;
    let before = chrono::Utc::now().timestamp_millis() as f64;
    socket
        .send_text(r#"{"type":"clock","clientTime":1234.5}"#)
        .await;
    let answer = socket.next_json().await.expect("the clock answer");
    let after = chrono::Utc::now().timestamp_millis() as f64;
    assert_eq!(answer["type"], "clock", "{answer}");
    assert_eq!(answer["clientTime"], 1234.5);
    let server_time = answer["serverTime"].as_f64().unwrap();
    assert!(
        before - 1.0 <= server_time && server_time <= after + 1.0,
        "{answer}"
    );
    // A well-formed mark is taken and the socket records on.
    socket
        .send_text(r#"{"type":"mark","offset":0,"capturedAt":1764600000000.25}"#)
        .await;
    socket.send_frame(0, &pcm(30, 960)).await;
    assert_eq!(socket.flush(960).await, 960);
    // A mark inside a block, or with a time that is not a number, is a malformed message.
    for bad in [
        r#"{"type":"mark","offset":3,"capturedAt":1}"#,
        r#"{"type":"mark","offset":0,"capturedAt":"soon"}"#,
    ] {
        let (mut socket, _) = app.connect(&id, "track=mic").await;
        socket.send_text(bad).await;
        let closed = socket.expect_close().await;
        assert_eq!(closed.code, 1003, "{bad}");
        assert_eq!(closed.messages.last().unwrap()["code"], "bad_message");
    }
}
