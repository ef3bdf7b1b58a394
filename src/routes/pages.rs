//! The pages: `/` (the history, rendered here from the database), `/record` (the recorder's
//! shell; its logic lives in `static/`, served by `assets`).

use actix_web::web::{self, ServiceConfig};
use actix_web::HttpResponse;
use maud::{html, Markup};

use super::markup;
use crate::access;
use crate::db;
use crate::domain::SessionStatus;
use crate::error::ApiError;
use crate::lifecycle::{self, MAX_TITLE_CHARS};
use crate::state::AppState;
use crate::views::{SessionDetail, SessionView, TrackView};

/// The history shows the newest sessions; the API pages through the rest.
const HISTORY_LIMIT: i64 = 100;
/// The banner names this many interrupted sessions and counts the others.
const BANNER_LIMIT: i64 = 10;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.route("/", web::get().to(history))
        .route("/record", web::get().to(recorder));
}

/// What the history page shows: the newest sessions with their tracks, and the interrupted ones.
struct History {
    sessions: Vec<SessionDetail>,
    total: i64,
    incomplete: Vec<SessionView>,
    incomplete_total: i64,
}

async fn history(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let history = load_history(&state).await?;
    Ok(page(layout(
        "Recordings",
        Nav::History,
        "/static/history.js",
        history_body(&history),
    )))
}

async fn load_history(state: &AppState) -> Result<History, ApiError> {
    let (rows, total, incomplete_rows, incomplete_total) = state
        .db(|conn| {
            let (rows, total) = db::sessions::list(conn, None, HISTORY_LIMIT, 0)?;
            let (incomplete, incomplete_total) =
                db::sessions::list(conn, Some(SessionStatus::Incomplete), BANNER_LIMIT, 0)?;
            Ok((rows, total, incomplete, incomplete_total))
        })
        .await?;
    let mut sessions = Vec::with_capacity(rows.len());
    for row in &rows {
        match lifecycle::detail(state, &row.id).await {
            Ok(detail) => sessions.push(detail),
            // Deleted between the list and now: it is simply gone from the page.
            Err(ApiError::NotFound(_)) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(History {
        sessions,
        total,
        incomplete: incomplete_rows
            .iter()
            .map(|row| lifecycle::view(state, row))
            .collect(),
        incomplete_total,
    })
}

async fn recorder(state: web::Data<AppState>) -> HttpResponse {
    // Recording must start even when the database cannot answer: then the banner is left out.
    let (incomplete_rows, total) = state
        .db(|conn| db::sessions::list(conn, Some(SessionStatus::Incomplete), BANNER_LIMIT, 0))
        .await
        .unwrap_or_else(|error| {
            tracing::warn!(%error, "recorder page without its recovery banner");
            (Vec::new(), 0)
        });
    let incomplete: Vec<SessionView> = incomplete_rows
        .iter()
        .map(|row| lifecycle::view(&state, row))
        .collect();
    page(layout(
        "Record",
        Nav::Record,
        "/static/recorder.js",
        recorder_body(&incomplete, total),
    ))
}

fn page(markup: Markup) -> HttpResponse {
    access::html_page(HttpResponse::Ok(), markup)
}

#[derive(PartialEq, Eq)]
enum Nav {
    History,
    Record,
}

fn layout(title: &str, current: Nav, script: &str, body: Markup) -> Markup {
    let here = |nav: Nav| (nav == current).then_some("page");
    let header = html! {
        header.topbar {
            a.brand href="/" { "safetake" }
            nav {
                a href="/" aria-current=[here(Nav::History)] { "Recordings" }
                a href="/record" aria-current=[here(Nav::Record)] { "Record" }
            }
        }
    };
    markup::document(title, Some(script), None, header, body)
}

fn history_body(history: &History) -> Markup {
    html! {
        @if history.incomplete_total > 0 {
            (recovery_banner(&history.incomplete, history.incomplete_total))
        }
        div.page-head {
            h1 { "Recordings" }
            a.button.primary href="/record" { "New recording" }
        }
        p #action-message .message role="status" aria-live="polite" {}
        @if history.sessions.is_empty() {
            p.empty { "Nothing recorded yet. " a href="/record" { "Start a recording" } "." }
        }
        @for detail in &history.sessions {
            (session_card(detail))
        }
        @if history.total > history.sessions.len() as i64 {
            p.more {
                "Showing the newest " (history.sessions.len()) " of " (history.total) " sessions."
            }
        }
    }
}

/// The notice at the top of both pages: interrupted sessions, whose audio is safe, and what to
/// do with them. The recorder adds to it the sessions only its browser knows of (audio kept in
/// IndexedDB), filling in the item template below: the markup lives here alone.
fn recovery_banner(incomplete: &[SessionView], total: i64) -> Markup {
    html! {
        section #recovery .notice data-testid="recovery-banner" aria-label="Interrupted recordings" hidden[total == 0] {
            h2 {
                (total) " interrupted " (plural(total, "recording", "recordings"))
            }
            p { "Their audio is safe on disk. Resume to record more, or mark them complete." }
            ul #recovery-list .recovery-list {
                @for session in incomplete {
                    (recovery_item(&session.id, &session.title, &session.last_heartbeat))
                }
            }
            @if total > incomplete.len() as i64 {
                p.muted { "The others are in the list below." }
            }
            template #recovery-item { (recovery_item("", "", "")) }
        }
    }
}

