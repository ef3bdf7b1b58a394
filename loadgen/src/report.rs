//! How results read: a table per run for people at the terminal, and one markdown summary built
//! from the JSON files a benchmark left in its results directory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::procstat::{ProcessUsage, Usage};
use crate::run::{RampReport, RunReport};
use crate::sessions::SessionsReport;
use crate::stats::Percentiles;

pub fn run_table(report: &RunReport) -> String {
    let mut out = String::new();
    let pacing = if report.paced {
        format!("{} B frames at real time", report.frame_bytes)
    } else {
        format!("{} B frames, unpaced", report.frame_bytes)
    };
    let _ = writeln!(
        out,
        "{}: {} streams ({} sessions x {} tracks), {:.0} s each, {pacing}, ramp-up {:.1} s, end={}",
        report.mode,
        report.streams,
        report.sessions,
        report.tracks_per_session,
        report.duration_seconds,
        report.ramp_up_seconds,
        report.end
    );
    let mut row = |name: &str, value: String| {
        let _ = writeln!(out, "  {name:<24}{value}");
    };
    row(
        "connected / failed",
        format!(
            "{} / {}{}",
            report.connected,
            report.failed,
            counts_suffix(&report.failures)
        ),
    );
    row(
        "bytes sent / acked",
        format!(
            "{} / {}  all acked: {}",
            report.bytes_sent,
            report.bytes_acked,
            yes_no(report.all_acked)
        ),
    );
    row("ack lag", latency(&report.ack_lag));
    row("connect (to ready)", latency(&report.connect));
    row("create session", latency(&report.create_session));
    row(
        "finish to close",
        format!(
            "{}; {} late (bound {:.0} ms), {} without finished, finishes spread over {:.0} ms",
            latency(&report.end_to_close),
            report.streams_close_late,
            report.close_bound_ms,
            report.streams_without_finished,
            report.end_spread_ms
        ),
    );
    row("close codes", counts(&report.close_codes));
    if !report.server_errors.is_empty() {
        row("server errors", counts(&report.server_errors));
    }
    if report.tcp_left_open_after_close > 0 {
        row(
            "server kept TCP open",
            format!(
                "{} streams after the close handshake",
                report.tcp_left_open_after_close
            ),
        );
    }
    if report.delete_retries > 0 || !report.delete_failures.is_empty() {
        row(
            "cleanup (DELETE)",
            format!(
                "{} retries after 503, failed: {}",
                report.delete_retries,
                counts(&report.delete_failures)
            ),
        );
    }
    if !report.stream_problems.is_empty() {
        row("stream problems", counts(&report.stream_problems));
    }
    row(
        "behind real time",
        format!(
            "{} streams (worst slip {:.1} ms, threshold {:.0} ms)",
            report.streams_behind, report.max_slip_ms, report.behind_threshold_ms
        ),
    );
    row(
        "throughput",
        format!(
            "{:.2} MB/s acked, {:.0} stream-seconds of audio, {:.1} s elapsed",
            report.throughput_mb_per_s, report.audio_seconds, report.elapsed_seconds
        ),
    );
    for (name, usage) in usage_rows(&report.usage) {
        row(&name, usage);
    }
    let verdict = if report.issues.is_empty() {
        "held".to_string()
    } else {
        report.issues.join("; ")
    };
    row("verdict", verdict);
    out
}

fn usage_rows(usage: &Usage) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    for (who, process) in [("server", &usage.server), ("loadgen", &usage.client)] {
        let Some(process) = process else { continue };
        rows.push((format!("{who} CPU"), cpu_text(process)));
        rows.push((format!("{who} RSS"), rss_text(process)));
    }
    rows
}

fn cpu_text(process: &ProcessUsage) -> String {
    let whole = format!(
        "whole run {:.1} s CPU over {:.1} s ({:.0}% of a core)",
        process.whole_run_cpu_seconds, process.whole_run_seconds, process.whole_run_cpu_percent
    );
    match &process.steady {
        Some(steady) => format!(
            "{:.1} us per stream-second at {} streams ({:.0}% of a core over {:.1} s); {whole}",
            steady.cpu_us_per_stream_second, steady.streams, steady.cpu_percent, steady.seconds
        ),
        None => whole,
    }
}

fn rss_text(process: &ProcessUsage) -> String {
    let base = format!(
        "baseline {:.1} MiB, peak {:.1} MiB",
        process.rss_baseline_kb as f64 / 1024.0,
        process.rss_peak_kb as f64 / 1024.0
    );
    match &process.steady {
        Some(steady) => format!("{base}, {:.1} KiB per stream", steady.rss_kb_per_stream),
        None => base,
    }
}

