//! How sockets end: close codes that name the real reason, close frames that reach a client
//! still sending, TCP ended after the handshake, and liveness per socket.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

/// Reads until the close frame: the error messages before it and its code (`None`: the
/// connection ended without one).
async fn read_to_close(
    stream: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> (Vec<serde_json::Value>, Option<u16>) {
    let mut errors = Vec::new();
    loop {
        let next = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("the socket ends in time");
        match next {
            Some(Ok(Message::Text(text))) => {
                let message: serde_json::Value = serde_json::from_str(&text).expect("JSON");
                if message["type"] == "error" {
                    errors.push(message);
                }
            }
            Some(Ok(Message::Close(frame))) => {
                return (errors, Some(frame.map_or(1005, |f| u16::from(f.code))))
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (errors, None),
        }
    }
}

#[tokio::test]
async fn a_client_flooding_junk_text_still_reads_its_1003_and_the_error() {
    let app = spawn_app().await;
    for round in 0..20 {
        // A session holds at most 16 tracks: one session per round.
        let id = app.create_session().await;
        let (client, _) = app.connect(&id, &format!("track=t{round}")).await;
        let (mut sink, mut stream) = client.ws.split();
        let flood = tokio::spawn(async move {
            for _ in 0..20_000 {
                if sink.send(Message::Text("junk".into())).await.is_err() {
                    break;
                }
            }
        });
        let (errors, code) = read_to_close(&mut stream).await;
        flood.abort();
        assert_eq!(code, Some(1003), "round {round}: the close frame was lost");
        assert_eq!(errors.len(), 1, "round {round}: {errors:?}");
        assert_eq!(errors[0]["code"], "bad_message", "round {round}");
    }
    assert_eq!(app.get("/healthz").await.status(), 200);
}

/// A client that sends a burst of junk before it reads anything: the server closes at the first
/// message, yet everything after it is still arriving.
#[tokio::test]
async fn a_client_that_sends_a_burst_before_reading_still_gets_its_close() {
    let app = spawn_app().await;
    let junk = "j".repeat(2000);
    for round in 0..20 {
        let id = app.create_session().await;
        let (mut client, _) = app.connect(&id, "track=mic").await;
        for _ in 0..300 {
            if client.ws.feed(Message::Text(junk.clone())).await.is_err() {
                break;
            }
        }
        let _ = client.ws.flush().await;
        let (errors, code) = read_to_close(&mut client.ws).await;
        assert_eq!(code, Some(1003), "round {round}: the close frame was lost");
        assert_eq!(errors.len(), 1, "round {round}: {errors:?}");
        assert_eq!(errors[0]["code"], "bad_message", "round {round}");
    }
}

#[tokio::test]
async fn a_gap_followed_by_more_frames_closes_4009_with_its_error_never_1011() {
    let app = spawn_app().await;
    for round in 0..20 {
        // A session holds at most 16 tracks: one session per round.
        let id = app.create_session().await;
        let (client, _) = app.connect(&id, &format!("track=t{round}")).await;
        let (mut sink, mut stream) = client.ws.split();
        // A gap at once, then the frames a browser would keep sending behind it.
        let flood = tokio::spawn(async move {
            for n in 0..200u64 {
                let offset = 960 + n * 960;
                if sink
                    .send(Message::Binary(frame(offset, &pcm(offset, 960))))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        let (errors, code) = read_to_close(&mut stream).await;
        flood.abort();
        assert_eq!(code, Some(4009), "round {round}: {errors:?}");
        assert_eq!(errors.len(), 1, "round {round}: {errors:?}");
        assert_eq!(errors[0]["code"], "gap", "round {round}");
        assert_eq!(errors[0]["expectedOffset"], 0, "round {round}");
        assert_eq!(app.track(&id, &format!("t{round}")).await["dataBytes"], 0);
    }
}

/// Reads the raw TCP connection under a finished WebSocket until the server closes it.
async fn tcp_closed_within(mut client: WsClient, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = client.ws.get_mut() else {
        panic!("a plain TCP test connection");
    };
    let mut buf = [0u8; 1024];
    let read_to_end = async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(limit, read_to_end).await.is_ok()
}

#[tokio::test]
async fn after_the_close_handshake_the_server_ends_the_tcp_connection() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    // The client closes first: the server echoes its code (never 1000 of its own), then ends
    // TCP, so the client does not wait out a timeout of its own.
    let (mut client, _) = app.connect(&id, "track=mic").await;
    let going_away = tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: 4000.into(),
        reason: "".into(),
    };
    client.ws.close(Some(going_away)).await.expect("close sent");
    let echoed = tokio::time::timeout(WAIT, client.ws.next())
        .await
        .expect("the echo in time");
    match echoed {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 4000),
        other => panic!("expected the close echoed, got {other:?}"),
    }
    assert!(
        tcp_closed_within(client, Duration::from_secs(2)).await,
        "TCP still open 2 s after the close handshake"
    );
    // The server closes first (1003); the client answers; the server ends TCP.
    let (mut client, _) = app.connect(&id, "track=mic").await;
    client.send_text("junk").await;
    let closed = client.expect_close().await;
    assert_eq!(closed.code, 1003);
    let _ = tokio::time::timeout(WAIT, client.ws.next()).await;
    assert!(
        tcp_closed_within(client, Duration::from_secs(3)).await,
        "TCP still open 3 s after the close handshake"
    );
}

#[tokio::test]
async fn a_socket_that_answers_no_pings_is_dropped_though_its_session_lives() {
    let ping = Duration::from_millis(200);
    let app = spawn_app_with(|config| {
        config.ping_interval = ping;
        config.max_connections = 2;
    })
    .await;
    let id = app.create_session().await;
    let (mut mic, _) = app.connect(&id, "track=mic").await;
    let (mut guest, _) = app.connect(&id, "track=guest").await;
    guest.send_frame(0, &pcm(0, 960)).await;
    assert_eq!(guest.flush(960).await, 960);
    let guest_file = std::fs::read(app.track_path(&id, "guest")).unwrap();
    // From now on the guest's client is never read, so it answers no ping (a half-open socket);
    // the mic keeps streaming and so keeps the session alive.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut offset = 0u64;
    loop {
        mic.send_frame(offset, &pcm(offset, 960)).await;
        offset += 960;
        mic.flush(offset).await;
        let session = app.session(&id).await;
        let connected = |name: &str| {
            session["tracks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["name"] == name)
                .map(|t| t["connected"].clone())
        };
        if connected("guest") == Some(serde_json::Value::Bool(false)) {
            assert_eq!(connected("mic"), Some(serde_json::Value::Bool(true)));
            assert_eq!(session["status"], "active");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the silent socket stayed connected: {session}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Its connection place is free again (the limit is 2), and its audio is as it was.
    let (third, _) = app.connect(&id, "track=third").await;
    third.close().await;
    assert_eq!(
        std::fs::read(app.track_path(&id, "guest")).unwrap(),
        guest_file
    );
    assert_eq!(app.track(&id, "guest").await["dataBytes"], 960);
    drop(guest);
}

/// A client with tiny socket buffers that floods flushes and reads nothing: the server's acks
/// back up until it cannot send. Such a peer is dropped; it is never told 1000 (which a
/// recorder reads as "the session was finished") nor 4408 (the session did not time out).
#[tokio::test]
async fn a_client_that_reads_nothing_is_dropped_never_closed_as_finished() {
    let patience = Duration::from_millis(800);
    let app = spawn_app_with(|config| config.ping_interval = patience).await;
    let id = app.create_session().await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.set_send_buffer_size(4096).unwrap();
    let tcp = socket
        .connect(format!("127.0.0.1:{}", app.port).parse().unwrap())
        .await
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(app.ws_url(&id, "track=mic"), tcp)
        .await
        .expect("upgrade");
    let ready = ws.next().await.unwrap().unwrap();
    assert!(ready.is_text());
    // Flood until the server stops reading (its sends to us are stuck).
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let sent = tokio::time::timeout(Duration::from_millis(200), async {
            for _ in 0..100 {
                ws.feed(Message::Text(r#"{"type":"flush"}"#.into())).await?;
            }
            ws.flush().await
        })
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            break;
        }
    }
    let stuck = Instant::now();
    // Read again while the server may still be trying to say goodbye.
    tokio::time::sleep_until((stuck + patience * 3 / 2).into()).await;
    let (_, code) = read_to_close(&mut ws).await;
    assert!(
        code.is_none(),
        "a peer that read nothing was sent close code {code:?}"
    );
    assert_eq!(app.get("/healthz").await.status(), 200);
}
