//! A run: N recorders started on a staggered schedule, grouped into sessions, watched by the
//! sampler, and summed up into one report. Ramp mode repeats runs with more streams each step.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::http::HttpClient;
use crate::procstat::{Sampler, Usage};
use crate::recorder::{
    self, EndMode, Gauges, Pacing, Protocol, StreamOutcome, StreamPlan, Target, BYTES_PER_SECOND,
};
use crate::stats::{millis, Percentiles};

/// How often a progress line goes to stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Everything a run needs to reach the server.
pub struct Runner {
    pub target: Arc<Target>,
    /// `host:port`, for the REST calls.
    pub authority: String,
    pub token: Option<String>,
    pub server_pid: Option<u32>,
    pub progress: bool,
}

#[derive(Debug, Clone)]
pub struct RunSpec {
    pub mode: &'static str,
    pub streams: usize,
    pub tracks_per_session: usize,
    pub pacing: Pacing,
    pub frame_bytes: usize,
    /// Stream `i` connects at `i * ramp_up / streams` after the start.
    pub ramp_up: Duration,
    pub end: EndMode,
    pub behind_threshold: Duration,
    /// Delete each session (and its audio) once its recorders are done, so long ramps and
    /// max-rate runs do not fill the disk.
    pub delete_after: bool,
    /// Every stream stops sending at the same moment (the last one's scheduled end), so all
    /// `finish`es land together: streams that connected earlier send longer.
    pub aligned_end: bool,
    /// Create every session before the first socket connects, so that with no ramp-up the
    /// sockets really connect at once.
    pub create_first: bool,
    /// From `finish` to the server's close, at most this long (and `finished` before it).
    pub close_bound: Duration,
    /// When set, the run holds only with the ack-lag p99 at or under it.
    pub p99_bound: Option<Duration>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    pub mode: String,
    pub streams: usize,
    pub tracks_per_session: usize,
    pub sessions: usize,
    pub paced: bool,
    pub frame_bytes: usize,
    /// How long each stream sends.
    pub duration_seconds: f64,
    pub ramp_up_seconds: f64,
    pub end: String,
    pub connected: usize,
    pub failed: usize,
    /// Why streams never got to send, by reason.
    pub failures: BTreeMap<String, usize>,
    /// What went wrong after `ready`, by kind.
    pub stream_problems: BTreeMap<String, usize>,
    pub bytes_sent: u64,
    pub bytes_acked: u64,
    /// Every connected stream's last ack equals the bytes it sent.
    pub all_acked: bool,
    pub streams_not_fully_acked: usize,
    pub ack_lag: Percentiles,
    pub connect: Percentiles,
    pub create_session: Percentiles,
    /// From sending `finish` (or our close) to the server's close frame, per stream.
    pub end_to_close: Percentiles,
    pub close_bound_ms: f64,
    /// Streams whose close came later than the bound after `finish`, or never.
    pub streams_close_late: usize,
    /// Streams ended with `finish` that never got `{"type":"finished"}`.
    pub streams_without_finished: usize,
    /// From the first stream's `finish` to the last one's.
    pub end_spread_ms: f64,
    pub protocol: String,
    /// Close codes the server sent, "none" when the socket ended without one.
    pub close_codes: BTreeMap<String, usize>,
    /// `code`s of `{"type":"error"}` messages.
    pub server_errors: BTreeMap<String, usize>,
    /// Streams whose close handshake completed but whose TCP connection the server kept open
    /// (the recorder then closed it). A server fault, but no loss: not counted as an issue.
    pub tcp_left_open_after_close: usize,
    /// DELETE calls retried after `503` (housekeeping with --delete-after; not an issue).
    pub delete_retries: usize,
    /// Sessions --delete-after could not delete, by reason (not an issue of the run).
    pub delete_failures: BTreeMap<String, usize>,
    pub behind_threshold_ms: f64,
    /// Streams whose send schedule slipped past the threshold.
    pub streams_behind: usize,
    pub max_slip_ms: f64,
    /// Acked audio, in stream-seconds.
    pub audio_seconds: f64,
    pub elapsed_seconds: f64,
    /// Acked bytes over the time from the first frame to the last final ack (MB = 10^6 bytes).
    pub throughput_mb_per_s: f64,
    pub usage: Usage,
    /// Empty when the run held: every stream connected, sent on time, and got everything acked.
    pub issues: Vec<String>,
}

