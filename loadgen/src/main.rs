//! The load generator: simulated recorders over real WebSockets against a running safetake, and
//! the many-sessions measurements. See bench/README.md for what each mode measures and how the
//! one-command benchmark (bench/run.sh) drives it.

mod http;
mod procstat;
mod raw;
mod recorder;
mod report;
mod run;
mod sessions;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use recorder::{EndMode, Pacing, Protocol, Target, BYTES_PER_SECOND};
use run::{RampPlan, RunSpec, Runner};
use stats::parse_duration;

#[derive(Parser)]
#[command(name = "loadgen", about = "Load generator and benchmarks for safetake")]
struct Cli {
    /// Runtime worker threads (the generator shares the machine with the server).
    #[arg(long, global = true, default_value_t = 2)]
    threads: usize,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// N recorders at real-time pace for D seconds.
    Fixed(FixedArgs),
    /// Fixed runs with more streams each step, until ack lag, pacing or loss gives way.
    Ramp(RampArgs),
    /// N recorders sending large frames as fast as the server takes them.
    MaxRate(MaxRateArgs),
    /// Fills a database with many sessions, straight through the server's library (server stopped).
    Seed(SeedArgs),
    /// Times check-timeouts and the session list on a running server (after `seed`).
    Sessions(SessionsArgs),
    /// Prints the markdown summary of the JSON results in a directory.
    Summary(SummaryArgs),
    /// Prints the side-by-side table of the `peer` phase (safetake, the Node peer, the floor).
    Compare(SummaryArgs),
}

#[derive(Args, Clone)]
struct Server {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Bearer token, when the server runs with --auth-token.
    #[arg(long, env = "LOADGEN_AUTH_TOKEN")]
    token: Option<String>,
    /// Write the report as JSON to this file (`-` for stdout).
    #[arg(long)]
    json: Option<PathBuf>,
    /// No human-readable table or progress lines.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Clone)]
struct Streams {
    /// Recorders (tracks) per session; several share one session, each its own track.
    #[arg(long, default_value_t = 1)]
    tracks_per_session: usize,
    /// Spread the connects over this long (default: streams / --connect-rate).
    #[arg(long, value_parser = parse_duration)]
    ramp_up: Option<Duration>,
    /// Connects per second when --ramp-up is not given.
    #[arg(long, default_value_t = 200.0)]
    connect_rate: f64,
    /// How each recorder ends after its final ack.
    #[arg(long, value_enum, default_value_t = EndMode::Finish)]
    end: EndMode,
    /// A send schedule slipping more than this means the stream fell behind real time.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    behind_threshold: Duration,
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// How long the final flush may wait for the ack that covers everything.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    ack_timeout: Duration,
    /// Delete each session and its audio once its recorders are done (keeps the disk from
    /// filling during long ramps and max-rate runs).
    #[arg(long)]
    delete_after: bool,
    /// The server's PID, to measure its CPU time and RSS from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// `ws`: the contract's WebSocket protocol; `raw`: bare TCP against the floor program.
    #[arg(long, value_enum, default_value_t = Protocol::Ws)]
    protocol: Protocol,
    /// Every stream stops at the same moment (earlier connects send longer), so all the
    /// `finish`es land within a moment: the finish burst.
    #[arg(long)]
    aligned_end: bool,
    /// Create every session before any socket connects (with --ramp-up 0: a connect burst).
    #[arg(long)]
    create_first: bool,
    /// The server's close must follow `finish` within this (and `finished` must come first).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    close_bound: Duration,
}

#[derive(Args)]
struct FixedArgs {
    #[command(flatten)]
    server: Server,
    #[command(flatten)]
    streams_opts: Streams,
    #[arg(long, default_value_t = 2500)]
    streams: usize,
    /// Audio each stream sends.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Audio per frame (48 kHz mono s16le: 20 ms is 1920 bytes).
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    frame: Duration,
    /// The run holds only with the ack-lag p99 at or under this.
    #[arg(long, value_parser = parse_duration)]
    p99_bound: Option<Duration>,
}

#[derive(Args)]
struct RampArgs {
    #[command(flatten)]
    server: Server,
    #[command(flatten)]
    streams_opts: Streams,
    #[arg(long, default_value_t = 500)]
    start: usize,
    #[arg(long, default_value_t = 500)]
    step: usize,
    #[arg(long, default_value_t = 10_000)]
    max: usize,
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    frame: Duration,
    /// A step holds only while the ack-lag p99 stays at or under this.
    #[arg(long, default_value = "1.5s", value_parser = parse_duration)]
    p99_bound: Duration,
    /// Pause between steps.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pause: Duration,
}

#[derive(Args)]
struct MaxRateArgs {
    #[command(flatten)]
    server: Server,
    #[command(flatten)]
    streams_opts: Streams,
    #[arg(long, default_value_t = 8)]
    streams: usize,
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// Payload bytes per frame (the 8 offset bytes come on top; the server's limit is 1 MiB).
    #[arg(long, default_value_t = 65_536)]
    frame_bytes: usize,
}

#[derive(Args)]
struct SeedArgs {
    /// SQLite path of the (stopped) server's database, e.g. DATA_DIR/safetake.db.
    #[arg(long)]
    database_url: String,
    #[arg(long, default_value_t = 100_000)]
    sessions: usize,
    /// The newest this many are active (heartbeat now).
    #[arg(long, default_value_t = 1_000)]
    active: usize,
    /// Every Nth of the others is incomplete, the rest completed.
    #[arg(long, default_value_t = 10)]
    incomplete_every: usize,
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct SessionsArgs {
    #[command(flatten)]
    server: Server,
    /// List requests at random offsets.
    #[arg(long, default_value_t = 300)]
    list_requests: usize,
    /// check-timeouts calls after the first.
    #[arg(long, default_value_t = 50)]
    sweeps: usize,
    /// Requests for each of the other list variants.
    #[arg(long, default_value_t = 50)]
    page_requests: usize,
    /// A seed report (from `seed --json`) to include.
    #[arg(long)]
    seed_report: Option<PathBuf>,
}

#[derive(Args)]
struct SummaryArgs {
    #[arg(long, default_value = "bench/results")]
    dir: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One socket per simulated recorder, beyond the usual 1024.
    safetake::startup::raise_open_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = runtime.block_on(dispatch(cli.mode));
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("loadgen: {message}");
            ExitCode::from(2)
        }
    }
}

