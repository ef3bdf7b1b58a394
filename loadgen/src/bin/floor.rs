//! The floor: the least a server can do for the benchmark's recorders, to measure what this
//! machine's cores and disk allow for the work itself (issue 9). It accepts TCP connections,
//! appends every byte each one sends to its own file, fdatasyncs each file once per
//! `--sync-interval` (deadlines spread over the interval), and after each sync sends back the
//! count of bytes written and synced as 8 little-endian bytes. No WebSocket, no database, no
//! parsing. The first 8 bytes (0) say the file exists (`ready`); when the client ends its side,
//! the rest is synced, acked, and the connection closed.
//!
//! Writes go to the page cache from the connection's own task as bytes arrive; each fdatasync
//! runs on tokio's blocking pool so that many are in flight at once (the kernel merges them).
//!
//!     floor --bind 127.0.0.1:9000 --data-dir DIR [--sync-interval 1s] [--delete-on-close]
//!
//! Driven by `loadgen fixed --protocol raw` (bench/README.md).

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// One read's buffer: a few frames of 48 kHz mono s16le in 20 ms (1928 bytes each).
const READ_BUFFER: usize = 8 * 1024;

struct Options {
    bind: String,
    data_dir: PathBuf,
    sync_interval: Duration,
    delete_on_close: bool,
}

fn main() {
    let options = match parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("floor: {message}");
            eprintln!("usage: floor --bind HOST:PORT --data-dir DIR [--sync-interval 1s] [--delete-on-close]");
            std::process::exit(2);
        }
    };
    safetake::startup::raise_open_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if let Err(message) = runtime.block_on(serve(options)) {
        eprintln!("floor: {message}");
        std::process::exit(1);
    }
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        bind: "127.0.0.1:9000".into(),
        data_dir: PathBuf::from("floor-data"),
        sync_interval: Duration::from_secs(1),
        delete_on_close: false,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bind" => options.bind = value()?,
            "--data-dir" => options.data_dir = PathBuf::from(value()?),
            "--sync-interval" => options.sync_interval = parse_duration(&value()?)?,
            "--delete-on-close" => options.delete_on_close = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if options.sync_interval.is_zero() {
        return Err("--sync-interval must be positive".into());
    }
    Ok(options)
}

/// `250ms`, `1s`, `1.5s` or bare seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, scale) = match text.strip_suffix("ms") {
        Some(number) => (number, 0.001),
        None => (text.strip_suffix('s').unwrap_or(text), 1.0),
    };
    number
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| Duration::from_secs_f64(v * scale))
        .ok_or_else(|| format!("`{text}` is not a duration"))
}

async fn serve(options: Options) -> Result<(), String> {
    std::fs::create_dir_all(&options.data_dir)
        .map_err(|e| format!("{}: {e}", options.data_dir.display()))?;
    let listener =
        listen(&options.bind).map_err(|e| format!("cannot listen on {}: {e}", options.bind))?;
    eprintln!("floor listening on {}", options.bind);
    let options = Arc::new(options);
    let next = AtomicU64::new(0);
    loop {
        let (socket, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, for one: wait, then go on accepting.
                eprintln!("floor: accept: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let id = next.fetch_add(1, Ordering::Relaxed);
        let options = options.clone();
        tokio::spawn(async move {
            if let Err(error) = connection(socket, id, &options).await {
                eprintln!("floor: connection {id}: {error}");
            }
        });
    }
}

/// A listening socket with a deep accept queue (the kernel caps it at somaxconn), so that
/// thousands of connects at once are not dropped and retried a second later.
fn listen(bind: &str) -> std::io::Result<TcpListener> {
    let address: SocketAddr = bind
        .parse()
        .map_err(|_| std::io::Error::other("expected IP:PORT"))?;
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(4096)
}

/// Where in the interval connection `id` syncs: spread evenly (golden-ratio steps).
fn first_deadline(id: u64, interval: Duration) -> Instant {
    let fraction = (id as f64 * 0.618_033_988_749_895).fract();
    Instant::now() + interval.mul_f64(fraction)
}

async fn connection(mut socket: TcpStream, id: u64, options: &Options) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let path = options.data_dir.join(format!("conn-{id}.raw"));
    let file = Arc::new(File::create(&path)?);
    socket.write_all(&0u64.to_le_bytes()).await?;
    let result = pump(&mut socket, &file, id, options).await;
    if options.delete_on_close {
        remove(&path);
    }
    result
}

/// Reads, appends and syncs until the client ends its side; then the last sync and ack.
async fn pump(
    socket: &mut TcpStream,
    file: &Arc<File>,
    id: u64,
    options: &Options,
) -> std::io::Result<()> {
    let mut buffer = vec![0u8; READ_BUFFER];
    let mut written: u64 = 0;
    let mut deadline = first_deadline(id, options.sync_interval);
    // The sync in flight and the byte count it covers.
    let mut syncing: Option<(JoinHandle<std::io::Result<()>>, u64)> = None;
    let mut acked: u64 = 0;
    loop {
        tokio::select! {
            read = socket.read(&mut buffer) => {
                let n = read?;
                if n == 0 {
                    break;
                }
                // To the page cache: a memory copy, no disk wait.
                (&**file).write_all(&buffer[..n])?;
                written += n as u64;
            }
            done = async { (&mut syncing.as_mut().expect("guarded").0).await }, if syncing.is_some() => {
                let (_, covered) = syncing.take().expect("guarded");
                done.map_err(std::io::Error::other)??;
                if covered > acked {
                    acked = covered;
                    socket.write_all(&acked.to_le_bytes()).await?;
                }
            }
            () = tokio::time::sleep_until(deadline), if syncing.is_none() => {
                deadline += options.sync_interval;
                if written > acked {
                    syncing = Some((sync(file), written));
                }
            }
        }
    }
    if let Some((handle, _)) = syncing.take() {
        handle.await.map_err(std::io::Error::other)??;
    }
    if written > acked {
        sync(file).await.map_err(std::io::Error::other)??;
        socket.write_all(&written.to_le_bytes()).await?;
    }
    socket.shutdown().await
}

fn sync(file: &Arc<File>) -> JoinHandle<std::io::Result<()>> {
    let file = file.clone();
    tokio::task::spawn_blocking(move || file.sync_data())
}

fn remove(path: &Path) {
    if let Err(error) = std::fs::remove_file(path) {
        eprintln!("floor: {}: {error}", path.display());
    }
}
