//! The sweeper with short timeouts: silence closes sockets with 4408 and makes the session
//! incomplete; attaching again resumes it.

use std::time::Duration;

use crate::helpers::{pcm, read_wav_data, spawn_app_with};

#[tokio::test]
async fn a_silent_socket_is_closed_4408_and_its_session_becomes_incomplete() {
    let app = spawn_app_with(|config| {
        config.session_timeout = Duration::from_millis(400);
        config.sweep_interval = Duration::from_millis(100);
        config.sync_interval = Duration::from_secs(60);
    })
    .await;
    let id = app.create_session().await;
    let (mut socket, _) = app.connect(&id, "track=mic").await;
    socket.send_frame(0, &pcm(30, 1000)).await;
    // Then silence: the sweeper finalizes the track before it closes the socket.
    let closed = socket.expect_close().await;
    assert_eq!(closed.code, 4408);
    assert_eq!(app.session(&id).await["status"], "incomplete");
    assert_eq!(read_wav_data(&app.track_path(&id, "mic")), pcm(30, 1000));

    let (mut socket, ready) = app.connect(&id, "track=mic").await;
    assert_eq!(ready["offset"], 1000);
    assert_eq!(app.session(&id).await["status"], "active");
    socket.send_frame(1000, &pcm(31, 10)).await;
    socket.flush(1010).await;
}

#[tokio::test]
async fn frames_keep_a_session_alive_without_database_writes_per_frame() {
    let app = spawn_app_with(|config| {
        config.session_timeout = Duration::from_millis(600);
        config.sweep_interval = Duration::from_millis(100);
    })
    .await;
    let id = app.create_session().await;
    let (mut socket, _) = app.connect(&id, "track=mic").await;
    let audio = pcm(32, 200 * 20);
    for (i, chunk) in audio.chunks(200).enumerate() {
        socket.send_frame((i * 200) as u64, chunk).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Two seconds of frames, three timeouts long: still active, and the heartbeat is recent.
    let session = app.session(&id).await;
    assert_eq!(session["status"], "active");
    let beat =
        chrono::DateTime::parse_from_rfc3339(session["lastHeartbeat"].as_str().unwrap()).unwrap();
    assert!(chrono::Utc::now().signed_duration_since(beat) < chrono::Duration::milliseconds(600));
    socket.flush(audio.len() as u64).await;
}
