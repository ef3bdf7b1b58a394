//! Start and stop, in order: data directory, database and migrations, crash repair of every
//! unfinished track, the registry, the sweeper, the HTTP server; and on SIGTERM/SIGINT the
//! reverse.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};
use tokio_util::sync::CancellationToken;

use crate::access;
use crate::audio::TrackStore;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::db::commit::Committer;
use crate::db::{self, DbPool};
use crate::domain::SessionId;
use crate::ingest::registry::BoxFuture;
use crate::ingest::Registry;
use crate::lifecycle;
use crate::routes;
use crate::state::AppState;
use crate::sweeper;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("--data-dir {path}: {error}")]
    DataDir { path: String, error: std::io::Error },
    #[error(transparent)]
    Database(#[from] db::DbSetupError),
    #[error("crash repair failed: {0}")]
    Repair(String),
    #[error("{0}")]
    Tls(String),
    #[error("cannot serve: {0}")]
    Serve(std::io::Error),
}

/// A built server, bound and ready to run.
pub struct Application {
    server: Server,
    port: u16,
    state: AppState,
}

impl Application {
    /// Builds everything on an already-bound listener, so tests can bind port 0.
    pub fn build(config: Config, listener: TcpListener) -> Result<Application, StartError> {
        let data_error = |error| StartError::DataDir {
            path: config.data_dir.display().to_string(),
            error,
        };
        crate::metrics::install();
        let store = TrackStore::new(config.data_dir.clone());
        store.prepare().map_err(data_error)?;
        let pool = db::connect(&config.database_url())?;
        // PostgreSQL: this node may share the database and the data directory with others.
        let cluster = match db::Target::parse(&config.database_url())? {
            db::Target::Postgres(url) => Some(
                Cluster::start(&url)
                    .map_err(|e| db::DbSetupError::Open(format!("lock connection: {e}")))?,
            ),
            db::Target::Sqlite(_) => None,
        };
        repair_tracks_unless_held(&pool, &store, cluster.as_deref())?;
        let commits = Committer::start(pool.clone(), crate::metrics::commit_batch)
            .map_err(StartError::Serve)?;
        let registry = Registry::new(
            commits.clone(),
            store.clone(),
            config.sync_interval,
            config.max_connections,
        );
        if let Some(cluster) = &cluster {
            registry.set_claims(cluster.clone());
        }
        let port = listener.local_addr().map_err(StartError::Serve)?.port();
        let state = AppState {
            config: Arc::new(config),
            pool,
            commits,
            store,
            registry,
            cluster,
        };
        let tls = match (&state.config.tls_cert, &state.config.tls_key) {
            (Some(cert), Some(key)) => Some(tls_config(cert, key).map_err(StartError::Tls)?),
            _ => None,
        };
        let server = serve(state.clone(), listener, tls).map_err(StartError::Serve)?;
        Ok(Application {
            server,
            port,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs until the server stops; with `handle_signals`, SIGTERM/SIGINT stop it gracefully.
    pub async fn run_until_stopped(self, handle_signals: bool) -> std::io::Result<()> {
        let stop_sweeper = CancellationToken::new();
        tokio::spawn(sweeper::run(self.state.clone(), stop_sweeper.clone()));
        if let Some(cluster) = &self.state.cluster {
            let state = self.state.clone();
            let store_marks = move |session: SessionId| -> BoxFuture<'static, ()> {
                let state = state.clone();
                Box::pin(async move {
                    if let Err(error) = lifecycle::flush_marks(&state, &session).await {
                        tracing::warn!(%session, %error, "marks not stored at close; the next sweep retries");
                    }
                })
            };
            tokio::spawn(
                cluster
                    .clone()
                    .run(self.state.registry.clone(), store_marks),
            );
        }
        if handle_signals {
            tokio::spawn(stop_on_signal(self.state.clone(), self.server.handle()));
        }
        // Repaired and bound: a systemd `Type=notify` unit is started now (a no-op elsewhere).
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        let result = self.server.await;
        stop_sweeper.cancel();
        result
    }
}

/// The certificate chain and key of `--tls-cert` and `--tls-key` (PEM); errors name the flag.
fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<rustls::ServerConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| format!("--tls-cert {}: {error}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "--tls-cert {}: no certificate in it",
            cert.display()
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|error| format!("--tls-key {}: {error}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("--tls-cert: {error}"))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|error| {
            format!(
                "--tls-key {}: does not fit --tls-cert: {error}",
                key.display()
            )
        })
}

fn serve(
    state: AppState,
    listener: TcpListener,
    tls: Option<rustls::ServerConfig>,
) -> std::io::Result<Server> {
    let data = web::Data::new(state);
    // One for all workers: an address's failures count wherever its requests land.
    let attempts = web::Data::new(access::Attempts::default());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(attempts.clone())
            .app_data(web::PayloadConfig::new(64 * 1024))
            .wrap(actix_web::middleware::from_fn(access::check_access))
            .configure(access::configure)
            .configure(routes::configure)
    })
    .on_connect(routes::ws::remember_connection);
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls)?,
        None => server.listen(listener)?,
    };
    let server = server
        .disable_signals()
        .shutdown_timeout(5)
        // The default 1 s makes every socket close linger; a closing peer gets 200 ms.
        .client_disconnect_timeout(Duration::from_millis(200))
        .max_connections(100_000)
        .backlog(4096)
        .run();
    Ok(server)
}

