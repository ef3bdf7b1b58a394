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

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::pg::PgConnection;
use diesel::r2d2::{CustomizeConnection, ManageConnection, Pool, PooledConnection, R2D2Connection};
use diesel::sqlite::SqliteConnection;
use diesel::{Connection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

/// One connection to whichever backend the URL named. Queries are written once, against this
/// type; the few things the backends spell differently match on it (see [`write_transaction`]).
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Postgres(PgConnection),
    Sqlite(SqliteConnection),
}

pub type DbPool = Pool<Manager>;
pub type PooledConn = PooledConnection<Manager>;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// How long opening a PostgreSQL connection may take before it fails (libpq's
/// `connect_timeout`, in seconds), unless the URL says otherwise.
const PG_CONNECT_TIMEOUT_S: u32 = 2;
/// Longest a PostgreSQL statement may run: a query stuck behind a lock fails and says so.
const PG_STATEMENT_TIMEOUT: &str = "10s";
/// Advisory lock key classes (the two-key form, its own key space): the migrations, run once
/// at a time however many nodes start together, and the per-session write lock.
const LOCK_CLASS_MIGRATIONS: i32 = 0x5afe_0001;
const LOCK_CLASS_SESSION: i32 = 0x5afe_0002;

#[derive(Debug, thiserror::Error)]
pub enum DbSetupError {
    #[error("--database-url: {0}")]
    Unsupported(String),
    #[error("--database-url: cannot open the database: {0}")]
    Open(String),
    #[error("database migrations failed: {0}")]
    Migrate(String),
}

/// Which database a URL names.
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    /// A file path (or `sqlite://PATH`).
    Sqlite(String),
    /// A `postgres://` or `postgresql://` URL, with the timeouts the server relies on added.
    Postgres(String),
}

impl std::fmt::Debug for Target {
    // Never the URL itself: it may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Sqlite(path) => write!(f, "Sqlite({path})"),
            Target::Postgres(_) => f.write_str("Postgres(..)"),
        }
    }
}

impl Target {
    /// The backend from the URL's scheme; anything unknown is refused (no silent fallback).
    pub fn parse(url: &str) -> Result<Target, DbSetupError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Target::Postgres(with_pg_defaults(url)));
        }
        if let Some(path) = url.strip_prefix("sqlite://") {
            return Ok(Target::Sqlite(path.to_string()));
        }
        if let Some((scheme, _)) = url.split_once("://") {
            return Err(DbSetupError::Unsupported(format!(
                "unknown database scheme `{scheme}://` (use postgres://USER:PASSWORD@HOST:PORT/DB, or a SQLite file path)"
            )));
        }
        if url.is_empty() {
            return Err(DbSetupError::Unsupported("empty".into()));
        }
        Ok(Target::Sqlite(url.to_string()))
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Target::Postgres(_))
    }

    /// Opens one connection of this backend; never tries another.
    pub fn establish(&self) -> diesel::ConnectionResult<DbConnection> {
        match self {
            Target::Sqlite(path) => SqliteConnection::establish(path).map(DbConnection::Sqlite),
            Target::Postgres(url) => PgConnection::establish(url).map(DbConnection::Postgres),
        }
    }
}

/// A short connect timeout and TCP keepalives (a database host that vanishes is noticed in
/// seconds, not at the kernel's two hours), unless the URL sets them itself.
fn with_pg_defaults(url: &str) -> String {
    let mut url = url.to_string();
    let defaults = [
        ("connect_timeout", PG_CONNECT_TIMEOUT_S.to_string()),
        ("keepalives", "1".into()),
        ("keepalives_idle", "2".into()),
        ("keepalives_interval", "1".into()),
        ("keepalives_count", "2".into()),
        ("application_name", "safetake".into()),
    ];
    for (key, value) in defaults {
        let query = url.split_once('?').map_or("", |(_, query)| query);
        if query
            .split('&')
            .any(|pair| pair.split('=').next() == Some(key))
        {
            continue;
        }
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("{key}={value}"));
    }
    url
}

/// The pool's connection factory: one backend, chosen once from the URL.
#[derive(Debug)]
pub struct Manager {
    target: Target,
}

