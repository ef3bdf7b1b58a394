//! Stored data the server cannot trust, staged while it is stopped: a status or a format in the
//! database that is none of the contract's, a WAV header that cannot be read, and finalized
//! tracks. After a restart nothing is guessed, nothing unreadable is cut, and only what a crash
//! can have left unfinished is repaired.

use std::path::Path;

use diesel::connection::SimpleConnection;
use diesel::Connection;
use serde_json::Value;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::server::{next_json, pcm, read_wav_data, send_frame, Server, WAIT};

/// Records `bytes` into a track and waits until all of it is acked.
async fn record(server: &Server, id: &str, query: &str, bytes: &[u8]) {
    let (mut ws, offset) = server.connect(id, query).await;
    assert_eq!(offset, 0);
    send_frame(&mut ws, 0, bytes).await;
    futures_util::SinkExt::send(&mut ws, Message::Text(r#"{"type":"flush"}"#.into()))
        .await
        .unwrap();
    loop {
        let ack = next_json(&mut ws).await.expect("an ack");
        if ack["type"] == "ack" && ack["offset"].as_u64() == Some(bytes.len() as u64) {
            break;
        }
    }
}

/// Whole blocks that reached the file after its header was last written, as a crash leaves
/// them: the header now says less than the file holds.
fn stage_stale_header(path: &Path, extra: &[u8]) {
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    std::io::Write::write_all(&mut file, extra).unwrap();
}

/// Runs SQL on the database of a stopped server.
fn sql(data_dir: &Path, statements: &str) {
    let db = data_dir.join("safetake.db");
    let mut conn = diesel::SqliteConnection::establish(db.to_str().unwrap()).unwrap();
    conn.batch_execute(statements).unwrap();
}

fn server_log(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("server.log")).unwrap()
}

/// A socket upgrade the server must refuse: its HTTP status and JSON error.
async fn refused_upgrade(server: &Server, id: &str, query: &str) -> (u16, Value) {
    let url = format!("ws://127.0.0.1:{}/api/session/{id}/ws?{query}", server.port);
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("an answer in time")
    {
        Ok((mut ws, _)) => panic!(
            "the socket was accepted; its first message: {:?}",
            next_json(&mut ws).await
        ),
        Err(tungstenite::Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            let error = serde_json::from_slice(&body).unwrap_or(Value::Null);
            (response.status().as_u16(), error)
        }
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
    }
}

async fn get(server: &Server, path: &str) -> (u16, Value) {
    let response = server.http.get(server.url(path)).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Before: a status that is none of the three read as `completed` (the socket was refused with
/// `session_completed`), the API showed it as it was, and start-up repair rewrote the file.
#[tokio::test]
async fn a_stored_status_that_does_not_parse_is_an_error_not_completed() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]).await;
    let id = server.create_session().await;
    record(&server, &id, "track=mic&channels=2", &pcm(1, 4000)).await;
    server.kill9();
    let path = server.track_path(&id, "mic");
    stage_stale_header(&path, &pcm(2, 400));
    sql(
        dir.path(),
        &format!("UPDATE sessions SET status = 'paused' WHERE id = '{id}';"),
    );
    let before = std::fs::read(&path).unwrap();

    let server = Server::start(dir.path(), &[]).await;
    let (status, error) = get(&server, &format!("/api/session/{id}")).await;
    assert_eq!(status, 500, "GET shows an error, not the row: {error}");
    assert_eq!(error["error"], "stored_data_invalid");
    let (status, error) = refused_upgrade(&server, &id, "track=mic").await;
    assert_eq!(status, 500, "not refused as completed: {error}");
    assert_eq!(error["error"], "stored_data_invalid");
    assert!(
        std::fs::read(&path).unwrap() == before,
        "the track's file is byte-identical"
    );
    let log = server_log(dir.path());
    assert!(
        log.contains("`paused` is not a valid session status"),
        "{log}"
    );
}

