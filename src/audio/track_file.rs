//! One track's WAV file, open for appending: every sync writes the pending bytes, rewrites the
//! header to the new size and fdatasyncs, so the file on disk is always a playable WAV.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::wav::{self, Layout};
use super::AudioFormat;

#[derive(Debug)]
pub struct TrackFile {
    file: File,
    layout: Layout,
    /// PCM bytes on stable storage, and the header says so.
    synced: u64,
    /// PCM bytes written to the file (the page cache), synced or not: at least `synced`.
    written: u64,
}

/// What a crash repair found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairReport {
    pub format: AudioFormat,
    pub data_bytes: u64,
    /// Bytes of a torn last block that were cut off.
    pub truncated: u64,
    /// Whether the header's size fields had to be rewritten.
    pub header_fixed: bool,
}

impl TrackFile {
    /// Creates a new, empty WAV file and makes its existence durable before it is used.
    pub fn create(path: &Path, format: AudioFormat) -> io::Result<TrackFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        file.write_all_at(&wav::header(format, 0), 0)?;
        file.sync_all()?;
        if let Some(dir) = path.parent() {
            fsync_dir(dir)?;
        }
        Ok(TrackFile {
            file,
            layout: Layout::of(format),
            synced: 0,
            written: 0,
        })
    }

    /// Opens an existing track after repairing it, so a stale header can never make an append
    /// overwrite audio. `format` is the track's as stored: it only completes a header torn
    /// while the file was being created. A file whose header cannot be read otherwise is an
    /// `InvalidData` error and is left exactly as it is: repair never shortens what it cannot
    /// read.
    pub fn open(path: &Path, format: AudioFormat) -> io::Result<(TrackFile, RepairReport)> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let (layout, report) = repair_open_file(&file, format)?;
        let track = TrackFile {
            file,
            layout,
            synced: report.data_bytes,
            written: report.data_bytes,
        };
        Ok((track, report))
    }

    /// Repairs the file at `path` in place (creating it if it is missing) and closes it.
    pub fn repair(path: &Path, format: AudioFormat) -> io::Result<RepairReport> {
        match TrackFile::open(path, format) {
            Ok((_, report)) => Ok(report),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                let track = TrackFile::create(path, format)?;
                Ok(RepairReport {
                    format,
                    data_bytes: track.synced,
                    truncated: 0,
                    header_fixed: true,
                })
            }
            Err(error) => Err(error),
        }
    }

    pub fn format(&self) -> AudioFormat {
        self.layout.format
    }

    pub fn synced(&self) -> u64 {
        self.synced
    }

    pub fn max_data_bytes(&self) -> u64 {
        self.layout.max_data_bytes()
    }

    /// Appends `chunks` after what is written, updates the header and fdatasyncs: everything
    /// written is then synced. On error the synced size stays where it was, and the header with
    /// it; the file is the next writer's to repair.
    pub fn append_and_sync(&mut self, chunks: &[impl AsRef<[u8]>]) -> io::Result<u64> {
        self.append(chunks)?;
        if self.written != self.synced {
            write_sizes(&self.file, &self.layout, self.written)?;
        }
        self.file.sync_data()?;
        self.synced = self.written;
        Ok(self.synced)
    }

    /// Writes PCM after what is written, to the page cache only: the header still says
    /// `synced`, and nothing is promised until the next [`Self::append_and_sync`]. A crash
    /// may keep some of these bytes (repair counts whole blocks) or none; never other bytes.
    ///
    /// All of `chunks` in one system call (`pwritev`) where the kernel takes them: each write
    /// costs the filesystem the same lookups whatever its size.
    pub fn append(&mut self, chunks: &[impl AsRef<[u8]>]) -> io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> =
            chunks.iter().map(|c| IoSlice::new(c.as_ref())).collect();
        let mut left = &mut slices[..];
        while !left.is_empty() {
            let at = self.layout.data_start + self.written;
            // A short write (rustix passes at most IOV_MAX slices) goes on where it stopped.
            let written = rustix::io::pwritev(&self.file, left, at)?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.written += written as u64;
            IoSlice::advance_slices(&mut left, written);
        }
        Ok(())
    }
}

