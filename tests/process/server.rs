//! Starts and stops the real `safetake` binary on a free loopback port and a given data dir.

use std::net::TcpListener;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub use crate::audio::{pcm, read_wav_data};
use serde_json::Value;

// Against PostgreSQL (SAFETAKE_TEST_DATABASE_URL set): a database per data directory.
#[allow(dead_code)]
#[path = "../common/pg.rs"]
pub mod pg;

/// The databases of the data directories servers were started on, kept across restarts (a
/// server killed and started again finds its sessions); each is dropped once its directory is
/// gone (by the next start of any server), and the throwaway cluster takes the rest with it.
static DATABASES: std::sync::Mutex<Vec<(PathBuf, pg::TestDatabase)>> =
    std::sync::Mutex::new(Vec::new());

/// The PostgreSQL URL of a data directory's database when the suites run against PostgreSQL.
pub fn database_url_for(data_dir: &Path) -> Option<String> {
    if !pg::enabled() {
        return None;
    }
    let mut databases = DATABASES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    databases.retain(|(dir, _)| dir.exists());
    if let Some((_, database)) = databases.iter().find(|(dir, _)| dir == data_dir) {
        return Some(database.url.clone());
    }
    let database = pg::TestDatabase::create()?;
    let url = database.url.clone();
    databases.push((data_dir.to_path_buf(), database));
    Some(url)
}

// The WebSocket client, shared with the API tests.
#[allow(dead_code)] // each binary uses its own part of it
#[path = "../common/ws.rs"]
mod ws;
pub use ws::*;

pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub data_dir: PathBuf,
    pub http: reqwest::Client,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How many times a start is tried again when the free port was taken before the server bound
/// it (another test's outgoing connection can take it in that moment).
const BIND_ATTEMPTS: usize = 3;

impl Server {
    /// Starts the binary and waits (bounded) until `/healthz` answers.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> Server {
        for _ in 1..BIND_ATTEMPTS {
            if let Some(server) = Server::try_start(data_dir, extra, false).await {
                return server;
            }
        }
        Server::try_start(data_dir, extra, true)
            .await
            .expect("the last attempt panics instead")
    }

    /// One start; `None` when the port was taken and `last` is not set.
    async fn try_start(data_dir: &Path, extra: &[&str], last: bool) -> Option<Server> {
        let port = free_port();
        let log_path = data_dir.join("server.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let logged_before = std::fs::metadata(&log_path).map_or(0, |m| m.len() as usize);
        let mut command = Command::new(env!("CARGO_BIN_EXE_safetake"));
        if !extra.contains(&"--database-url") {
            if let Some(url) = database_url_for(data_dir) {
                command.env("SAFETAKE_DATABASE_URL", url);
            }
        }
        let child = command
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("SERVER_LOG").unwrap_or("info".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("the server binary starts");
        let mut server = Server {
            child: Some(child),
            port,
            data_dir: data_dir.to_path_buf(),
            http: reqwest::Client::builder().timeout(WAIT).build().unwrap(),
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(response) = server.http.get(server.url("/healthz")).send().await {
                if response.status() == 200 {
                    return Some(server);
                }
            }
            let exited = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= deadline {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let this_start = log.get(logged_before..).unwrap_or_default();
                if exited.is_some() && this_start.contains("--bind") && !last {
                    return None;
                }
                // The log goes with the temporary directory: the failure says what it held.
                let skip = this_start.lines().count().saturating_sub(40);
                let tail: Vec<&str> = this_start.lines().skip(skip).collect();
                panic!(
                    "server did not come up on port {port} (exit: {exited:?}); its log ends:\n{}",
                    tail.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub async fn json(&self, path: &str) -> Value {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// `POST /api/session/{id}/finish`, which must answer 200.
    pub async fn finish(&self, id: &str) {
        let response = self
            .http
            .post(self.url(&format!("/api/session/{id}/finish")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "finish {id}");
    }

    /// Waits (bounded) until `/healthz` answers 200 again, after an outage of `what`.
    pub async fn wait_healthy(&self, what: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let health = self.http.get(self.url("/healthz")).send().await;
            if health.map(|response| response.status().as_u16()).ok() == Some(200) {
                return;
            }
            assert!(Instant::now() < deadline, "/healthz not back after {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn create_session(&self) -> String {
        let response = self
            .http
            .post(self.url("/api/sessions"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        response.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Opens a track's socket; returns the bare stream and the `ready` offset.
    pub async fn connect(&self, id: &str, query: &str) -> (WsStream, u64) {
        let (client, offset) = WsClient::open(&self.ws_url(id, query)).await;
        (client.ws, offset)
    }

    pub fn ws_url(&self, id: &str, query: &str) -> String {
        ws::ws_url(self.port, id, query)
    }

    pub fn track_path(&self, id: &str, track: &str) -> PathBuf {
        self.data_dir
            .join("sessions")
            .join(id)
            .join(format!("{track}.wav"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
