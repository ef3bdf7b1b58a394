//! Operating the server (issue 12): one binary, its subcommands and flags, as an operator runs them.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::server::{free_port, pcm, read_wav_data, Server, WsClient, WAIT};

/// A server started by hand (its own working directory, its own flags), killed on drop.
pub struct Spawned {
    pub child: Child,
    pub port: u16,
    pub http: reqwest::Client,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `binary` in `cwd` with `args` (plus `--bind`), waits (bounded) for `/healthz`.
pub async fn spawn_in(binary: &Path, cwd: &Path, args: &[&str]) -> Spawned {
    let port = free_port();
    let log = std::fs::File::create(cwd.join("server.log")).unwrap();
    let child = Command::new(binary)
        .current_dir(cwd)
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .args(args)
        .env_remove("SAFETAKE_DATA_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("the binary starts");
    let spawned = Spawned {
        child,
        port,
        http: reqwest::Client::builder().timeout(WAIT).build().unwrap(),
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let url = format!("http://127.0.0.1:{port}/healthz");
        if let Ok(response) = spawned.http.get(url).send().await {
            if response.status() == 200 {
                return spawned;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the copied binary did not come up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every quoted `/static/...` or `./...` path of `text` naming a script or a style sheet.
fn referenced_assets(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for quote in ['"', '\'', '`'] {
        for prefix in ["/static/", "./"] {
            let opening = format!("{quote}{prefix}");
            for (at, _) in text.match_indices(&opening) {
                let rest = &text[at + opening.len()..];
                let Some(end) = rest.find(quote) else {
                    continue;
                };
                let asset = &rest[..end];
                if (asset.ends_with(".js") || asset.ends_with(".css")) && !asset.contains(' ') {
                    found.push(asset.to_string());
                }
            }
        }
    }
    found
}

#[tokio::test]
async fn a_binary_copied_alone_serves_the_recorder_and_its_assets() {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("safetake");
    std::fs::copy(env!("CARGO_BIN_EXE_safetake"), &binary).unwrap();
    let server = spawn_in(&binary, dir.path(), &[]).await;
    let base = format!("http://127.0.0.1:{}", server.port);

    let page = server
        .http
        .get(format!("{base}/record"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();

    // Follow every reference, the pages' and the scripts' own imports, to the last asset.
    let mut todo = referenced_assets(&page);
    let mut seen = BTreeSet::new();
    while let Some(asset) = todo.pop() {
        if !seen.insert(asset.clone()) {
            continue;
        }
        let url = format!("{base}/static/{asset}");
        let response = server.http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        let kind = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        let expected = if asset.ends_with(".css") {
            "text/css"
        } else {
            "javascript"
        };
        assert!(kind.contains(expected), "{url}: {kind}");
        assert!(response.headers().contains_key("cache-control"), "{url}");
        let etag = response.headers()["etag"].to_str().unwrap().to_string();
        let body = response.text().await.unwrap();
        assert!(!body.is_empty(), "{url}");
        todo.extend(referenced_assets(&body));

        let again = server
            .http
            .get(&url)
            .header("If-None-Match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{url} with its ETag");
        assert!(again.bytes().await.unwrap().is_empty());
        let head = server.http.head(&url).send().await.unwrap();
        assert_eq!(head.status(), 200, "HEAD {url}");
        assert_eq!(head.headers()["etag"].to_str().unwrap(), etag);
    }
    for asset in ["recorder.js", "style.css", "uplink.js", "pcm-worklet.js"] {
        assert!(seen.contains(asset), "{asset} is referenced: {seen:?}");
    }
    let missing = server
        .http
        .get(format!("{base}/static/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    // The default data directory was made beside the binary, nothing else was needed.
    assert!(dir.path().join("data").join("safetake.db").exists());
}

/// Runs the binary to completion (bounded) with `args`; returns its exit success and output.
fn run_binary(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_safetake"))
        .args(args)
        .env_remove("SAFETAKE_DATA_DIR")
        .env_remove("SAFETAKE_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT * 3;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("safetake {args:?} did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn os(text: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(text)
}

#[test]
fn version_prints_the_version() {
    let (ok, out, _) = run_binary(&[os("--version")]);
    assert!(ok);
    assert_eq!(
        out.trim(),
        format!("safetake {}", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn json_logs_are_one_json_object_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--log-format", "json"]).await;
    let id = server.create_session().await;
    record(&server, &id, "track=mic", &pcm(1, 4000)).await;
    assert!(server.terminate().success());
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "{log}");
    for line in &lines {
        let entry: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(entry["level"].is_string(), "{line}");
        assert!(entry["timestamp"].is_string(), "{line}");
    }
    assert!(
        lines.iter().any(|l| l.contains("safetake listening")),
        "{log}"
    );
}

/// Records `bytes` into a track and waits until all of it is acked; the socket stays open.
async fn record(server: &Server, id: &str, query: &str, bytes: &[u8]) -> WsClient {
    let (mut client, offset) = WsClient::open(&server.ws_url(id, query)).await;
    assert_eq!(offset, 0);
    client.send_frame(0, bytes).await;
    assert_eq!(client.flush(bytes.len() as u64).await, bytes.len() as u64);
    client
}

#[tokio::test]
async fn repair_fixes_a_stale_header_without_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]).await;
    let id = server.create_session().await;
    let sent = pcm(3, 4000);
    let _socket = record(&server, &id, "track=mic", &sent).await;
    server.kill9();
    // Whole blocks that reached the file after its header was last written, as a crash leaves.
    let path = server.track_path(&id, "mic");
    let extra = pcm(4, 400);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut file, &extra).unwrap();
    drop(file);

    let (ok, out, err) = run_binary(&[os("repair"), dir.path().as_os_str()]);
    assert!(ok, "{err}");
    assert!(out.contains("mic.wav"), "names the track: {out}");
    assert!(out.contains("4400"), "says how much it holds: {out}");
    let data = read_wav_data(&path);
    assert_eq!(data.len(), 4400, "the header matches the audio");
    assert_eq!(&data[..4000], &sent[..]);

    // Nothing is left to do, and a server started on it agrees.
    let (ok, out, _) = run_binary(&[os("repair"), dir.path().as_os_str()]);
    assert!(ok);
    assert!(out.contains("nothing to repair"), "{out}");
    let server = Server::start(dir.path(), &[]).await;
    let session = server.json(&format!("/api/session/{id}")).await;
    assert_eq!(session["tracks"][0]["dataBytes"], 4400);
}

#[tokio::test]
async fn backup_while_recording_starts_a_server_with_the_same_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let server = Server::start(&data, &[]).await;

    // Two finished sessions, and one that records all through the backup.
    let mut finished = Vec::new();
    for seed in 0..2u64 {
        let id = server.create_session().await;
        let mic = pcm(10 + seed, 96_000);
        let guest = pcm(20 + seed, 48_000);
        record(&server, &id, "track=mic", &mic).await.close().await;
        record(&server, &id, "track=guest", &guest)
            .await
            .close()
            .await;
        server.finish(&id).await;
        finished.push((id, mic, guest));
    }
    let live = server.create_session().await;
    let (mut client, _) = WsClient::open(&server.ws_url(&live, "track=mic")).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let streaming = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut offset = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                client.send_frame(offset, &pcm(offset, 1920)).await;
                offset += 1920;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            client.flush(offset).await;
            client
        })
    };
    // Past one sync interval (1 s), so the live track has audio on disk when the copy starts.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let copy = dir.path().join("copy");
    let args = [
        os("--data-dir"),
        data.as_os_str(),
        os("backup"),
        copy.as_os_str(),
    ]
    .map(|a| a.to_os_string());
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        run_binary(&args)
    })
    .await
    .unwrap();
    assert!(ok, "backup failed: {err}");
    assert!(out.contains("4 tracks hard-linked"), "{out}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let client = streaming.await.unwrap();
    client.close().await;

    let restored = Server::start(&copy, &[]).await;
    let listed = |value: Value| {
        value["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["id"].clone(), s["title"].clone(), s["status"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        listed(restored.json("/api/sessions").await),
        listed(server.json("/api/sessions").await),
        "the same sessions, titles and statuses"
    );
    for (id, mic, guest) in &finished {
        for (track, sent) in [("mic", mic), ("guest", guest)] {
            let original = std::fs::read(server.track_path(id, track)).unwrap();
            let copied = std::fs::read(restored.track_path(id, track)).unwrap();
            assert!(original == copied, "{id}/{track} byte-identical");
            assert_eq!(&read_wav_data(&restored.track_path(id, track)), sent);
            let download = restored
                .http
                .get(restored.url(&format!("/api/session/{id}/tracks/{track}.wav")))
                .send()
                .await
                .unwrap();
            assert_eq!(download.status(), 200);
            assert!(download.bytes().await.unwrap() == original);
        }
    }
    // The live track was copied mid-stream: the copy is playable, whole blocks, a prefix.
    let live_copy = read_wav_data(&restored.track_path(&live, "mic"));
    let live_original = read_wav_data(&server.track_path(&live, "mic"));
    assert!(live_copy.len().is_multiple_of(2) && !live_copy.is_empty());
    assert!(live_original.starts_with(&live_copy));
    let session = restored.json(&format!("/api/session/{live}")).await;
    assert_eq!(session["tracks"][0]["dataBytes"], live_copy.len() as u64);
}

/// One sample of a Prometheus text scrape: the line `series value`.
fn sample(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{series} not in the scrape:\n{scrape}"))
        .trim()
        .parse()
        .unwrap()
}

async fn scrape(server: &Server) -> String {
    let response = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(kind.starts_with("text/plain"), "{kind}");
    response.text().await.unwrap()
}

#[tokio::test]
async fn metrics_count_what_was_streamed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    let before = scrape(&server).await;
    assert_eq!(sample(&before, "safetake_audio_bytes_received_total"), 0.0);
    assert_eq!(sample(&before, "safetake_sockets"), 0.0);

    let id = server.create_session().await;
    let first = record(&server, &id, "track=mic", &pcm(1, 48_000)).await;
    let mut second = record(&server, &id, "track=guest", &pcm(2, 20_000)).await;
    // A resend of stored bytes is not new audio.
    second.send_frame(10_000, &pcm(2, 20_000)[10_000..]).await;
    second.flush(20_000).await;
    let during = scrape(&server).await;
    assert_eq!(
        sample(&during, "safetake_audio_bytes_received_total"),
        68_000.0
    );
    assert_eq!(
        sample(&during, "safetake_audio_bytes_acked_total"),
        68_000.0
    );
    assert_eq!(sample(&during, "safetake_sockets"), 2.0);
    assert_eq!(sample(&during, "safetake_sessions{status=\"active\"}"), 1.0);
    assert_eq!(
        sample(&during, "safetake_sessions{status=\"completed\"}"),
        0.0
    );
    assert!(sample(&during, "safetake_sync_duration_seconds_count") >= 2.0);
    assert!(during.contains("safetake_sync_duration_seconds_bucket{le=\"0.005\"}"));

    // A socket that takes the track over, then a frame past the stored end.
    let (mut takeover, offset) = WsClient::open(&server.ws_url(&id, "track=mic")).await;
    assert_eq!(offset, 48_000);
    takeover.send_frame(50_000, &pcm(3, 100)).await;
    assert_eq!(takeover.expect_close().await.code, 4009);
    second.close().await;
    let timed_out = server
        .http
        .post(server.url("/api/session/check-timeouts"))
        .json(&serde_json::json!({"timeoutMs": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(timed_out.status(), 200);

    let after = scrape(&server).await;
    assert_eq!(sample(&after, "safetake_takeovers_total"), 1.0);
    assert_eq!(
        sample(&after, "safetake_frames_refused_total{reason=\"gap\"}"),
        1.0
    );
    assert_eq!(
        sample(&after, "safetake_frames_refused_total{reason=\"too_big\"}"),
        0.0
    );
    assert_eq!(sample(&after, "safetake_sessions_timed_out_total"), 1.0);
    assert_eq!(
        sample(&after, "safetake_sessions{status=\"incomplete\"}"),
        1.0
    );
    assert_eq!(
        sample(&after, "safetake_audio_bytes_received_total"),
        68_000.0
    );
    assert_eq!(sample(&after, "safetake_repairs_total"), 0.0);
    drop(first);
}

#[tokio::test]
async fn metrics_need_the_hosts_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--auth-token", "s3cret"]).await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(WAIT)
        .build()
        .unwrap();
    let response = no_redirects
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    // Refused with 401 (a scraper reads a status, it follows no login page), no counters shown.
    assert_eq!(response.status(), 401);
    assert!(!response.text().await.unwrap().contains("safetake_"));
    let response = server
        .http
        .get(server.url("/metrics"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn retention_deletes_only_completed_sessions_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--retention", "2s", "--sweep-interval", "200ms"];
    let server = Server::start(dir.path(), &args).await;
    let post = |path: String| {
        let request = server.http.post(server.url(&path));
        async move { request.send().await.unwrap().status().as_u16() }
    };

    let interrupted = server.create_session().await;
    record(&server, &interrupted, "track=mic", &pcm(1, 4000))
        .await
        .close()
        .await;
    let response = server
        .http
        .post(server.url("/api/session/check-timeouts"))
        .json(&serde_json::json!({"timeoutMs": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let finished = server.create_session().await;
    record(&server, &finished, "track=mic", &pcm(2, 4000))
        .await
        .close()
        .await;
    assert_eq!(post(format!("/api/session/{finished}/finish")).await, 200);
    let live = server.create_session().await;
    let socket = record(&server, &live, "track=mic", &pcm(3, 4000)).await;

    let session = server.json(&format!("/api/session/{finished}")).await;
    let completed =
        chrono::DateTime::parse_from_rfc3339(session["completedAt"].as_str().unwrap()).unwrap();
    let expires =
        chrono::DateTime::parse_from_rfc3339(session["expiresAt"].as_str().unwrap()).unwrap();
    assert_eq!(expires - completed, chrono::Duration::seconds(2));
    for id in [&interrupted, &live] {
        let session = server.json(&format!("/api/session/{id}")).await;
        assert!(session["expiresAt"].is_null(), "{session}");
    }
    let history = server.http.get(server.url("/")).send().await.unwrap();
    let history = history.text().await.unwrap();
    assert_eq!(
        history.matches("data-testid=\"expires\"").count(),
        1,
        "the page says when"
    );

    let deadline = Instant::now() + WAIT;
    loop {
        let status = server
            .http
            .get(server.url(&format!("/api/session/{finished}")))
            .send()
            .await
            .unwrap()
            .status();
        if status == 404 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the finished session outlived its retention"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !server.track_path(&finished, "mic").exists(),
        "its files went too"
    );
    // Well past the retention, the others are all there.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for id in [&interrupted, &live] {
        let session = server.json(&format!("/api/session/{id}")).await;
        assert_ne!(session["status"], "completed");
        assert!(read_wav_data(&server.track_path(id, "mic")).len() == 4000);
    }
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(log.contains("retention"), "the deletion is logged");
    socket.close().await;
}

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM files in `dir`.
fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert_pem = certified.cert.pem();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key, cert_pem)
}

fn client_tls(cert_pem: &str) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    std::sync::Arc::new(config)
}

#[tokio::test]
async fn tls_serves_the_api_over_https_and_sockets_over_wss() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    let dir = tempfile::tempdir().unwrap();
    let (cert, key, cert_pem) = self_signed(dir.path());
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_safetake"))
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .timeout(WAIT)
        .build()
        .unwrap();
    let server = Spawned { child, port, http };
    let base = format!("https://127.0.0.1:{port}");
    let deadline = Instant::now() + WAIT;
    while server
        .http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the TLS server did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Plain HTTP on the TLS port gets no page.
    let plain = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    let refused = plain
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(refused.map(|r| r.status() != 200).unwrap_or(true));

    let created = server
        .http
        .post(format!("{base}/api/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let url = format!("wss://127.0.0.1:{port}/api/session/{id}/ws?track=mic");
    let connector = tokio_tungstenite::Connector::Rustls(client_tls(&cert_pem));
    let (mut ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async_tls_with_config(url, None, false, Some(connector)),
    )
    .await
    .unwrap()
    .unwrap();
    let ready = crate::server::next_json(&mut ws).await.unwrap();
    assert_eq!(ready["type"], "ready");
    let sent = pcm(7, 96_000);
    crate::server::send_frame(&mut ws, 0, &sent).await;
    assert_eq!(crate::server::flush(&mut ws, 96_000).await, 96_000);

    let finished = server
        .http
        .post(format!("{base}/api/session/{id}/finish"))
        .send()
        .await
        .unwrap();
    assert_eq!(finished.status(), 200);
    // The server closes the socket with 1000 over TLS too (it found the connection's fd).
    let code = crate::server::next_close_code(&mut ws, WAIT).await;
    assert_eq!(code, Some(1000));
    let _ = ws.send(Message::Close(None)).await;

    let download = server
        .http
        .get(format!("{base}/api/session/{id}/tracks/mic.wav"))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    let wav = download.bytes().await.unwrap();
    assert!(wav.ends_with(&sent) && wav.len() == sent.len() + 44);
}

#[test]
fn tls_flags_come_in_pairs_and_errors_name_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (cert, key, _) = self_signed(dir.path());
    let (ok, _, err) = run_binary(&[
        os("--bind"),
        os("127.0.0.1:0"),
        os("--data-dir"),
        data.as_os_str(),
        os("--tls-cert"),
        cert.as_os_str(),
    ]);
    assert!(!ok && err.contains("--tls-key"), "{err}");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let (ok, _, err) = run_binary(&[
        os("--bind"),
        os("127.0.0.1:0"),
        os("--data-dir"),
        data.as_os_str(),
        os("--tls-cert"),
        garbage.as_os_str(),
        os("--tls-key"),
        key.as_os_str(),
    ]);
    assert!(!ok && err.contains("--tls-cert"), "{err}");
}

/// The unit in dist/ passes `systemd-analyze verify` (with ExecStart pointed at this build).
/// Skipped, saying so, where systemd's tools are not installed (`apt-get install systemd`).
#[test]
fn the_systemd_unit_verifies() {
    let Ok(found) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not installed: the unit was not verified");
        return;
    };
    assert!(found.status.success());
    let unit = include_str!("../../dist/safetake.service");
    assert!(unit.contains("Type=notify"));
    assert!(unit.contains("StateDirectory=safetake"));
    let unit = unit.replace(
        "ExecStart=/usr/local/bin/safetake",
        &format!("ExecStart={}", env!("CARGO_BIN_EXE_safetake")),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("safetake.service");
    std::fs::write(&path, unit).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{said}");
    assert!(
        !said.contains("safetake.service:"),
        "warnings about the unit: {said}"
    );
}

/// `Type=notify`: READY=1 arrives once the server answers, STOPPING=1 on SIGTERM.
#[tokio::test]
async fn the_server_tells_systemd_when_it_is_ready_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_safetake"))
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut guard = Spawned {
        child,
        port,
        http: reqwest::Client::builder().timeout(WAIT).build().unwrap(),
    };
    let received = tokio::task::spawn_blocking(move || {
        let mut buffer = [0u8; 256];
        let read = socket.recv(&mut buffer);
        (
            socket,
            read.map(|n| String::from_utf8_lossy(&buffer[..n]).into_owned()),
        )
    })
    .await
    .unwrap();
    let (socket, ready) = received;
    let ready = ready.unwrap_or_else(|e| panic!("no READY=1 in time: {e}"));
    assert!(ready.contains("READY=1"), "{ready}");
    let health = guard
        .http
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(
        health.is_ok_and(|r| r.status() == 200),
        "ready means serving"
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let stopping = tokio::task::spawn_blocking(move || {
        let mut buffer = [0u8; 256];
        socket
            .recv(&mut buffer)
            .map(|n| String::from_utf8_lossy(&buffer[..n]).into_owned())
    })
    .await
    .unwrap();
    let status = guard.child.wait().unwrap();
    assert!(stopping.unwrap().contains("STOPPING=1"));
    assert!(status.success());
}

#[tokio::test]
async fn metrics_count_the_repairs_of_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]).await;
    let id = server.create_session().await;
    let _socket = record(&server, &id, "track=mic", &pcm(5, 4000)).await;
    server.kill9();
    let path = server.track_path(&id, "mic");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut file, &pcm(6, 400)).unwrap();
    drop(file);
    let server = Server::start(dir.path(), &[]).await;
    let scraped = scrape(&server).await;
    assert_eq!(sample(&scraped, "safetake_repairs_total"), 1.0);
    assert_eq!(
        sample(&scraped, "safetake_sessions{status=\"active\"}"),
        1.0
    );
}
