//! Export and import: `GET /api/session/{id}/export.zip` streams a session as one ZIP (as
//! stored, or `?aligned=true` on one timeline, `&format=flac` as FLAC), and
//! `POST /api/sessions/import` makes a new completed session from one.

use std::io::{self, Write};

use actix_web::http::header;
use actix_web::web::{self, Bytes, ServiceConfig};
use actix_web::HttpResponse;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::extract::session_id;
use crate::audio::archive::{self, ExportOptions, ExportTrack};
use crate::db;
use crate::db::marks::Mark;
use crate::domain::{parse_timestamp, SessionId, TrackName};
use crate::error::ApiError;
use crate::ingest::registry::Registry;
use crate::lifecycle;
use crate::state::AppState;
use crate::views::SessionDetail;

/// An upload larger than this is refused: 16 tracks of the largest WAV, and some room.
const MAX_IMPORT_BYTES: u64 = 16 * (4 << 30) + (1 << 20);
/// How far outside the session's life a mark's capture time may be (clock estimates err).
const MARK_SLACK_MS: f64 = 3_600_000.0;
/// Bytes handed to the response per message; a few in flight bound the memory an export takes.
const EXPORT_CHUNK: usize = 256 * 1024;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(web::resource("/api/session/{id}/export.zip").get(export))
        .service(web::resource("/api/sessions/import").post(import));
}

#[derive(Deserialize)]
struct ExportQuery {
    aligned: Option<String>,
    format: Option<String>,
}

impl ExportQuery {
    /// `aligned` is `true` or `false`, `format` is `wav` or `flac`; both may be left out.
    fn options(&self) -> Result<ExportOptions, ApiError> {
        let aligned = match self.aligned.as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ApiError::InvalidFormat(format!(
                    "aligned is true or false, not {other:?}"
                )))
            }
        };
        let flac = match self.format.as_deref() {
            None | Some("wav") => false,
            Some("flac") => true,
            Some(other) => {
                return Err(ApiError::InvalidFormat(format!(
                    "an export's format is wav or flac, not {other:?}"
                )))
            }
        };
        Ok(ExportOptions { aligned, flac })
    }
}

async fn export(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<ExportQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = session_id(&path)?;
    let options = query.options()?;
    let detail = lifecycle::detail(&state, &id).await?;
    let (manifest, marks) = manifest(&state, &id, &detail).await?;
    let tracks: Vec<ExportTrack> = detail
        .tracks
        .iter()
        .zip(marks)
        .filter_map(|(track, marks)| {
            let name = TrackName::parse(&track.name)?;
            let live_synced = state
                .registry
                .live_track(&id, name.as_str())
                .and_then(|live| live.synced());
            let segments = track
                .segments
                .iter()
                .filter_map(|segment| {
                    parse_timestamp(&segment.started_at).map(|at| (segment.offset, epoch_ms(at)))
                })
                .collect();
            Some(ExportTrack {
                name,
                live_synced,
                marks,
                segments,
            })
        })
        .collect();
    let fallback_ms = parse_timestamp(&detail.session.created_at).map_or(0.0, epoch_ms);
    // A capture time from before the session existed or from the future is a client's broken
    // clock (or a hostile one): it would make the aligned span days long. Such marks are left
    // out; the track is then placed by its other marks, or by its segments.
    let plausible = (
        fallback_ms - MARK_SLACK_MS,
        epoch_ms(chrono::Utc::now().naive_utc()) + MARK_SLACK_MS,
    );
    let tracks: Vec<ExportTrack> = tracks
        .into_iter()
        .map(|mut track| {
            track
                .marks
                .retain(|mark| (plausible.0..=plausible.1).contains(&mark.captured_at));
            track
        })
        .collect();
    let (sender, receiver) = mpsc::channel::<io::Result<Bytes>>(4);
    let store = state.store.clone();
    let session = id.clone();
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter::new(sender.clone());
        let written = archive::write_export(
            &store,
            &session,
            &tracks,
            options,
            fallback_ms,
            manifest,
            &mut out,
        )
        .and_then(|()| out.flush());
        if let Err(error) = written {
            tracing::warn!(session = %session, %error, "export stopped");
            // The client sees a cut-off archive rather than a complete-looking one.
            let _ = sender.blocking_send(Err(error));
        }
    });
    let body = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });
    let suffix = match (options.aligned, options.flac) {
        (false, false) => "",
        (false, true) => " flac",
        (true, false) => " aligned",
        (true, true) => " aligned flac",
    };
    Ok(HttpResponse::Ok()
        .content_type("application/zip")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!(
                "attachment; filename=\"{}.zip\"",
                file_name(&format!("{}{suffix}", detail.session.title))
            ),
        ))
        .streaming(body))
}

