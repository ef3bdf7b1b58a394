//! `GET /api/session/{id}/tracks/{name}.wav`: a consistent snapshot of a track as a playable
//! WAV (the store builds it: at least every acked byte, a header for exactly the data served),
//! streamed in chunks; single byte ranges are honoured.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::stream;

use super::extract::session_id;
use crate::audio::Snapshot;
use crate::db;
use crate::domain::TrackName;
use crate::error::ApiError;
use crate::state::AppState;

const CHUNK_BYTES: u64 = 256 * 1024;

pub fn configure(cfg: &mut actix_web::web::ServiceConfig) {
    cfg.service(web::resource("/api/session/{id}/tracks/{file}").get(track_wav));
}

async fn track_wav(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (id, file_name) = path.into_inner();
    let id = session_id(&id)?;
    let track = file_name
        .strip_suffix(".wav")
        .and_then(TrackName::parse)
        .ok_or_else(|| ApiError::NotFound("no track by that name".into()))?;
    let (session_key, track_key) = (id.clone(), track.clone());
    let known = state
        .db(move |conn| db::tracks::find(conn, &session_key, &track_key))
        .await?
        .is_some();
    if !known {
        return Err(ApiError::NotFound("no track by that name".into()));
    }
    let live_synced = state
        .registry
        .live_track(&id, track.as_str())
        .and_then(|live| live.synced());
    let (store, session, name) = (state.store.clone(), id.clone(), track.clone());
    let snapshot = web::block(move || store.snapshot(&session, &name, live_synced))
        .await?
        .map_err(|error| {
            tracing::warn!(session = %id, track = %track, %error, "a track's file cannot be read for download");
            ApiError::NotFound("the track's file cannot be read".into())
        })?;
    let total = snapshot.len();
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| parse_range(value, total));
    let disposition = format!("attachment; filename=\"{track}.wav\"");
    match range {
        None => Ok(respond(HttpResponse::Ok(), snapshot, 0, total, disposition)),
        Some(Err(())) => Ok(HttpResponse::RangeNotSatisfiable()
            .insert_header((header::CONTENT_RANGE, format!("bytes */{total}")))
            .json(serde_json::json!({"error": "range_not_satisfiable", "message": "the range is outside the file"}))),
        Some(Ok((start, end))) => {
            let mut builder = HttpResponse::PartialContent();
            builder.insert_header((
                header::CONTENT_RANGE,
                format!("bytes {start}-{}/{total}", end - 1),
            ));
            Ok(respond(builder, snapshot, start, end, disposition))
        }
    }
}

/// Streams bytes `start..end` of the snapshot, each chunk read on a blocking thread.
fn respond(
    mut builder: actix_web::HttpResponseBuilder,
    snapshot: Snapshot,
    start: u64,
    end: u64,
    disposition: String,
) -> HttpResponse {
    let snapshot = Arc::new(snapshot);
    let body = stream::unfold(start, move |position| {
        let snapshot = snapshot.clone();
        async move {
            if position >= end {
                return None;
            }
            let until = end.min(position + CHUNK_BYTES);
            let chunk = match web::block(move || snapshot.read(position, until)).await {
                Ok(Ok(buf)) => Ok(Bytes::from(buf)),
                Ok(Err(error)) => Err(actix_web::error::ErrorInternalServerError(error)),
                Err(error) => Err(actix_web::error::ErrorInternalServerError(error)),
            };
            Some((chunk, until))
        }
    });
    builder
        .content_type("audio/wav")
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::CONTENT_DISPOSITION, disposition))
        .no_chunking(end - start)
        .streaming(body)
}

/// One `bytes=` range as a half-open span; `None` to ignore the header (malformed or several
/// ranges: the whole file is served), `Some(Err)` when it cannot be satisfied.
fn parse_range(value: &str, total: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let number = |text: &str| super::extract::parse_plain_number(text);
    let span = if first.is_empty() {
        let suffix = number(last)?;
        if suffix == 0 || total == 0 {
            return Some(Err(()));
        }
        (total - suffix.min(total), total)
    } else {
        let start = number(first)?;
        let end = if last.is_empty() {
            total
        } else {
            // A last byte past the file (even u64::MAX) means "to the end".
            number(last)?.saturating_add(1).min(total)
        };
        if start >= total || start >= end {
            return if last.is_empty() || number(last)? >= start {
                Some(Err(()))
            } else {
                None
            };
        }
        (start, end)
    };
    Some(Ok(span))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(Ok((0, 10))));
        assert_eq!(parse_range("bytes=90-", 100), Some(Ok((90, 100))));
        assert_eq!(parse_range("bytes=-10", 100), Some(Ok((90, 100))));
        assert_eq!(parse_range("bytes=50-500", 100), Some(Ok((50, 100))));
        assert_eq!(parse_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=200-300", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=9-2", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }
}
