//! The sweeper with short timeouts: silence closes sockets with 4408 and makes the session
//! incomplete; attaching again resumes it. Frames keep a session alive in memory: a second
//! connection to the database counts the server's commits while they stream.

use std::time::{Duration, Instant};

use diesel::sql_types::BigInt;
use diesel::{QueryableByName, RunQueryDsl};
use safetake::db::DbConnection;

use crate::helpers::{pcm, read_wav_data, spawn_app_with, TestApp, WAIT};

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

/// Watches the test's database from a second connection: SQLite's `PRAGMA data_version` changes
/// whenever another connection has committed since this one last asked (on PostgreSQL, the
/// size of the test's write log: see helpers::install_write_log).
pub(crate) struct CommitProbe {
    pub(crate) conn: DbConnection,
    last: i64,
}

#[derive(QueryableByName)]
struct DataVersion {
    #[diesel(sql_type = BigInt)]
    data_version: i64,
}

impl CommitProbe {
    pub(crate) fn open(app: &TestApp) -> CommitProbe {
        let mut conn = app.db_connection();
        let last = Self::read(&mut conn);
        CommitProbe { conn, last }
    }

    fn read(conn: &mut DbConnection) -> i64 {
        let query = match conn {
            DbConnection::Sqlite(_) => "PRAGMA data_version",
            DbConnection::Postgres(_) => "SELECT count(*) AS data_version FROM test_writes",
        };
        diesel::sql_query(query)
            .get_result::<DataVersion>(conn)
            .expect("PRAGMA data_version")
            .data_version
    }

    /// Whether the server committed anything since the last look.
    pub(crate) fn committed(&mut self) -> bool {
        let now = Self::read(&mut self.conn);
        std::mem::replace(&mut self.last, now) != now
    }
}

/// Waits (bounded) until the attach's background writes are in: the track shows its segment.
pub(crate) async fn wait_for_segment(app: &TestApp, id: &str, track: &str) {
    let deadline = Instant::now() + WAIT;
    while app.track(id, track).await["segments"]
        .as_array()
        .is_none_or(|segments| segments.is_empty())
    {
        assert!(Instant::now() < deadline, "the attach recorded no segment");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn frames_keep_a_session_alive_without_database_writes_per_frame() {
    let sweep_interval = Duration::from_millis(100);
    let app = spawn_app_with(|config| {
        config.session_timeout = Duration::from_millis(600);
        config.sweep_interval = sweep_interval;
    })
    .await;
    let id = app.create_session().await;
    let (mut socket, _) = app.connect(&id, "track=mic").await;
    wait_for_segment(&app, &id, "mic").await;
    let mut probe = CommitProbe::open(&app);
    // Two hundred frames over two seconds and more, three timeouts long. Each sweep writes the
    // heartbeats heard since the last one in one transaction: a look after every frame sees at
    // most one commit per sweep, not one per frame.
    let audio = pcm(32, 200 * 20);
    let started = Instant::now();
    let mut commits = 0;
    for (i, chunk) in audio.chunks(20).enumerate() {
        socket.send_frame((i * 20) as u64, chunk).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        commits += usize::from(probe.committed());
    }
    let sweeps = (started.elapsed().as_millis() / sweep_interval.as_millis()) as usize + 1;
    assert!(
        commits <= sweeps,
        "{commits} commits seen in 200 frames and {sweeps} sweeps"
    );
    // Still active, and the heartbeat is recent.
    let session = app.session(&id).await;
    assert_eq!(session["status"], "active");
    let beat =
        chrono::DateTime::parse_from_rfc3339(session["lastHeartbeat"].as_str().unwrap()).unwrap();
    assert!(chrono::Utc::now().signed_duration_since(beat) < chrono::Duration::milliseconds(600));
    socket.flush(audio.len() as u64).await;
}

#[tokio::test]
async fn streaming_hundreds_of_frames_writes_nothing_to_the_database_after_the_attach() {
    // No sweep during the test: only the socket could write.
    let app = spawn_app_with(|config| config.sweep_interval = Duration::from_secs(3600)).await;
    let id = app.create_session().await;
    let mut probe = CommitProbe::open(&app);
    let (mut socket, _) = app.connect(&id, "track=mic").await;
    wait_for_segment(&app, &id, "mic").await;
    // The attach writes (the track row, the session made active, its segment), and the probe
    // sees it.
    assert!(probe.committed(), "the attach's writes are seen");

    let audio = pcm(33, 500 * 40);
    for (i, chunk) in audio.chunks(40).enumerate() {
        socket.send_frame((i * 40) as u64, chunk).await;
        if i % 100 == 99 {
            socket.flush(((i + 1) * 40) as u64).await;
            assert!(!probe.committed(), "a commit within {} frames", i + 1);
        }
    }
    assert_eq!(socket.flush(audio.len() as u64).await, audio.len() as u64);
    assert_eq!(app.track(&id, "mic").await["dataBytes"], audio.len());
    assert!(!probe.committed(), "500 frames made no commit");
    socket.close().await;
    assert_eq!(read_wav_data(&app.track_path(&id, "mic")), audio);
}
