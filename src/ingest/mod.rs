//! Live ingest: frames decoded at the edge, one writer task per track, and the registry that
//! knows which socket owns which track and when each session was last heard.

pub mod frame;
pub mod registry;
pub mod writer;

pub use registry::{Attachment, ConnectionPermit, Registry, TrackKey};
pub use writer::{close, Outbound, SocketLink, SocketMsg, TrackShared};
