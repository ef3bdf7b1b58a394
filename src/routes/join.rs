//! `GET /join/<token>`: a guest's page. A working link sets the invite cookie (so the page's
//! requests and socket carry the token) and serves the page's shell, whose logic lives in
//! `static/join.js`; a link that no longer works gets a page that says the recording ended.
//! A real invite's ended page still loads `static/join.js`, with the session and track, so a
//! guest who reopens the link finds what their browser kept and can download it.

use actix_web::web::{self, ServiceConfig};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use maud::{html, Markup};

use super::markup;
use crate::access;
use crate::audio::AudioFormat;
use crate::db;
use crate::db::models::SessionRow;
use crate::domain::TrackName;
use crate::error::ApiError;
use crate::guests::{self, Guest, TokenCheck};
use crate::state::AppState;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(web::resource("/join/{token}").get(join_page));
}

async fn join_page(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let token = path.into_inner();
    match guests::check_token(&state, &token).await? {
        TokenCheck::Valid(guest, session) => {
            let (key, track) = (guest.session.clone(), guest.track.clone());
            let stored = state
                .db(move |conn| db::tracks::find(conn, &key, &track))
                .await?;
            let format = stored.as_ref().map(|track| track.format);
            let secure = req.connection_info().scheme() == "https";
            let mut builder = HttpResponse::Ok();
            builder.cookie(access::invite_cookie(&token, &guest.session, secure));
            Ok(access::html_page(
                builder,
                guest_page(&session, &guest, format),
            ))
        }
        TokenCheck::Ended(session) => {
            // The token is a real invite's (checked above): its track, for the page's rescue.
            let hash = guests::token_hash(&token);
            let track = state
                .db(move |conn| db::invites::find_by_token_hash(conn, &hash))
                .await?
                .map(|(invite, _)| invite.track);
            Ok(ended(
                HttpResponse::Gone(),
                Some((&session, track.as_ref())),
            ))
        }
        TokenCheck::Unknown => {
            access::count_failed_invite(&req);
            Ok(ended(HttpResponse::NotFound(), None))
        }
    }
}

fn layout(title: &str, body: Markup, script: bool) -> Markup {
    let script = script.then_some("/static/join.js");
    markup::document(title, script, Some("guest"), html! {}, body)
}

/// The shell `static/join.js` drives. Its data attributes: the session, the track and the
/// format a socket opens it with (the stored track's, or the defaults for a new track).
fn guest_page(session: &SessionRow, guest: &Guest, stored: Option<AudioFormat>) -> Markup {
    let format = stored.unwrap_or(AudioFormat::DEFAULT);
    let body = html! {
        section.card.guest-page #guest
            data-session-id=(session.id)
            data-track=(guest.track)
            data-name=(guest.name)
            data-title=(session.title)
            data-track-exists=(stored.is_some())
            data-sample-rate=(format.sample_rate)
            data-channels=(format.channels)
            data-format=(format.sample.as_str()) {
            p.muted { "You are invited to record" }
            h1 #session-title { (session.title) }
            p { "as " strong #guest-name { (guest.name) } " (track " code { (guest.track) } ")" }
            p #guest-state .guest-state data-testid="guest-state" { "ready" }
            div.setup {
                label {
                    "Microphone"
                    select #mic-source { option value="" { "Default microphone" } }
                }
                meter #level min="-60" max="0" value="-60" {}
            }
            div.controls {
                // Enabled by the script's own button: a click on this one before `join.js` has
                // replaced the shell would do nothing.
                button #join .primary type="button" data-testid="join" disabled { "Join" }
                button #leave type="button" data-testid="leave" disabled { "Leave" }
            }
            (markup::recording_stats())
            p #message .message role="status" aria-live="polite" {}
            section #leftover hidden {}
        }
    };
    layout(&session.title, body, true)
}

/// An unknown or revoked link, or an ended session. A real invite's page carries its session
/// and track (`data-state="ended"`) and loads `static/join.js`, which offers as a WAV file
/// whatever of that track this browser still holds; an unknown link's page has no script.
fn ended(
    builder: HttpResponseBuilder,
    invite: Option<(&SessionRow, Option<&TrackName>)>,
) -> HttpResponse {
    let session = invite.map(|(session, _)| session);
    let track = invite.and_then(|(_, track)| track);
    let body = html! {
        section.card.guest-page
            data-session-id=[session.map(|session| &session.id)]
            data-track=[track]
            data-title=[session.map(|session| &session.title)]
            data-state=[session.map(|_| "ended")] {
            @if let Some(session) = session {
                h1 { (session.title) }
            }
            p #guest-state .guest-state data-testid="guest-state" { "ended" }
            p {
                @if session.is_some() {
                    "This recording has ended, or this link was withdrawn. Thank you!"
                } @else {
                    "This link does not work (any more). Ask the host for a new one."
                }
            }
        }
    };
    access::html_page(builder, layout("Recording ended", body, track.is_some()))
}
