//! The JSON shapes of the contract (camelCase), built from rows plus what is live in memory.

use chrono::NaiveDateTime;
use serde::Serialize;

use crate::audio::{wav, TrackStore};
use crate::db::models::{InviteRow, SegmentRow, SessionRow, TrackRow};
use crate::domain::{format_timestamp, SessionStatus};
use crate::ingest::TrackShared;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    pub id: String,
    pub title: String,
    pub status: SessionStatus,
    pub created_at: String,
    pub last_heartbeat: String,
    pub completed_at: Option<String>,
    pub stop_requested_at: Option<String>,
    /// When `--retention` deletes it: completed sessions only, null without retention.
    pub expires_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionDetail {
    #[serde(flatten)]
    pub session: SessionView,
    pub tracks: Vec<TrackView>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackView {
    pub name: String,
    pub path: String,
    pub size_bytes: u64,
    pub data_bytes: u64,
    pub sample_rate: u32,
    pub channels: u16,
    pub format: String,
    pub duration_ms: u64,
    pub connected: bool,
    pub segments: Vec<SegmentView>,
    pub participant: Option<String>,
    pub client_backlog_bytes: Option<u64>,
    pub done: bool,
}

/// What a track has of guests: who records it (an invite's name) and what its client holds.
#[derive(Debug, Clone, Default)]
pub struct Guest {
    pub participant: Option<String>,
    pub client_backlog_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentView {
    pub offset: u64,
    pub started_at: String,
}

/// A session as stored, with the heartbeat heard in memory if it is newer, and when
/// `retention` (if any) will delete it.
pub fn session_view(
    row: &SessionRow,
    live_heartbeat: Option<NaiveDateTime>,
    retention: Option<std::time::Duration>,
) -> SessionView {
    let expires_at = match (row.status, row.completed_at, retention) {
        (SessionStatus::Completed, Some(completed), Some(retention)) => {
            chrono::Duration::from_std(retention)
                .ok()
                .and_then(|retention| completed.checked_add_signed(retention))
                .map(format_timestamp)
        }
        _ => None,
    };
    let heartbeat = live_heartbeat.map_or(row.last_heartbeat, |live| live.max(row.last_heartbeat));
    SessionView {
        id: row.id.to_string(),
        title: row.title.clone(),
        status: row.status,
        created_at: format_timestamp(row.created_at),
        last_heartbeat: format_timestamp(heartbeat),
        completed_at: row.completed_at.map(format_timestamp),
        stop_requested_at: row.stop_requested_at.map(format_timestamp),
        expires_at,
    }
}

/// A track from its row, its segments, its size on disk, (if live) its writer's counters and
/// its guest.
pub fn track_view(
    row: &TrackRow,
    segments: &[SegmentRow],
    size_on_disk: Option<u64>,
    live: Option<&TrackShared>,
    guest: Guest,
) -> TrackView {
    let format = row.format;
    let data_bytes = live
        .and_then(TrackShared::written)
        .unwrap_or(row.data_bytes);
    let size_bytes = size_on_disk.unwrap_or_else(|| wav::header_len(format) + data_bytes);
    TrackView {
        name: row.name.to_string(),
        path: TrackStore::relative_track_path(&row.session_id, &row.name),
        size_bytes,
        data_bytes,
        sample_rate: format.sample_rate,
        channels: format.channels,
        format: format.sample.to_string(),
        duration_ms: format.duration_ms(data_bytes),
        connected: live.is_some_and(TrackShared::connected),
        segments: segments
            .iter()
            .filter(|segment| segment.track_name == row.name)
            .map(|segment| SegmentView {
                offset: segment.start_offset,
                started_at: format_timestamp(segment.started_at),
            })
            .collect(),
        participant: guest.participant,
        client_backlog_bytes: guest.client_backlog_bytes,
        done: row.done,
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InviteView {
    pub id: String,
    pub track: String,
    pub name: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
    /// At creation only: the token (never stored) and the join link built from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// An invite as listed: without its token, which the server does not have.
pub fn invite_view(row: &InviteRow) -> InviteView {
    InviteView {
        id: row.id.to_string(),
        track: row.track.to_string(),
        name: row.name.clone(),
        created_at: format_timestamp(row.created_at),
        revoked_at: row.revoked_at.map(format_timestamp),
        token: None,
        url: None,
    }
}
