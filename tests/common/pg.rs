//! The suites against PostgreSQL: with `SAFETAKE_TEST_DATABASE_URL` set (a throwaway cluster's
//! admin URL, `postgres://USER@127.0.0.1:PORT/postgres`; tests/run-all.sh starts one), every
//! test gets a database of its own, created for it and dropped after it. Unset: SQLite, as
//! always.

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

pub const TEST_DATABASE_URL: &str = "SAFETAKE_TEST_DATABASE_URL";

/// Whether the suites run against PostgreSQL.
pub fn enabled() -> bool {
    std::env::var(TEST_DATABASE_URL).is_ok_and(|url| !url.is_empty())
}

/// One test's own database, dropped (with any connection still open to it) when this is.
pub struct TestDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl TestDatabase {
    /// A fresh, empty database when the suites run against PostgreSQL; `None` otherwise.
    pub fn create() -> Option<TestDatabase> {
        let admin_url = std::env::var(TEST_DATABASE_URL)
            .ok()
            .filter(|url| !url.is_empty())?;
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::establish(&admin_url)
            .unwrap_or_else(|error| panic!("{TEST_DATABASE_URL}: {error}"));
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("CREATE DATABASE for the test");
        let url = with_database(&admin_url, &name);
        Some(TestDatabase {
            url,
            admin_url,
            name,
        })
    }

    /// A plain connection to this database (for what a test inspects).
    pub fn connect(&self) -> PgConnection {
        PgConnection::establish(&self.url).expect("a connection to the test's database")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Ok(mut admin) = PgConnection::establish(&self.admin_url) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// `url` with its database name replaced by `name` (any query string kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_end = base
        .find("://")
        .map(|scheme| scheme + 3)
        .and_then(|start| base[start..].find('/').map(|slash| start + slash))
        .unwrap_or(base.len());
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// A TCP relay to the database that a test can cut: every connection through it is closed at
/// once, and new ones are closed as soon as they open, until it is restored. The database
/// looks down to the server while the test's own database goes on. It runs on a thread of its
/// own, so the server's start (which waits on the database) cannot stall it.
pub struct CutProxy {
    pub port: u16,
    state: std::sync::Arc<std::sync::Mutex<CutState>>,
    stop: tokio_util::sync::CancellationToken,
}

struct CutState {
    cut: bool,
    /// Cancelled on every cut: the connections that were open then.
    open: tokio_util::sync::CancellationToken,
}

impl CutProxy {
    pub fn to(upstream_port: u16) -> CutProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        listener.set_nonblocking(true).expect("non-blocking");
        let port = listener.local_addr().expect("local address").port();
        let state = std::sync::Arc::new(std::sync::Mutex::new(CutState {
            cut: false,
            open: tokio_util::sync::CancellationToken::new(),
        }));
        let stop = tokio_util::sync::CancellationToken::new();
        let (relay_state, relay_stop) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the relay");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let accepted = tokio::select! {
                        _ = relay_stop.cancelled() => return,
                        accepted = listener.accept() => accepted,
                    };
                    let Ok((mut client, _)) = accepted else {
                        continue;
                    };
                    let open = {
                        let state = relay_state.lock().expect("relay state");
                        if state.cut {
                            continue; // dropped: closed at once
                        }
                        state.open.clone()
                    };
                    tokio::spawn(async move {
                        let Ok(mut upstream) =
                            tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await
                        else {
                            return;
                        };
                        tokio::select! {
                            _ = open.cancelled() => {}
                            _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                        }
                    });
                }
            });
        });
        CutProxy { port, state, stop }
    }

    /// The database is gone: open connections close, new ones are refused.
    pub fn cut(&self) {
        let mut state = self.state.lock().expect("relay state");
        state.cut = true;
        state.open.cancel();
        state.open = tokio_util::sync::CancellationToken::new();
    }

    pub fn restore(&self) {
        self.state.lock().expect("relay state").cut = false;
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.cut();
        self.stop.cancel();
    }
}

/// The port of a `postgres://` URL.
pub fn port_of(url: &str) -> u16 {
    let authority = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['/', '?'])
        .next()
        .unwrap_or_default();
    authority
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(5432)
}

/// `url` pointing at `port` on 127.0.0.1 instead of its own host and port.
pub fn via_port(url: &str, port: u16) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let user = authority
        .rsplit_once('@')
        .map(|(user, _)| format!("{user}@"));
    format!(
        "{scheme}://{}127.0.0.1:{port}{tail}",
        user.unwrap_or_default()
    )
}