/// One session's recorders, and what its REST calls did.
#[derive(Default)]
struct GroupResult {
    create: Option<Duration>,
    outcomes: Vec<StreamOutcome>,
    /// A failed create or finish, counted as a problem.
    rest_problem: Option<String>,
    cleanup: Cleanup,
}

/// What `--delete-after` did for one session: housekeeping, never an issue of the run.
#[derive(Default)]
struct Cleanup {
    retries: usize,
    failure: Option<String>,
}

pub async fn run(runner: &Runner, spec: &RunSpec) -> RunReport {
    let gauges = Arc::new(Gauges::default());
    let sampler = Sampler::start(runner.server_pid, gauges.streaming.clone());
    let spacing = spec.ramp_up / spec.streams.max(1) as u32;
    let tracks = spec.tracks_per_session.max(1);
    let context = runner.context();
    let group_count = spec.streams.div_ceil(tracks);
    let mut created: Vec<Option<Created>> = if spec.create_first {
        create_all(&context, spec, group_count).await
    } else {
        (0..group_count).map(|_| None).collect()
    };
    let start = Instant::now() + Duration::from_millis(50);
    let groups: Vec<JoinHandle<GroupResult>> = (0..spec.streams)
        .step_by(tracks)
        .zip(created.iter_mut())
        .map(|(first, created)| {
            let schedule = Schedule {
                start,
                spacing,
                first,
                tracks: tracks.min(spec.streams - first),
                end_at: spec
                    .aligned_end
                    .then(|| start + spec.ramp_up + spec.pacing.sending_time()),
            };
            tokio::spawn(run_group(
                context.clone(),
                spec.clone(),
                schedule,
                created.take(),
                gauges.clone(),
            ))
        })
        .collect();
    let progress = runner
        .progress
        .then(|| tokio::spawn(print_progress(spec.streams, gauges.clone())));
    let mut results = Vec::with_capacity(groups.len());
    for group in groups {
        results.push(group.await.unwrap_or_else(|error| GroupResult {
            rest_problem: Some(format!("group task failed: {error}")),
            ..GroupResult::default()
        }));
    }
    if let Some(progress) = progress {
        progress.abort();
    }
    let usage = sampler.finish();
    summarize(
        spec,
        results,
        start.elapsed(),
        usage,
        runner.target.protocol,
    )
}

impl Runner {
    fn context(&self) -> Arc<GroupContext> {
        Arc::new(GroupContext {
            target: self.target.clone(),
            authority: self.authority.clone(),
            token: self.token.clone(),
            deletes: Semaphore::new(1),
        })
    }
}

/// What every session group of one run shares.
struct GroupContext {
    target: Arc<Target>,
    authority: String,
    token: Option<String>,
    /// One DELETE at a time: concurrent ones make this server answer `503 database is locked`.
    deletes: Semaphore,
}

#[derive(Debug, Clone, Copy)]
struct Schedule {
    start: Instant,
    spacing: Duration,
    /// Index of the group's first stream in the run.
    first: usize,
    tracks: usize,
    /// With `--aligned-end`: when every stream stops sending.
    end_at: Option<Instant>,
}

impl Schedule {
    fn slot(&self, track: usize) -> Instant {
        self.start + self.spacing * (self.first + track) as u32
    }
}

/// A session created over REST: its id and how long the call took.
type Created = Result<(String, Duration), String>;

