//! A session as one ZIP: writing it (every track as stored plus `session.json`, streamed, never
//! held whole in memory) and reading one back for import, refusing anything export would not
//! have made. Everything here blocks: callers run it on blocking threads.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use super::align::{self, Span, Timeline};
use super::flac::FlacWriter;
use super::store::{Snapshot, TrackStore};
use super::{wav, AudioFormat, SampleFormat};
use crate::db::marks::Mark;
use crate::domain::{parse_timestamp, SessionId, TrackName};

/// The manifest's name inside the archive.
pub const MANIFEST: &str = "session.json";
/// A session holds at most 16 tracks; an archive with more entries than this is not ours.
const MAX_ENTRIES: usize = 17;
const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;
const COPY_CHUNK: u64 = 256 * 1024;

/// What an export holds: the tracks as stored or placed on the session's timeline, as WAV or
/// FLAC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportOptions {
    pub aligned: bool,
    pub flac: bool,
}

/// One track to export: its writer's synced count if it is live (a growing track is capped at
/// it), and for an aligned export where its samples sit in time: its marks and its segments
/// (`(offset, startedAt in ms since the epoch)`).
#[derive(Debug, Clone)]
pub struct ExportTrack {
    pub name: TrackName,
    pub live_synced: Option<u64>,
    pub marks: Vec<Mark>,
    pub segments: Vec<(u64, f64)>,
}

/// Writes the archive: each track's consistent snapshot as `<track>.wav` (or `.flac`), then
/// `manifest` as `session.json` (for an aligned export with the common span added as
/// `timeline`). Entries are stored, not compressed: PCM barely compresses, and the stream stays
/// as fast as the disk. `fallback_ms` places a track that has neither marks nor segments.
pub fn write_export<W: Write>(
    store: &TrackStore,
    session: &SessionId,
    tracks: &[ExportTrack],
    options: ExportOptions,
    fallback_ms: f64,
    mut manifest: serde_json::Value,
    out: W,
) -> io::Result<()> {
    let mut zip = ZipWriter::new_stream(out);
    // Every snapshot first: the aligned span is computed from the same bytes that are written.
    let snapshots = tracks
        .iter()
        .map(|track| store.snapshot(session, &track.name, track.live_synced))
        .collect::<io::Result<Vec<_>>>()?;
    let timelines: Vec<Timeline> = tracks
        .iter()
        .zip(&snapshots)
        .map(|(track, snapshot)| {
            Timeline::of_track(
                snapshot.format(),
                snapshot.data_len(),
                &track.marks,
                &track.segments,
                fallback_ms,
            )
        })
        .collect();
    let span = Span::of(&timelines).unwrap_or(Span {
        start_ms: fallback_ms,
        end_ms: fallback_ms,
    });
    let extension = if options.flac { "flac" } else { "wav" };
    for ((track, snapshot), timeline) in tracks.iter().zip(&snapshots).zip(&timelines) {
        let format = snapshot.format();
        let layout = wav::Layout::of(format);
        let frames = if options.aligned {
            span.frames(format)
        } else {
            snapshot.data_len() / format.block_size()
        };
        // A WAV holds at most 4 GiB of data; FLAC has no such limit.
        let frames = if options.flac {
            frames
        } else {
            frames.min(layout.max_data_bytes() / format.block_size())
        };
        let data_bytes = frames * format.block_size();
        // The WAV's size, or for FLAC a bound of it.
        let bound = layout.data_start + data_bytes;
        zip.start_file(format!("{}.{extension}", track.name), entry_options(bound))
            .map_err(io::Error::other)?;
        let pcm = |out: &mut dyn Write| {
            if options.aligned {
                align::render(timeline, span, frames, snapshot, out)
            } else {
                copy_data(snapshot, out)
            }
        };
        if options.flac {
            let mut flac = FlacWriter::new(&mut zip, format, frames)?;
            pcm(&mut flac)?;
            flac.finish()?;
        } else if options.aligned {
            zip.write_all(&wav::header(format, data_bytes))?;
            pcm(&mut zip)?;
        } else {
            copy_snapshot(snapshot, &mut zip)?;
        }
    }
    if options.aligned {
        if let Some(object) = manifest.as_object_mut() {
            object.insert(
                "timeline".into(),
                serde_json::json!({"startMs": span.start_ms, "endMs": span.end_ms}),
            );
        }
    }
    let manifest = serde_json::to_vec_pretty(&manifest).map_err(io::Error::other)?;
    zip.start_file(MANIFEST, entry_options(manifest.len() as u64))
        .map_err(io::Error::other)?;
    zip.write_all(&manifest)?;
    zip.finish().map_err(io::Error::other)?.flush()
}

