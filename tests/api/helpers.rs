//! Test harness: the real app on 127.0.0.1 port 0 with its own temp data directory and
//! database, a real HTTP client and a real WebSocket client. Every wait is bounded.

use std::net::TcpListener;
use std::path::PathBuf;

pub use crate::audio::{frame, pcm, read_wav_data};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use safetake::config::Config;
use safetake::startup::Application;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub data_dir: tempfile::TempDir,
    pub http: reqwest::Client,
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
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let app = Application::build(config, listener).expect("app builds");
    let port = app.port();
    tokio::spawn(app.run_until_stopped(false));
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        data_dir,
        http: reqwest::Client::builder().timeout(WAIT).build().unwrap(),
    }
}

impl TestApp {
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
        format!("ws://127.0.0.1:{}/api/session/{id}/ws?{query}", self.port)
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

pub struct WsClient {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What the server ended a socket with, and the messages it sent on the way.
#[derive(Debug)]
pub struct Closed {
    pub code: u16,
    pub messages: Vec<Value>,
}

impl WsClient {
    /// Opens a socket and reads `ready`; a refused upgrade returns its status and JSON body.
    pub async fn connect(
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<(WsClient, Value), (u16, Value)> {
        let mut request = url.into_client_request().unwrap();
        for (name, value) in headers {
            request.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                    .unwrap(),
                value.parse().unwrap(),
            );
        }
        let connected = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("connect in time");
        match connected {
            Ok((ws, _)) => {
                let mut client = WsClient { ws };
                let ready = client.next_json().await.expect("ready message");
                assert_eq!(ready["type"], "ready", "{ready}");
                Ok((client, ready))
            }
            Err(WsError::Http(response)) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_ref()
                    .and_then(|body| serde_json::from_slice(body).ok())
                    .unwrap_or(Value::Null);
                Err((status, body))
            }
            Err(error) => panic!("socket failed: {error}"),
        }
    }

    pub async fn send_frame(&mut self, offset: u64, payload: &[u8]) {
        self.send_raw(frame(offset, payload)).await;
    }

    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::Binary(bytes)).await.expect("send");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.to_string()))
            .await
            .expect("send");
    }

    /// The next text message as JSON; `None` if the socket closed first.
    pub async fn next_json(&mut self) -> Option<Value> {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a message in time")?;
            match message.ok()? {
                Message::Text(text) => {
                    return Some(serde_json::from_str(&text).expect("JSON text"))
                }
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Reads acks until one covers `offset`; panics on anything else.
    pub async fn wait_ack(&mut self, offset: u64) -> u64 {
        loop {
            let message = self
                .next_json()
                .await
                .expect("socket open while waiting for an ack");
            assert_eq!(message["type"], "ack", "{message}");
            let acked = message["offset"].as_u64().unwrap();
            if acked >= offset {
                return acked;
            }
        }
    }

    /// Sends a flush and reads acks until one covers `expected`, which it returns. Periodic acks
    /// may come first; a server that stored more than expected shows in the returned offset.
    pub async fn flush(&mut self, expected: u64) -> u64 {
        self.send_text(r#"{"type":"flush"}"#).await;
        self.wait_ack(expected).await
    }

    /// Reads until the server closes; returns the close code and the text messages before it.
    pub async fn expect_close(&mut self) -> Closed {
        let mut messages = Vec::new();
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("close in time");
            match next {
                Some(Ok(Message::Text(text))) => {
                    messages.push(serde_json::from_str(&text).unwrap())
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map_or(1005, |frame| u16::from(frame.code));
                    return Closed { code, messages };
                }
                Some(Ok(_)) => continue,
                Some(Err(error)) => panic!("socket error before a close frame: {error}"),
                None => panic!("socket ended without a close frame"),
            }
        }
    }

    /// Closes from the client side and waits for the server's close frame. It does not wait
    /// for the server to drop TCP: actix keeps an upgraded connection open after the close
    /// handshake until the client goes (see README, known issues).
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(WAIT, async {
            while let Some(Ok(message)) = self.ws.next().await {
                if message.is_close() {
                    break;
                }
            }
        })
        .await;
    }
}
