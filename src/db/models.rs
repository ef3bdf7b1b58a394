//! Rows as they are stored: plain types only, so every backend reads them alike.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{segments, sessions, tracks};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = sessions)]
pub struct SessionRow {
    pub id: String,
    pub title: String,
    pub status: String,
    pub created_at: NaiveDateTime,
    pub last_heartbeat: NaiveDateTime,
    pub completed_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = tracks)]
pub struct TrackRow {
    pub session_id: String,
    pub name: String,
    pub sample_rate: i32,
    pub channels: i32,
    pub format: String,
    pub data_bytes: i64,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = segments)]
pub struct SegmentRow {
    pub session_id: String,
    pub track_name: String,
    pub seq: i32,
    pub start_offset: i64,
    pub started_at: NaiveDateTime,
}
