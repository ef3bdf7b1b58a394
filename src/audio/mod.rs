//! The WAV files on disk: their format, header, crash repair and durable appends.
//! Knows nothing of sockets, HTTP or the database.

mod format;
mod track_file;
pub mod wav;

pub use format::{AudioFormat, SampleFormat};
pub use track_file::{fsync_dir, RepairReport, TrackFile};