pub fn ramp_line(step: &RunReport) -> String {
    format!(
        "ramp step {:>5} streams: connected {}, ack lag p99 {:.0} ms, worst slip {:.0} ms, server {} -> {}",
        step.streams,
        step.connected,
        step.ack_lag.p99_ms,
        step.max_slip_ms,
        step.usage
            .server
            .as_ref()
            .and_then(|s| s.steady.as_ref())
            .map_or("n/a".to_string(), |s| format!("{:.0}% CPU", s.cpu_percent)),
        if step.issues.is_empty() {
            "held".to_string()
        } else {
            step.issues.join("; ")
        }
    )
}

pub fn ramp_table(report: &RampReport) -> String {
    let mut out = format!(
        "ramp: {}..={} step {}, ack-lag p99 bound {:.0} ms\n",
        report.start, report.max, report.step, report.p99_bound_ms
    );
    for step in &report.steps {
        let _ = writeln!(out, "  {}", ramp_line(step));
    }
    let _ = writeln!(out, "  largest N that held: {}", report.largest_held);
    if let Some(reason) = &report.stopped_because {
        let _ = writeln!(out, "  stopped {reason}");
    }
    out
}

pub fn sessions_table(report: &SessionsReport) -> String {
    let mut out = format!("sessions: {} in the database\n", report.total_sessions);
    if let Some(seed) = &report.seed {
        let _ = writeln!(out, "  {:<26}{:.1} s", "seeded in", seed.seconds);
    }
    let mut row = |name: &str, value: String| {
        let _ = writeln!(out, "  {name:<26}{value}");
    };
    row(
        "first check-timeouts",
        format!(
            "{:.1} ms, timed out {}",
            report.first_sweep_ms, report.first_sweep_timed_out
        ),
    );
    row("check-timeouts (idle)", latency(&report.sweep));
    row("list random page", latency(&report.list_random_page));
    row("list first page", latency(&report.list_first_page));
    row("list last page", latency(&report.list_last_page));
    row(
        "list completed, random",
        latency(&report.list_completed_random_page),
    );
    row(
        "history page GET /",
        format!(
            "http {}, {} bytes, {}",
            report.history_status,
            report.history_bytes,
            latency(&report.history_page)
        ),
    );
    for error in &report.errors {
        row("error", error.clone());
    }
    out
}

fn latency(p: &Percentiles) -> String {
    if p.count == 0 {
        return "no samples".into();
    }
    format!(
        "p50 {:.1} ms, p90 {:.1}, p99 {:.1}, max {:.1} (n={})",
        p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms, p.count
    )
}

fn counts(map: &BTreeMap<String, usize>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k} x{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn counts_suffix(map: &BTreeMap<String, usize>) -> String {
    if map.is_empty() {
        String::new()
    } else {
        format!(" ({})", counts(map))
    }
}

fn yes_no(value: bool) -> &'static str {
    if value {
        "yes"
    } else {
        "NO"
    }
}

/// The markdown summary of every result file found in `dir`.
pub fn markdown_summary(dir: &Path) -> String {
    let read = |name: &str| -> Option<Value> {
        let text = std::fs::read_to_string(dir.join(name)).ok()?;
        serde_json::from_str(&text).ok()
    };
    let mut out = String::new();
    let mut rows: Vec<(String, String)> = Vec::new();
    if let Some(fixed) = read("fixed.json") {
        rows.extend(fixed_rows("fixed", &fixed));
    }
    if let Some(ramp) = read("ramp.json") {
        rows.push((
            format!(
                "ramp: largest N held (ack lag p99 <= {:.0} ms)",
                f(&ramp["p99BoundMs"])
            ),
            format!(
                "**{}**{}",
                ramp["largestHeld"],
                ramp["stoppedBecause"]
                    .as_str()
                    .map_or(String::new(), |r| format!(", stopped {r}"))
            ),
        ));
    }
    if let Some(max_rate) = read("maxrate.json") {
        rows.push((
            format!(
                "max-rate: {} streams, {} B frames, {:.0} s",
                max_rate["streams"],
                max_rate["frameBytes"],
                f(&max_rate["durationSeconds"])
            ),
            format!(
                "**{:.1} MB/s** acked, ack lag p99 {:.0} ms, all acked: {}",
                f(&max_rate["throughputMbPerS"]),
                f(&max_rate["ackLag"]["p99Ms"]),
                yes_no(max_rate["allAcked"].as_bool().unwrap_or(false))
            ),
        ));
        let server = &max_rate["usage"]["server"];
        if let Some(cpu) = server["wholeRunCpuPercent"].as_f64() {
            let megabytes = f(&max_rate["bytesAcked"]) / 1e6;
            rows.push((
                "max-rate: server CPU".into(),
                format!(
                    "{cpu:.0}% of a core, {:.0} us per MB stored",
                    f(&server["wholeRunCpuSeconds"]) * 1e6 / megabytes
                ),
            ));
        }
    }
    if let Some(disk) = read("disk.json") {
        rows.extend(disk_rows(&disk));
    }
    if let Some(sessions) = read("sessions.json") {
        rows.extend(sessions_rows(&sessions));
    }
    let _ = writeln!(out, "| figure | value |\n|---|---|");
    for (name, value) in rows {
        let _ = writeln!(out, "| {name} | {value} |");
    }
    if let Some(ramp) = read("ramp.json") {
        out.push_str(&ramp_steps_markdown(&ramp));
    }
    if dir.join("peer").is_dir() {
        out.push('\n');
        out.push_str(&compare_markdown(&dir.join("peer")));
    }
    out
}

