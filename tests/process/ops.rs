//! Operating the server (issue 12): one binary, its subcommands and flags, as an operator runs them.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::WAIT;

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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
