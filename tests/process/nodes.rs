//! Several nodes: two server processes on one PostgreSQL database and one data directory, as
//! behind a load balancer. One node at a time writes a track; attaching on the other takes it
//! over (4001 after a sync) without losing or duplicating a byte; a node killed with SIGKILL
//! lets its tracks go at once; both sweep, and each silent session times out once. And the
//! database going away and coming back (every connection dropped) while 20 streams record.
//! Skipped unless the suites run against PostgreSQL (SAFETAKE_TEST_DATABASE_URL).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::server::pg::{self, CutProxy};
use crate::server::{database_url_for, pcm, read_wav_data, Server, WsClient, WAIT};

/// These tests need PostgreSQL: without it they fail, never pass unseen. tests/run-all.sh runs
/// them in its PostgreSQL pass and leaves them out of the SQLite one (`--skip nodes::`).
fn require_postgres() {
    assert!(
        pg::enabled(),
        "needs PostgreSQL: set {} (tests/run-all.sh starts a throwaway cluster)",
        pg::TEST_DATABASE_URL
    );
}

const FRAME: usize = 960;

/// Sends `audio[from..to]` in frames, without waiting for acks.
async fn send(socket: &mut WsClient, audio: &[u8], from: usize, to: usize) {
    let mut offset = from;
    while offset < to {
        let end = (offset + FRAME).min(to);
        socket.send_frame(offset as u64, &audio[offset..end]).await;
        offset = end;
    }
}

fn last_ack(messages: &[Value]) -> Option<u64> {
    messages
        .iter()
        .filter(|message| message["type"] == "ack")
        .filter_map(|message| message["offset"].as_u64())
        .max()
}

/// Two nodes on one database and one data directory, syncing every 100 ms. The servers go
/// before the directory (bindings drop in reverse order).
async fn two_nodes() -> (tempfile::TempDir, Server, Server) {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--sync-interval", "100ms"];
    let a = Server::start(dir.path(), &args).await;
    let b = Server::start(dir.path(), &args).await;
    (dir, a, b)
}