/// Runs a mode; `Ok(FAILURE)` when a run completed but did not hold.
async fn dispatch(mode: Mode) -> Result<ExitCode, String> {
    match mode {
        Mode::Fixed(args) => fixed(args).await,
        Mode::Ramp(args) => ramp(args).await,
        Mode::MaxRate(args) => max_rate(args).await,
        Mode::Seed(args) => seed(args),
        Mode::Sessions(args) => measure_sessions(args).await,
        Mode::Summary(args) => {
            println!("{}", report::markdown_summary(&args.dir));
            Ok(ExitCode::SUCCESS)
        }
        Mode::Compare(args) => {
            println!("{}", report::compare_markdown(&args.dir));
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn fixed(args: FixedArgs) -> Result<ExitCode, String> {
    let mut spec = real_time_spec(
        "fixed",
        args.streams,
        &args.streams_opts,
        args.frame,
        args.duration,
    )?;
    spec.p99_bound = args.p99_bound;
    let runner = runner(&args.server, &args.streams_opts)?;
    let report = run::run(&runner, &spec).await;
    emit(&args.server, &report, || report::run_table(&report))?;
    Ok(exit_code(report.issues.is_empty()))
}

async fn ramp(args: RampArgs) -> Result<ExitCode, String> {
    let spec = real_time_spec(
        "ramp",
        args.start,
        &args.streams_opts,
        args.frame,
        args.duration,
    )?;
    let runner = runner(&args.server, &args.streams_opts)?;
    let plan = RampPlan {
        start: args.start,
        step: args.step,
        max: args.max,
        p99_bound: args.p99_bound,
        pause: args.pause,
        // Without an explicit ramp-up every step connects at the same rate, so larger steps
        // take proportionally longer to ramp.
        connect_rate: args
            .streams_opts
            .ramp_up
            .is_none()
            .then_some(args.streams_opts.connect_rate),
    };
    let quiet = args.server.quiet;
    let report = run::ramp(&runner, &spec, &plan, |step| {
        if !quiet {
            eprintln!("{}", report::ramp_line(step));
        }
    })
    .await;
    emit(&args.server, &report, || report::ramp_table(&report))?;
    Ok(exit_code(report.largest_held > 0))
}

async fn max_rate(args: MaxRateArgs) -> Result<ExitCode, String> {
    if args.frame_bytes == 0 || !args.frame_bytes.is_multiple_of(2) {
        return Err("--frame-bytes must be a positive, even number (whole s16le samples)".into());
    }
    let spec = run_spec(
        "max-rate",
        args.streams,
        &args.streams_opts,
        Pacing::Unpaced {
            duration: args.duration,
        },
        args.frame_bytes,
    );
    let runner = runner(&args.server, &args.streams_opts)?;
    let report = run::run(&runner, &spec).await;
    emit(&args.server, &report, || report::run_table(&report))?;
    Ok(exit_code(report.issues.is_empty()))
}

fn seed(args: SeedArgs) -> Result<ExitCode, String> {
    let plan = sessions::SeedPlan {
        database_url: args.database_url,
        sessions: args.sessions,
        active: args.active.min(args.sessions),
        incomplete_every: args.incomplete_every,
    };
    let report = sessions::seed(&plan)?;
    eprintln!(
        "seeded {} sessions ({} active, {} incomplete, {} completed) in {:.1} s",
        report.sessions, report.active, report.incomplete, report.completed, report.seconds
    );
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn measure_sessions(args: SessionsArgs) -> Result<ExitCode, String> {
    let (authority, _) = parse_url(&args.server.url)?;
    let mut http = http::HttpClient::new(&authority, args.server.token.as_deref());
    let plan = sessions::MeasurePlan {
        list_requests: args.list_requests,
        sweeps: args.sweeps,
        page_requests: args.page_requests,
    };
    let mut report = sessions::measure(&mut http, &plan).await?;
    if let Some(path) = &args.seed_report {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        report.seed = serde_json::from_str(&text).ok();
    }
    emit(&args.server, &report, || report::sessions_table(&report))?;
    Ok(ExitCode::SUCCESS)
}

/// A run of recorders sending `frame`-long frames at real-time pace for `duration`.
fn real_time_spec(
    mode: &'static str,
    streams: usize,
    opts: &Streams,
    frame: Duration,
    duration: Duration,
) -> Result<RunSpec, String> {
    let frame_bytes = paced_frame_bytes(frame)?;
    let frames = (duration.as_secs_f64() / frame.as_secs_f64()).round() as u64;
    let pacing = Pacing::RealTime {
        period: frame,
        frames,
    };
    Ok(run_spec(mode, streams, opts, pacing, frame_bytes))
}

fn run_spec(
    mode: &'static str,
    streams: usize,
    opts: &Streams,
    pacing: Pacing,
    frame_bytes: usize,
) -> RunSpec {
    RunSpec {
        mode,
        streams,
        tracks_per_session: opts.tracks_per_session.max(1),
        pacing,
        frame_bytes,
        ramp_up: opts
            .ramp_up
            .unwrap_or_else(|| ramp_for(streams, opts.connect_rate)),
        end: opts.end,
        behind_threshold: opts.behind_threshold,
        delete_after: opts.delete_after,
        aligned_end: opts.aligned_end,
        create_first: opts.create_first,
        close_bound: opts.close_bound,
        p99_bound: None,
    }
}

/// How long `streams` connects take at `rate` per second.
fn ramp_for(streams: usize, rate: f64) -> Duration {
    if rate <= 0.0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(streams as f64 / rate)
}

/// Bytes of 48 kHz mono s16le audio in one frame of `frame` length.
fn paced_frame_bytes(frame: Duration) -> Result<usize, String> {
    let bytes = (BYTES_PER_SECOND as f64 * frame.as_secs_f64()).round() as usize;
    if bytes < 2 || frame < Duration::from_millis(1) {
        return Err("--frame must be at least 1ms".into());
    }
    Ok(bytes - bytes % 2)
}

fn runner(server: &Server, opts: &Streams) -> Result<Runner, String> {
    let (authority, ws_base) = parse_url(&server.url)?;
    Ok(Runner {
        target: Arc::new(Target {
            ws_base,
            authority: authority.clone(),
            protocol: opts.protocol,
            token: server.token.clone(),
            connect_timeout: opts.connect_timeout,
            ack_timeout: opts.ack_timeout,
        }),
        authority,
        token: server.token.clone(),
        server_pid: opts.server_pid,
        progress: !server.quiet,
    })
}

/// `http://host:port` -> (`host:port`, `ws://host:port`). TLS is not spoken here.
fn parse_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--url {url}: only http://host:port is supported"))?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(format!("--url {url}: expected http://host:port"));
    }
    Ok((authority.to_string(), format!("ws://{authority}")))
}

/// Prints the table (unless quiet) and writes the JSON where asked.
fn emit<T: Serialize>(
    server: &Server,
    report: &T,
    table: impl FnOnce() -> String,
) -> Result<(), String> {
    let json_to_stdout = server.json.as_deref() == Some(std::path::Path::new("-"));
    if !server.quiet && !json_to_stdout {
        print!("{}", table());
    }
    match &server.json {
        Some(_) if json_to_stdout => {
            println!(
                "{}",
                serde_json::to_string_pretty(report).map_err(|e| e.to_string())?
            );
        }
        Some(path) => write_json(path, report)?,
        None => {}
    }
    Ok(())
}

fn write_json<T: Serialize>(path: &std::path::Path, value: &T) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))
}

fn exit_code(held: bool) -> ExitCode {
    if held {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