fn recovery_item(id: &str, title: &str, last_heartbeat: &str) -> Markup {
    html! {
        li data-session-id=(id) {
            span.recovery-title { (title) }
            " "
            span.muted { "last heard " (time(last_heartbeat)) }
            " "
            strong.recovery-kept hidden {}
            span.actions { (resume_button(id)) (finish_button(id)) }
        }
    }
}

fn session_card(detail: &SessionDetail) -> Markup {
    let session = &detail.session;
    let status = session.status;
    html! {
        article.session data-testid="session" data-session-id=(session.id) data-status=(session.status) {
            div.session-head {
                span class={ "badge badge-" (session.status) } { (session.status) }
                h2.session-title { (session.title) }
            }
            p.times {
                "Started " (time(&session.created_at))
                " · last heard " (time(&session.last_heartbeat))
                @if let Some(completed) = &session.completed_at {
                    " · completed " (time(completed))
                }
                @if let Some(expires) = &session.expires_at {
                    span.expires data-testid="expires" { " · deleted " (time(expires)) " (retention)" }
                }
            }
            div.actions {
                @if status != SessionStatus::Completed {
                    (resume_button(&session.id))
                    (finish_button(&session.id))
                }
                @if !detail.tracks.is_empty() {
                    a.button data-testid="export" href={ "/api/session/" (session.id) "/export.zip" } download
                        title="Every track exactly as it was recorded, with session.json" {
                        "Export ZIP (as recorded)"
                    }
                    // Aligned: every track on the session's one timeline, ready for an editor.
                    a.button data-testid="export-aligned" href={ "/api/session/" (session.id) "/export.zip?aligned=true" } download
                        title="Every track on one timeline: same start and length, silence where nothing was captured, drift corrected (WAV)" {
                        "Export ZIP (aligned)"
                    }
                    a.button data-testid="export-aligned-flac" href={ "/api/session/" (session.id) "/export.zip?aligned=true&format=flac" } download
                        title="The aligned tracks as FLAC (lossless, about half the size)" {
                        "Export FLAC (aligned)"
                    }
                }
                // An active session is being recorded: it cannot be deleted (409).
                @if status != SessionStatus::Active {
                    button.danger type="button" data-testid="delete" data-action="delete" data-session-id=(session.id) {
                        "Delete"
                    }
                }
            }
            (tracks(session, &detail.tracks))
        }
    }
}

fn resume_button(id: &str) -> Markup {
    // A link, so Resume works without script; `role` makes it the button the contract names.
    html! {
        a.button role="button" data-testid="resume" href={ "/record?session=" (id) } {
            "Resume"
        }
    }
}

fn finish_button(id: &str) -> Markup {
    html! {
        button type="button" data-testid="finish" data-action="finish" data-session-id=(id) {
            "Mark complete"
        }
    }
}

fn tracks(session: &SessionView, tracks: &[TrackView]) -> Markup {
    let longest = tracks
        .iter()
        .map(|track| track.duration_ms)
        .max()
        .unwrap_or(0);
    html! {
        details.tracks {
            summary {
                @if tracks.is_empty() {
                    "No audio yet"
                } @else {
                    (tracks.len()) " " (plural(tracks.len() as i64, "track", "tracks"))
                    " · " (duration(longest))
                }
            }
            ul.track-list {
                @for track in tracks {
                    (track_item(session, track))
                }
            }
        }
    }
}

