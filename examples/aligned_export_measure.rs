//! Measures the aligned export on a long session through the real server: builds a session of
//! `TRACKS` tracks of `MINUTES` minutes (48 kHz mono s16; one track on the server's clock, two
//! whose sound cards run 80 ppm fast and 150 ppm slow, one that joins 3 minutes late and
//! crashes for 20 s), imports it into a `safetake` binary started on a temporary data directory,
//! then downloads `export.zip?aligned=true` (WAV, then FLAC) while sampling the server's
//! resident memory. Prints throughput (MB of stored audio per second) and peak RSS.
//!
//! cargo build --release && cargo run --release --example aligned_export_measure [MINUTES]
//! (needs curl; about 3 GB of temporary disk for 60 minutes; removes everything it made)

use std::io::{BufWriter, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

const RATE: u64 = 48_000;
const TRACKS: usize = 4;
const T0: f64 = 1_764_590_400_000.0;

struct Plan {
    name: &'static str,
    /// Frames per real second.
    speed: f64,
    /// Server time of its first sample, ms after T0.
    start_ms: f64,
    /// A crash: (at real ms after its start, length in ms).
    crash: Option<(f64, f64)>,
}

fn plans() -> Vec<Plan> {
    vec![
        Plan {
            name: "host",
            speed: 48_000.0,
            start_ms: 0.0,
            crash: None,
        },
        Plan {
            name: "fast",
            speed: 48_000.0 * 1.000_08,
            start_ms: 120.0,
            crash: None,
        },
        Plan {
            name: "slow",
            speed: 48_000.0 * 0.999_85,
            start_ms: 40.0,
            crash: None,
        },
        Plan {
            name: "late",
            speed: 48_000.0,
            start_ms: 180_000.0,
            crash: Some((1_500_000.0, 20_000.0)),
        },
    ]
}

fn main() {
    let minutes: f64 = std::env::args()
        .nth(1)
        .map(|m| m.parse().expect("MINUTES is a number"))
        .unwrap_or(60.0);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let zip_path = dir.path().join("session.zip");
    let audio_bytes = build_archive(&zip_path, minutes);
    println!(
        "session: {TRACKS} tracks, {minutes} min, {:.0} MB of stored audio",
        audio_bytes as f64 / 1e6
    );
    let server = Server::start(&dir.path().join("data"));
    let id = server.import(&zip_path);
    std::fs::remove_file(&zip_path).expect("archive removed");
    for query in ["?aligned=true", "?aligned=true&format=flac"] {
        let (seconds, size, peak, before) = server.export(&id, query);
        println!(
            "export.zip{query}: {:.1} s, {:.0} MB of stored audio per second, {:.0} MB written, \
             server RSS {:.0} MB before, peak {:.0} MB",
            seconds,
            audio_bytes as f64 / 1e6 / seconds,
            size as f64 / 1e6,
            before as f64 / 1024.0,
            peak as f64 / 1024.0
        );
    }
    server.stop();
}

/// Writes the session as an archive that import takes; returns the PCM bytes in it.
fn build_archive(path: &Path, minutes: f64) -> u64 {
    let file = BufWriter::new(std::fs::File::create(path).expect("archive created"));
    let mut zip = ZipWriter::new(file);
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .large_file(false);
    let format = safetake::audio::AudioFormat::DEFAULT;
    let mut manifest_tracks = Vec::new();
    let mut total = 0;
    for (index, plan) in plans().iter().enumerate().take(TRACKS) {
        let real_ms = minutes * 60_000.0 - plan.start_ms - plan.crash.map_or(0.0, |c| c.1);
        let frames = (real_ms / 1000.0 * plan.speed) as u64;
        let data_bytes = frames * 2;
        total += data_bytes;
        zip.start_file(format!("{}.wav", plan.name), options)
            .expect("entry");
        zip.write_all(&safetake::audio::wav::header(format, data_bytes))
            .expect("header");
        let mut state = index as u64 + 1;
        let mut chunk = Vec::with_capacity(RATE as usize * 2);
        for frame in 0..frames {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let noise = ((state >> 54) as i32) - 512;
            let tone = (((frame % 109) as i32) - 54) * 60;
            chunk.extend_from_slice(&((tone + noise) as i16).to_le_bytes());
            if chunk.len() == chunk.capacity() {
                zip.write_all(&chunk).expect("audio");
                chunk.clear();
            }
        }
        zip.write_all(&chunk).expect("audio");
        // A mark every 5 s of real time, each at the server time it was captured (the crash
        // starts on a mark's time: that mark is the new socket's).
        let per_ms = plan.speed / 1000.0;
        let crash_frame = plan.crash.map(|(at, _)| (at * per_ms) as u64);
        let mut marks = Vec::new();
        let mut real = 0.0;
        loop {
            let frame = (real * per_ms) as u64;
            if frame >= frames {
                break;
            }
            let mut at = T0 + plan.start_ms + frame as f64 / per_ms;
            if let (Some(crash_at), Some((_, length))) = (crash_frame, plan.crash) {
                if frame >= crash_at {
                    at += length;
                }
            }
            marks.push(json!({"offset": frame * 2, "capturedAt": at}));
            real += 5000.0;
        }
        let started = chrono::DateTime::from_timestamp_millis((T0 + plan.start_ms) as i64)
            .expect("a time")
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string();
        manifest_tracks.push(json!({
            "name": plan.name,
            "sampleRate": RATE,
            "channels": 1,
            "format": "s16le",
            "dataBytes": data_bytes,
            "segments": [{"offset": 0, "startedAt": started}],
            "marks": marks,
        }));
    }
    let manifest = json!({
        "title": "measure",
        // Before its first sample: capture times from before the session are left out.
        "createdAt": chrono::DateTime::from_timestamp_millis(T0 as i64 - 60_000)
            .expect("a time")
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string(),
        "tracks": manifest_tracks,
    });
    zip.start_file("session.json", options).expect("entry");
    zip.write_all(&serde_json::to_vec(&manifest).expect("JSON"))
        .expect("manifest");
    zip.finish().expect("archive").flush().expect("flushed");
    total
}

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(data_dir: &Path) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let binary: PathBuf = std::env::current_exe()
            .expect("this program's path")
            .parent()
            .and_then(Path::parent)
            .expect("target/release")
            .join("safetake");
        let child = Command::new(&binary)
            .arg("--bind")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} starts (cargo build --release first): {e}",
                    binary.display()
                )
            });
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !curl(&["-sf", &format!("{}/healthz", server.base)])
            .status
            .success()
        {
            assert!(Instant::now() < deadline, "the server did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    fn import(&self, zip: &Path) -> String {
        let output = curl(&[
            "-s",
            "--max-time",
            "600",
            // Streamed from the file (`--data-binary @` would read it all into memory first).
            "-X",
            "POST",
            "-H",
            "Expect:",
            "-T",
            &zip.display().to_string(),
            &format!("{}/api/sessions/import", self.base),
        ]);
        let session: Value = serde_json::from_slice(&output.stdout).expect("a JSON answer");
        match session["id"].as_str() {
            Some(id) => id.to_string(),
            None => panic!("import refused: {session}"),
        }
    }

    /// Downloads an export to nowhere; returns seconds, bytes, peak and starting RSS (KiB).
    fn export(&self, id: &str, query: &str) -> (f64, u64, u64, u64) {
        let before = rss_kib(self.child.id());
        let started = Instant::now();
        let mut download = Command::new("curl")
            .args([
                "-sf",
                "--max-time",
                "1800",
                "-o",
                "/dev/null",
                "-w",
                "%{size_download}",
            ])
            .arg(format!("{}/api/session/{id}/export.zip{query}", self.base))
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl runs");
        let mut peak = before;
        while download.try_wait().expect("curl waited on").is_none() {
            peak = peak.max(rss_kib(self.child.id()));
            std::thread::sleep(Duration::from_millis(20));
        }
        let seconds = started.elapsed().as_secs_f64();
        let output = download.wait_with_output().expect("curl's output");
        assert!(output.status.success(), "export{query} failed");
        let size = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        (seconds, size, peak, before)
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn curl(args: &[&str]) -> std::process::Output {
    Command::new("curl").args(args).output().expect("curl runs")
}

/// The process's resident memory now, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}
