//! Hostile input: each attack runs against a live server beside a control session whose audio
//! was acked first. After each: `/healthz` answers and the control's file is byte-identical.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{frame, pcm, read_wav_data, spawn_app, spawn_app_with, TestApp, WsClient};

/// A session recorded before the attack; it must come out untouched.
struct Control {
    id: String,
    audio: Vec<u8>,
    file: Vec<u8>,
}

impl Control {
    async fn record(app: &TestApp) -> Control {
        let id = app.create_session().await;
        let (mut socket, _) = app.connect(&id, "track=mic").await;
        let audio = pcm(999, 48_000);
        socket.send_frame(0, &audio).await;
        assert_eq!(socket.flush(audio.len() as u64).await, audio.len() as u64);
        socket.close().await;
        app.post(&format!("/api/session/{id}/finish"), None).await;
        let file = std::fs::read(app.track_path(&id, "mic")).unwrap();
        Control { id, audio, file }
    }

    async fn assert_intact(&self, app: &TestApp) {
        assert_eq!(app.get("/healthz").await.status(), 200, "the server is up");
        assert!(
            std::fs::read(app.track_path(&self.id, "mic")).unwrap() == self.file,
            "control file unchanged"
        );
        assert!(read_wav_data(&app.track_path(&self.id, "mic")) == self.audio);
        let track = app.track(&self.id, "mic").await;
        assert_eq!(track["dataBytes"], self.audio.len());
    }
}

/// What the contract says a frame does to a track holding `stored` bytes of block `block`.
enum Expect {
    Append(usize),
    Close(u16),
}

fn expected(frame: &[u8], stored: u64, block: u64) -> Expect {
    if frame.len() < 8 || !(frame.len() as u64 - 8).is_multiple_of(block) {
        return Expect::Close(1007);
    }
    let offset = u64::from_le_bytes(frame[..8].try_into().unwrap());
    if !offset.is_multiple_of(block) {
        return Expect::Close(1007);
    }
    if offset > stored {
        return Expect::Close(4009);
    }
    let payload = (frame.len() - 8) as u64;
    Expect::Append(payload.saturating_sub(stored - offset) as usize)
}