/// The servers of the `peer` phase, in table order: file prefix and column name.
const PEERS: [(&str, &str); 3] = [
    ("safetake", "safetake"),
    ("node", "Node peer"),
    ("floor", "floor"),
];

/// The side-by-side tables of the `peer` phase: `<peer>-<N>.json` fixed runs, `<peer>-ramp.json`
/// and `<peer>-burst.json`, for each of safetake, the Node peer and the floor.
pub fn compare_markdown(dir: &Path) -> String {
    let read = |name: &str| -> Option<Value> {
        let text = std::fs::read_to_string(dir.join(name)).ok()?;
        serde_json::from_str(&text).ok()
    };
    let mut sizes: Vec<u64> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let rest = PEERS
                .iter()
                .find_map(|(prefix, _)| name.strip_prefix(&format!("{prefix}-")))?;
            rest.strip_suffix(".json")?.parse().ok()
        })
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    let mut out = String::from(
        "### safetake, the Node peer and the floor, side by side\n\nEach cell: held? / ack-lag p99 / server CPU us per second of audio per stream / server RSS KiB per connected stream.\n\n| N |",
    );
    for (_, name) in PEERS {
        let _ = write!(out, " {name} |");
    }
    out.push_str("\n|---|---|---|---|\n");
    let mut notes = Vec::new();
    let mut ratios = String::from(
        "\n| N | CPU safetake / Node | CPU safetake / floor | RSS safetake / Node |\n|---|---|---|---|\n",
    );
    for n in &sizes {
        let _ = write!(out, "| {n} |");
        let runs: Vec<Option<Value>> = PEERS
            .iter()
            .map(|(prefix, _)| read(&format!("{prefix}-{n}.json")))
            .collect();
        for ((_, name), run) in PEERS.iter().zip(&runs) {
            match run {
                Some(run) => {
                    let _ = write!(out, " {} |", compare_cell(run));
                    if let Some(issues) = issues_text(run) {
                        notes.push(format!("- {name} at {n}: {issues}"));
                    }
                }
                None => out.push_str(" not run |"),
            }
        }
        out.push('\n');
        let cpu = |i: usize| {
            runs[i]
                .as_ref()
                .and_then(|r| steady(r, "cpuUsPerStreamSecond"))
        };
        let rss = |i: usize| runs[i].as_ref().and_then(|r| steady(r, "rssKbPerStream"));
        let _ = writeln!(
            ratios,
            "| {n} | {} | {} | {} |",
            ratio(cpu(0), cpu(1)),
            ratio(cpu(0), cpu(2)),
            ratio(rss(0), rss(1))
        );
    }
    let ramps: Vec<Option<Value>> = PEERS
        .iter()
        .map(|(prefix, _)| read(&format!("{prefix}-ramp.json")))
        .collect();
    if ramps.iter().any(Option::is_some) {
        out.push_str("| ramp: largest N held |");
        for ramp in &ramps {
            match ramp {
                Some(ramp) => {
                    let cap = if ramp["largestHeld"] == ramp["max"] {
                        " (every step held: the cap)"
                    } else {
                        ""
                    };
                    let _ = write!(out, " **{}**{cap} |", ramp["largestHeld"]);
                }
                None => out.push_str(" not run |"),
            }
        }
        out.push('\n');
        for ((_, name), ramp) in PEERS.iter().zip(&ramps) {
            if let Some(reason) = ramp.as_ref().and_then(|r| r["stoppedBecause"].as_str()) {
                notes.push(format!("- {name} ramp stopped {reason}"));
            }
        }
    }
    out.push_str(&ratios);
    let held = |i: usize| ramps[i].as_ref().and_then(|r| r["largestHeld"].as_f64());
    if ramps[0].is_some() && ramps[1].is_some() {
        let _ = writeln!(
            out,
            "\nLargest N held, safetake / Node peer: {}; safetake / floor: {}.",
            ratio(held(0), held(1)),
            ratio(held(0), held(2))
        );
    }
    let bursts: Vec<Option<Value>> = PEERS
        .iter()
        .map(|(prefix, _)| read(&format!("{prefix}-burst.json")))
        .collect();
    if bursts.iter().any(Option::is_some) {
        out.push_str(
            "\n| burst | streams | all ready? worst connect to ready | finishes spread over | every close within bound? worst finish to close | held? |\n|---|---|---|---|---|---|\n",
        );
        for ((_, name), burst) in PEERS.iter().zip(&bursts) {
            let Some(run) = burst else { continue };
            let ready = run["connected"] == run["streams"];
            let late = run["streamsCloseLate"].as_u64().unwrap_or(0);
            let _ = writeln!(
                out,
                "| {name} | {} | {} {:.0} ms | {:.0} ms | {} {:.0} ms (bound {:.0} ms) | {} |",
                run["streams"],
                if ready { "yes," } else { "NO," },
                f(&run["connect"]["maxMs"]),
                f(&run["endSpreadMs"]),
                if late == 0 { "yes," } else { "NO," },
                f(&run["endToClose"]["maxMs"]),
                f(&run["closeBoundMs"]),
                if issues_text(run).is_none() {
                    "yes"
                } else {
                    "no"
                }
            );
            if let Some(issues) = issues_text(run) {
                notes.push(format!("- {name} burst: {issues}"));
            }
        }
    }
    if !notes.is_empty() {
        out.push_str("\nWhy runs did not hold:\n\n");
        out.push_str(&notes.join("\n"));
        out.push('\n');
    }
    out
}

