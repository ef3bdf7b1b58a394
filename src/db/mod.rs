//! The database: the pool (backend chosen by the URL), embedded migrations, and one module of
//! plain synchronous queries per table. Callers run these on blocking threads.

pub mod commit;
pub mod invites;
pub mod marks;
pub mod models;
pub mod schema;
pub mod sessions;
pub mod tracks;

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

pub type DbConnection = SqliteConnection;
pub type DbPool = Pool<ConnectionManager<DbConnection>>;
pub type PooledConn = PooledConnection<ConnectionManager<DbConnection>>;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

#[derive(Debug, thiserror::Error)]
pub enum DbSetupError {
    #[error("--database-url: {0}")]
    Unsupported(String),
    #[error("--database-url: cannot open the database: {0}")]
    Open(String),
    #[error("database migrations failed: {0}")]
    Migrate(String),
}

/// SQLite settings every pooled connection gets: a busy timeout instead of instant
/// `SQLITE_BUSY`, foreign keys for the cascades, and full sync so a session row acknowledged to
/// a client survives a power cut. WAL is set once, at `connect`: it is stored in the file, and
/// switching it from many connections at once makes them fail with "database is locked".
#[derive(Debug)]
struct SqlitePragmas;

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute(
            "PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;",
        )
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// Opens the pool for `url` and runs the embedded migrations. The backend comes from the URL's
/// scheme and there is no silent fallback: a PostgreSQL URL is refused by this build.
pub fn connect(url: &str) -> Result<DbPool, DbSetupError> {
    let path = sqlite_path(url)?;
    prepare_sqlite(&path)?;
    let pool = Pool::builder()
        .max_size(8)
        .connection_timeout(Duration::from_secs(5))
        .connection_customizer(Box::new(SqlitePragmas))
        .build(ConnectionManager::<SqliteConnection>::new(path))
        .map_err(|e| DbSetupError::Open(e.to_string()))?;
    Ok(pool)
}

/// One connection, before the pool opens any: WAL mode, then the migrations.
fn prepare_sqlite(path: &str) -> Result<(), DbSetupError> {
    use diesel::Connection;
    let mut conn =
        SqliteConnection::establish(path).map_err(|e| DbSetupError::Open(e.to_string()))?;
    conn.batch_execute("PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL;")
        .map_err(|e| DbSetupError::Open(e.to_string()))?;
    conn.run_pending_migrations(SQLITE_MIGRATIONS)
        .map_err(|e| DbSetupError::Migrate(e.to_string()))?;
    Ok(())
}

fn sqlite_path(url: &str) -> Result<String, DbSetupError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Err(DbSetupError::Unsupported(
            "PostgreSQL is not built into this binary yet; use a SQLite path".into(),
        ));
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(path.to_string());
    }
    if url.contains("://") {
        return Err(DbSetupError::Unsupported(format!(
            "unknown database scheme in `{url}`"
        )));
    }
    Ok(url.to_string())
}

/// For `/healthz`: takes the write lock and lets it go, which proves the database can take
/// writes, not just answer. A locked database fails this within half a second.
/// Why a query run with [`run`] did not answer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("no database connection: {0}")]
    Pool(#[from] diesel::r2d2::PoolError),
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    #[error("the database's worker threads are gone")]
    Gone,
    /// A group commit (`commit`) that had no connection or did not commit.
    #[error("{0}")]
    Batch(String),
}

/// Runs a query with a pooled connection on a blocking thread, so no async worker ever waits
/// on the database. The one way the server reaches the database from async code.
pub async fn run<T, F>(pool: &DbPool, query: F) -> Result<T, DbError>
where
    T: Send + 'static,
    F: FnOnce(&mut DbConnection) -> diesel::QueryResult<T> + Send + 'static,
{
    let pool = pool.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = pool.get()?;
        Ok(query(&mut conn)?)
    })
    .await
    .map_err(|_| DbError::Gone)?
}

pub fn ping(conn: &mut DbConnection) -> diesel::QueryResult<()> {
    conn.batch_execute("PRAGMA busy_timeout = 500")?;
    let result = conn.batch_execute("BEGIN IMMEDIATE; ROLLBACK;");
    conn.batch_execute("PRAGMA busy_timeout = 5000")?;
    result
}
