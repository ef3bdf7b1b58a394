//! What every handler and background task shares: configuration, the pool, the data
//! directory's owner, the registry.

use std::sync::Arc;

use crate::audio::TrackStore;
use crate::config::Config;
use crate::db::commit::Committer;
use crate::db::{self, DbConnection, DbPool};
use crate::error::ApiError;
use crate::ingest::Registry;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: DbPool,
    /// Session-state writes, group-committed (see `db::commit`).
    pub commits: Committer,
    pub store: TrackStore,
    pub registry: Arc<Registry>,
    /// Several nodes on one PostgreSQL database (src/cluster.rs); `None` with SQLite.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl AppState {
    /// Runs a query on a blocking thread, so no async worker ever waits on the database.
    pub async fn db<T, F>(&self, query: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> diesel::QueryResult<T> + Send + 'static,
    {
        Ok(db::run(&self.pool, query).await?)
    }

    /// Runs a write in the next group commit: it shares its transaction and fsync with every
    /// other write waiting, and answers once that commit is on disk.
    pub async fn write<T, F>(&self, query: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> diesel::QueryResult<T> + Send + 'static,
    {
        Ok(self.commits.write(query).await?)
    }
}
