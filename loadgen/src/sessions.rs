//! The many-sessions figure: seed a database with N sessions straight through the server's own
//! library (before the server starts), then time the sweep and the list endpoint over HTTP.

use std::time::{Duration, Instant};

use chrono::{NaiveDateTime, TimeDelta};
use diesel::Connection;
use safetake::db;
use safetake::db::models::SessionRow;
use safetake::domain::{SessionId, SessionStatus};
use serde::{Deserialize, Serialize};

use crate::http::HttpClient;
use crate::stats::Percentiles;

pub struct SeedPlan {
    pub database_url: String,
    pub sessions: usize,
    /// The newest sessions are active, heartbeat now (a server with a long --session-timeout
    /// leaves them be until `check-timeouts` with `timeoutMs: 0` times them out).
    pub active: usize,
    /// Every Nth of the others is incomplete; the rest are completed.
    pub incomplete_every: usize,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedReport {
    pub sessions: usize,
    pub active: usize,
    pub incomplete: usize,
    pub completed: usize,
    pub seconds: f64,
}

/// Inserts every session in one transaction; newest first, spread over the last year.
pub fn seed(plan: &SeedPlan) -> Result<SeedReport, String> {
    let started = Instant::now();
    let pool = db::connect(&plan.database_url).map_err(|e| e.to_string())?;
    let mut conn = pool.get().map_err(|e| e.to_string())?;
    let now = safetake::domain::now();
    let mut report = SeedReport {
        sessions: plan.sessions,
        active: 0,
        incomplete: 0,
        completed: 0,
        seconds: 0.0,
    };
    conn.transaction::<_, diesel::result::Error, _>(|conn| {
        for index in 0..plan.sessions {
            let row = seeded_row(plan, index, now);
            match row.status {
                SessionStatus::Active => report.active += 1,
                SessionStatus::Incomplete => report.incomplete += 1,
                SessionStatus::Completed => report.completed += 1,
            }
            db::sessions::insert(conn, &row)?;
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn seeded_row(plan: &SeedPlan, index: usize, now: NaiveDateTime) -> SessionRow {
    let year_ms = 365 * 24 * 3600 * 1000_i64;
    let age = TimeDelta::milliseconds(year_ms * index as i64 / plan.sessions.max(1) as i64);
    let created_at = now - age;
    let status = if index < plan.active {
        SessionStatus::Active
    } else if plan.incomplete_every > 0 && index.is_multiple_of(plan.incomplete_every) {
        SessionStatus::Incomplete
    } else {
        SessionStatus::Completed
    };
    let hour = TimeDelta::hours(1);
    let (last_heartbeat, completed_at) = match status {
        SessionStatus::Active => (now, None),
        SessionStatus::Incomplete => (created_at + hour, None),
        SessionStatus::Completed => (created_at + hour, Some(created_at + hour)),
    };
    SessionRow {
        id: SessionId::new_random(),
        title: format!("Seeded episode {index}"),
        status,
        created_at,
        last_heartbeat,
        completed_at,
        stop_requested_at: None,
    }
}

pub struct MeasurePlan {
    pub list_requests: usize,
    pub sweeps: usize,
    pub page_requests: usize,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionsReport {
    pub mode: String,
    pub total_sessions: u64,
    pub seed: Option<SeedReport>,
    /// The first `check-timeouts` (`timeoutMs: 0`): times out every seeded active session.
    pub first_sweep_ms: f64,
    pub first_sweep_timed_out: u64,
    /// Further `check-timeouts` with the server's timeout: nothing left to time out.
    pub sweep: Percentiles,
    /// `GET /api/sessions?limit=100&offset=K`, K uniform over the whole list.
    pub list_random_page: Percentiles,
    pub list_first_page: Percentiles,
    pub list_last_page: Percentiles,
    /// `?status=completed&limit=100&offset=K`, K uniform over the completed sessions.
    pub list_completed_random_page: Percentiles,
    /// `GET /` (the history page); `history_status` is its HTTP status.
    pub history_page: Percentiles,
    pub history_status: u16,
    pub history_bytes: usize,
    pub errors: Vec<String>,
}

/// Times the sweep and the list endpoint, one request at a time.
pub async fn measure(http: &mut HttpClient, plan: &MeasurePlan) -> Result<SessionsReport, String> {
    let mut report = SessionsReport {
        mode: "sessions".into(),
        ..SessionsReport::default()
    };
    report.total_sessions = total(http, "").await?;

    let first = http
        .post("/api/session/check-timeouts", Some(r#"{"timeoutMs":0}"#))
        .await
        .map_err(|e| format!("check-timeouts: {e}"))?;
    expect_ok(&first, "check-timeouts")?;
    report.first_sweep_ms = first.elapsed.as_secs_f64() * 1000.0;
    report.first_sweep_timed_out = first
        .json()
        .ok()
        .and_then(|j| j["timedOut"].as_u64())
        .unwrap_or(0);

    let mut sweeps = Vec::with_capacity(plan.sweeps);
    for _ in 0..plan.sweeps {
        let response = http
            .post("/api/session/check-timeouts", None)
            .await
            .map_err(|e| e.to_string())?;
        expect_ok(&response, "check-timeouts")?;
        sweeps.push(response.elapsed);
    }
    report.sweep = Percentiles::from_durations(&sweeps);

    let mut random = Lcg::new(0x5afe_7a6e);
    let last_offset = report.total_sessions.saturating_sub(100);
    report.list_random_page = time_gets(http, plan.list_requests, |_| {
        format!(
            "/api/sessions?limit=100&offset={}",
            random.below(last_offset + 1)
        )
    })
    .await?;
    report.list_first_page = time_gets(http, plan.page_requests, |_| {
        "/api/sessions?limit=100&offset=0".into()
    })
    .await?;
    report.list_last_page = time_gets(http, plan.page_requests, |_| {
        format!("/api/sessions?limit=100&offset={last_offset}")
    })
    .await?;
    let completed_last = total(http, "&status=completed").await?.saturating_sub(100);
    report.list_completed_random_page = time_gets(http, plan.page_requests, |_| {
        format!(
            "/api/sessions?status=completed&limit=100&offset={}",
            random.below(completed_last + 1)
        )
    })
    .await?;
    measure_history(http, plan, &mut report).await;
    Ok(report)
}

/// The history page may not exist yet in this build: its status is reported, not required.
async fn measure_history(http: &mut HttpClient, plan: &MeasurePlan, report: &mut SessionsReport) {
    let mut times = Vec::new();
    for _ in 0..plan.page_requests.min(20) {
        match http.get("/").await {
            Ok(response) => {
                report.history_status = response.status;
                report.history_bytes = response.body.len();
                times.push(response.elapsed);
            }
            Err(error) => {
                report.errors.push(format!("GET /: {error}"));
                break;
            }
        }
    }
    report.history_page = Percentiles::from_durations(&times);
}

async fn total(http: &mut HttpClient, filter: &str) -> Result<u64, String> {
    let response = http
        .get(&format!("/api/sessions?limit=1{filter}"))
        .await
        .map_err(|e| format!("list: {e}"))?;
    expect_ok(&response, "list")?;
    response
        .json()
        .ok()
        .and_then(|json| json["total"].as_u64())
        .ok_or_else(|| "list: no total".to_string())
}

async fn time_gets(
    http: &mut HttpClient,
    count: usize,
    mut path: impl FnMut(usize) -> String,
) -> Result<Percentiles, String> {
    let mut times: Vec<Duration> = Vec::with_capacity(count);
    for index in 0..count {
        let path = path(index);
        let response = http
            .get(&path)
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        expect_ok(&response, &path)?;
        times.push(response.elapsed);
    }
    Ok(Percentiles::from_durations(&times))
}

fn expect_ok(response: &crate::http::Response, what: &str) -> Result<(), String> {
    if response.status == 200 {
        return Ok(());
    }
    let body = String::from_utf8_lossy(&response.body);
    Err(format!(
        "{what}: http {}: {}",
        response.status,
        body.chars().take(200).collect::<String>()
    ))
}

/// A small deterministic generator for page offsets, so runs are comparable.
struct Lcg(u64);

impl Lcg {
    fn new(seed: u64) -> Lcg {
        Lcg(seed)
    }

    /// Uniform enough below `bound` (> 0) for picking pages.
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound.max(1)
    }
}
