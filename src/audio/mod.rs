//! The WAV files on disk: the data directory they live in (`TrackStore`, the one owner of it),
//! their format, header, crash repair and durable appends; export, import and the aligned
//! timeline.
//! Knows nothing of sockets, HTTP or the database.

pub mod align;
pub mod archive;
pub mod flac;
mod format;
mod store;
mod track_file;
pub mod wav;

pub use format::{AudioFormat, RequestedFormat, SampleFormat};
pub use store::{open_for_append, Snapshot, TrackStore};
pub use track_file::{fsync_dir, RepairReport, TrackFile};