/// Creates every group's session before any socket connects, a few calls at a time.
async fn create_all(
    context: &Arc<GroupContext>,
    spec: &RunSpec,
    groups: usize,
) -> Vec<Option<Created>> {
    if context.target.protocol == Protocol::Raw {
        return (0..groups).map(|_| None).collect();
    }
    let limit = Arc::new(Semaphore::new(16));
    let tasks: Vec<JoinHandle<Created>> = (0..groups)
        .map(|group| {
            let (context, limit) = (context.clone(), limit.clone());
            let title = format!("loadgen {} #{group}", spec.mode);
            tokio::spawn(async move {
                let _slot = limit.acquire().await;
                let mut http = HttpClient::new(&context.authority, context.token.as_deref());
                create_session(&mut http, &title).await
            })
        })
        .collect();
    let mut created = Vec::with_capacity(groups);
    for task in tasks {
        created.push(Some(
            task.await
                .unwrap_or_else(|e| Err(format!("create task failed: {e}"))),
        ));
    }
    created
}

/// Creates a session, starts one recorder task per track at its slot, and with several tracks
/// finishes the session over REST once all of them are done (a socket's `finish` would close
/// the session's other tracks while they still stream).
async fn run_group(
    context: Arc<GroupContext>,
    spec: RunSpec,
    schedule: Schedule,
    precreated: Option<Created>,
    gauges: Arc<Gauges>,
) -> GroupResult {
    tokio::time::sleep_until(schedule.slot(0)).await;
    let raw = context.target.protocol == Protocol::Raw;
    let title = format!(
        "loadgen {} #{}",
        spec.mode,
        schedule.first / schedule.tracks.max(1)
    );
    // A connection for the create and another at the end: one kept alive all run long would
    // sit idle on the server beside every socket.
    let created = match precreated {
        Some(created) => created,
        // The floor has no sessions.
        None if raw => Ok((String::new(), Duration::ZERO)),
        None => {
            let mut http = HttpClient::new(&context.authority, context.token.as_deref());
            create_session(&mut http, &title).await
        }
    };
    let (session, create) = match created {
        Ok(created) => created,
        Err(failure) => {
            gauges.failed.fetch_add(schedule.tracks, Ordering::Relaxed);
            let outcomes = (0..schedule.tracks)
                .map(|_| StreamOutcome {
                    failure: Some(failure.clone()),
                    ..StreamOutcome::default()
                })
                .collect();
            return GroupResult {
                outcomes,
                ..GroupResult::default()
            };
        }
    };
    let shared_session = schedule.tracks > 1;
    let end = if shared_session {
        EndMode::Close
    } else {
        spec.end
    };
    let recorders: Vec<JoinHandle<StreamOutcome>> = (0..schedule.tracks)
        .map(|track| {
            let plan = StreamPlan {
                session: session.clone(),
                track: format!("t{track}"),
                pacing: spec.pacing,
                send_until: schedule.end_at,
                frame_bytes: spec.frame_bytes,
                end,
            };
            let (context, gauges, slot) = (context.clone(), gauges.clone(), schedule.slot(track));
            tokio::spawn(async move {
                tokio::time::sleep_until(slot).await;
                match context.target.protocol {
                    Protocol::Raw => crate::raw::run(&context.target, plan, gauges).await,
                    Protocol::Ws => recorder::run(&context.target, plan, gauges).await,
                }
            })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(recorders.len());
    for recorder in recorders {
        outcomes.push(recorder.await.unwrap_or_else(|error| StreamOutcome {
            failure: Some(format!("recorder task failed: {error}")),
            ..StreamOutcome::default()
        }));
    }
    if raw {
        return GroupResult {
            outcomes,
            ..GroupResult::default()
        };
    }
    let mut http = HttpClient::new(&context.authority, context.token.as_deref());
    let finished_by_socket = spec.end == EndMode::Finish && !shared_session;
    // Only a session that is not active can be deleted, so deleting implies finishing.
    let must_finish = spec.end == EndMode::Finish || spec.delete_after;
    let rest_problem = if finished_by_socket || !must_finish {
        None
    } else {
        finish_session(&mut http, &session).await.err()
    };
    let cleanup = if spec.delete_after {
        let _one_at_a_time = context.deletes.acquire().await;
        delete_session(&mut http, &session).await
    } else {
        Cleanup::default()
    };
    GroupResult {
        create: Some(create),
        outcomes,
        rest_problem,
        cleanup,
    }
}

/// `POST .../finish`, for sessions whose recorders did not finish them over the socket.
async fn finish_session(http: &mut HttpClient, session: &str) -> Result<(), String> {
    match http
        .post(&format!("/api/session/{session}/finish"), None)
        .await
    {
        Ok(response) if response.status == 200 => Ok(()),
        Ok(response) => Err(format!("finish over REST: http {}", response.status)),
        Err(error) => Err(format!("finish over REST: {:?}", error.kind())),
    }
}

/// Deletes a finished session. Even one at a time, a DELETE meets `503 database is locked` when
/// another write commits during it (seen with this server); those are retried with jitter.
async fn delete_session(http: &mut HttpClient, session: &str) -> Cleanup {
    let path = format!("/api/session/{session}");
    let mut cleanup = Cleanup::default();
    let mut backoff = Duration::from_millis(20);
    for _ in 0..10 {
        match http.request("DELETE", &path, None).await {
            Ok(response) if response.status == 204 => return cleanup,
            Ok(response) if response.status == 503 => {
                cleanup.retries += 1;
                tokio::time::sleep(jittered(backoff)).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Ok(response) => {
                cleanup.failure = Some(format!("delete: http {}", response.status));
                return cleanup;
            }
            Err(error) => {
                cleanup.failure = Some(format!("delete: {:?}", error.kind()));
                return cleanup;
            }
        }
    }
    cleanup.failure = Some("delete: http 503 after 10 tries".into());
    cleanup
}

/// Between half and all of `delay`, so retries of several sessions do not collide again.
fn jittered(delay: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.subsec_nanos());
    delay / 2 + delay.mul_f64(f64::from(nanos % 1000) / 2000.0)
}

/// `POST /api/sessions`; the new id and how long the call took.
async fn create_session(http: &mut HttpClient, title: &str) -> Result<(String, Duration), String> {
    let body = serde_json::json!({ "title": title }).to_string();
    let response = http
        .post("/api/sessions", Some(&body))
        .await
        .map_err(|error| format!("create session: {:?}", error.kind()))?;
    if response.status != 201 {
        return Err(format!("create session: http {}", response.status));
    }
    let json = response
        .json()
        .map_err(|_| "create session: not JSON".to_string())?;
    let id = json
        .get("id")
        .and_then(|id| id.as_str())
        .ok_or_else(|| "create session: no id".to_string())?;
    Ok((id.to_string(), response.elapsed))
}

async fn print_progress(streams: usize, gauges: Arc<Gauges>) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        eprintln!(
            "  [{:>4.0}s] connected {}/{streams}, failed {}, sending {}, sent {:.1} MB, acked {:.1} MB",
            started.elapsed().as_secs_f64(),
            gauges.connected.load(Ordering::Relaxed),
            gauges.failed.load(Ordering::Relaxed),
            gauges.streaming.load(Ordering::Relaxed),
            gauges.bytes_sent.load(Ordering::Relaxed) as f64 / 1e6,
            gauges.bytes_acked.load(Ordering::Relaxed) as f64 / 1e6,
        );
    }
}

