//! One timeline's marks: sent over a real socket, kept in memory and stored in batches (never a
//! commit per mark), served in offset order with `capturedAt` as sent, carried by export and
//! restored by import; malformed ones close the socket or refuse the archive.

use std::time::{Duration, Instant};

use diesel::sql_types::BigInt;
use diesel::{QueryableByName, RunQueryDsl};
use serde_json::{json, Value};

use crate::archive::entries;
use crate::helpers::*;
use crate::sweeper::{wait_for_segment, CommitProbe};

fn mark(offset: u64, captured_at: f64) -> String {
    json!({"type": "mark", "offset": offset, "capturedAt": captured_at}).to_string()
}

async fn marks_of(app: &TestApp, id: &str, track: &str) -> Value {
    let response = app
        .get(&format!("/api/session/{id}/tracks/{track}/marks"))
        .await;
    assert_eq!(response.status(), 200);
    response.json::<Value>().await.unwrap()["marks"].clone()
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// The sweeper tests' commit probe, which can also count what is stored.
struct Db(CommitProbe);

impl Db {
    fn open(app: &TestApp) -> Db {
        Db(CommitProbe::open(app))
    }

    fn committed(&mut self) -> bool {
        self.0.committed()
    }

    fn stored_marks(&mut self, id: &str) -> i64 {
        diesel::sql_query(format!(
            "SELECT COUNT(*) AS n FROM marks WHERE session_id = '{id}'"
        ))
        .get_result::<Count>(&mut self.0.conn)
        .expect("marks counted")
        .n
    }
}

/// A barrier: the server answers a clock in order, after every message sent before it.
async fn clock_round_trip(socket: &mut WsClient) {
    socket
        .send_text(&json!({"type": "clock", "clientTime": 7.5}).to_string())
        .await;
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "no clock answer");
        let message = socket.next_json().await.expect("a clock answer");
        if message["type"] == "clock" {
            return;
        }
    }
}

async fn finish(app: &TestApp, id: &str) {
    let response = app.post(&format!("/api/session/{id}/finish"), None).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn marks_are_served_in_order_as_sent_and_stored_by_the_finish() {
    // No sweep during the test: only the finish stores them.
    let app = spawn_app_with(|config| config.sweep_interval = Duration::from_secs(3600)).await;
    let id = app.create_session().await;
    let (mut socket, _) = app.connect(&id, "track=mic").await;
    socket.send_frame(0, &pcm(41, 4800)).await;
    socket.send_text(&mark(0, 1_764_590_400_123.25)).await;
    socket.send_text(&mark(2400, 1_764_590_400_173.125)).await;
    // Not past the last mark: ignored, both of them.
    socket.send_text(&mark(1000, 1.5)).await;
    socket.send_text(&mark(2400, 2.5)).await;
    socket.send_text(&mark(4800, 1_764_590_400_223.062_5)).await;
    socket.flush(4800).await;
    clock_round_trip(&mut socket).await;
    let expected = json!([
        {"offset": 0, "capturedAt": 1_764_590_400_123.25},
        {"offset": 2400, "capturedAt": 1_764_590_400_173.125},
        {"offset": 4800, "capturedAt": 1_764_590_400_223.062_5},
    ]);
    assert_eq!(marks_of(&app, &id, "mic").await, expected);
    let mut db = Db::open(&app);
    assert_eq!(db.stored_marks(&id), 0, "marks wait for a batch");

    // A mark inside a block (s16 mono: 2 bytes) is malformed.
    socket.send_text(&mark(4803, 3.0)).await;
    assert_eq!(socket.expect_close().await.code, 1003);

    finish(&app, &id).await;
    assert_eq!(
        db.stored_marks(&id),
        3,
        "the finish stored every accepted mark"
    );
    assert_eq!(marks_of(&app, &id, "mic").await, expected);

    let unknown_track = app
        .get(&format!("/api/session/{id}/tracks/nope/marks"))
        .await;
    assert_error(unknown_track, 404, "not_found").await;
    let unknown_session = app
        .get("/api/session/00000000-0000-0000-0000-000000000000/tracks/mic/marks")
        .await;
    assert_eq!(unknown_session.status(), 404);
}

#[tokio::test]
async fn two_hundred_marks_commit_nothing_until_the_finish() {
    let app = spawn_app_with(|config| config.sweep_interval = Duration::from_secs(3600)).await;
    let id = app.create_session().await;
    let (mut socket, _) = app.connect(&id, "track=mic").await;
    socket.send_frame(0, &pcm(42, 400)).await;
    socket.flush(400).await;
    wait_for_segment(&app, &id, "mic").await;
    let mut db = Db::open(&app);
    for i in 0..200u64 {
        socket
            .send_text(&mark(i * 2, 1_764_590_400_000.5 + i as f64))
            .await;
    }
    clock_round_trip(&mut socket).await;
    assert!(!db.committed(), "a mark was written on its own");
    let served = marks_of(&app, &id, "mic").await;
    assert_eq!(served.as_array().unwrap().len(), 200);
    assert_eq!(served[199]["capturedAt"], json!(1_764_590_400_199.5));
    socket.close().await;
    finish(&app, &id).await;
    assert!(db.committed());
    assert_eq!(db.stored_marks(&id), 200);
}

/// The archive tests' builder, for the owned entries read back from an export.
fn archive_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let borrowed: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(name, bytes)| (name.as_str(), bytes.as_slice()))
        .collect();
    crate::archive::archive_of(&borrowed)
}

