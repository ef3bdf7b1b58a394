//! Faults from outside: a full disk, a locked database, clients that vanish or stop reading,
//! and a shutdown under load. Each proves acked audio intact and the server still serving.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::Connection;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::server::{next_close_code, next_json, pcm, read_wav_data, send_frame, Server};

/// A small tmpfs mounted for one test, unmounted when dropped.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (the test command runs as root)"
        );
        SmallDisk {
            path: path.to_path_buf(),
        }
    }

    fn grow(&self, size: &str) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// Streams `source` from `offset` until the server closes; returns the last ack and the close.
async fn stream_until_closed(
    server: &Server,
    id: &str,
    source: &[u8],
) -> (u64, Option<u16>, Vec<Value>) {
    let (ws, ready) = server.connect(id, "track=mic").await;
    let (mut sink, mut stream) = ws.split();
    // Reads until the server closes or acks everything, within a bounded time (pings do not
    // extend it).
    let total = source.len() as u64;
    let reader = tokio::spawn(async move {
        let (mut acked, mut messages) = (0, Vec::new());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while acked < total {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    let message: Value = serde_json::from_str(&text).unwrap();
                    if message["type"] == "ack" {
                        acked = message["offset"].as_u64().unwrap();
                    }
                    messages.push(message);
                }
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return (acked, frame.map(|f| u16::from(f.code)), messages)
                }
                Ok(Some(Ok(_))) => continue,
                _ => break,
            }
        }
        (acked, None, messages)
    });
    // Stop at the first send that does not complete: the server has closed and stopped reading.
    for (i, chunk) in source[ready as usize..].chunks(16_384).enumerate() {
        let offset = ready + (i * 16_384) as u64;
        let bytes = crate::audio::frame(offset, chunk);
        let sent = tokio::time::timeout(Duration::from_secs(1), async {
            sink.send(Message::Binary(bytes)).await?;
            if i % 8 == 0 {
                sink.send(Message::Text(r#"{"type":"flush"}"#.into()))
                    .await?;
            }
            Ok::<(), tokio_tungstenite::tungstenite::Error>(())
        })
        .await;
        if !matches!(sent, Ok(Ok(()))) || reader.is_finished() {
            break;
        }
    }
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        sink.send(Message::Text(r#"{"type":"flush"}"#.into())),
    )
    .await;
    reader.await.unwrap()
}

#[tokio::test]
async fn a_full_disk_closes_1011_keeps_acked_audio_and_recording_resumes_with_space() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let disk = SmallDisk::mount(&data, "1m");
    let db = dir.path().join("safetake.db");
    let server = Server::start(
        &data,
        &[
            "--database-url",
            db.to_str().unwrap(),
            "--sync-interval",
            "50ms",
        ],
    )
    .await;
    let id = server.create_session().await;
    let source = pcm(40, 4 * 1024 * 1024);

    let (acked, code, messages) = stream_until_closed(&server, &id, &source).await;
    assert_eq!(code, Some(1011), "{messages:?}");
    assert!(messages.iter().any(|m| m["code"] == "storage_failed"));
    assert!(acked > 0, "some audio fit before the disk filled");
    // The server still serves everything, and the download is a playable prefix of what was sent.
    assert_eq!(
        server
            .http
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let wav = server
        .http
        .get(server.url(&format!("/api/session/{id}/tracks/mic.wav")))
        .send()
        .await
        .unwrap();
    let wav = wav.bytes().await.unwrap();
    let reader = hound::WavReader::new(std::io::Cursor::new(&wav)).unwrap();
    assert!(
        u64::from(reader.duration()) * 2 >= acked,
        "every acked byte is served"
    );
    assert!(
        wav[44..] == source[..wav.len() - 44],
        "served bytes are the bytes sent"
    );

    disk.grow("16m");
    let (acked, code, messages) = stream_until_closed(&server, &id, &source).await;
    assert_eq!(acked, source.len() as u64, "{code:?} {messages:?}");
    server.finish(&id).await;
    assert!(
        read_wav_data(&server.track_path(&id, "mic")) == source,
        "complete after space came back"
    );
    drop(server);
}

#[tokio::test]
async fn a_locked_database_fails_healthz_while_audio_keeps_flowing_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--sync-interval", "50ms", "--sweep-interval", "200ms"],
    )
    .await;
    let id = server.create_session().await;
    let (mut ws, _) = server.connect(&id, "track=mic").await;
    let before = server.json(&format!("/api/session/{id}")).await["lastHeartbeat"]
        .as_str()
        .unwrap()
        .to_string();

    let db_path = dir.path().join("safetake.db");
    let mut locker = diesel::SqliteConnection::establish(db_path.to_str().unwrap()).unwrap();
    locker
        .batch_execute("PRAGMA busy_timeout = 5000; BEGIN EXCLUSIVE;")
        .unwrap();
    let health = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503, "the lock shows in /healthz");

    // Audio goes on: written, fsynced and acked without the database.
    let audio = pcm(41, 96_000);
    for (i, chunk) in audio.chunks(1920).enumerate() {
        send_frame(&mut ws, (i * 1920) as u64, chunk).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ws.send(Message::Text(r#"{"type":"flush"}"#.into()))
        .await
        .unwrap();
    loop {
        let ack = next_json(&mut ws)
            .await
            .expect("acks while the database is locked");
        if ack["offset"].as_u64() == Some(audio.len() as u64) {
            break;
        }
    }
    locker.batch_execute("ROLLBACK;").unwrap();
    drop(locker);

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let health = server
            .http
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status();
        let session = server.json(&format!("/api/session/{id}")).await;
        let beat = session["lastHeartbeat"].as_str().unwrap().to_string();
        if health == 200 && beat > before {
            assert_eq!(session["status"], "active", "the lock timed nobody out");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not recover by itself"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(read_wav_data(&server.track_path(&id, "mic")) == audio);
}

#[tokio::test]
async fn a_client_that_vanishes_is_closed_by_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--session-timeout",
        "1s",
        "--sweep-interval",
        "200ms",
        "--max-connections",
        "1",
        "--sync-interval",
        "50ms",
    ];
    let server = Server::start(dir.path(), &args).await;
    let id = server.create_session().await;
    let (mut ws, _) = server.connect(&id, "track=mic").await;
    send_frame(&mut ws, 0, &pcm(42, 1920)).await;
    ws.send(Message::Text(r#"{"type":"flush"}"#.into()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await.unwrap()["offset"], 1920);
    // Half-open: the TCP connection stays, the client neither sends nor reads again.
    wait_until_timed_out(&server, &id, Duration::from_secs(10), || {}).await;
    // Its place under --max-connections 1 is free again, and it heard 4408.
    let (_again, ready) = server.connect(&id, "track=mic").await;
    assert_eq!(ready, 1920);
    assert_eq!(
        next_close_code(&mut ws, Duration::from_secs(5)).await,
        Some(4408)
    );
}

/// Polls until the sweeper has made the session `incomplete` and its track has no socket,
/// calling `each_poll` every round; fails after `within`.
async fn wait_until_timed_out(
    server: &Server,
    id: &str,
    within: Duration,
    mut each_poll: impl FnMut(),
) {
    let deadline = Instant::now() + within;
    loop {
        each_poll();
        let session = server.json(&format!("/api/session/{id}")).await;
        if session["status"] == "incomplete" && session["tracks"][0]["connected"] == false {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "session {id} was never timed out"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_client_that_reads_nothing_costs_bounded_memory_and_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--session-timeout",
        "2s",
        "--sweep-interval",
        "200ms",
        "--ping-interval",
        "1s",
        "--max-connections",
        "1",
    ];
    let server = Server::start(dir.path(), &args).await;
    let id = server.create_session().await;
    let (ws, _) = server.connect(&id, "track=mic").await;
    let (mut sink, _never_read) = ws.split();
    let baseline = rss_kib(server.pid());
    let mut peak = baseline;
    let flushes = "{\"type\":\"flush\"}";
    let started = Instant::now();
    let mut offset = 0u64;
    // Send until the server stops reading (its queue to us is full), for at most 20 s.
    while started.elapsed() < Duration::from_secs(20) {
        let frame = crate::audio::frame(offset, &pcm(offset, 2));
        let sent = tokio::time::timeout(Duration::from_secs(2), async {
            sink.send(Message::Binary(frame)).await?;
            for _ in 0..50 {
                sink.feed(Message::Text(flushes.into())).await?;
            }
            sink.flush().await
        })
        .await;
        peak = peak.max(rss_kib(server.pid()));
        match sent {
            Ok(Ok(())) => offset += 2,
            Ok(Err(_)) | Err(_) => break,
        }
    }
    // The server stopped listening to it; the timeout then frees its place.
    let pid = server.pid();
    wait_until_timed_out(&server, &id, Duration::from_secs(15), || {
        peak = peak.max(rss_kib(pid))
    })
    .await;
    let url = format!(
        "ws://127.0.0.1:{}/api/session/{id}/ws?track=other",
        server.port
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio_tungstenite::connect_async(&url).await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(error) => panic!(
                "its connection place was never given back: {error}\n{}",
                std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
            ),
        }
    }
    assert!(
        peak - baseline < 64 * 1024,
        "memory grew by {} KiB",
        peak - baseline
    );
    assert_eq!(
        server
            .http
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn sigterm_under_fifty_streaming_sockets_finalizes_every_track_without_a_torn_frame() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--sync-interval", "200ms"]).await;
    let mut streams = Vec::new();
    for n in 0..25 {
        let id = server.create_session().await;
        for track in ["mic", "guest"] {
            let (ws, _) = server.connect(&id, &format!("track={track}")).await;
            let sent = Arc::new(AtomicU64::new(0));
            let acked = Arc::new(AtomicU64::new(0));
            let source = pcm(n * 2 + (track == "guest") as u64, 1920 * 500);
            let (counter, ack_seen, bytes) = (sent.clone(), acked.clone(), source.clone());
            let task = tokio::spawn(async move {
                let (mut sink, mut stream) = ws.split();
                let reader = tokio::spawn(async move {
                    while let Some(Ok(message)) = stream.next().await {
                        match message {
                            Message::Text(text) => {
                                let value: Value = serde_json::from_str(&text).unwrap();
                                if value["type"] == "ack" {
                                    ack_seen.fetch_max(
                                        value["offset"].as_u64().unwrap(),
                                        Ordering::AcqRel,
                                    );
                                }
                            }
                            Message::Close(frame) => return frame.map(|f| u16::from(f.code)),
                            _ => {}
                        }
                    }
                    None
                });
                for (i, chunk) in bytes.chunks(1920).enumerate() {
                    let frame = crate::audio::frame((i * 1920) as u64, chunk);
                    if sink.send(Message::Binary(frame)).await.is_err() {
                        break;
                    }
                    counter.store(((i + 1) * 1920) as u64, Ordering::Release);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                tokio::time::timeout(Duration::from_secs(10), reader)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .flatten()
            });
            streams.push((id.clone(), track, source, sent, acked, task));
        }
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let status = tokio::task::spawn_blocking(move || {
        let status = server.terminate();
        (server, status)
    })
    .await
    .unwrap();
    let (server, status) = status;
    assert_eq!(status.code(), Some(0));
    for (id, track, source, sent, acked, task) in streams {
        assert_eq!(
            task.await.unwrap(),
            Some(1001),
            "{id}/{track} closed with 1001"
        );
        let data = read_wav_data(&server.track_path(&id, track));
        assert_eq!(data.len() % 1920, 0, "{id}/{track}: no torn frame");
        assert!(
            data.len() as u64 >= acked.load(Ordering::Acquire),
            "{id}/{track}: acked audio kept"
        );
        assert!(data.len() as u64 <= sent.load(Ordering::Acquire));
        assert!(data == source[..data.len()], "{id}/{track}: bytes as sent");
    }
}
