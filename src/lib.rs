//! safetake: a recording server for podcasts that never loses a take.
//!
//! Data flows one way: socket -> frame decoder -> track writer -> WAV file, with the registry
//! (who owns which track, heartbeats) and the database beside it. See README.md.

pub mod access;
pub mod audio;
pub mod backup;
pub mod cluster;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod guests;
pub mod ingest;
pub mod lifecycle;
pub mod metrics;
pub mod routes;
pub mod startup;
pub mod state;
pub mod sweeper;
pub mod views;