/// A snapshot's PCM data, without its header.
fn copy_data(snapshot: &Snapshot, out: &mut dyn Write) -> io::Result<()> {
    let header_len = snapshot.len() - snapshot.data_len();
    let mut position = header_len;
    while position < snapshot.len() {
        let end = (position + COPY_CHUNK).min(snapshot.len());
        out.write_all(&snapshot.read(position, end)?)?;
        position = end;
    }
    Ok(())
}

fn entry_options(len: u64) -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .large_file(len >= u64::from(u32::MAX))
        .unix_permissions(0o644)
}

fn copy_snapshot(snapshot: &Snapshot, out: &mut impl Write) -> io::Result<()> {
    let mut position = 0;
    while position < snapshot.len() {
        let end = (position + COPY_CHUNK).min(snapshot.len());
        out.write_all(&snapshot.read(position, end)?)?;
        position = end;
    }
    Ok(())
}

/// Why an archive was refused; the message is for people.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidArchive(pub String);

fn refuse(message: impl Into<String>) -> InvalidArchive {
    InvalidArchive(message.into())
}

/// What `session.json` must say for an import; other fields are ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub title: String,
    pub created_at: String,
    pub tracks: Vec<ManifestTrack>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestTrack {
    pub name: String,
    pub sample_rate: u32,
    pub channels: u16,
    pub format: String,
    pub data_bytes: u64,
    pub segments: Vec<ManifestSegment>,
    #[serde(default)]
    pub done: bool,
    /// Absent in archives made before marks were stored.
    #[serde(default)]
    pub marks: Vec<ManifestMark>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestMark {
    pub offset: u64,
    pub captured_at: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestSegment {
    pub offset: u64,
    pub started_at: String,
}

/// A checked import: the manifest's values as types, and the staging directory holding every
/// track's file, ready to become the new session's directory.
#[derive(Debug)]
pub struct Staged {
    pub title: String,
    pub created_at: chrono::NaiveDateTime,
    pub tracks: Vec<StagedTrack>,
    pub dir: PathBuf,
}

#[derive(Debug)]
pub struct StagedTrack {
    pub name: TrackName,
    pub format: AudioFormat,
    pub data_bytes: u64,
    pub segments: Vec<(u64, chrono::NaiveDateTime)>,
    pub done: bool,
    pub marks: Vec<Mark>,
}

/// Reads an uploaded archive and extracts its tracks into `dir` (a fresh staging directory
/// inside the data directory). Only what export makes is taken: stored entries named
/// `session.json` and `<track>.wav`, each track listed in the manifest with a WAV whose header
/// is exactly the one this server writes for that format and size. Sizes are checked against
/// the declared ones before and while copying, so a lying entry cannot fill the disk.
pub fn stage_import(archive: &Path, dir: &Path) -> Result<Staged, InvalidArchive> {
    let file = File::open(archive).map_err(|e| refuse(format!("cannot read the upload: {e}")))?;
    let declared = declared_entries(&file);
    let mut zip = ZipArchive::new(file).map_err(|e| refuse(format!("not a ZIP archive: {e}")))?;
    if zip.len() > MAX_ENTRIES {
        return Err(refuse("more entries than a session has tracks"));
    }
    // The reader keeps one entry per name: a count that differs means names appear twice.
    if declared != Some(zip.len() as u64) {
        return Err(refuse("entries appear twice, or the directory is damaged"));
    }
    let mut names = HashSet::new();
    for index in 0..zip.len() {
        let entry = zip
            .by_index_raw(index)
            .map_err(|e| refuse(format!("a damaged entry: {e}")))?;
        let name = entry
            .name()
            .map_err(|_| refuse("an entry name is not UTF-8"))?
            .to_string();
        if entry.is_dir() || entry.is_symlink() || !entry.is_file() {
            return Err(refuse(format!("{name:?} is not a plain file")));
        }
        if entry.compression() != CompressionMethod::Stored {
            return Err(refuse(format!(
                "{name:?} is compressed; export stores entries"
            )));
        }
        if name != MANIFEST && track_of_entry(&name).is_none() {
            return Err(refuse(format!("{name:?} is not a track or session.json")));
        }
        if !names.insert(name.clone()) {
            return Err(refuse(format!("{name:?} appears twice")));
        }
    }
    let manifest = read_manifest(&mut zip)?;
    let staged = check_manifest(manifest, dir)?;
    if names.len() != staged.tracks.len() + 1 {
        return Err(refuse("the archive holds files the manifest does not list"));
    }
    for track in &staged.tracks {
        extract_track(&mut zip, track, &dir.join(format!("{}.wav", track.name)))?;
    }
    Ok(staged)
}

/// The entry count the archive's end-of-central-directory record declares.
fn declared_entries(file: &File) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    const EOCD: [u8; 4] = [0x50, 0x4b, 0x05, 0x06];
    let len = file.metadata().ok()?.len();
    // The record is 22 bytes plus a comment of at most 64 KiB, at the very end.
    let tail_len = len.min(22 + 65_535);
    let mut tail = vec![0u8; tail_len as usize];
    file.read_exact_at(&mut tail, len - tail_len).ok()?;
    let at = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..i + 4] == EOCD)?;
    Some(u64::from(u16::from_le_bytes([
        tail[at + 10],
        tail[at + 11],
    ])))
}

