//! `GET /api/session/{id}/tracks/{name}.wav`: playable snapshots and single ranges.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::helpers::{assert_error, pcm, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_track_downloads_as_the_wav_on_disk() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let (mut socket, _) = app.connect(&id, "track=mic").await;
    socket.send_frame(0, &pcm(20, 4800)).await;
    socket.flush(4800).await;
    socket.close().await;
    let response = app.get(&format!("/api/session/{id}/tracks/mic.wav")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "audio/wav");
    let body = response.bytes().await.unwrap();
    assert_eq!(
        &body[..],
        &std::fs::read(app.track_path(&id, "mic")).unwrap()[..]
    );
    let reader = hound::WavReader::new(std::io::Cursor::new(body)).unwrap();
    assert_eq!(reader.duration(), 2400);
}

#[tokio::test]
async fn single_ranges_are_served_and_impossible_ones_get_416() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let (mut socket, _) = app.connect(&id, "track=mic").await;
    let audio = pcm(21, 1000);
    socket.send_frame(0, &audio).await;
    socket.flush(1000).await;
    let whole = std::fs::read(app.track_path(&id, "mic")).unwrap();
    let url = app.url(&format!("/api/session/{id}/tracks/mic.wav"));
    for (range, expected) in [
        ("bytes=0-43", &whole[..44]),
        ("bytes=40-59", &whole[40..60]),
        ("bytes=-10", &whole[whole.len() - 10..]),
        ("bytes=1000-", &whole[1000..]),
    ] {
        let response = app
            .http
            .get(&url)
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 206, "{range}");
        assert!(response.headers()["content-range"]
            .to_str()
            .unwrap()
            .ends_with(&format!("/{}", whole.len())));
        assert_eq!(&response.bytes().await.unwrap()[..], expected, "{range}");
    }
    let response = app
        .http
        .get(&url)
        .header("range", "bytes=5000-")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 416);
    assert_eq!(
        response.headers()["content-range"],
        format!("bytes */{}", whole.len()).as_str()
    );
}

#[tokio::test]
async fn a_growing_track_downloads_as_a_consistent_snapshot() {
    // With a long sync interval the writer holds unsynced bytes: the snapshot shows the acked ones.
    let app = spawn_app_with(|config| config.sync_interval = Duration::from_secs(60)).await;
    let id = app.create_session().await;
    let (mut socket, _) = app.connect(&id, "track=mic").await;
    socket.send_frame(0, &pcm(22, 600)).await;
    socket.flush(600).await;
    socket.send_frame(600, &pcm(23, 400)).await;
    let body = app
        .get(&format!("/api/session/{id}/tracks/mic.wav"))
        .await
        .bytes()
        .await
        .unwrap();
    let reader = hound::WavReader::new(std::io::Cursor::new(&body)).unwrap();
    assert!(reader.duration() >= 300, "at least the acked bytes");
    assert_eq!(
        body.len() as u64,
        44 + u64::from(reader.duration()) * 2,
        "header matches the data served"
    );
    assert_eq!(&body[44..644], &pcm(22, 600)[..]);
}

#[tokio::test]
async fn unknown_tracks_and_hostile_names_are_404() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    for name in [
        "nope.wav",
        "mic",
        "..%2F..%2Fsafetake.db",
        "mic.wav.wav",
        "%2e%2e.wav",
    ] {
        assert_error(
            app.get(&format!("/api/session/{id}/tracks/{name}")).await,
            404,
            "not_found",
        )
        .await;
    }
}

#[tokio::test]
async fn a_range_past_the_end_is_clamped_to_the_file() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let (mut socket, _) = app.connect(&id, "track=mic").await;
    socket.send_frame(0, &pcm(24, 1000)).await;
    socket.flush(1000).await;
    socket.close().await;
    let whole = std::fs::read(app.track_path(&id, "mic")).unwrap();
    let last = whole.len() - 1;
    let url = app.url(&format!("/api/session/{id}/tracks/mic.wav"));
    // RFC 9110: a last position at or past the end means "to the end"; a suffix longer than the
    // file means all of it.
    for (range, start) in [
        ("bytes=40-5000".to_string(), 40),
        (format!("bytes=100-{}", whole.len()), 100),
        (format!("bytes={last}-99999999999"), last),
        ("bytes=-5000".to_string(), 0),
        ("bytes=0-18446744073709551615".to_string(), 0),
    ] {
        let response = app
            .http
            .get(&url)
            .header("range", &range)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 206, "{range}");
        assert_eq!(
            response.headers()["content-range"],
            format!("bytes {start}-{last}/{}", whole.len()).as_str(),
            "{range}"
        );
        assert_eq!(
            response.headers()["content-length"],
            (whole.len() - start).to_string().as_str(),
            "{range}"
        );
        assert_eq!(
            &response.bytes().await.unwrap()[..],
            &whole[start..],
            "{range}"
        );
    }
}

/// A socket that opens a stored track starts a writer, which opens (and repairs) the file
/// before it knows the file's size. Meanwhile the session and a download go by what is stored,
/// never by the writer's counts, which read 0 until then: a resume never shows an empty track.
#[tokio::test]
async fn a_track_being_opened_again_never_reads_as_empty() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let (mut socket, _) = app.connect(&id, "track=mic").await;
    for frame in 0..10u64 {
        socket.send_frame(frame * 4800, &pcm(23, 4800)).await;
    }
    socket.flush(48_000).await;
    socket.close().await;
    let url = app.url(&format!("/api/session/{id}/tracks/mic.wav"));
    for _ in 0..30 {
        // The last socket's writer retires once idle; the next socket starts a new one.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let opened = Arc::new(AtomicBool::new(false));
        let watch = {
            let (app_session, http, url, opened) = (
                app.url(&format!("/api/session/{id}")),
                app.http.clone(),
                url.clone(),
                opened.clone(),
            );
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !opened.load(Ordering::Acquire) {
                    let session: serde_json::Value = http
                        .get(&app_session)
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    seen.push(("dataBytes", session["tracks"][0]["dataBytes"].as_u64()));
                    let wav = http.get(&url).send().await.unwrap().bytes().await.unwrap();
                    seen.push(("download", Some(wav.len() as u64 - 44)));
                }
                seen
            })
        };
        let (socket, ready) = app.connect(&id, "track=mic").await;
        assert_eq!(ready["offset"], 48_000);
        opened.store(true, Ordering::Release);
        for (what, bytes) in watch.await.unwrap() {
            assert_eq!(
                bytes,
                Some(48_000),
                "{what} while a socket opened the track"
            );
        }
        socket.close().await;
    }
}
