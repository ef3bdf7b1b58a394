//! CPU time and resident memory of a process (the server, and the load generator itself), read
//! from /proc, and a sampler that records them with the number of streams sending at the time,
//! so the cost per stream is computed over the window where every stream was live.

use std::fs;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinHandle;

const SAMPLE_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    /// utime + stime, in microseconds.
    pub cpu_us: u64,
    pub rss_kb: u64,
}

/// Reads one process's CPU time and RSS; `None` is this process.
pub fn read(pid: Option<u32>) -> io::Result<ProcSample> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}"),
        None => "/proc/self".to_string(),
    };
    let stat = fs::read_to_string(format!("{dir}/stat"))?;
    let status = fs::read_to_string(format!("{dir}/status"))?;
    Ok(ProcSample {
        cpu_us: cpu_micros(&stat).ok_or_else(|| io::Error::other("unreadable /proc stat"))?,
        rss_kb: rss_kb(&status).unwrap_or(0),
    })
}

/// Fields 14 and 15 of /proc/PID/stat, counted after the command name (which may hold spaces).
fn cpu_micros(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) * 1_000_000 / clock_ticks_per_second())
}

fn rss_kb(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a constant of the running system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    streaming: usize,
    server: Option<ProcSample>,
    client: Option<ProcSample>,
}

/// Samples every half second until stopped.
pub struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    task: JoinHandle<()>,
    server_pid: Option<u32>,
    streaming: Arc<AtomicUsize>,
}

impl Sampler {
    /// Takes the baseline sample at once, before any stream connects.
    pub fn start(server_pid: Option<u32>, streaming: Arc<AtomicUsize>) -> Sampler {
        let samples = Arc::new(Mutex::new(vec![take(server_pid, &streaming)]));
        let task = {
            let samples = samples.clone();
            let streaming = streaming.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(SAMPLE_EVERY);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let sample = take(server_pid, &streaming);
                    samples
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(sample);
                }
            })
        };
        Sampler {
            samples,
            task,
            server_pid,
            streaming,
        }
    }

    /// Stops sampling (taking a last sample) and works out the usage.
    pub fn finish(self) -> Usage {
        self.task.abort();
        let mut samples =
            std::mem::take(&mut *self.samples.lock().unwrap_or_else(|p| p.into_inner()));
        samples.push(take(self.server_pid, &self.streaming));
        Usage {
            server: self
                .server_pid
                .and_then(|_| usage_of(&samples, |s| s.server)),
            client: usage_of(&samples, |s| s.client),
        }
    }
}

fn take(server_pid: Option<u32>, streaming: &AtomicUsize) -> Sample {
    Sample {
        at: Instant::now(),
        streaming: streaming.load(Ordering::Relaxed),
        server: server_pid.and_then(|pid| read(Some(pid)).ok()),
        client: read(None).ok(),
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Usage {
    pub server: Option<ProcessUsage>,
    /// The load generator itself: it shares the machine's cores with the server.
    pub client: Option<ProcessUsage>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessUsage {
    /// From the first sample (before any connect) to the last (after every stream ended).
    pub whole_run_seconds: f64,
    pub whole_run_cpu_seconds: f64,
    /// 100 = one core busy.
    pub whole_run_cpu_percent: f64,
    pub rss_baseline_kb: u64,
    pub rss_peak_kb: u64,
    /// The window where the most streams were sending at once (all of them, when all connect).
    pub steady: Option<SteadyUsage>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SteadyUsage {
    pub streams: usize,
    pub seconds: f64,
    pub cpu_percent: f64,
    /// CPU microseconds spent per second of audio per stream.
    pub cpu_us_per_stream_second: f64,
    pub rss_kb: u64,
    /// (RSS in the window - RSS before the run) / streams.
    pub rss_kb_per_stream: f64,
}

fn usage_of(
    samples: &[Sample],
    pick: impl Fn(&Sample) -> Option<ProcSample>,
) -> Option<ProcessUsage> {
    let readings: Vec<(&Sample, ProcSample)> = samples
        .iter()
        .filter_map(|s| pick(s).map(|p| (s, p)))
        .collect();
    let (first, last) = (readings.first()?, readings.last()?);
    let seconds = last.0.at.duration_since(first.0.at).as_secs_f64();
    let cpu_seconds = last.1.cpu_us.saturating_sub(first.1.cpu_us) as f64 / 1e6;
    Some(ProcessUsage {
        whole_run_seconds: seconds,
        whole_run_cpu_seconds: cpu_seconds,
        whole_run_cpu_percent: percent(cpu_seconds, seconds),
        rss_baseline_kb: first.1.rss_kb,
        rss_peak_kb: readings.iter().map(|(_, p)| p.rss_kb).max().unwrap_or(0),
        steady: steady_usage(&readings),
    })
}

/// Between the first and the last sample taken at the peak stream count.
fn steady_usage(readings: &[(&Sample, ProcSample)]) -> Option<SteadyUsage> {
    let peak = readings
        .iter()
        .map(|(s, _)| s.streaming)
        .max()
        .filter(|&peak| peak > 0)?;
    let at_peak: Vec<_> = readings
        .iter()
        .filter(|(s, _)| s.streaming == peak)
        .collect();
    let (first, last) = (at_peak.first()?, at_peak.last()?);
    let seconds = last.0.at.duration_since(first.0.at).as_secs_f64();
    if seconds < 1.0 {
        return None;
    }
    let cpu_seconds = last.1.cpu_us.saturating_sub(first.1.cpu_us) as f64 / 1e6;
    let rss_kb = at_peak.iter().map(|(_, p)| p.rss_kb).max().unwrap_or(0);
    let baseline = readings[0].1.rss_kb;
    Some(SteadyUsage {
        streams: peak,
        seconds,
        cpu_percent: percent(cpu_seconds, seconds),
        cpu_us_per_stream_second: cpu_seconds * 1e6 / (seconds * peak as f64),
        rss_kb,
        rss_kb_per_stream: rss_kb.saturating_sub(baseline) as f64 / peak as f64,
    })
}

fn percent(cpu_seconds: f64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        100.0 * cpu_seconds / seconds
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_after_a_name_with_spaces() {
        let stat = "42 (a b) S 1 2 3 4 5 6 7 8 9 10 300 200 0 0";
        assert_eq!(
            cpu_micros(stat),
            Some(500 * 1_000_000 / clock_ticks_per_second())
        );
        assert_eq!(rss_kb("Name:\tx\nVmRSS:\t  1234 kB\n"), Some(1234));
    }

    #[test]
    fn this_process_is_readable() {
        assert!(read(None).unwrap().rss_kb > 0);
    }
}