async fn track(server: &Server, id: &str, name: &str) -> Value {
    let session = server.json(&format!("/api/session/{id}")).await;
    session["tracks"]
        .as_array()
        .and_then(|tracks| tracks.iter().find(|track| track["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no track {name} in {session}"))
}

#[tokio::test]
async fn attaching_on_node_b_takes_the_track_over_from_node_a_without_losing_a_byte() {
    require_postgres();
    let (_dir, a, b) = two_nodes().await;
    let id = a.create_session().await;
    // Sessions are visible from every node at once.
    assert_eq!(
        b.json(&format!("/api/session/{id}")).await["status"],
        "active"
    );
    let audio = pcm(60, 96_000 * 2);
    let (mut on_a, ready) = WsClient::open(&a.ws_url(&id, "track=mic")).await;
    assert_eq!(ready, 0);
    send(&mut on_a, &audio, 0, 96_000).await;
    assert_eq!(on_a.flush(96_000).await, 96_000);
    // More audio A has not acked yet when B attaches: A syncs it, acks it, then closes 4001.
    send(&mut on_a, &audio, 96_000, 120_000).await;
    let (mut on_b, ready_b) = WsClient::open(&b.ws_url(&id, "track=mic")).await;
    let closed = tokio::time::timeout(WAIT, on_a.expect_close())
        .await
        .expect("closed in time");
    assert_eq!(closed.code, 4001, "{:?}", closed.messages);
    let acked = last_ack(&closed.messages).unwrap_or(96_000);
    assert_eq!(ready_b, acked, "B's ready.offset is A's last ack");
    send(&mut on_b, &audio, ready_b as usize, audio.len()).await;
    assert_eq!(on_b.flush(audio.len() as u64).await, audio.len() as u64);
    b.finish(&id).await;
    assert_eq!(read_wav_data(&a.track_path(&id, "mic")), audio);
    let mic = track(&a, &id, "mic").await;
    assert_eq!(mic["dataBytes"], audio.len());
    let offsets: Vec<u64> = mic["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|segment| segment["offset"].as_u64())
        .collect();
    assert_eq!(offsets, vec![0, ready_b], "{mic}");
}

#[tokio::test]
async fn a_node_killed_with_sigkill_lets_another_node_resume_within_five_seconds() {
    require_postgres();
    let (_dir, mut a, b) = two_nodes().await;
    let id = b.create_session().await;
    let audio = pcm(61, 200_000);
    let (mut on_a, _) = WsClient::open(&a.ws_url(&id, "track=mic")).await;
    send(&mut on_a, &audio, 0, 80_000).await;
    let acked = on_a.flush(80_000).await;
    send(&mut on_a, &audio, 80_000, 100_000).await;
    // A's attach is on record (written beside the audio, not before its ready).
    let deadline = Instant::now() + WAIT;
    while track(&b, &id, "mic").await["segments"]
        .as_array()
        .map_or(0, Vec::len)
        < 1
    {
        assert!(Instant::now() < deadline, "A's segment never showed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill9();
    let killed = Instant::now();
    let (mut on_b, ready) = WsClient::open(&b.ws_url(&id, "track=mic")).await;
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "B attached {:?} after the kill",
        killed.elapsed()
    );
    assert!(
        ready >= acked,
        "acked audio lost: ready {ready} < ack {acked}"
    );
    send(&mut on_b, &audio, ready as usize, audio.len()).await;
    assert_eq!(on_b.flush(audio.len() as u64).await, audio.len() as u64);
    b.finish(&id).await;
    assert_eq!(read_wav_data(&b.track_path(&id, "mic")), audio);
    let mic = track(&b, &id, "mic").await;
    let segments = mic["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 2, "both nodes' attaches: {mic}");
    assert_eq!(segments[1]["offset"], ready);
}

/// A counter from a node's `/metrics` (0 before it is first counted).
async fn counter(server: &Server, series: &str) -> f64 {
    let text = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

#[tokio::test]
async fn both_nodes_sweep_and_each_silent_session_times_out_once() {
    require_postgres();
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--session-timeout",
        "800ms",
        "--sweep-interval",
        "100ms",
        "--sync-interval",
        "100ms",
    ];
    let a = Server::start(dir.path(), &args).await;
    let b = Server::start(dir.path(), &args).await;
    let mut silent = Vec::new();
    for i in 0..6 {
        let node = if i % 2 == 0 { &a } else { &b };
        silent.push(node.create_session().await);
    }
    // One session is heard only by node A (its socket streams there): node B's sweeper must
    // count A's heartbeats too.
    let heard = b.create_session().await;
    let (mut on_a, _) = WsClient::open(&a.ws_url(&heard, "track=mic")).await;
    // A socket on node A of a session that goes silent: closed 4408 wherever the sweep ran.
    let quiet = silent[1].clone();
    let (mut quiet_socket, _) = WsClient::open(&a.ws_url(&quiet, "track=mic")).await;
    let audio = pcm(62, 48_000);
    let started = Instant::now();
    let mut offset = 0;
    while started.elapsed() < Duration::from_millis(2_500) {
        on_a.send_frame(offset as u64, &audio[offset..offset + FRAME])
            .await;
        offset += FRAME;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for id in &silent {
        assert_eq!(
            b.json(&format!("/api/session/{id}")).await["status"],
            "incomplete",
            "{id}"
        );
    }
    assert_eq!(
        a.json(&format!("/api/session/{heard}")).await["status"],
        "active"
    );
    let series = "safetake_sessions_timed_out_total";
    let total = counter(&a, series).await + counter(&b, series).await;
    assert_eq!(
        total,
        silent.len() as f64,
        "each silent session timed out once"
    );
    assert_eq!(
        tokio::time::timeout(WAIT, quiet_socket.expect_close())
            .await
            .expect("closed in time")
            .code,
        4408
    );
    on_a.flush(offset as u64).await;
}

#[tokio::test]
async fn the_database_going_away_and_back_under_twenty_streams_loses_nothing_acked() {
    require_postgres();
    let dir = tempfile::tempdir().unwrap();
    let database = database_url_for(dir.path()).expect("a test database");
    let proxy = CutProxy::to(pg::port_of(&database));
    let url = pg::via_port(&database, proxy.port);
    let args = ["--database-url", &url, "--sync-interval", "100ms"];
    let server = Server::start(dir.path(), &args).await;
    // Two sessions of ten tracks (a session holds at most 16).
    let ids = [server.create_session().await, server.create_session().await];
    let audio = pcm(63, 60_000);
    let mut sockets = Vec::new();
    for i in 0..20 {
        let id = &ids[i % 2];
        let (socket, ready) = WsClient::open(&server.ws_url(id, &format!("track=t{i}"))).await;
        assert_eq!(ready, 0);
        sockets.push(socket);
    }
    for socket in &mut sockets {
        send(socket, &audio, 0, 20_000).await;
    }
    for socket in &mut sockets {
        assert_eq!(socket.flush(20_000).await, 20_000);
    }
    // Every connection dropped and none accepted for two seconds, as a restart does.
    proxy.cut();
    for socket in &mut sockets {
        send(socket, &audio, 20_000, 40_000).await;
    }
    for socket in &mut sockets {
        assert_eq!(
            socket.flush(40_000).await,
            40_000,
            "acked while the database is away"
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.restore();
    server.wait_healthy("the database came back").await;
    for socket in &mut sockets {
        send(socket, &audio, 40_000, audio.len()).await;
    }
    for socket in &mut sockets {
        assert_eq!(socket.flush(audio.len() as u64).await, audio.len() as u64);
    }
    for id in &ids {
        server.finish(id).await;
        let session = server.json(&format!("/api/session/{id}")).await;
        assert_eq!(session["status"], "completed");
    }
    for i in 0..20 {
        let (id, name) = (&ids[i % 2], format!("t{i}"));
        assert_eq!(
            read_wav_data(&server.track_path(id, &name)),
            audio,
            "{name}"
        );
        assert_eq!(track(&server, id, &name).await["dataBytes"], audio.len());
    }
}

#[tokio::test]
async fn a_hung_node_loses_its_tracks_within_five_seconds() {
    require_postgres();
    let (_dir, a, b) = two_nodes().await;
    let id = a.create_session().await;
    let audio = pcm(64, 100_000);
    let (mut on_a, _) = WsClient::open(&a.ws_url(&id, "track=mic")).await;
    send(&mut on_a, &audio, 0, 50_000).await;
    let acked = on_a.flush(50_000).await;
    // A stops answering (its process is frozen), with the socket still open.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(a.pid(), libc::SIGSTOP) };
    let hung = Instant::now();
    let (mut on_b, ready) = WsClient::open(&b.ws_url(&id, "track=mic")).await;
    assert!(
        hung.elapsed() < Duration::from_secs(5),
        "B attached {:?} after A hung",
        hung.elapsed()
    );
    assert_eq!(ready, acked, "the repaired file holds what A acked");
    send(&mut on_b, &audio, ready as usize, audio.len()).await;
    assert_eq!(on_b.flush(audio.len() as u64).await, audio.len() as u64);
    b.finish(&id).await;
    assert_eq!(read_wav_data(&b.track_path(&id, "mic")), audio);
    // SAFETY: as above; the server is killed when dropped.
    unsafe { libc::kill(a.pid(), libc::SIGCONT) };
}

#[tokio::test]
async fn finishing_on_node_b_closes_the_sockets_node_a_holds_with_1000() {
    require_postgres();
    let (_dir, a, b) = two_nodes().await;
    let id = a.create_session().await;
    let audio = pcm(65, 40_000);
    let (mut on_a, _) = WsClient::open(&a.ws_url(&id, "track=mic")).await;
    on_a.send_text(r#"{"type":"mark","offset":0,"capturedAt":1764600000000.5}"#)
        .await;
    send(&mut on_a, &audio, 0, audio.len()).await;
    assert_eq!(on_a.flush(audio.len() as u64).await, audio.len() as u64);
    b.finish(&id).await;
    // The contract's finish has synced, finalized and stored everything once it answers, on
    // whichever node holds the socket: node A's track and mark, read at once through node B.
    let mic = track(&b, &id, "mic").await;
    assert_eq!(mic["dataBytes"], audio.len() as u64, "{mic}");
    let marks = b.json(&format!("/api/session/{id}/tracks/mic/marks")).await;
    assert_eq!(
        marks["marks"],
        serde_json::json!([{"offset": 0, "capturedAt": 1764600000000.5}]),
        "node A's mark is stored before the finish on node B answers"
    );
    let wav = hound::WavReader::open(a.track_path(&id, "mic")).expect("a finalized WAV");
    assert_eq!(
        wav.len() as usize * 2,
        audio.len(),
        "the header says every byte"
    );
    let closed = tokio::time::timeout(WAIT, on_a.expect_close())
        .await
        .expect("closed in time");
    assert_eq!(closed.code, 1000, "{:?}", closed.messages);
    assert!(
        closed
            .messages
            .iter()
            .any(|message| message["type"] == "finished"),
        "{:?}",
        closed.messages
    );
    assert_eq!(read_wav_data(&a.track_path(&id, "mic")), audio);
    assert_eq!(
        b.json(&format!("/api/session/{id}")).await["status"],
        "completed"
    );
}

/// A cluster of the test's own (tests/pg-cluster.sh), so restarting it disturbs no other test.
struct PrivateCluster {
    dir: String,
    url: String,
}

fn cluster_script(script: &str, dir: &str) -> std::process::Output {
    std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("source tests/pg-cluster.sh && {script}"))
        .env("PG_CLUSTER_DIR", dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("bash runs")
}

impl PrivateCluster {
    fn start() -> PrivateCluster {
        let out = cluster_script(
            r#"pg_cluster_start && echo "$PG_CLUSTER_DIR $PG_TEST_URL""#,
            "",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (dir, url) = text.trim().split_once(' ').expect("dir and URL");
        PrivateCluster {
            dir: dir.to_string(),
            url: url.to_string(),
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        cluster_script("pg_cluster_stop", &self.dir);
    }
}

/// A guest records on node A; the host, on node B, stops the recording for everyone and then
/// revokes the guest's invite: the guest's socket on A hears `stop`, then closes with 4403,
/// and what it sent is stored.
#[tokio::test]
async fn a_stop_and_a_revoke_on_node_b_reach_the_guests_socket_on_node_a() {
    require_postgres();
    let (_dir, a, b) = two_nodes().await;
    let id = a.create_session().await;
    let invite: Value = b
        .http
        .post(b.url(&format!("/api/session/{id}/invites")))
        .json(&serde_json::json!({"track": "sam", "name": "Sam"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bearer = format!("Bearer {}", invite["token"].as_str().expect("a token"));
    let (mut guest, _) =
        WsClient::connect(&a.ws_url(&id, "track=sam"), &[("authorization", &bearer)])
            .await
            .unwrap_or_else(|(status, body)| panic!("guest refused on A {status}: {body}"));
    let audio = pcm(66, 20_000);
    send(&mut guest, &audio, 0, audio.len()).await;
    assert_eq!(guest.flush(audio.len() as u64).await, audio.len() as u64);

    let stopped = b
        .http
        .post(b.url(&format!("/api/session/{id}/stop")))
        .send()
        .await
        .unwrap();
    // 202: the session waits for the guest's track.
    assert_eq!(stopped.status(), 202);
    let heard = tokio::time::timeout(WAIT, async {
        loop {
            match guest.next_json().await {
                Some(message) if message["type"] == "ack" => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("a message within the wait");
    assert_eq!(heard.expect("stop, not a close")["type"], "stop");

    let invite_id = invite["id"].as_str().expect("an invite id");
    let revoked = b
        .http
        .delete(b.url(&format!("/api/session/{id}/invites/{invite_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    let closed = tokio::time::timeout(WAIT, guest.expect_close())
        .await
        .expect("closed in time");
    assert_eq!(closed.code, 4403, "{:?}", closed.messages);
    assert_eq!(read_wav_data(&a.track_path(&id, "sam")), audio);
}

#[tokio::test]
async fn a_postgres_restart_under_twenty_streams_loses_nothing_acked() {
    require_postgres();
    let cluster = PrivateCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let args = ["--database-url", &cluster.url, "--sync-interval", "100ms"];
    let server = Server::start(dir.path(), &args).await;
    let ids = [server.create_session().await, server.create_session().await];
    let audio = pcm(66, 60_000);
    let mut sockets = Vec::new();
    for i in 0..20 {
        let id = &ids[i % 2];
        let (socket, _) = WsClient::open(&server.ws_url(id, &format!("track=t{i}"))).await;
        sockets.push(socket);
    }
    for socket in &mut sockets {
        send(socket, &audio, 0, 20_000).await;
    }
    // The restart, while every stream has audio in flight.
    let restart = {
        let dir = cluster.dir.clone();
        tokio::task::spawn_blocking(move || {
            let out = cluster_script("pg_cluster_restart", &dir);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        })
    };
    for socket in &mut sockets {
        send(socket, &audio, 20_000, 40_000).await;
    }
    for socket in &mut sockets {
        assert_eq!(
            socket.flush(40_000).await,
            40_000,
            "acked across the restart"
        );
    }
    restart.await.unwrap();
    // The server saw it: its connections were dropped.
    let deadline = Instant::now() + WAIT;
    while !std::fs::read_to_string(dir.path().join("server.log"))
        .unwrap_or_default()
        .contains("lock connection lost")
    {
        assert!(
            Instant::now() < deadline,
            "the server never saw the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.wait_healthy("the restart").await;
    for socket in &mut sockets {
        send(socket, &audio, 40_000, audio.len()).await;
    }
    for socket in &mut sockets {
        assert_eq!(socket.flush(audio.len() as u64).await, audio.len() as u64);
    }
    for id in &ids {
        assert_eq!(
            server.json(&format!("/api/session/{id}")).await["status"],
            "active"
        );
        server.finish(id).await;
        assert_eq!(
            server.json(&format!("/api/session/{id}")).await["status"],
            "completed"
        );
    }
    for i in 0..20 {
        let (id, name) = (&ids[i % 2], format!("t{i}"));
        assert_eq!(
            read_wav_data(&server.track_path(id, &name)),
            audio,
            "{name}"
        );
        assert_eq!(track(&server, id, &name).await["dataBytes"], audio.len());
    }
}