/// Graceful stop: stop accepting, finalize every open track and close its socket with 1001,
/// write the last heartbeats, then stop the server. Sessions stay active: clients come back.
async fn stop_on_signal(state: AppState, server: ServerHandle) {
    wait_for_signal().await;
    tracing::info!("shutting down: finalizing every open track");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    server.pause().await;
    state.registry.close_all().await;
    if let Err(error) = sweeper::flush_heartbeats(&state).await {
        tracing::warn!(%error, "last heartbeats not written");
    }
    server.stop(true).await;
    tracing::info!("stopped");
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for signals; stop with SIGKILL (acked audio is safe)");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// One track that crash repair changed.
#[derive(Debug, Clone)]
pub struct Repaired {
    pub path: std::path::PathBuf,
    pub data_bytes: u64,
    pub truncated: u64,
    pub header_fixed: bool,
}

/// `safetake repair DIR`: what start-up does to a data directory, without serving. Prints one
/// line per repaired track (or that nothing needed it).
pub fn repair_data_dir(config: &Config, dir: &std::path::Path) -> Result<(), String> {
    let mut config = config.clone();
    config.data_dir = dir.to_path_buf();
    let store = TrackStore::new(config.data_dir.clone());
    store
        .prepare()
        .map_err(|error| format!("{}: {error}", dir.display()))?;
    let pool = db::connect(&config.database_url()).map_err(|e| e.to_string())?;
    let repaired = repair_tracks(&pool, &store).map_err(|e| e.to_string())?;
    if repaired.is_empty() {
        println!("nothing to repair in {}", dir.display());
    }
    for track in &repaired {
        println!(
            "repaired {}: {} data bytes, {} torn bytes cut, header {}",
            track.path.display(),
            track.data_bytes,
            track.truncated,
            if track.header_fixed {
                "rewritten"
            } else {
                "was right"
            }
        );
    }
    Ok(())
}

/// After any crash: every track of a session that was not finished is made playable, its
/// header matched to the whole blocks on disk, and the database's `data_bytes` set to that
/// count. Completed sessions were synced and finalized, so their files are not opened. A row
/// that does not parse, or a file whose header cannot be read, is logged and left exactly as
/// it is (nothing is guessed, nothing is cut); the other tracks are repaired all the same.
/// Returns the tracks whose file it changed.
pub fn repair_tracks(pool: &DbPool, store: &TrackStore) -> Result<Vec<Repaired>, StartError> {
    repair_tracks_unless_held(pool, store, None)
}

/// [`repair_tracks`], except (several nodes) the tracks another node is writing now: those
/// are that node's to keep in order, and the next attach anywhere repairs them before it
/// appends. Each track repaired here is locked while it is.
fn repair_tracks_unless_held(
    pool: &DbPool,
    store: &TrackStore,
    cluster: Option<&Cluster>,
) -> Result<Vec<Repaired>, StartError> {
    let mut repaired = Vec::new();
    let mut conn = pool.get().map_err(|e| StartError::Repair(e.to_string()))?;
    let tracks =
        db::tracks::unfinished(&mut conn).map_err(|e| StartError::Repair(e.to_string()))?;
    for track in tracks {
        let track = match track {
            Ok(track) => track,
            Err(error) => {
                tracing::error!(%error, "track not repaired: its stored row does not parse; its file is left as it is");
                continue;
            }
        };
        let path = store.track_path(&track.session_id, &track.name);
        if cluster.is_some_and(|cluster| !cluster.try_lock_blocking(&track.session_id, &track.name))
        {
            tracing::info!(path = %path.display(), "track not repaired: another node writes it");
            continue;
        }
        let report = store.repair(&track.session_id, &track.name, track.format);
        if let Some(cluster) = cluster {
            cluster.unlock_blocking(&track.session_id, &track.name);
        }
        let report = match report {
            Ok(report) => report,
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "track cannot be repaired; its file is left as it is");
                continue;
            }
        };
        if report.truncated > 0 || report.header_fixed {
            tracing::info!(
                path = %path.display(),
                data_bytes = report.data_bytes,
                truncated = report.truncated,
                "repaired track after a crash"
            );
            crate::metrics::repaired();
            repaired.push(Repaired {
                path: path.clone(),
                data_bytes: report.data_bytes,
                truncated: report.truncated,
                header_fixed: report.header_fixed,
            });
        }
        if report.data_bytes != track.data_bytes {
            db::tracks::set_data_bytes(
                &mut conn,
                &track.session_id,
                &track.name,
                report.data_bytes,
            )
            .map_err(|e| StartError::Repair(e.to_string()))?;
        }
    }
    Ok(repaired)
}

/// Lets the process hold one file and one socket per stream beyond the usual 1024.
pub fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
