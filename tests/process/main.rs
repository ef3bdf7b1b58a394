//! The real binary as a child process: killed with SIGKILL mid-stream and restarted on the same
//! data directory, or stopped with SIGTERM. Proves the durability promises of the contract.

#[path = "../common/audio.rs"]
mod audio;
mod crash;
mod faults;
mod nodes;
mod ops;
mod server;
mod shutdown;
mod stored;
