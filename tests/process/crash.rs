//! SIGKILL at many seeded points while three tracks stream; after every restart nothing acked
//! is missing, every header matches its data, the stored bytes are the bytes sent, and resuming
//! completes every track byte-identical to its source.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::server::{next_json, pcm, read_wav_data, Server};

struct TrackUnderTest {
    name: &'static str,
    query: &'static str,
    frame_bytes: usize,
    source: Vec<u8>,
    /// The highest offset the server acked in any round: never lost afterwards.
    acked: u64,
}

fn tracks() -> Vec<TrackUnderTest> {
    let spec = [
        (
            "mic",
            "track=mic&sampleRate=48000&channels=1&format=s16le",
            1920,
            288_000,
        ),
        (
            "guest",
            "track=guest&sampleRate=48000&channels=2&format=s16le",
            3840,
            576_000,
        ),
        (
            "system",
            "track=system&sampleRate=48000&channels=1&format=f32le",
            3840,
            576_000,
        ),
    ];
    spec.iter()
        .enumerate()
        .map(|(i, &(name, query, frame_bytes, len))| TrackUnderTest {
            name,
            query,
            frame_bytes,
            source: pcm(100 + i as u64, len),
            acked: 0,
        })
        .collect()
}

fn seed() -> u64 {
    std::env::var("SAFETAKE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_125)
}

/// After a restart: the stored size is whole blocks, covers every ack, and holds exactly the
/// bytes that were sent.
async fn check_after_restart(server: &Server, id: &str, tracks: &[TrackUnderTest], round: usize) {
    let session = server.json(&format!("/api/session/{id}")).await;
    assert_eq!(
        session["status"], "active",
        "round {round}: a crash changes no status"
    );
    for track in tracks {
        let Some(view) = session["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == track.name)
        else {
            assert_eq!(track.acked, 0, "round {round}: {} vanished", track.name);
            continue;
        };
        let stored = view["dataBytes"].as_u64().unwrap();
        assert!(
            stored >= track.acked,
            "round {round} {}: stored {stored} < acked {}",
            track.name,
            track.acked
        );
        let data = read_wav_data(&server.track_path(id, track.name));
        assert_eq!(
            data.len() as u64,
            stored,
            "round {round} {}: dataBytes is the file's data",
            track.name
        );
        assert!(
            data == track.source[..data.len()],
            "round {round} {}: stored bytes differ from those sent",
            track.name
        );
    }
}

#[tokio::test]
async fn sigkill_at_twenty_seeded_points_loses_nothing_acked() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let args = ["--sync-interval", "100ms"];
    let mut tracks = tracks();
    let first = Server::start(dir.path(), &args).await;
    let id = first.create_session().await;
    drop(first);

    for round in 0..20 {
        let mut server = Server::start(dir.path(), &args).await;
        check_after_restart(&server, &id, &tracks, round).await;
        let mut acks = Vec::new();
        for track in &tracks {
            let (ws, ready) = server.connect(&id, track.query).await;
            let (mut sink, mut stream) = ws.split();
            let last_ack = Arc::new(AtomicU64::new(ready));
            let seen = last_ack.clone();
            tokio::spawn(async move {
                while let Some(Ok(Message::Text(text))) = stream.next().await {
                    let message: Value = serde_json::from_str(&text).unwrap();
                    if message["type"] == "ack" {
                        seen.fetch_max(message["offset"].as_u64().unwrap(), Ordering::AcqRel);
                    }
                }
            });
            // Stream a random number of frames from where the server says it stands.
            let frames = rng.gen_range(1..=12);
            let mut offset = ready;
            for _ in 0..frames {
                let end = (offset as usize + track.frame_bytes).min(track.source.len());
                let bytes = crate::audio::frame(offset, &track.source[offset as usize..end]);
                sink.send(Message::Binary(bytes)).await.unwrap();
                offset = end as u64;
            }
            if rng.gen_bool(0.3) {
                sink.send(Message::Text(r#"{"type":"flush"}"#.into()))
                    .await
                    .unwrap();
            }
            acks.push((last_ack, sink));
        }
        // Kill at a random moment: before, during or after the next sync.
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..250))).await;
        server.kill9();
        for (track, (last_ack, _sink)) in tracks.iter_mut().zip(&acks) {
            track.acked = track.acked.max(last_ack.load(Ordering::Acquire));
        }
    }

    let server = Server::start(dir.path(), &args).await;
    check_after_restart(&server, &id, &tracks, 20).await;
    for track in &tracks {
        let (mut ws, ready) = server.connect(&id, track.query).await;
        for (i, chunk) in track.source[ready as usize..]
            .chunks(track.frame_bytes)
            .enumerate()
        {
            let offset = ready + (i * track.frame_bytes) as u64;
            crate::server::send_frame(&mut ws, offset, chunk).await;
        }
        ws.send(Message::Text(r#"{"type":"flush"}"#.into()))
            .await
            .unwrap();
        loop {
            let ack = next_json(&mut ws).await.expect("ack");
            if ack["type"] == "ack" && ack["offset"].as_u64() == Some(track.source.len() as u64) {
                break;
            }
        }
    }
    server.finish(&id).await;
    for track in &tracks {
        assert!(
            read_wav_data(&server.track_path(&id, track.name)) == track.source,
            "{} complete and identical (seed {seed})",
            track.name
        );
    }
    let segments = server.json(&format!("/api/session/{id}")).await["tracks"][0]["segments"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(segments, 21, "one segment per attach");
}

/// The window between a data write and its header update is tiny, so it is staged by hand: a
/// file whose header lags its data and ends in a torn block, exactly as a crash leaves it.
#[tokio::test]
async fn restart_repairs_a_stale_header_and_a_torn_block() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]).await;
    let id = server.create_session().await;
    let (mut ws, _) = server.connect(&id, "track=mic&channels=2").await;
    crate::server::send_frame(&mut ws, 0, &pcm(7, 4000)).await;
    ws.send(Message::Text(r#"{"type":"flush"}"#.into()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await.unwrap()["offset"], 4000);
    server.kill9();

    let path = server.track_path(&id, "mic");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut file, &pcm(8, 4002)).unwrap(); // 1000 whole blocks + 2 torn bytes
    drop(file);

    let server = Server::start(dir.path(), &[]).await;
    let track = &server.json(&format!("/api/session/{id}")).await["tracks"][0];
    assert_eq!(
        track["dataBytes"], 8000,
        "every whole block that reached the file is kept"
    );
    let mut expected = pcm(7, 4000);
    expected.extend_from_slice(&pcm(8, 4000));
    assert!(read_wav_data(&path) == expected);
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(
        log.contains("repaired track after a crash"),
        "the repair is logged: {log}"
    );
    let (_ws, ready) = server.connect(&id, "track=mic").await;
    assert_eq!(ready, 8000);
}