fn compare_cell(run: &Value) -> String {
    let held = if issues_text(run).is_none() {
        "yes"
    } else {
        "**no**"
    };
    let number = |value: Option<f64>| value.map_or("n/a".to_string(), |v| format!("{v:.0}"));
    format!(
        "{held} / {:.0} ms / {} / {}",
        f(&run["ackLag"]["p99Ms"]),
        number(steady(run, "cpuUsPerStreamSecond")),
        number(steady(run, "rssKbPerStream"))
    )
}

fn steady(run: &Value, field: &str) -> Option<f64> {
    run["usage"]["server"]["steady"][field].as_f64()
}

fn issues_text(run: &Value) -> Option<String> {
    let issues: Vec<&str> = run["issues"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    (!issues.is_empty()).then(|| issues.join("; "))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "n/a".into(),
    }
}

fn fixed_rows(label: &str, run: &Value) -> Vec<(String, String)> {
    let mut rows = vec![
        (
            format!("{label}: streams connected / failed"),
            format!(
                "{} / {} of {} ({:.0} s each)",
                run["connected"],
                run["failed"],
                run["streams"],
                f(&run["durationSeconds"])
            ),
        ),
        (
            format!("{label}: ack lag p50 / p90 / p99 / max"),
            lat_md(&run["ackLag"]),
        ),
        (
            format!("{label}: connect to ready p50 / p99"),
            format!(
                "{:.0} / {:.0} ms",
                f(&run["connect"]["p50Ms"]),
                f(&run["connect"]["p99Ms"])
            ),
        ),
        (
            format!("{label}: every stream fully acked"),
            format!(
                "{} ({} of {} bytes)",
                yes_no(run["allAcked"].as_bool().unwrap_or(false)),
                run["bytesAcked"],
                run["bytesSent"]
            ),
        ),
        (
            format!(
                "{label}: streams behind real time (> {:.0} ms)",
                f(&run["behindThresholdMs"])
            ),
            format!(
                "{} (worst slip {:.0} ms)",
                run["streamsBehind"],
                f(&run["maxSlipMs"])
            ),
        ),
        (format!("{label}: close codes"), map_md(&run["closeCodes"])),
        (
            format!(
                "{label}: finish to close p50 / p99 / max (bound {:.0} ms)",
                f(&run["closeBoundMs"])
            ),
            format!(
                "{:.0} / {:.0} / {:.0} ms, {} late or never, {} without finished",
                f(&run["endToClose"]["p50Ms"]),
                f(&run["endToClose"]["p99Ms"]),
                f(&run["endToClose"]["maxMs"]),
                run["streamsCloseLate"],
                run["streamsWithoutFinished"]
            ),
        ),
    ];
    for who in ["server", "client"] {
        let usage = &run["usage"][who];
        let name = if who == "client" { "loadgen" } else { who };
        if let Some(us) = usage["steady"]["cpuUsPerStreamSecond"].as_f64() {
            rows.push((
                format!("{label}: {name} CPU per second of audio per stream"),
                format!(
                    "**{us:.1} us** ({:.0}% of a core at {} streams)",
                    f(&usage["steady"]["cpuPercent"]),
                    usage["steady"]["streams"]
                ),
            ));
            rows.push((
                format!("{label}: {name} RSS per connected stream"),
                format!(
                    "**{:.1} KiB** (peak {:.0} MiB)",
                    f(&usage["steady"]["rssKbPerStream"]),
                    f(&usage["rssPeakKb"]) / 1024.0
                ),
            ));
        }
    }
    if let Some(issues) = run["issues"].as_array().filter(|i| !i.is_empty()) {
        let text: Vec<&str> = issues.iter().filter_map(Value::as_str).collect();
        rows.push((format!("{label}: issues"), text.join("; ")));
    }
    rows
}

