//! The WebSocket client shared by the test binaries: opening a track's socket (and reading its
//! `ready`), frames and commands, acks, and the server's close code. `WsClient` wraps a stream
//! for tests that read the protocol step by step; the free functions take a bare stream, for
//! tests that keep the stream itself (split it, or hold many). Every wait is bounded. Included
//! with `#[path]` by each binary's harness (tests/api/helpers.rs, tests/process/server.rs).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use safetake::ingest::frame::encode;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderName;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The longest any single step (connect, the next message, the close) may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// A client's socket to the server.
pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The URL of a track's socket on a server listening on 127.0.0.1:`port`.
pub fn ws_url(port: u16, id: &str, query: &str) -> String {
    format!("ws://127.0.0.1:{port}/api/session/{id}/ws?{query}")
}

pub struct WsClient {
    pub ws: WsStream,
}

/// What the server ended a socket with, and the messages it sent on the way.
#[derive(Debug)]
pub struct Closed {
    /// 1005 for a close frame without a code.
    pub code: u16,
    pub messages: Vec<Value>,
}

impl WsClient {
    /// Opens a socket and reads `ready`; a refused upgrade returns its status and JSON body.
    pub async fn connect(
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<(WsClient, Value), (u16, Value)> {
        let mut request = url.into_client_request().expect("a WebSocket URL");
        for (name, value) in headers {
            request.headers_mut().insert(
                HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
                value.parse().expect("a header value"),
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

    /// Opens a socket that must be accepted; returns it with the `ready` offset.
    pub async fn open(url: &str) -> (WsClient, u64) {
        let (client, ready) = WsClient::connect(url, &[])
            .await
            .unwrap_or_else(|(status, body)| panic!("socket refused with {status}: {body}"));
        let offset = ready["offset"].as_u64().expect("ready has an offset");
        (client, offset)
    }

    pub async fn send_frame(&mut self, offset: u64, payload: &[u8]) {
        send_frame(&mut self.ws, offset, payload).await;
    }

    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::Binary(bytes)).await.expect("send");
    }

    pub async fn send_text(&mut self, text: &str) {
        send_text(&mut self.ws, text).await;
    }

    /// The next text message as JSON; `None` if the socket closed first.
    pub async fn next_json(&mut self) -> Option<Value> {
        next_json(&mut self.ws).await
    }

    /// Reads acks until one covers `offset`; panics on anything else.
    pub async fn wait_ack(&mut self, offset: u64) -> u64 {
        wait_ack(&mut self.ws, offset).await
    }

    /// Sends a flush and reads acks until one covers `expected`, which it returns. Periodic acks
    /// may come first; a server that stored more than expected shows in the returned offset.
    pub async fn flush(&mut self, expected: u64) -> u64 {
        flush(&mut self.ws, expected).await
    }

    /// Reads until the server closes; returns the close code and the text messages before it.
    pub async fn expect_close(&mut self) -> Closed {
        let (code, messages) = read_to_close(&mut self.ws, WAIT).await;
        Closed {
            code: code.unwrap_or(1005),
            messages,
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

/// Sends one binary frame: the offset, then the payload (the server's own encoder).
pub async fn send_frame(ws: &mut WsStream, offset: u64, payload: &[u8]) {
    ws.send(Message::Binary(encode(offset, payload)))
        .await
        .expect("send");
}

pub async fn send_text(ws: &mut WsStream, text: &str) {
    ws.send(Message::Text(text.to_string()))
        .await
        .expect("send");
}

/// The next text message as JSON, within `WAIT`; `None` if the socket closed or failed first.
pub async fn next_json(ws: &mut WsStream) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")?;
        match message.ok()? {
            Message::Text(text) => return Some(serde_json::from_str(&text).expect("JSON text")),
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

/// Reads acks until one covers `offset`, which it returns; panics on anything else.
pub async fn wait_ack(ws: &mut WsStream, offset: u64) -> u64 {
    loop {
        let message = next_json(ws)
            .await
            .expect("socket open while waiting for an ack");
        assert_eq!(message["type"], "ack", "{message}");
        let acked = message["offset"].as_u64().expect("an ack has an offset");
        if acked >= offset {
            return acked;
        }
    }
}

/// Sends a flush and reads acks until one covers `expected`; returns the offset acked.
pub async fn flush(ws: &mut WsStream, expected: u64) -> u64 {
    send_text(ws, r#"{"type":"flush"}"#).await;
    wait_ack(ws, expected).await
}

/// Reads past other messages to the server's close frame, each within `within`, and returns
/// its code (`None` for a close frame without one).
pub async fn next_close_code(ws: &mut WsStream, within: Duration) -> Option<u16> {
    read_to_close(ws, within).await.0
}

/// Reads to the server's close frame, each message within `within`: its code and the text
/// messages before it. Panics on a socket error or an end without a close frame.
async fn read_to_close(ws: &mut WsStream, within: Duration) -> (Option<u16>, Vec<Value>) {
    let mut messages = Vec::new();
    loop {
        let next = tokio::time::timeout(within, ws.next())
            .await
            .expect("a close frame in time");
        match next {
            Some(Ok(Message::Text(text))) => {
                messages.push(serde_json::from_str(&text).expect("JSON text"))
            }
            Some(Ok(Message::Close(frame))) => {
                return (frame.map(|frame| u16::from(frame.code)), messages)
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => panic!("socket error before a close frame: {error}"),
            None => panic!("socket ended without a close frame"),
        }
    }
}
