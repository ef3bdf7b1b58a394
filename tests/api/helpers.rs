//! Test harness: the real app on 127.0.0.1 port 0 with its own temp data directory and
//! database, a real HTTP client and a real WebSocket client (tests/common/ws.rs). Every wait
//! is bounded.

use std::net::TcpListener;
use std::path::PathBuf;

use std::time::Duration;

pub use crate::audio::{frame, pcm, read_wav_data};
use safetake::config::Config;
use safetake::startup::Application;
use serde_json::{json, Value};

// Each test's own PostgreSQL database when the suites run against it (SAFETAKE_TEST_DATABASE_URL).
#[allow(dead_code)]
#[path = "../common/pg.rs"]
pub mod pg;

// The WebSocket client, shared with the process tests.
#[allow(dead_code)] // each binary uses its own part of it
#[path = "../common/ws.rs"]
mod ws;
pub use ws::*;

pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub data_dir: tempfile::TempDir,
    pub http: reqwest::Client,
    /// The test's own PostgreSQL database, when the suites run against it (dropped after).
    pub database: Option<pg::TestDatabase>,
}

/// The app with test-friendly timings: quick syncs, no timeouts unless a test asks.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::with_data_dir(data_dir.path().to_path_buf());
    config.sync_interval = Duration::from_millis(50);
    config.session_timeout = Duration::from_secs(3600);
    adjust(&mut config);
    // Against PostgreSQL, a database of its own for the test, unless the test brought its own
    // database or a data directory it prepared (with that directory's SQLite database in it).
    let database = if config.database_url.is_none() && config.data_dir == data_dir.path() {
        pg::TestDatabase::create()
    } else {
        None
    };
    if let Some(database) = &database {
        config.database_url = Some(database.url.clone());
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let app = Application::build(config, listener).expect("app builds");
    if let Some(database) = &database {
        install_write_log(database);
    }
    let port = app.port();
    tokio::spawn(app.run_until_stopped(false));
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        data_dir,
        http: reqwest::Client::builder().timeout(WAIT).build().unwrap(),
        database,
    }
}

/// PostgreSQL has no `PRAGMA data_version`: a trigger on every table logs each row the server
/// writes, and a test sees a commit as a change of that log's size (written in the server's
/// transaction, so seen at its commit, as SQLite's counter is).
fn install_write_log(database: &pg::TestDatabase) {
    use diesel::connection::SimpleConnection;
    let mut sql = String::from(
        "CREATE TABLE test_writes (n BIGSERIAL PRIMARY KEY); \
         CREATE FUNCTION test_write() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN INSERT INTO test_writes DEFAULT VALUES; RETURN NULL; END $$;",
    );
    for table in ["sessions", "tracks", "segments", "marks", "invites"] {
        sql.push_str(&format!(
            "CREATE TRIGGER test_write AFTER INSERT OR UPDATE OR DELETE ON {table} \
             FOR EACH ROW EXECUTE FUNCTION test_write();"
        ));
    }
    database
        .connect()
        .batch_execute(&sql)
        .expect("the write log installs");
}

impl TestApp {
    /// A second connection to the app's database, whichever backend it is.
    pub fn db_connection(&self) -> safetake::db::DbConnection {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        match &self.database {
            Some(database) => safetake::db::DbConnection::Postgres(database.connect()),
            None => {
                let path = self.data_dir.path().join("safetake.db");
                let mut conn =
                    diesel::SqliteConnection::establish(path.to_str().expect("a UTF-8 path"))
                        .expect("a second connection to the test's database");
                conn.batch_execute("PRAGMA busy_timeout = 5000;")
                    .expect("busy timeout");
                safetake::db::DbConnection::Sqlite(conn)
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> reqwest::Response {
        let request = self.http.post(self.url(path));
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        request.send().await.expect("request")
    }

    pub async fn post_raw(&self, path: &str, body: &'static str) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request")
    }

    /// `POST /api/sessions/import` with `zip` as the body.
    pub async fn import(&self, zip: Vec<u8>) -> reqwest::Response {
        self.http
            .post(self.url("/api/sessions/import"))
            .body(zip)
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("request")
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    pub async fn create_session(&self) -> String {
        let response = self
            .post("/api/sessions", Some(json!({"title": "test"})))
            .await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().to_string()
    }

    pub async fn session(&self, id: &str) -> Value {
        self.get_json(&format!("/api/session/{id}")).await
    }

    pub async fn track(&self, id: &str, name: &str) -> Value {
        let session = self.session(id).await;
        session["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|track| track["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no track {name} in {session}"))
    }

    pub fn track_path(&self, id: &str, name: &str) -> PathBuf {
        self.data_dir
            .path()
            .join("sessions")
            .join(id)
            .join(format!("{name}.wav"))
    }

    pub fn ws_url(&self, id: &str, query: &str) -> String {
        ws::ws_url(self.port, id, query)
    }

    pub async fn connect(&self, id: &str, query: &str) -> (WsClient, Value) {
        WsClient::connect(&self.ws_url(id, query), &[])
            .await
            .expect("socket opens")
    }
}

/// Asserts an error body of the contract's shape and returns it.
pub async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status, "status for {code}");
    let body: Value = response.json().await.expect("JSON error body");
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}