fn disk_rows(disk: &Value) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    if let Some(tests) = disk["tests"].as_array() {
        for test in tests {
            rows.push((
                format!("disk: {}", test["name"].as_str().unwrap_or("?")),
                format!(
                    "{:.1} MB/s, {:.0} syncs/s",
                    f(&test["mbPerS"]),
                    f(&test["syncsPerS"])
                ),
            ));
        }
    }
    rows
}

fn sessions_rows(run: &Value) -> Vec<(String, String)> {
    let total = &run["totalSessions"];
    vec![
        (
            format!("sessions ({total}): first check-timeouts"),
            format!(
                "{:.0} ms, timed out {}",
                f(&run["firstSweepMs"]),
                run["firstSweepTimedOut"]
            ),
        ),
        (
            format!("sessions ({total}): check-timeouts, nothing to time out"),
            lat_md(&run["sweep"]),
        ),
        (
            format!("sessions ({total}): GET /api/sessions?limit=100, random offset"),
            lat_md(&run["listRandomPage"]),
        ),
        (
            format!("sessions ({total}): first page"),
            lat_md(&run["listFirstPage"]),
        ),
        (
            format!("sessions ({total}): last page"),
            lat_md(&run["listLastPage"]),
        ),
        (
            format!("sessions ({total}): status=completed, random offset"),
            lat_md(&run["listCompletedRandomPage"]),
        ),
        (
            format!("sessions ({total}): history page GET /"),
            format!(
                "http {}, {}",
                run["historyStatus"],
                lat_md(&run["historyPage"])
            ),
        ),
    ]
}

fn ramp_steps_markdown(ramp: &Value) -> String {
    let mut out = String::from(
        "\n| ramp streams | connected | ack lag p50 / p99 ms | worst slip ms | server CPU % | server us per stream-s | result |\n|---|---|---|---|---|---|---|\n",
    );
    for step in ramp["steps"].as_array().into_iter().flatten() {
        let steady = &step["usage"]["server"]["steady"];
        let issues: Vec<&str> = step["issues"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} / {:.0} | {:.0} | {} | {} | {} |",
            step["streams"],
            step["connected"],
            f(&step["ackLag"]["p50Ms"]),
            f(&step["ackLag"]["p99Ms"]),
            f(&step["maxSlipMs"]),
            steady["cpuPercent"]
                .as_f64()
                .map_or("n/a".into(), |v| format!("{v:.0}")),
            steady["cpuUsPerStreamSecond"]
                .as_f64()
                .map_or("n/a".into(), |v| format!("{v:.1}")),
            if issues.is_empty() {
                "held".to_string()
            } else {
                issues.join("; ")
            }
        );
    }
    out
}

fn lat_md(p: &Value) -> String {
    if p["count"].as_u64().unwrap_or(0) == 0 {
        return "no samples".into();
    }
    format!(
        "{:.1} / {:.1} / {:.1} / {:.1} ms (n={})",
        f(&p["p50Ms"]),
        f(&p["p90Ms"]),
        f(&p["p99Ms"]),
        f(&p["maxMs"]),
        p["count"]
    )
}

fn map_md(map: &Value) -> String {
    match map.as_object() {
        Some(map) if !map.is_empty() => map
            .iter()
            .map(|(k, v)| format!("{k} x{v}"))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "none".into(),
    }
}

fn f(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}
