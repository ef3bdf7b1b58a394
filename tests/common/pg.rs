//! The suites against PostgreSQL: with `SAFETAKE_TEST_DATABASE_URL` set (a throwaway cluster's
//! admin URL, `postgres://USER@127.0.0.1:PORT/postgres`; tests/run-all.sh starts one), every
//! test gets a database of its own, created for it and dropped after it. Unset: SQLite, as
//! always.

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

pub const TEST_DATABASE_URL: &str = "SAFETAKE_TEST_DATABASE_URL";

/// Whether the suites run against PostgreSQL.
pub fn enabled() -> bool {
    std::env::var(TEST_DATABASE_URL).is_ok_and(|url| !url.is_empty())
}

/// One test's own database, dropped (with any connection still open to it) when this is.
pub struct TestDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl TestDatabase {
    /// A fresh, empty database when the suites run against PostgreSQL; `None` otherwise.
    pub fn create() -> Option<TestDatabase> {
        let admin_url = std::env::var(TEST_DATABASE_URL)
            .ok()
            .filter(|url| !url.is_empty())?;
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::establish(&admin_url)
            .unwrap_or_else(|error| panic!("{TEST_DATABASE_URL}: {error}"));
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("CREATE DATABASE for the test");
        let url = with_database(&admin_url, &name);
        Some(TestDatabase {
            url,
            admin_url,
            name,
        })
    }

    /// A plain connection to this database (for what a test inspects).
    pub fn connect(&self) -> PgConnection {
        PgConnection::establish(&self.url).expect("a connection to the test's database")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Ok(mut admin) = PgConnection::establish(&self.admin_url) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// `url` with its database name replaced by `name` (any query string kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_end = base
        .find("://")
        .map(|scheme| scheme + 3)
        .and_then(|start| base[start..].find('/').map(|slash| start + slash))
        .unwrap_or(base.len());
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}