fn track_of_entry(name: &str) -> Option<TrackName> {
    name.strip_suffix(".wav").and_then(TrackName::parse)
}

fn read_manifest<R: Read + Seek>(zip: &mut ZipArchive<R>) -> Result<Manifest, InvalidArchive> {
    let entry = zip
        .by_name(MANIFEST)
        .map_err(|_| refuse("session.json is missing"))?;
    if entry.size() > MAX_MANIFEST_BYTES {
        return Err(refuse("session.json is too large"));
    }
    let mut text = Vec::new();
    entry
        .take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| refuse(format!("session.json cannot be read: {e}")))?;
    serde_json::from_slice(&text).map_err(|e| refuse(format!("session.json is not a session: {e}")))
}

fn check_manifest(manifest: Manifest, dir: &Path) -> Result<Staged, InvalidArchive> {
    let created_at = parse_timestamp(&manifest.created_at)
        .ok_or_else(|| refuse("session.json: createdAt is not a timestamp"))?;
    if manifest.tracks.len() > MAX_ENTRIES - 1 {
        return Err(refuse("session.json: more tracks than a session holds"));
    }
    let mut seen = HashSet::new();
    let mut tracks = Vec::new();
    for track in manifest.tracks {
        let name = TrackName::parse(&track.name).ok_or_else(|| {
            refuse(format!(
                "session.json: {:?} is not a track name",
                track.name
            ))
        })?;
        if !seen.insert(name.clone()) {
            return Err(refuse(format!("session.json: {name} appears twice")));
        }
        let sample: SampleFormat = track.format.parse().map_err(|_| {
            refuse(format!(
                "session.json: {name} has format {:?}",
                track.format
            ))
        })?;
        let format = AudioFormat::new(track.sample_rate, track.channels, sample)
            .ok_or_else(|| refuse(format!("session.json: {name} has an unsupported format")))?;
        let layout = wav::Layout::of(format);
        if track.data_bytes % format.block_size() != 0 || track.data_bytes > layout.max_data_bytes()
        {
            return Err(refuse(format!(
                "session.json: {name} has an impossible size"
            )));
        }
        let mut segments = Vec::new();
        for segment in track.segments {
            let at = parse_timestamp(&segment.started_at)
                .ok_or_else(|| refuse(format!("session.json: {name} has a bad segment time")))?;
            if segment.offset > track.data_bytes {
                return Err(refuse(format!(
                    "session.json: {name} has a segment past its end"
                )));
            }
            segments.push((segment.offset, at));
        }
        let marks = check_marks(&name, format, track.data_bytes, &track.marks)?;
        tracks.push(StagedTrack {
            name,
            format,
            data_bytes: track.data_bytes,
            segments,
            done: track.done,
            marks,
        });
    }
    Ok(Staged {
        title: manifest.title,
        created_at,
        tracks,
        dir: dir.to_path_buf(),
    })
}