fn track_item(session: &SessionView, track: &TrackView) -> Markup {
    let url = format!("/api/session/{}/tracks/{}.wav", session.id, track.name);
    html! {
        li.track data-track=(track.name) {
            div.track-meta {
                strong { (track.name) }
                @if let Some(participant) = &track.participant {
                    span.participant { (participant) }
                }
                span { (human_size(track.size_bytes)) }
                span { (duration(track.duration_ms)) }
                span.muted { (track.sample_rate) " Hz" }
            }
            audio controls preload="none" src=(url) {}
            a href=(url) download={ (track.name) ".wav" } { "Download" }
        }
    }
}

fn recorder_body(incomplete: &[SessionView], total: i64) -> Markup {
    html! {
        (recovery_banner(incomplete, total))
        section.card.recorder {
            div.page-head {
                h1 #recorder-heading { "New recording" }
                span #session-line .session-line hidden {
                    "Session "
                    code #session-id data-testid="session-id" {}
                }
            }
            div.setup {
                label {
                    "Title"
                    input #title type="text" maxlength=(MAX_TITLE_CHARS) placeholder="Episode title";
                }
                label {
                    "Microphone"
                    select #mic-source { option value="" { "Default microphone" } }
                }
                label {
                    "Second source"
                    select #second-source {
                        option value="" { "None" }
                        option value="tab" { "Tab or screen audio" }
                    }
                }
            }
            div.controls {
                button #start .primary type="button" data-testid="start" { "Start recording" }
                button #stop type="button" data-testid="stop" disabled { "Stop" }
            }
            (markup::recording_stats())
            ul #tracks .live-tracks aria-label="Tracks" {}
            p #message .message role="status" aria-live="polite" {}
            section #result data-testid="result" hidden {
                h2 { "Saved" }
                p { "Every byte is on the server. The files, in its data directory:" }
                ul #result-files {}
                p { a href="/" { "See all recordings" } }
            }
        }
    }
}

/// An RFC 3339 time as a `<time>`: UTC text that the page's script shows in local time.
fn time(rfc3339: &str) -> Markup {
    let text = chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|at| at.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| rfc3339.to_string());
    html! { time datetime=(rfc3339) { (text) } }
}

fn plural<'a>(count: i64, one: &'a str, many: &'a str) -> &'a str {
    if count == 1 {
        one
    } else {
        many
    }
}

/// Bytes in decimal units, as file managers show them: `1.5 MB`.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 999.95 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `m:ss`, or `h:mm:ss` past an hour; rounded down like `durationMs`.
fn duration(millis: u64) -> String {
    let seconds = millis / 1000;
    let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if hours > 0 {
        format!("{hours}:{minutes:02}:{seconds:02}")
    } else {
        format!("{minutes}:{seconds:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_a_file_manager() {
        assert_eq!(human_size(44), "44 B");
        assert_eq!(human_size(1_500), "1.5 kB");
        assert_eq!(human_size(768_044), "768.0 kB");
        assert_eq!(human_size(999_999), "1.0 MB");
        assert_eq!(human_size(1_536_000_000), "1.5 GB");
    }

    #[test]
    fn durations_round_down_and_grow_hours() {
        assert_eq!(duration(0), "0:00");
        assert_eq!(duration(7_999), "0:07");
        assert_eq!(duration(61_000), "1:01");
        assert_eq!(duration(3_723_000), "1:02:03");
    }

    #[test]
    fn a_hostile_title_is_text() {
        let hostile = "<script>alert(1)</script>";
        let detail = SessionDetail {
            session: SessionView {
                id: "7f1c0f5e-3c1a-4a55-9c55-1b1d5d7c2a10".into(),
                title: hostile.into(),
                status: SessionStatus::Incomplete,
                created_at: "2026-11-25T16:37:35.123Z".into(),
                last_heartbeat: "2026-11-25T16:38:00.000Z".into(),
                completed_at: None,
                stop_requested_at: None,
                expires_at: None,
            },
            tracks: Vec::new(),
        };
        let markup = session_card(&detail).into_string();
        assert!(!markup.contains(hostile));
        assert!(markup.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    }

    #[test]
    fn times_show_utc_minutes() {
        let markup = time("2026-11-25T16:37:35.123Z").into_string();
        assert_eq!(
            markup,
            "<time datetime=\"2026-11-25T16:37:35.123Z\">2026-11-25 16:37 UTC</time>"
        );
    }
}
