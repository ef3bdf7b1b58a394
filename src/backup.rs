//! `safetake backup DIR`: a data directory that `--data-dir DIR` starts from, written while the
//! server records. The database is copied first, in one read transaction (`VACUUM INTO`); the
//! files follow that copy: a completed session's tracks are final, so they are hard-linked
//! (copied where the filesystem cannot link); any other track is copied as it is, and the
//! start-up repair of the backup matches its header to the audio that made it.

use std::fs;
use std::io;
use std::path::Path;

use diesel::connection::SimpleConnection;
use diesel::sql_types::Text;
use diesel::{Connection, RunQueryDsl, SqliteConnection};

use crate::audio::TrackStore;
use crate::config::Config;
use crate::db;
use crate::domain::SessionStatus;

/// The name the server gives its SQLite database inside a data directory.
const DATABASE_FILE: &str = "safetake.db";
/// Sessions read from the copy per query.
const PAGE: i64 = 500;

#[derive(Debug, Default)]
struct Counts {
    sessions: usize,
    linked: usize,
    copied: usize,
    missing: usize,
}

pub fn backup(config: &Config, dir: &Path) -> Result<(), String> {
    if config.database_url.is_some() {
        return Err("--database-url: backup copies the SQLite database of --data-dir; back up another database with its own tools".into());
    }
    let database = config.data_dir.join(DATABASE_FILE);
    if !database.is_file() {
        return Err(format!(
            "--data-dir {}: no {DATABASE_FILE} there to back up",
            config.data_dir.display()
        ));
    }
    prepare_destination(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    let copy = dir.join(DATABASE_FILE);
    {
        // A plain connection: the running server's database is read, never migrated or changed.
        let mut source = SqliteConnection::establish(&database.to_string_lossy())
            .map_err(|e| format!("--data-dir {}: {e}", config.data_dir.display()))?;
        source
            .batch_execute("PRAGMA busy_timeout = 5000;")
            .map_err(|e| e.to_string())?;
        diesel::sql_query("VACUUM INTO ?")
            .bind::<Text, _>(copy.to_string_lossy().into_owned())
            .execute(&mut source)
            .map_err(|e| format!("copying the database: {e}"))?;
    }
    let copied = db::connect(&copy.to_string_lossy()).map_err(|e| e.to_string())?;
    let mut conn = copied.get().map_err(|e| e.to_string())?;
    let from = TrackStore::new(config.data_dir.clone());
    let to = TrackStore::new(dir.to_path_buf());
    to.prepare()
        .map_err(|error| format!("{}: {error}", dir.display()))?;
    let mut counts = Counts::default();
    let mut offset = 0;
    loop {
        let (sessions, _) = db::sessions::list(&mut conn, None, PAGE, offset)
            .map_err(|e| format!("reading the copied database: {e}"))?;
        if sessions.is_empty() {
            break;
        }
        offset += sessions.len() as i64;
        for session in sessions {
            counts.sessions += 1;
            let final_files = session.status == SessionStatus::Completed;
            let tracks = db::tracks::for_session(&mut conn, &session.id)
                .map_err(|e| format!("reading the copied database: {e}"))?;
            for track in tracks {
                let source = from.track_path(&session.id, &track.name);
                let target = to.track_path(&session.id, &track.name);
                match copy_track(&source, &target, final_files) {
                    Ok(true) => counts.linked += 1,
                    Ok(false) => counts.copied += 1,
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {
                        // Deleted after the database was copied: the copy keeps its row.
                        tracing::warn!(path = %source.display(), "track file gone during the backup");
                        counts.missing += 1;
                    }
                    Err(error) => return Err(format!("{}: {error}", source.display())),
                }
            }
        }
    }
    println!(
        "backed up {} sessions into {}: {} tracks hard-linked, {} copied{}",
        counts.sessions,
        dir.display(),
        counts.linked,
        counts.copied,
        if counts.missing > 0 {
            format!(", {} deleted while copying", counts.missing)
        } else {
            String::new()
        }
    );
    Ok(())
}

/// A new or empty directory: a backup never mixes with older files.
fn prepare_destination(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    if fs::read_dir(dir)?.next().is_some() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "not empty; a backup goes into a new or empty directory",
        ));
    }
    Ok(())
}

/// Links (`final_file`) or copies one track, synced; true when it was linked.
fn copy_track(source: &Path, target: &Path, final_file: bool) -> io::Result<bool> {
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    if final_file && fs::hard_link(source, target).is_ok() {
        return Ok(true);
    }
    fs::copy(source, target)?;
    fs::File::open(target)?.sync_all()?;
    Ok(false)
}
