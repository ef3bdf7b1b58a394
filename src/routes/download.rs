//! `GET /api/session/{id}/tracks/{name}.wav`: a consistent snapshot of a track as a playable
//! WAV. The header is built for the data served (at least every acked byte), so a track that
//! is still growing downloads as a valid file; single byte ranges are honoured.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;

use actix_web::http::header;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::stream;

use super::api::session_id;
use crate::audio::wav;
use crate::db;
use crate::domain::TrackName;
use crate::error::ApiError;
use crate::state::AppState;

const CHUNK_BYTES: u64 = 256 * 1024;

pub async fn track_wav(
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
    let (session_key, track_key) = (id.to_string(), track.to_string());
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
        .map(|live| live.synced.load(Ordering::Acquire));
    let file_path = state.registry.track_path(&id, &track);
    let snapshot = web::block(move || Snapshot::open(&file_path, live_synced))
        .await?
        .map_err(|error| ApiError::NotFound(format!("the track's file cannot be read: {error}")))?;
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| parse_range(value, snapshot.total_len()));
    let disposition = format!("attachment; filename=\"{track}.wav\"");
    match range {
        None => Ok(snapshot.respond(HttpResponse::Ok(), 0, snapshot.total_len(), disposition)),
        Some(Err(())) => Ok(HttpResponse::RangeNotSatisfiable()
            .insert_header((header::CONTENT_RANGE, format!("bytes */{}", snapshot.total_len())))
            .json(serde_json::json!({"error": "range_not_satisfiable", "message": "the range is outside the file"}))),
        Some(Ok((start, end))) => {
            let mut builder = HttpResponse::PartialContent();
            builder.insert_header((
                header::CONTENT_RANGE,
                format!("bytes {start}-{}/{}", end - 1, snapshot.total_len()),
            ));
            Ok(snapshot.respond(builder, start, end, disposition))
        }
    }
}

/// The header for `data_len` bytes, and the file those bytes are read from.
struct Snapshot {
    header: Bytes,
    file: std::sync::Arc<File>,
    data_start: u64,
    data_len: u64,
}

impl Snapshot {
    /// Takes the whole blocks on disk, no more than the writer has synced if the track is live.
    fn open(path: &std::path::Path, live_synced: Option<u64>) -> std::io::Result<Snapshot> {
        let file = File::open(path)?;
        let file_len = file.metadata()?.len();
        let layout = wav::read_layout(file_len, |buf, pos| file.read_exact_at(buf, pos))?;
        let on_disk = file_len.saturating_sub(layout.data_start);
        let whole = on_disk - on_disk % layout.format.block_size();
        let data_len = live_synced
            .map_or(whole, |synced| synced.min(whole))
            .min(layout.max_data_bytes());
        Ok(Snapshot {
            header: Bytes::from(wav::header(layout.format, data_len)),
            file: std::sync::Arc::new(file),
            data_start: layout.data_start,
            data_len,
        })
    }

    fn total_len(&self) -> u64 {
        self.header.len() as u64 + self.data_len
    }

    /// Streams bytes `start..end` of header-then-data, reading the file on blocking threads.
    fn respond(
        &self,
        mut builder: actix_web::HttpResponseBuilder,
        start: u64,
        end: u64,
        disposition: String,
    ) -> HttpResponse {
        let header_len = self.header.len() as u64;
        let header_part = if start < header_len {
            self.header
                .slice(start as usize..end.min(header_len) as usize)
        } else {
            Bytes::new()
        };
        let file = self.file.clone();
        let data_start = self.data_start;
        let first_data = start.max(header_len) - header_len;
        let data_end = end.saturating_sub(header_len);
        let head = stream::once(async move { Ok::<Bytes, actix_web::Error>(header_part) });
        let body = stream::unfold(first_data, move |position| {
            let file = file.clone();
            async move {
                if position >= data_end {
                    return None;
                }
                let len = (data_end - position).min(CHUNK_BYTES);
                let read = web::block(move || {
                    let mut buf = vec![0u8; len as usize];
                    file.read_exact_at(&mut buf, data_start + position)
                        .map(|_| buf)
                })
                .await;
                let chunk = match read {
                    Ok(Ok(buf)) => Ok(Bytes::from(buf)),
                    Ok(Err(error)) => Err(actix_web::error::ErrorInternalServerError(error)),
                    Err(error) => Err(actix_web::error::ErrorInternalServerError(error)),
                };
                Some((chunk, position + len))
            }
        });
        use futures_util::StreamExt;
        builder
            .content_type("audio/wav")
            .insert_header((header::ACCEPT_RANGES, "bytes"))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::CONTENT_DISPOSITION, disposition))
            .no_chunking(end - start)
            .streaming(head.chain(body))
    }
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
    let number = |text: &str| super::api::parse_plain_number(text);
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
            number(last)?.checked_add(1)?.min(total)
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