impl ManageConnection for Manager {
    type Connection = DbConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<DbConnection, Self::Error> {
        self.target
            .establish()
            .map_err(diesel::r2d2::Error::ConnectionError)
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), Self::Error> {
        conn.ping().map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        conn.is_broken()
    }
}

/// Settings every pooled connection gets. SQLite: a busy timeout instead of instant
/// `SQLITE_BUSY`, foreign keys for the cascades, and full sync so a session row acknowledged
/// to a client survives a power cut (WAL is set once, at `connect`: it is stored in the file,
/// and switching it from many connections at once makes them fail with "database is locked").
/// PostgreSQL: a statement timeout, a transaction left open by a frozen node ends within 3 s
/// (its row locks with it), and UTC for the `timestamp` columns.
#[derive(Debug)]
struct SessionSettings;

impl CustomizeConnection<DbConnection, diesel::r2d2::Error> for SessionSettings {
    fn on_acquire(&self, conn: &mut DbConnection) -> Result<(), diesel::r2d2::Error> {
        let settings = match conn {
            DbConnection::Sqlite(_) => {
                "PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;"
                    .to_string()
            }
            DbConnection::Postgres(_) => {
                format!("SET statement_timeout = '{PG_STATEMENT_TIMEOUT}'; SET idle_in_transaction_session_timeout = '3s'; SET TIME ZONE 'UTC';")
            }
        };
        conn.batch_execute(&settings)
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// Opens the pool for `url` and runs the embedded migrations. The backend comes from the URL's
/// scheme and there is no silent fallback: a URL that names neither is refused at start.
pub fn connect(url: &str) -> Result<DbPool, DbSetupError> {
    let target = Target::parse(url)?;
    prepare(&target)?;
    let (size, wait) = match target {
        Target::Sqlite(_) => (8, Duration::from_secs(5)),
        // Each node holds its own pool; a database that is down fails requests in seconds.
        Target::Postgres(_) => (12, Duration::from_secs(3)),
    };
    let pool = Pool::builder()
        .max_size(size)
        .min_idle(Some(1))
        .connection_timeout(wait)
        .connection_customizer(Box::new(SessionSettings))
        .build(Manager { target })
        .map_err(|e| DbSetupError::Open(e.to_string()))?;
    Ok(pool)
}

/// One connection, before the pool opens any: SQLite's WAL mode, then the migrations (on
/// PostgreSQL under an advisory lock, so nodes starting together run them once).
fn prepare(target: &Target) -> Result<(), DbSetupError> {
    let open = |e: diesel::ConnectionError| DbSetupError::Open(e.to_string());
    let migrate =
        |e: Box<dyn std::error::Error + Send + Sync>| DbSetupError::Migrate(e.to_string());
    match target {
        Target::Sqlite(path) => {
            let mut conn = SqliteConnection::establish(path).map_err(open)?;
            conn.batch_execute("PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL;")
                .map_err(|e| DbSetupError::Open(e.to_string()))?;
            conn.run_pending_migrations(SQLITE_MIGRATIONS)
                .map_err(migrate)?;
        }
        Target::Postgres(url) => {
            let mut conn = PgConnection::establish(url).map_err(open)?;
            let lock = format!("SELECT pg_advisory_lock({LOCK_CLASS_MIGRATIONS}, 0)");
            conn.batch_execute(&lock)
                .map_err(|e| DbSetupError::Open(e.to_string()))?;
            let result = conn.run_pending_migrations(POSTGRES_MIGRATIONS).map(drop);
            // The lock goes with the connection anyway; this only lets the next node in sooner.
            let _ = conn.batch_execute(&format!(
                "SELECT pg_advisory_unlock({LOCK_CLASS_MIGRATIONS}, 0)"
            ));
            result.map_err(migrate)?;
        }
    }
    Ok(())
}

/// A read-then-write transaction that no other writer of the same session can interleave
/// with. SQLite: `BEGIN IMMEDIATE` (the write lock up front, instead of failing with "database
/// is locked" when another write lands between its read and its write). PostgreSQL: a
/// transaction-scoped advisory lock on `key` (the session id), taken first. Inside a group
/// commit's transaction (`commit`), which holds SQLite's write lock already, it is a savepoint.
pub fn write_transaction<T, E, F>(conn: &mut DbConnection, key: &str, f: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    if matches!(conn, DbConnection::Postgres(_)) || in_transaction(conn)? {
        return conn.transaction(|conn| {
            if let DbConnection::Postgres(pg) = conn {
                diesel::sql_query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                    .bind::<diesel::sql_types::Integer, _>(LOCK_CLASS_SESSION)
                    .bind::<diesel::sql_types::Text, _>(key)
                    .execute(pg)?;
            }
            f(conn)
        });
    }
    immediate_transaction(conn, f)
}

/// A transaction that holds the write lock from its start: SQLite's `BEGIN IMMEDIATE`, as
/// `SqliteConnection::immediate_transaction` does it but with the outer connection handed to
/// `f` (its transaction state is the inner connection's); PostgreSQL's plain `BEGIN`, whose
/// rows lock as they are written.
pub fn immediate_transaction<T, E, F>(conn: &mut DbConnection, f: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    if let DbConnection::Postgres(_) = conn {
        return conn.transaction(f);
    }
    if let DbConnection::Sqlite(inner) = conn {
        AnsiTransactionManager::begin_transaction_sql(inner, "BEGIN IMMEDIATE")?;
    }
    let result = f(conn);
    if let DbConnection::Sqlite(inner) = conn {
        match &result {
            Ok(_) => AnsiTransactionManager::commit_transaction(inner)?,
            Err(_) => AnsiTransactionManager::rollback_transaction(inner)?,
        }
    }
    result
}

fn in_transaction(conn: &mut DbConnection) -> diesel::QueryResult<bool> {
    let depth = match conn {
        DbConnection::Sqlite(inner) => {
            AnsiTransactionManager::transaction_manager_status_mut(inner).transaction_depth()?
        }
        DbConnection::Postgres(inner) => {
            AnsiTransactionManager::transaction_manager_status_mut(inner).transaction_depth()?
        }
    };
    Ok(depth.is_some())
}

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

/// For `/healthz`: proves the database can take writes, not just answer. SQLite: takes the
/// write lock and lets it go (a locked database fails this within half a second). PostgreSQL:
/// a round trip in a read-write transaction (a standby refuses it), bounded by a short
/// statement timeout.
pub fn ping(conn: &mut DbConnection) -> diesel::QueryResult<()> {
    if let DbConnection::Postgres(_) = conn {
        let result = conn.batch_execute(
            "BEGIN READ WRITE; SET LOCAL statement_timeout = '1s'; SELECT 1; COMMIT;",
        );
        if result.is_err() {
            let _ = conn.batch_execute("ROLLBACK");
        }
        return result;
    }
    conn.batch_execute("PRAGMA busy_timeout = 500")?;
    let result = conn.batch_execute("BEGIN IMMEDIATE; ROLLBACK;");
    conn.batch_execute("PRAGMA busy_timeout = 5000")?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_urls_get_timeouts_and_keepalives_unless_they_set_them() {
        let Target::Postgres(url) = Target::parse("postgres://u:p@h:5432/db").unwrap() else {
            panic!("not PostgreSQL");
        };
        assert!(
            url.starts_with("postgres://u:p@h:5432/db?connect_timeout=2&keepalives=1"),
            "{url}"
        );
        let Target::Postgres(url) =
            Target::parse("postgresql://h/db?connect_timeout=9&sslmode=disable").unwrap()
        else {
            panic!("not PostgreSQL");
        };
        assert!(
            url.contains("connect_timeout=9&sslmode=disable&keepalives=1"),
            "{url}"
        );
        assert_eq!(url.matches("connect_timeout").count(), 1, "{url}");
        assert_eq!(
            Target::parse("sqlite:///data/s.db").unwrap(),
            Target::Sqlite("/data/s.db".into())
        );
        assert_eq!(
            format!("{:?}", Target::parse("postgres://u:secret@h/db").unwrap()),
            "Postgres(..)"
        );
    }
}
