//! The data directory, and every file operation on it: where each track's WAV file lives (and
//! the path the API shows), sizes, consistent download snapshots, removing a session's files,
//! and crash repair. Everything here blocks: callers run it on blocking threads.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::track_file::{fsync_dir, RepairReport, TrackFile};
use super::wav;
use super::AudioFormat;
use crate::domain::{SessionId, TrackName};

const SESSIONS: &str = "sessions";

#[derive(Debug, Clone)]
pub struct TrackStore {
    data_dir: PathBuf,
}

impl TrackStore {
    pub fn new(data_dir: PathBuf) -> TrackStore {
        TrackStore { data_dir }
    }

    /// Makes sure the directory that holds every session's files exists.
    pub fn prepare(&self) -> io::Result<()> {
        std::fs::create_dir_all(self.data_dir.join(SESSIONS))
    }

    pub(super) fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub(super) fn session_dir(&self, session: &SessionId) -> PathBuf {
        self.data_dir.join(SESSIONS).join(session.as_str())
    }

    pub fn track_path(&self, session: &SessionId, track: &TrackName) -> PathBuf {
        self.session_dir(session).join(format!("{track}.wav"))
    }

    /// The file's path relative to the data directory, as the API shows it.
    pub fn relative_track_path(session: &SessionId, track: &TrackName) -> String {
        format!("{SESSIONS}/{session}/{track}.wav")
    }

    /// The track's file size on disk, header included; `None` if it cannot be read.
    pub fn size(&self, session: &SessionId, track: &TrackName) -> Option<u64> {
        std::fs::metadata(self.track_path(session, track))
            .ok()
            .map(|metadata| metadata.len())
    }

    /// A consistent, playable view of the track as it is now (see [`Snapshot`]).
    pub fn snapshot(
        &self,
        session: &SessionId,
        track: &TrackName,
        live_synced: Option<u64>,
    ) -> io::Result<Snapshot> {
        Snapshot::open(&self.track_path(session, track), live_synced)
    }

    /// Removes a session's files for good (a session that has none is fine).
    pub fn remove_session(&self, session: &SessionId) -> io::Result<()> {
        match std::fs::remove_dir_all(self.session_dir(session)) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
            result => result?,
        }
        fsync_dir(&self.data_dir.join(SESSIONS))
    }

    /// Crash repair of one track whose session was not finished: see [`TrackFile::repair`].
    /// A file this cannot read is an error and is left exactly as it is.
    pub fn repair(
        &self,
        session: &SessionId,
        track: &TrackName,
        format: AudioFormat,
    ) -> io::Result<RepairReport> {
        let path = self.track_path(session, track);
        ensure_dir(&path)?;
        TrackFile::repair(&path, format)
    }
}

/// Opens a track's file for appending, repaired, or creates it (and its session's directory).
pub fn open_for_append(path: &Path, format: AudioFormat) -> io::Result<TrackFile> {
    ensure_dir(path)?;
    match TrackFile::open(path, format) {
        Ok((file, report)) => {
            if report.truncated > 0 || report.header_fixed {
                tracing::info!(path = %path.display(), data_bytes = report.data_bytes, truncated = report.truncated, "repaired track on open");
            }
            Ok(file)
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => TrackFile::create(path, format),
        Err(error) => Err(error),
    }
}

/// Creates a track's session directory durably if it is missing.
fn ensure_dir(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            if let Some(parent) = dir.parent() {
                fsync_dir(parent)?;
            }
        }
    }
    Ok(())
}

/// A track as a playable WAV of the whole blocks on disk (no more than the writer has synced
/// if the track is live), with a header built for exactly that data: a track that is still
/// growing reads as a valid file.
#[derive(Debug)]
pub struct Snapshot {
    format: AudioFormat,
    header: Vec<u8>,
    file: File,
    data_start: u64,
    data_len: u64,
}

impl Snapshot {
    fn open(path: &Path, live_synced: Option<u64>) -> io::Result<Snapshot> {
        let file = File::open(path)?;
        let file_len = file.metadata()?.len();
        let layout = wav::read_layout(file_len, |buf, pos| file.read_exact_at(buf, pos))?;
        let on_disk = file_len.saturating_sub(layout.data_start);
        let whole = on_disk - on_disk % layout.format.block_size();
        let data_len = live_synced
            .map_or(whole, |synced| synced.min(whole))
            .min(layout.max_data_bytes());
        Ok(Snapshot {
            format: layout.format,
            header: wav::header(layout.format, data_len),
            file,
            data_start: layout.data_start,
            data_len,
        })
    }

    /// The format its header says.
    pub fn format(&self) -> AudioFormat {
        self.format
    }

    /// PCM bytes it holds (whole blocks).
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// The length of the WAV as served, header included.
    pub fn len(&self) -> u64 {
        self.header.len() as u64 + self.data_len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes `start..end` of the WAV as served (header then data); `end` is clamped to `len`.
    pub fn read(&self, start: u64, end: u64) -> io::Result<Vec<u8>> {
        let end = end.min(self.len());
        let start = start.min(end);
        let header_len = self.header.len() as u64;
        let mut bytes = Vec::with_capacity((end - start) as usize);
        if start < header_len {
            bytes.extend_from_slice(&self.header[start as usize..end.min(header_len) as usize]);
        }
        let data_from = start.max(header_len) - header_len;
        let data_to = end.saturating_sub(header_len);
        if data_to > data_from {
            let at = bytes.len();
            bytes.resize(at + (data_to - data_from) as usize, 0);
            self.file
                .read_exact_at(&mut bytes[at..], self.data_start + data_from)?;
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::SampleFormat;

    #[test]
    fn a_snapshot_reads_across_its_header_and_stops_at_whole_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let store = TrackStore::new(dir.path().to_path_buf());
        let (session, track) = (SessionId::new_random(), TrackName::parse("mic").unwrap());
        let format = AudioFormat::new(48_000, 2, SampleFormat::S16le).unwrap();
        let path = store.track_path(&session, &track);
        let mut file = open_for_append(&path, format).unwrap();
        file.append_and_sync(&[vec![3u8; 42]]).unwrap(); // 10 blocks and 2 torn bytes
        let snapshot = store.snapshot(&session, &track, None).unwrap();
        assert_eq!(snapshot.len(), 44 + 40);
        let all = snapshot.read(0, u64::MAX).unwrap();
        assert_eq!(&all[..44], &wav::header(format, 40)[..]);
        assert_eq!(&all[44..], &[3u8; 40][..]);
        assert_eq!(snapshot.read(40, 48).unwrap(), all[40..48].to_vec());
        let live = store.snapshot(&session, &track, Some(8)).unwrap();
        assert_eq!(live.len(), 44 + 8);
        store.remove_session(&session).unwrap();
        assert!(store.size(&session, &track).is_none());
        store.remove_session(&session).unwrap();
    }
}