/// Before: a format that is none of the two read as 16-bit: the socket attached with the
/// default, the API showed `s16le`, and repair rewrote the file on that guess.
#[tokio::test]
async fn a_stored_format_that_does_not_parse_is_an_error_not_48k_s16() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]).await;
    let id = server.create_session().await;
    record(&server, &id, "track=mic&format=f32le", &pcm(3, 4000)).await;
    server.kill9();
    let path = server.track_path(&id, "mic");
    stage_stale_header(&path, &pcm(4, 400));
    sql(
        dir.path(),
        &format!("UPDATE tracks SET format = 'mp3' WHERE session_id = '{id}';"),
    );
    let before = std::fs::read(&path).unwrap();

    let server = Server::start(dir.path(), &[]).await;
    let (status, error) = get(&server, &format!("/api/session/{id}")).await;
    assert_eq!(status, 500, "GET shows an error, not a default: {error}");
    assert_eq!(error["error"], "stored_data_invalid");
    let (status, error) = refused_upgrade(&server, &id, "track=mic").await;
    assert_eq!(status, 500, "not attached in a default format: {error}");
    assert!(
        std::fs::read(&path).unwrap() == before,
        "the track's file is byte-identical"
    );
    let log = server_log(dir.path());
    assert!(log.contains("`mp3` is not a valid sample format"), "{log}");
    assert!(log.contains("track not repaired"), "{log}");
}

/// Before: repair turned a file whose header it could not read into an empty WAV.
#[tokio::test]
async fn a_header_that_cannot_be_read_is_left_as_it_is_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]).await;
    let id = server.create_session().await;
    record(&server, &id, "track=mic", &pcm(5, 8000)).await;
    let response = server
        .http
        .post(server.url("/api/session/check-timeouts"))
        .json(&serde_json::json!({"timeoutMs": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        server.json(&format!("/api/session/{id}")).await["status"],
        "incomplete"
    );
    server.kill9();
    let path = server.track_path(&id, "mic");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..44].copy_from_slice(&pcm(6, 44)); // the header is gone, the audio is not
    std::fs::write(&path, &bytes).unwrap();

    let server = Server::start(dir.path(), &[]).await;
    assert!(
        std::fs::read(&path).unwrap() == bytes,
        "the file is byte-identical, not emptied"
    );
    let log = server_log(dir.path());
    assert!(log.contains("track cannot be repaired"), "{log}");
    let (status, error) = refused_upgrade(&server, &id, "track=mic").await;
    assert_eq!(status, 500, "no socket writes over it: {error}");
    assert!(
        std::fs::read(&path).unwrap() == bytes,
        "still byte-identical"
    );
}

/// Before: start-up repair opened every track ever recorded, finalized ones included.
#[tokio::test]
async fn start_up_repairs_unfinished_tracks_and_leaves_completed_ones_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]).await;
    let finished = server.create_session().await;
    record(&server, &finished, "track=mic", &pcm(7, 4000)).await;
    server.finish(&finished).await;
    let unfinished = server.create_session().await;
    record(&server, &unfinished, "track=mic", &pcm(8, 4000)).await;
    server.kill9();
    let finished_path = server.track_path(&finished, "mic");
    let unfinished_path = server.track_path(&unfinished, "mic");
    stage_stale_header(&finished_path, &pcm(9, 400));
    stage_stale_header(&unfinished_path, &pcm(10, 400));
    let finished_before = std::fs::read(&finished_path).unwrap();

    let server = Server::start(dir.path(), &[]).await;
    assert!(
        std::fs::read(&finished_path).unwrap() == finished_before,
        "a completed session's track is not rewritten at start-up"
    );
    let mut expected = pcm(8, 4000);
    expected.extend_from_slice(&pcm(10, 400));
    assert!(
        read_wav_data(&unfinished_path) == expected,
        "an unfinished track is repaired, every whole block kept"
    );
    let track = &server.json(&format!("/api/session/{unfinished}")).await["tracks"][0];
    assert_eq!(track["dataBytes"], 4400);
}