#[tokio::test]
async fn export_carries_the_marks_and_import_restores_them_and_refuses_bad_ones() {
    let app = spawn_app_with(|config| config.sweep_interval = Duration::from_secs(3600)).await;
    let id = app.create_session().await;
    let (mut socket, _) = app.connect(&id, "track=mic").await;
    socket.send_frame(0, &pcm(43, 4800)).await;
    socket.send_text(&mark(0, 1_764_590_400_000.1)).await;
    socket.send_text(&mark(4000, 1_764_590_400_090.7)).await;
    socket.flush(4800).await;
    clock_round_trip(&mut socket).await;
    socket.close().await;
    finish(&app, &id).await;
    let expected = marks_of(&app, &id, "mic").await;
    assert_eq!(expected.as_array().unwrap().len(), 2);

    let response = app.get(&format!("/api/session/{id}/export.zip")).await;
    assert_eq!(response.status(), 200);
    let files = entries(&response.bytes().await.unwrap());
    let manifest_at = files.iter().position(|(n, _)| n == "session.json").unwrap();
    let manifest: Value = serde_json::from_slice(&files[manifest_at].1).unwrap();
    assert_eq!(manifest["tracks"][0]["marks"], expected);

    let imported = app.import(archive_of(&files)).await;
    assert_eq!(imported.status(), 201);
    let new_id = imported.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(marks_of(&app, &new_id, "mic").await, expected);

    let before = app.get_json("/api/sessions").await["total"].clone();
    let bad: [(&str, Value); 4] = [
        (
            "not increasing",
            json!([{"offset": 4000, "capturedAt": 1.0}, {"offset": 4000, "capturedAt": 2.0}]),
        ),
        (
            "decreasing",
            json!([{"offset": 4000, "capturedAt": 1.0}, {"offset": 2000, "capturedAt": 2.0}]),
        ),
        ("inside a block", json!([{"offset": 3, "capturedAt": 1.0}])),
        ("past the end", json!([{"offset": 4802, "capturedAt": 1.0}])),
    ];
    for (what, marks) in bad {
        let mut hostile = manifest.clone();
        hostile["tracks"][0]["marks"] = marks;
        let mut files = files.clone();
        files[manifest_at].1 = serde_json::to_vec(&hostile).unwrap();
        let response = app.import(archive_of(&files)).await;
        assert_eq!(response.status(), 400, "{what}");
        assert_error(response, 400, "invalid_archive").await;
        assert_eq!(
            app.get_json("/api/sessions").await["total"],
            before,
            "{what}"
        );
    }
}

#[tokio::test]
async fn a_new_socket_cannot_rewrite_marks_a_sweep_stored() {
    let app = spawn_app_with(|config| config.sweep_interval = Duration::from_secs(3600)).await;
    let id = app.create_session().await;
    let (mut socket, _) = app.connect(&id, "track=mic").await;
    socket.send_frame(0, &pcm(44, 4800)).await;
    socket.send_text(&mark(0, 100.25)).await;
    socket.send_text(&mark(2400, 150.5)).await;
    clock_round_trip(&mut socket).await;
    socket.close().await;
    // The sweep stores the batch (a long timeout: the session stays active).
    let swept = app
        .post(
            "/api/session/check-timeouts",
            Some(json!({"timeoutMs": 3_600_000})),
        )
        .await;
    assert_eq!(swept.status(), 200);
    let mut db = Db::open(&app);
    assert_eq!(db.stored_marks(&id), 2, "the sweep stored the marks");

    let (mut socket, _) = app.connect(&id, "track=mic").await;
    socket.send_text(&mark(2400, 999.0)).await;
    socket.send_text(&mark(4800, 200.75)).await;
    clock_round_trip(&mut socket).await;
    assert_eq!(
        marks_of(&app, &id, "mic").await,
        json!([
            {"offset": 0, "capturedAt": 100.25},
            {"offset": 2400, "capturedAt": 150.5},
            {"offset": 4800, "capturedAt": 200.75},
        ])
    );
    socket.close().await;
}
