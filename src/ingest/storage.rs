//! The storage threads: every write and fdatasync of a live track runs on one of a fixed set of
//! threads. A thousand tracks syncing once a second then make no thousand threads (tokio's
//! blocking pool grows a thread for each job that finds none free, and each keeps its stack and
//! malloc arena), and there are still enough of them for many fdatasyncs to be in flight at
//! once, which the kernel merges into fewer journal commits.

use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use tokio::sync::oneshot;

/// Threads, so syncs in flight at once: a second's syncs of 2,500 tracks at ~10 ms each.
const THREADS: usize = 32;

/// A job's stack: a write and an fdatasync need little.
const STACK_BYTES: usize = 256 * 1024;

type Job = Box<dyn FnOnce() + Send>;

static JOBS: OnceLock<mpsc::Sender<Job>> = OnceLock::new();

/// Runs `job` on a storage thread; the answer comes through the receiver (which errs only if
/// the job panicked).
pub fn run<T, F>(job: F) -> oneshot::Receiver<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (answer, answered) = oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = answer.send(job());
    });
    if let Err(mpsc::SendError(job)) = JOBS.get_or_init(start).send(job) {
        // No thread could be started: run it here rather than lose it.
        job();
    }
    answered
}

fn start() -> mpsc::Sender<Job> {
    let (jobs, waiting) = mpsc::channel::<Job>();
    let waiting = std::sync::Arc::new(Mutex::new(waiting));
    for n in 0..THREADS {
        let waiting = waiting.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("safetake-storage-{n}"))
            .stack_size(STACK_BYTES)
            .spawn(move || loop {
                let next = waiting
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .recv();
                match next {
                    Ok(job) => job(),
                    Err(_) => return,
                }
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "a storage thread could not be started");
        }
    }
    jobs
}
