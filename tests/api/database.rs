//! The database behind the server, on either backend: the backend comes from `--database-url`'s
//! scheme and nothing else; a database that cannot be reached stops the start quickly, naming
//! the cause; and (PostgreSQL) while it is down, `/healthz` says so and recording goes on.

use std::time::{Duration, Instant};

use safetake::config::Config;
use safetake::startup::Application;

use crate::helpers::pg::{self, CutProxy, TestDatabase};
use crate::helpers::{pcm, read_wav_data, spawn_app_with, WAIT};

/// The start's error, or a panic if the app built.
fn start_error(database_url: &str) -> String {
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = Config::with_data_dir(data_dir.path().to_path_buf());
    config.database_url = Some(database_url.to_string());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    match Application::build(config, listener) {
        Ok(_) => panic!("the app started with {database_url}"),
        Err(error) => error.to_string(),
    }
}

#[tokio::test]
async fn an_unknown_database_scheme_stops_the_start_naming_the_flag() {
    for url in ["mysql://user:secret@127.0.0.1/db", "postgre://127.0.0.1/db"] {
        let message = start_error(url);
        assert!(message.contains("--database-url"), "{message}");
        assert!(message.contains("scheme"), "{message}");
        assert!(
            !message.contains("secret"),
            "the password is not shown: {message}"
        );
    }
}

#[tokio::test]
async fn a_database_that_does_not_answer_stops_the_start_within_seconds_naming_the_cause() {
    // Nothing listens: refused at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let started = Instant::now();
    let message = start_error(&format!("postgres://safetake:secret@127.0.0.1:{port}/db"));
    assert!(message.contains("--database-url"), "{message}");
    assert!(
        message.contains(&port.to_string()),
        "names where: {message}"
    );
    assert!(
        !message.contains("secret"),
        "the password is not shown: {message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // A peer that accepts and never answers: the connect timeout ends the wait.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = Instant::now();
    let message = start_error(&format!("postgres://safetake@127.0.0.1:{port}/db"));
    assert!(message.contains("--database-url"), "{message}");
    assert!(message.contains("timeout"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
}

#[tokio::test]
async fn while_postgres_is_down_healthz_is_503_and_recording_goes_on() {
    // Needs PostgreSQL: tests/run-all.sh runs it in its PostgreSQL pass only.
    assert!(
        pg::enabled(),
        "needs PostgreSQL: set {} (tests/run-all.sh starts a throwaway cluster)",
        pg::TEST_DATABASE_URL
    );
    let database = TestDatabase::create().expect("a test database");
    let proxy = CutProxy::to(pg::port_of(&database.url));
    let url = pg::via_port(&database.url, proxy.port);
    let app = spawn_app_with(move |config| config.database_url = Some(url)).await;
    let id = app.create_session().await;
    let (mut socket, ready) = app.connect(&id, "track=mic").await;
    assert_eq!(ready["offset"], 0);
    let audio = pcm(41, 48_000);
    let (before, during, after) = (&audio[..16_000], &audio[16_000..32_000], &audio[32_000..]);
    socket.send_frame(0, before).await;
    assert_eq!(socket.flush(16_000).await, 16_000);
    assert_eq!(app.get("/healthz").await.status(), 200);

    proxy.cut();
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 503);
    let body: serde_json::Value = health.json().await.unwrap();
    let message = body["message"].as_str().unwrap_or_default().to_string();
    assert!(!message.is_empty(), "the cause is named: {body}");
    // The socket goes on: audio is stored and acked without waiting for the database.
    for (i, chunk) in during.chunks(4_000).enumerate() {
        socket.send_frame(16_000 + (i * 4_000) as u64, chunk).await;
    }
    let asked = Instant::now();
    assert_eq!(socket.flush(32_000).await, 32_000);
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "the ack waited {:?}",
        asked.elapsed()
    );

    proxy.restore();
    let deadline = Instant::now() + WAIT;
    while app.get("/healthz").await.status() != 200 {
        assert!(
            Instant::now() < deadline,
            "/healthz stays 503 after the database is back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    socket.send_frame(32_000, after).await;
    assert_eq!(socket.flush(48_000).await, 48_000);
    let finished = app.post(&format!("/api/session/{id}/finish"), None).await;
    assert_eq!(finished.status(), 200);
    assert_eq!(read_wav_data(&app.track_path(&id, "mic")), audio);
    assert_eq!(app.track(&id, "mic").await["dataBytes"], 48_000);
    drop(app);
    drop(database);
}
