//! Group commit: the writes many clients make at the same moment (a burst of `finish`, of new
//! sessions, of sockets attaching, of tracks saving their size) share one transaction and so
//! one fsync of the database, instead of queueing for one fsync each.
//!
//! One thread takes every write waiting, runs each in its own savepoint (a write that fails is
//! rolled back alone and hears its own error), commits once, and only then answers each: a
//! caller hears `Ok` only for what is on disk.

use std::sync::mpsc;

use diesel::connection::Connection;
use tokio::sync::oneshot;

use super::{DbConnection, DbError, DbPool};

/// Writes in one transaction at most: bounds how long the first of a batch waits.
const MAX_BATCH: usize = 512;

/// Told to each write once its batch is over: `None` when it committed, else why not.
type Delivery = Box<dyn FnOnce(Option<&str>) + Send>;

/// A write waiting for the next batch: run with the batch's connection, or refused with why
/// the batch had none.
type Job = Box<dyn FnOnce(Result<&mut DbConnection, &str>) -> Option<Delivery> + Send>;

/// The way in to the committing thread; cheap to clone.
#[derive(Clone)]
pub struct Committer {
    jobs: mpsc::Sender<Job>,
}

impl Committer {
    /// Starts the committing thread; it ends when the last `Committer` is dropped. `counted`
    /// hears the size of each batch (for the metrics, which sit above the database).
    pub fn start(pool: DbPool, counted: fn(usize)) -> std::io::Result<Committer> {
        let (jobs, waiting) = mpsc::channel();
        std::thread::Builder::new()
            .name("safetake-commit".into())
            .spawn(move || commit_batches(&pool, &waiting, counted))?;
        Ok(Committer { jobs })
    }

    /// Runs `query` in the next batch and answers once that batch committed.
    pub async fn write<T, F>(&self, query: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> diesel::QueryResult<T> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let conn = match conn {
                Ok(conn) => conn,
                Err(why) => {
                    let _ = answer.send(Err(DbError::Batch(why.to_string())));
                    return None;
                }
            };
            // Inside the batch's transaction this is a savepoint.
            let result = conn.transaction(query);
            Some(Box::new(move |failed: Option<&str>| {
                let result = match failed {
                    None => result.map_err(DbError::Query),
                    Some(why) => Err(DbError::Batch(why.to_string())),
                };
                let _ = answer.send(result);
            }))
        });
        self.jobs.send(job).map_err(|_| DbError::Gone)?;
        answered.await.map_err(|_| DbError::Gone)?
    }
}

fn commit_batches(pool: &DbPool, waiting: &mpsc::Receiver<Job>, counted: fn(usize)) {
    while let Ok(first) = waiting.recv() {
        let mut batch = vec![first];
        batch.extend(waiting.try_iter().take(MAX_BATCH - 1));
        let mut conn = match pool.get() {
            Ok(conn) => conn,
            Err(error) => {
                let why = format!("no database connection: {error}");
                for job in batch {
                    job(Err(&why));
                }
                continue;
            }
        };
        let mut deliveries = Vec::with_capacity(batch.len());
        let mut unrun = Some(batch);
        // Immediate: the write lock is taken up front, so no write of the batch can fail
        // because another connection wrote between its read and its write.
        let committed = super::immediate_transaction(&mut conn, |conn| {
            let jobs = unrun.take().into_iter().flatten();
            deliveries.extend(jobs.filter_map(|job| job(Ok(conn))));
            diesel::QueryResult::Ok(())
        });
        counted(deliveries.len());
        let failed = committed
            .err()
            .map(|error| format!("the batch did not commit: {error}"));
        let why = failed.as_deref().unwrap_or("the batch did not start");
        for job in unrun.into_iter().flatten() {
            job(Err(why));
        }
        for delivery in deliveries {
            delivery(failed.as_deref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::models::SessionRow;
    use crate::domain::{self, SessionId, SessionStatus};

    fn session(id: &SessionId) -> SessionRow {
        let now = domain::now();
        SessionRow {
            id: id.clone(),
            title: "t".into(),
            status: SessionStatus::Active,
            created_at: now,
            last_heartbeat: now,
            completed_at: None,
            stop_requested_at: None,
        }
    }

    /// Many writes at once: each that can commit does, and one that fails is refused alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_write_is_rolled_back_alone_and_the_rest_commit() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::db::connect(dir.path().join("db.sqlite").to_str().unwrap()).unwrap();
        let commits = Committer::start(pool.clone(), |_| {}).unwrap();
        let taken = SessionId::new_random();
        let row = session(&taken);
        commits
            .write(move |conn| crate::db::sessions::insert(conn, &row))
            .await
            .unwrap();

        let ids: Vec<SessionId> = (0..100).map(|_| SessionId::new_random()).collect();
        let mut writes = Vec::new();
        for (n, id) in ids.iter().enumerate() {
            // Every 10th writes a session that exists, and must fail on its own.
            let row = session(if n % 10 == 0 { &taken } else { id });
            let commits = commits.clone();
            writes.push(tokio::spawn(async move {
                commits
                    .write(move |conn| crate::db::sessions::insert(conn, &row))
                    .await
            }));
        }
        for (n, write) in writes.into_iter().enumerate() {
            let result = write.await.unwrap();
            assert_eq!(result.is_err(), n % 10 == 0, "write {n}: {result:?}");
        }
        let mut conn = pool.get().unwrap();
        for (n, id) in ids.iter().enumerate() {
            let found = crate::db::sessions::find(&mut conn, id).unwrap();
            assert_eq!(found.is_some(), n % 10 != 0, "session {n}");
        }
    }
}
