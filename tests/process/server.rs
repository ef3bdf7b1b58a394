//! Starts and stops the real `safetake` binary on a free loopback port and a given data dir.

use std::net::TcpListener;

pub use crate::audio::{pcm, read_wav_data};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const WAIT: Duration = Duration::from_secs(10);

pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub data_dir: PathBuf,
    pub http: reqwest::Client,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// Starts the binary and waits (bounded) until `/healthz` answers.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let port = free_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("server.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_safetake"))
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
        let server = Server {
            child: Some(child),
            port,
            data_dir: data_dir.to_path_buf(),
            http: reqwest::Client::builder().timeout(WAIT).build().unwrap(),
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(response) = server.http.get(server.url("/healthz")).send().await {
                if response.status() == 200 {
                    return server;
                }
            }
            assert!(
                Instant::now() < deadline,
                "server did not come up; see {}",
                data_dir.join("server.log").display()
            );
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

    pub async fn connect(
        &self,
        id: &str,
        query: &str,
    ) -> (WebSocketStream<MaybeTlsStream<TcpStream>>, u64) {
        let url = format!("ws://127.0.0.1:{}/api/session/{id}/ws?{query}", self.port);
        let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("socket opens");
        let ready = next_json(&mut ws).await.expect("ready");
        assert_eq!(ready["type"], "ready");
        (ws, ready["offset"].as_u64().unwrap())
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

pub async fn next_json(ws: &mut WebSocketStream<MaybeTlsStream<TcpStream>>) -> Option<Value> {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.ok()?? {
            Ok(Message::Text(text)) => return serde_json::from_str(&text).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// Reads past other messages to the server's close frame, each within `within`, and returns
/// its code.
pub async fn next_close_code(
    ws: &mut WebSocketStream<MaybeTlsStream<TcpStream>>,
    within: Duration,
) -> Option<u16> {
    loop {
        match tokio::time::timeout(within, ws.next())
            .await
            .expect("a close frame in time")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

pub async fn send_frame(
    ws: &mut WebSocketStream<MaybeTlsStream<TcpStream>>,
    offset: u64,
    payload: &[u8],
) {
    let bytes = crate::audio::frame(offset, payload);
    ws.send(Message::Binary(bytes)).await.expect("send");
}