fn summarize(
    spec: &RunSpec,
    groups: Vec<GroupResult>,
    elapsed: Duration,
    usage: Usage,
    protocol: Protocol,
) -> RunReport {
    let mut report = RunReport {
        mode: spec.mode.to_string(),
        protocol: format!("{protocol:?}").to_lowercase(),
        streams: spec.streams,
        tracks_per_session: spec.tracks_per_session.max(1),
        sessions: groups.len(),
        paced: matches!(spec.pacing, Pacing::RealTime { .. }),
        frame_bytes: spec.frame_bytes,
        duration_seconds: match spec.pacing {
            Pacing::RealTime { period, frames } => (period * frames as u32).as_secs_f64(),
            Pacing::Unpaced { duration } => duration.as_secs_f64(),
        },
        ramp_up_seconds: spec.ramp_up.as_secs_f64(),
        end: format!("{:?}", spec.end).to_lowercase(),
        behind_threshold_ms: millis(spec.behind_threshold),
        close_bound_ms: millis(spec.close_bound),
        elapsed_seconds: elapsed.as_secs_f64(),
        usage,
        ..RunReport::default()
    };
    let mut lags = Vec::new();
    let mut connects = Vec::new();
    let mut creates = Vec::new();
    let mut first_frame: Option<Instant> = None;
    let mut last_final_ack: Option<Instant> = None;
    let mut end_to_close = Vec::new();
    let (mut first_end, mut last_end): (Option<Instant>, Option<Instant>) = (None, None);
    let finish_by_socket = spec.end == EndMode::Finish && spec.tracks_per_session <= 1;
    for group in &groups {
        creates.extend(group.create);
        report.delete_retries += group.cleanup.retries;
        if let Some(failure) = &group.cleanup.failure {
            *report.delete_failures.entry(failure.clone()).or_default() += 1;
        }
        if let Some(problem) = &group.rest_problem {
            *report.stream_problems.entry(problem.clone()).or_default() += 1;
        }
        for outcome in &group.outcomes {
            if let Some(failure) = &outcome.failure {
                report.failed += 1;
                *report.failures.entry(failure.clone()).or_default() += 1;
                continue;
            }
            report.connected += 1;
            connects.extend(outcome.connect);
            lags.extend_from_slice(&outcome.lags_us);
            add_stream(&mut report, outcome, spec.behind_threshold);
            first_frame = earliest(first_frame, outcome.first_frame_at);
            last_final_ack = last_final_ack.max(outcome.final_ack_at);
            first_end = earliest(first_end, outcome.end_sent_at);
            last_end = last_end.max(outcome.end_sent_at);
            match outcome.end_to_close() {
                Some(waited) => {
                    end_to_close.push(waited);
                    if waited > spec.close_bound {
                        report.streams_close_late += 1;
                    }
                }
                // Ended but never closed: as late as it gets.
                None if outcome.end_sent_at.is_some() => report.streams_close_late += 1,
                None => {}
            }
            if finish_by_socket && !outcome.finished_message {
                report.streams_without_finished += 1;
            }
        }
    }
    report.all_acked = report.connected > 0 && report.streams_not_fully_acked == 0;
    report.audio_seconds = report.bytes_acked as f64 / BYTES_PER_SECOND as f64;
    if let (Some(first), Some(last)) = (first_frame, last_final_ack) {
        let window = last.saturating_duration_since(first).as_secs_f64();
        if window > 0.0 {
            report.throughput_mb_per_s = report.bytes_acked as f64 / window / 1e6;
        }
    }
    report.ack_lag = Percentiles::of(&mut lags);
    report.connect = Percentiles::from_durations(&connects);
    report.create_session = Percentiles::from_durations(&creates);
    report.end_to_close = Percentiles::from_durations(&end_to_close);
    if let (Some(first), Some(last)) = (first_end, last_end) {
        report.end_spread_ms = millis(last.saturating_duration_since(first));
    }
    report.issues = issues(&report, spec.p99_bound);
    report
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Adds one connected stream's figures to the report.
fn add_stream(report: &mut RunReport, outcome: &StreamOutcome, behind_threshold: Duration) {
    report.bytes_sent += outcome.bytes_sent();
    report.bytes_acked += outcome.last_ack.saturating_sub(outcome.ready_offset);
    if !outcome.fully_acked() {
        report.streams_not_fully_acked += 1;
    }
    let code = outcome
        .close_code
        .map_or("none".to_string(), |code| code.to_string());
    *report.close_codes.entry(code).or_default() += 1;
    if let Some(error) = &outcome.server_error {
        *report.server_errors.entry(error.clone()).or_default() += 1;
    }
    if outcome.tcp_left_open {
        report.tcp_left_open_after_close += 1;
    }
    if let Some(problem) = &outcome.problem {
        *report.stream_problems.entry(problem.clone()).or_default() += 1;
    }
    if outcome.max_slip > behind_threshold {
        report.streams_behind += 1;
    }
    report.max_slip_ms = report.max_slip_ms.max(millis(outcome.max_slip));
}

/// Why a run did not hold; empty when it did. `p99_bound` adds the ack-lag criterion.
pub fn issues(report: &RunReport, p99_bound: Option<Duration>) -> Vec<String> {
    let mut issues = Vec::new();
    if report.failed > 0 {
        issues.push(format!(
            "{} of {} streams failed to connect",
            report.failed, report.streams
        ));
    }
    if report.streams_not_fully_acked > 0 {
        issues.push(format!(
            "{} streams ended with bytes not acked ({} of {} bytes acked)",
            report.streams_not_fully_acked, report.bytes_acked, report.bytes_sent
        ));
    }
    if report.streams_behind > 0 {
        issues.push(format!(
            "{} streams fell behind real time (worst slip {:.0} ms)",
            report.streams_behind, report.max_slip_ms
        ));
    }
    let unexpected: usize = report
        .close_codes
        .iter()
        .filter(|(code, _)| code.as_str() != "1000")
        .map(|(_, count)| count)
        .sum();
    if unexpected > 0 {
        issues.push(format!("{unexpected} streams closed other than with 1000"));
    }
    if report.streams_close_late > 0 {
        issues.push(format!(
            "{} streams got their close more than {:.0} ms after finish, or none (worst {:.0} ms)",
            report.streams_close_late, report.close_bound_ms, report.end_to_close.max_ms
        ));
    }
    if report.streams_without_finished > 0 {
        issues.push(format!(
            "{} streams got no finished message",
            report.streams_without_finished
        ));
    }
    let problems: usize = report.stream_problems.values().sum();
    if problems > 0 {
        issues.push(format!(
            "{problems} stream or session problems (see streamProblems)"
        ));
    }
    if let Some(bound) = p99_bound {
        if report.ack_lag.p99_ms > millis(bound) {
            issues.push(format!(
                "ack lag p99 {:.0} ms is over the bound of {:.0} ms",
                report.ack_lag.p99_ms,
                millis(bound)
            ));
        }
    }
    issues
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RampReport {
    pub mode: String,
    pub start: usize,
    pub step: usize,
    pub max: usize,
    pub p99_bound_ms: f64,
    /// The most streams that held every criterion; 0 when even the first step failed.
    pub largest_held: usize,
    pub stopped_because: Option<String>,
    pub steps: Vec<RunReport>,
}

pub struct RampPlan {
    pub start: usize,
    pub step: usize,
    pub max: usize,
    pub p99_bound: Duration,
    /// Between steps, so the previous step's writers wind down.
    pub pause: Duration,
    /// When set, each step's ramp-up is its stream count over this many connects per second.
    pub connect_rate: Option<f64>,
}

/// Raises the stream count step by step until a step does not hold or `max` is passed.
pub async fn ramp(
    runner: &Runner,
    base: &RunSpec,
    plan: &RampPlan,
    on_step: impl Fn(&RunReport),
) -> RampReport {
    let mut report = RampReport {
        mode: "ramp".into(),
        start: plan.start,
        step: plan.step,
        max: plan.max,
        p99_bound_ms: millis(plan.p99_bound),
        largest_held: 0,
        stopped_because: None,
        steps: Vec::new(),
    };
    let mut streams = plan.start;
    while streams <= plan.max {
        let ramp_up = match plan.connect_rate {
            Some(rate) if rate > 0.0 => Duration::from_secs_f64(streams as f64 / rate),
            _ => base.ramp_up,
        };
        let spec = RunSpec {
            streams,
            ramp_up,
            ..base.clone()
        };
        let mut step = run(runner, &spec).await;
        step.issues = issues(&step, Some(plan.p99_bound));
        on_step(&step);
        let held = step.issues.is_empty();
        if !held {
            report.stopped_because =
                Some(format!("at {streams} streams: {}", step.issues.join("; ")));
        }
        report.steps.push(step);
        if !held {
            break;
        }
        report.largest_held = streams;
        streams += plan.step.max(1);
        tokio::time::sleep(plan.pause).await;
    }
    report
}
