//! One test binary for the contract's promises, driven through real HTTP and WebSocket clients.

mod access;
mod align;
mod archive;
#[path = "../common/audio.rs"]
mod audio;
mod closing;
mod database;
mod download;
mod guests;
mod helpers;
mod hostile;
mod listing;
mod marks;
mod rest;
mod socket;
mod sweeper;
