//! SIGTERM: every open track is flushed and finalized, sockets close with 1001, the process
//! exits 0, and sessions stay active for their clients to come back.

use std::time::{Duration, Instant};

use crate::server::{next_close_code, pcm, read_wav_data, send_frame, Server};

#[tokio::test]
async fn sigterm_finalizes_every_track_closes_1001_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    // A minute between syncs: only the shutdown can have written these bytes.
    let args = ["--sync-interval", "60s"];
    let mut server = Server::start(dir.path(), &args).await;
    let id = server.create_session().await;
    let (mut mic, _) = server.connect(&id, "track=mic").await;
    let (mut guest, _) = server.connect(&id, "track=guest&channels=2").await;
    send_frame(&mut mic, 0, &pcm(1, 19_200)).await;
    send_frame(&mut guest, 0, &pcm(2, 38_400)).await;
    // Wait until the writers hold every byte (dataBytes counts what they accepted).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let session = server.json(&format!("/api/session/{id}")).await;
        let sizes: Vec<u64> = session["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["dataBytes"].as_u64().unwrap())
            .collect();
        if sizes.iter().sum::<u64>() == 57_600 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writers never received the frames: {sizes:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let status = tokio::task::spawn_blocking(move || {
        let status = server.terminate();
        (server, status)
    });
    for socket in [&mut mic, &mut guest] {
        assert_eq!(
            next_close_code(socket, Duration::from_secs(10)).await,
            Some(1001)
        );
    }
    let (server, status) = status.await.unwrap();
    assert_eq!(status.code(), Some(0), "exit code");
    assert_eq!(
        read_wav_data(&server.track_path(&id, "mic")),
        pcm(1, 19_200)
    );
    assert_eq!(
        read_wav_data(&server.track_path(&id, "guest")),
        pcm(2, 38_400)
    );
    drop(server);

    let server = Server::start(dir.path(), &args).await;
    let session = server.json(&format!("/api/session/{id}")).await;
    assert_eq!(
        session["status"], "active",
        "clients come back to an active session"
    );
    assert_eq!(session["tracks"][0]["dataBytes"], 19_200);
}

/// A bad flag or variable stops the server at start with a message naming it.
#[test]
fn bad_configuration_stops_the_server_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_safetake"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?} {env:?} must not start");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    assert!(run(&["--session-timeout", "5x"], &[]).contains("--session-timeout"));
    assert!(run(&["--max-frame-bytes=-1"], &[]).contains("--max-frame-bytes"));
    assert!(run(&["--max-connections", "0"], &[]).contains("--max-connections"));
    assert!(run(&[], &[("SAFETAKE_SYNC_INTERVAL", "soon")]).contains("--sync-interval"));
    assert!(run(&["--bind", "0.0.0.0:0"], &[]).contains("--auth-token"));
    assert!(run(&["--database-url", "postgres://localhost/x"], &[]).contains("--database-url"));
}