/// Walks the chunks to the data, keeps every whole block, cuts a torn tail and rewrites the size
/// fields if they disagree with the data. Nothing in the header's sizes is trusted.
fn repair_open_file(file: &File, format: AudioFormat) -> io::Result<(Layout, RepairReport)> {
    let file_len = file.metadata()?.len();
    let layout = match wav::read_layout(file_len, |buf, pos| file.read_exact_at(buf, pos)) {
        Ok(layout) => layout,
        Err(error)
            if error.kind() == io::ErrorKind::InvalidData
                || error.kind() == io::ErrorKind::UnexpectedEof =>
        {
            if torn_while_created(file, format, file_len)? {
                return complete_empty_header(file, format);
            }
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the WAV header cannot be read ({error}); the file's {file_len} bytes are left as they are"),
            ));
        }
        Err(error) => return Err(error),
    };
    let on_disk = file_len.saturating_sub(layout.data_start);
    let data_bytes = (on_disk - on_disk % layout.format.block_size()).min(layout.max_data_bytes());
    let truncated = on_disk - data_bytes;
    if truncated > 0 {
        file.set_len(layout.data_start + data_bytes)?;
    }
    let header_fixed = if layout == Layout::of(layout.format) {
        rewrite_canonical_header(file, &layout, data_bytes)?
    } else {
        let stale = read_sizes(file, &layout)? != (layout.riff_size(data_bytes), data_bytes as u32);
        if stale {
            write_sizes(file, &layout, data_bytes)?;
        }
        stale
    };
    if truncated > 0 || header_fixed {
        file.sync_all()?;
    }
    let report = RepairReport {
        format: layout.format,
        data_bytes,
        truncated,
        header_fixed,
    };
    Ok((layout, report))
}

/// Whether the file is a beginning of the empty header `create` writes: a crash while the
/// track was created. Such a file holds no audio, and completing its header changes none of
/// its bytes.
fn torn_while_created(file: &File, format: AudioFormat, file_len: u64) -> io::Result<bool> {
    let empty = wav::header(format, 0);
    if file_len >= empty.len() as u64 {
        return Ok(false);
    }
    let mut current = vec![0u8; file_len as usize];
    file.read_exact_at(&mut current, 0)?;
    Ok(empty.starts_with(&current))
}

fn complete_empty_header(file: &File, format: AudioFormat) -> io::Result<(Layout, RepairReport)> {
    file.write_all_at(&wav::header(format, 0), 0)?;
    file.sync_all()?;
    let layout = Layout::of(format);
    let report = RepairReport {
        format,
        data_bytes: 0,
        truncated: 0,
        header_fixed: true,
    };
    Ok((layout, report))
}

/// A header of this server's own length is rewritten whole if any byte of it differs from the
/// one this server writes: a damaged GUID or byte rate would make other readers refuse the file
/// even though the walk found the format. Returns whether it was rewritten.
fn rewrite_canonical_header(file: &File, layout: &Layout, data_bytes: u64) -> io::Result<bool> {
    let canonical = wav::header(layout.format, data_bytes);
    let mut current = vec![0u8; canonical.len()];
    file.read_exact_at(&mut current, 0)?;
    if current == canonical {
        return Ok(false);
    }
    file.write_all_at(&canonical, 0)?;
    Ok(true)
}

fn read_sizes(file: &File, layout: &Layout) -> io::Result<(u32, u32)> {
    let mut riff = [0u8; 4];
    let mut data = [0u8; 4];
    file.read_exact_at(&mut riff, 4)?;
    file.read_exact_at(&mut data, layout.data_start - 4)?;
    Ok((u32::from_le_bytes(riff), u32::from_le_bytes(data)))
}

fn write_sizes(file: &File, layout: &Layout, data_bytes: u64) -> io::Result<()> {
    file.write_all_at(&layout.riff_size(data_bytes).to_le_bytes(), 4)?;
    file.write_all_at(&(data_bytes as u32).to_le_bytes(), layout.data_start - 4)
}