/// Random frames, biased towards the interesting offsets around the stored size, checked
/// against a model of the contract: thousands of cases, each followed by a flush.
#[tokio::test]
async fn random_frames_do_what_the_contract_says_and_nothing_else() {
    let app = spawn_app().await;
    let control = Control::record(&app).await;
    let id = app.create_session().await;
    let block = 4u64; // stereo s16
    let query = "track=fuzz&channels=2";
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut model: Vec<u8> = Vec::new();
    let (mut socket, _) = app.connect(&id, query).await;
    for case in 0..2000 {
        let stored = model.len() as u64;
        let bytes: Vec<u8> = match rng.gen_range(0..4) {
            0 => (0..rng.gen_range(0..40)).map(|_| rng.gen()).collect(),
            1 => {
                let offset = stored.saturating_sub(rng.gen_range(0..64))
                    + rng.gen_range(0..3) * rng.gen_range(0..8);
                let payload: Vec<u8> = (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect();
                frame(offset, &payload)
            }
            2 => frame(u64::MAX - rng.gen_range(0..4), &[1, 2, 3, 4]),
            _ => frame(stored, &[]),
        };
        let expect = expected(&bytes, stored, block);
        socket.send_raw(bytes.clone()).await;
        match expect {
            Expect::Append(fresh) => {
                let start = bytes.len() - fresh;
                model.extend_from_slice(&bytes[start..]);
                assert_eq!(
                    socket.flush(model.len() as u64).await,
                    model.len() as u64,
                    "case {case}"
                );
            }
            Expect::Close(code) => {
                let closed = socket.expect_close().await;
                assert_eq!(closed.code, code, "case {case}: {bytes:?}");
                let (next, ready) = app.connect(&id, query).await;
                assert_eq!(ready["offset"], model.len(), "case {case}: nothing written");
                socket = next;
            }
        }
    }
    socket.close().await;
    assert!(read_wav_data(&app.track_path(&id, "fuzz")) == model);
    control.assert_intact(&app).await;
}

#[tokio::test]
async fn a_flood_of_flushes_gets_one_ack_each_and_junk_text_closes_1003() {
    let app = spawn_app().await;
    let control = Control::record(&app).await;
    let id = app.create_session().await;
    let (socket, _) = app.connect(&id, "track=mic").await;
    let (mut sink, mut stream) = socket.ws.split();
    let reader = tokio::spawn(async move {
        let mut acks = 0;
        while acks < 5000 {
            match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
                Ok(Some(Ok(Message::Text(text)))) if text.contains("\"ack\"") => acks += 1,
                Ok(Some(Ok(_))) => continue,
                _ => break,
            }
        }
        acks
    });
    sink.send(Message::Binary(frame(0, &[1, 2]))).await.unwrap();
    for _ in 0..5000 {
        sink.send(Message::Text(r#"{"type":"flush"}"#.into()))
            .await
            .unwrap();
    }
    assert_eq!(reader.await.unwrap(), 5000);

    let (mut socket, _) = app.connect(&id, "track=mic").await;
    for _ in 0..100 {
        socket
            .ws
            .feed(Message::Text("{\"type\":".repeat(50)))
            .await
            .unwrap();
    }
    socket.ws.flush().await.unwrap();
    assert_eq!(socket.expect_close().await.code, 1003);
    control.assert_intact(&app).await;
}

#[tokio::test]
async fn thousands_of_quick_connects_and_drops_leave_the_server_clean() {
    let app = spawn_app_with(|config| config.max_connections = 5).await;
    let control = Control::record(&app).await;
    let id = app.create_session().await;
    for round in 0..2000 {
        let (socket, _) = app.connect(&id, &format!("track=t{}", round % 3)).await;
        if round % 2 == 0 {
            socket.close().await;
        } else {
            drop(socket); // gone without a close frame
        }
    }
    // Every place under --max-connections was given back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut open = Vec::new();
    while open.len() < 5 {
        match WsClient::connect(&app.ws_url(&id, &format!("track=t{}", open.len() % 3)), &[]).await
        {
            Ok((socket, _)) => open.push(socket),
            Err((503, _)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    control.assert_intact(&app).await;
}

#[tokio::test]
async fn two_sockets_racing_on_one_track_never_duplicate_or_lose_a_byte() {
    let app = spawn_app().await;
    let control = Control::record(&app).await;
    let id = app.create_session().await;
    let source = pcm(5, 96_000);
    let racers: Vec<_> = (0..2)
        .map(|racer| {
            let url = app.ws_url(&id, "track=mic");
            let source = source.clone();
            tokio::spawn(async move {
                for round in 0..25 {
                    let Ok((mut socket, ready)) = WsClient::connect(&url, &[]).await else {
                        continue;
                    };
                    let mut offset = ready["offset"].as_u64().unwrap() as usize;
                    let chunk = 960 + 2 * (racer + round);
                    while offset < source.len() {
                        let end = (offset + chunk).min(source.len());
                        if socket
                            .ws
                            .send(Message::Binary(frame(offset as u64, &source[offset..end])))
                            .await
                            .is_err()
                        {
                            break;
                        }
                        offset = end;
                        if offset.is_multiple_of(chunk * 8) {
                            tokio::task::yield_now().await;
                        }
                    }
                    socket.close().await;
                }
            })
        })
        .collect();
    for racer in racers {
        racer.await.unwrap();
    }
    let (mut socket, ready) = app.connect(&id, "track=mic").await;
    let offset = ready["offset"].as_u64().unwrap() as usize;
    socket.send_frame(offset as u64, &source[offset..]).await;
    assert_eq!(socket.flush(source.len() as u64).await, source.len() as u64);
    assert!(
        read_wav_data(&app.track_path(&id, "mic")) == source,
        "stored bytes are the source, once"
    );
    control.assert_intact(&app).await;
}

#[tokio::test]
async fn hostile_names_numbers_and_bodies_are_refused_cleanly() {
    let app = spawn_app().await;
    let control = Control::record(&app).await;
    let id = app.create_session().await;
    for track in [
        "..%2F..%2Fsafetake",
        "%2Fetc%2Fpasswd",
        "mic%00",
        "m%C3%AFc",
        "%F0%9F%8E%99",
        "a%20b",
        "CON.wav",
    ] {
        let refused = WsClient::connect(&app.ws_url(&id, &format!("track={track}")), &[])
            .await
            .err();
        assert_eq!(refused.map(|r| r.0), Some(400), "{track}");
    }
    for query in [
        "limit=18446744073709551616",
        "offset=-0",
        "limit=%2B5",
        "limit=1e3",
        "status=ACTIVE",
    ] {
        let status = app.get(&format!("/api/sessions?{query}")).await.status();
        assert_eq!(status, 400, "{query}");
    }
    for body in [
        "{\"title\": \"\\ud800\"}",
        "{\"title\": [\"a\"]}",
        "\u{0}",
        "{\"title\": \"a\"",
        "null",
        "\"title\"",
    ] {
        let response = app
            .http
            .post(app.url("/api/sessions"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body:?}");
    }
    let huge = json!({"title": "x".repeat(100_000)});
    let status = app.post("/api/sessions", Some(huge)).await.status();
    assert!(status == 400 || status == 413, "{status}");
    control.assert_intact(&app).await;
}