/// A track's marks as a socket would have left them: whole blocks, each past the one before,
/// none past the track's end, each time a finite number.
fn check_marks(
    name: &TrackName,
    format: AudioFormat,
    data_bytes: u64,
    marks: &[ManifestMark],
) -> Result<Vec<Mark>, InvalidArchive> {
    let mut checked: Vec<Mark> = Vec::with_capacity(marks.len());
    for mark in marks {
        if !mark.offset.is_multiple_of(format.block_size()) {
            return Err(refuse(format!(
                "session.json: {name} has a mark inside a block"
            )));
        }
        if mark.offset > data_bytes {
            return Err(refuse(format!(
                "session.json: {name} has a mark past its end"
            )));
        }
        if checked
            .last()
            .is_some_and(|last| mark.offset <= last.offset)
        {
            return Err(refuse(format!(
                "session.json: {name} has marks out of order"
            )));
        }
        if !mark.captured_at.is_finite() {
            return Err(refuse(format!("session.json: {name} has a bad mark time")));
        }
        checked.push(Mark {
            offset: mark.offset,
            captured_at: mark.captured_at,
        });
    }
    Ok(checked)
}

/// Copies one track out of the archive, checking its header and size on the way.
fn extract_track<R: Read + Seek>(
    zip: &mut ZipArchive<R>,
    track: &StagedTrack,
    to: &Path,
) -> Result<(), InvalidArchive> {
    let entry_name = format!("{}.wav", track.name);
    let entry = zip
        .by_name(&entry_name)
        .map_err(|_| refuse(format!("{entry_name} is missing")))?;
    let header = wav::header(track.format, track.data_bytes);
    let expected = header.len() as u64 + track.data_bytes;
    if entry.size() != expected {
        return Err(refuse(format!(
            "{entry_name} is {} bytes, its manifest says {expected}",
            entry.size()
        )));
    }
    let mut reader = entry.take(expected + 1);
    let mut head = vec![0u8; header.len()];
    reader
        .read_exact(&mut head)
        .map_err(|_| refuse(format!("{entry_name} is shorter than a WAV header")))?;
    if head != header {
        return Err(refuse(format!(
            "{entry_name}'s header does not match its format and size"
        )));
    }
    let write_error = |e: io::Error| refuse(format!("{entry_name} could not be stored: {e}"));
    let mut file = File::create(to).map_err(write_error)?;
    file.write_all(&head).map_err(write_error)?;
    let copied = io::copy(&mut reader, &mut file)
        .map_err(|e| refuse(format!("{entry_name} cannot be read: {e}")))?;
    if header.len() as u64 + copied != expected {
        return Err(refuse(format!("{entry_name} is not the size it declares")));
    }
    file.sync_all().map_err(write_error)?;
    Ok(())
}

impl TrackStore {
    /// A fresh, empty directory for an upload and its extracted tracks, inside the data
    /// directory (so that adopting it is a rename) and never inside `sessions/`.
    pub fn staging_dir(&self) -> io::Result<PathBuf> {
        let dir = self
            .data_dir()
            .join("staging")
            .join(SessionId::new_random().as_str());
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Makes a staged directory the files of `session`, durably.
    pub fn adopt(&self, staged: &Path, session: &SessionId) -> io::Result<()> {
        let session_dir = self.session_dir(session);
        std::fs::rename(staged, &session_dir)?;
        super::fsync_dir(&session_dir)?;
        if let Some(sessions) = session_dir.parent() {
            super::fsync_dir(sessions)?;
        }
        Ok(())
    }

    /// Removes what an import left behind (a refused or failed one).
    pub fn discard_staging(&self, dir: &Path) {
        if let Err(error) = std::fs::remove_dir_all(dir) {
            if error.kind() != io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), %error, "staging directory not removed");
            }
        }
    }
}