/// Milliseconds since the Unix epoch, as marks count time.
fn epoch_ms(at: chrono::NaiveDateTime) -> f64 {
    at.and_utc().timestamp_micros() as f64 / 1000.0
}

/// `session.json`: the Session as `GET /api/session/{id}` shows it, each track with its marks
/// (stored and pending) as `GET .../marks` shows them; and those marks, track by track.
async fn manifest(
    state: &AppState,
    id: &SessionId,
    detail: &SessionDetail,
) -> Result<(serde_json::Value, Vec<Vec<Mark>>), ApiError> {
    let storage = |error: serde_json::Error| ApiError::Storage(error.to_string());
    // Pending first, as the marks route does: a batch written in between shows at least once.
    let pending: Vec<_> = detail
        .tracks
        .iter()
        .map(|track| {
            TrackName::parse(&track.name)
                .map(|name| state.registry.pending_marks(id, &name))
                .unwrap_or_default()
        })
        .collect();
    let key = id.clone();
    let stored = state
        .db(move |conn| db::marks::for_session(conn, &key))
        .await?;
    let mut value = serde_json::to_value(detail).map_err(storage)?;
    let mut all = Vec::new();
    for (track, pending) in detail.tracks.iter().zip(pending) {
        let of_track = stored
            .iter()
            .filter(|(name, _)| *name == track.name)
            .map(|(_, mark)| *mark)
            .collect();
        all.push(Registry::merge_marks(of_track, pending));
    }
    if let Some(tracks) = value.get_mut("tracks").and_then(|t| t.as_array_mut()) {
        for (track, marks) in tracks.iter_mut().zip(&all) {
            if let Some(object) = track.as_object_mut() {
                object.insert(
                    "marks".into(),
                    serde_json::to_value(marks).map_err(storage)?,
                );
            }
        }
    }
    Ok((value, all))
}

/// The title as a file name any system takes: letters, digits, space, `.`, `_` and `-`.
fn file_name(title: &str) -> String {
    let name: String = title
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, ' ' | '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    let name = name.trim().trim_start_matches('.');
    if name.is_empty() {
        "session".into()
    } else {
        name.into()
    }
}

/// A `Write` that hands the export to the response in chunks, waiting while the client is slow.
struct ChannelWriter {
    sender: mpsc::Sender<io::Result<Bytes>>,
    buffer: Vec<u8>,
}

impl ChannelWriter {
    fn new(sender: mpsc::Sender<io::Result<Bytes>>) -> ChannelWriter {
        ChannelWriter {
            sender,
            buffer: Vec::with_capacity(EXPORT_CHUNK),
        }
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= EXPORT_CHUNK {
            self.flush()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(EXPORT_CHUNK),
        ));
        self.sender
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

async fn import(
    state: web::Data<AppState>,
    mut body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let store = state.store.clone();
    let staging = web::block(move || store.staging_dir())
        .await?
        .map_err(|error| ApiError::Storage(error.to_string()))?;
    let upload = staging.with_extension("upload");
    let imported = async {
        let mut file = tokio::fs::File::create(&upload)
            .await
            .map_err(|error| ApiError::Storage(error.to_string()))?;
        let mut received = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|error| {
                ApiError::InvalidArchive(format!("the upload broke off: {error}"))
            })?;
            received += chunk.len() as u64;
            if received > MAX_IMPORT_BYTES {
                return Err(ApiError::InvalidArchive(
                    "the upload is larger than any session".into(),
                ));
            }
            file.write_all(&chunk)
                .await
                .map_err(|error| ApiError::Storage(error.to_string()))?;
        }
        file.flush()
            .await
            .map_err(|error| ApiError::Storage(error.to_string()))?;
        let (from, into) = (upload.clone(), staging.clone());
        let staged = web::block(move || archive::stage_import(&from, &into))
            .await?
            .map_err(|refused| ApiError::InvalidArchive(refused.to_string()))?;
        lifecycle::import(&state, staged).await
    }
    .await;
    let (store, dir, file) = (state.store.clone(), staging, upload);
    let _ = web::block(move || {
        let _ = std::fs::remove_file(&file);
        store.discard_staging(&dir);
    })
    .await;
    let row = imported?;
    Ok(HttpResponse::Created().json(lifecycle::view(&state, &row)))
}
