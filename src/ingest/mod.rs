//! Live ingest: frames decoded at the edge, one writer task per track, and the registry that
//! knows which socket owns which track and when each session was last heard.

pub mod frame;
pub mod protocol;
pub mod registry;
pub mod storage;
pub mod writer;

pub use protocol::{CloseReason, Closing};
pub use registry::{Attachment, ConnectionPermit, Registry};
pub use writer::{Outbound, SocketLink, SocketMsg, TrackKey, TrackShared};