/// Makes a directory's entries (a file just created, one just removed) durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::SampleFormat;

    fn stereo() -> AudioFormat {
        AudioFormat::new(48_000, 2, SampleFormat::S16le).unwrap()
    }

    #[test]
    fn appends_keep_the_header_in_step() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mic.wav");
        let mut track = TrackFile::create(&path, stereo()).unwrap();
        track
            .append_and_sync(&[vec![1u8; 400], vec![2u8; 400]])
            .unwrap();
        let reader = hound::WavReader::open(&path).unwrap();
        assert_eq!(reader.duration(), 200);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 44 + 800);
    }

    #[test]
    fn more_chunks_than_one_system_call_takes_land_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mic.wav");
        let mut track = TrackFile::create(&path, stereo()).unwrap();
        // 2,500 chunks: past IOV_MAX (1,024), so the write goes in three calls.
        let chunks: Vec<Vec<u8>> = (0..2_500u32).map(|n| n.to_le_bytes().to_vec()).collect();
        track.append(&chunks).unwrap();
        assert_eq!(track.append_and_sync(&[[0xAAu8; 4]]).unwrap(), 10_004);
        let bytes = std::fs::read(&path).unwrap();
        let mut expected = chunks.concat();
        expected.extend_from_slice(&[0xAA; 4]);
        assert_eq!(&bytes[44..], &expected[..]);
    }

    #[test]
    fn repair_cuts_a_torn_block_and_fixes_a_stale_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mic.wav");
        let mut track = TrackFile::create(&path, stereo()).unwrap();
        track.append_and_sync(&[vec![7u8; 40]]).unwrap();
        drop(track);
        // A crash after raw bytes reached the file but before the header was rewritten.
        let file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all_at(&[9u8; 42], 44 + 40).unwrap();
        let report = TrackFile::repair(&path, stereo()).unwrap();
        assert_eq!(report.data_bytes, 80);
        assert_eq!(report.truncated, 2);
        assert!(report.header_fixed);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 44 + 80);
        assert_eq!(&bytes[44 + 40..], &[9u8; 40][..]);
        let reader = hound::WavReader::open(&path).unwrap();
        assert_eq!(reader.duration(), 20);
    }

    #[test]
    fn a_file_torn_while_it_was_created_gets_its_empty_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mic.wav");
        std::fs::write(&path, b"RIFF\x24\0\0\0WAV").unwrap();
        let report = TrackFile::repair(&path, stereo()).unwrap();
        assert_eq!(report.data_bytes, 0);
        assert!(hound::WavReader::open(&path).is_ok());
    }

    #[test]
    fn a_file_whose_header_cannot_be_read_is_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mic.wav");
        let garbage: Vec<u8> = (0..5000u32).map(|i| (i * 7 + 3) as u8).collect();
        std::fs::write(&path, &garbage).unwrap();
        let error = TrackFile::repair(&path, stereo()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert_eq!(std::fs::read(&path).unwrap(), garbage);
        // Shorter than a header, but not the start of one: still not ours to cut.
        std::fs::write(&path, b"RIFX").unwrap();
        assert!(TrackFile::repair(&path, stereo()).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"RIFX");
    }

    #[test]
    fn a_damaged_header_of_our_length_is_rewritten_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mic.wav");
        let format = AudioFormat::new(48_000, 6, SampleFormat::S16le).unwrap();
        let mut bytes = wav::header(format, 24);
        bytes.extend_from_slice(&[5u8; 24]);
        bytes[48] ^= 0xFF; // inside the extensible GUID
        bytes[28] ^= 0x01; // the byte rate
        std::fs::write(&path, &bytes).unwrap();
        let report = TrackFile::repair(&path, stereo()).unwrap();
        assert!(report.header_fixed);
        let reader = hound::WavReader::open(&path).unwrap();
        assert_eq!(reader.spec().channels, 6);
        assert_eq!(std::fs::read(&path).unwrap()[68..], [5u8; 24]);
    }
}
