//! The storage threads: every write and fdatasync of a live track runs off the async workers.
//! Syncs run on a fixed set of threads: a thousand tracks syncing once a second then make no
//! thousand threads (tokio's blocking pool grows a thread for each job that finds none free, and
//! each keeps its stack and malloc arena), and there are still enough of them for many
//! fdatasyncs to be in flight at once, which the kernel merges into fewer journal commits. The
//! page-cache writes of batches between syncs go to one thread of their own that takes them
//! every [`WRITE_TICK`]: they never queue behind fdatasyncs (their audio would pile up in memory
//! meanwhile), and thousands of batches a second cost a hundred wakes, not thousands.

use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::oneshot;

/// Threads for syncs, so syncs in flight at once: a second's syncs of 2,500 tracks at ~10 ms.
const SYNC_THREADS: usize = 32;

/// How often the write thread takes the batches handed to it since: a batch waits at most this
/// long, a fraction of a sync interval, for a page-cache write that promises nothing anyway.
const WRITE_TICK: Duration = Duration::from_millis(10);

/// A job's stack: a write and an fdatasync need little.
const STACK_BYTES: usize = 256 * 1024;

type Job = Box<dyn FnOnce() + Send>;

static SYNCS: OnceLock<mpsc::Sender<Job>> = OnceLock::new();

/// The batches handed over since the write thread last took them.
static WRITES: Mutex<Vec<Job>> = Mutex::new(Vec::new());
/// Whether the write thread runs (started with the first batch).
static WRITE_THREAD: OnceLock<bool> = OnceLock::new();

/// Runs `job` (a sync, or anything that may wait for one) on a sync thread; the answer comes
/// through the receiver (which errs only if the job panicked).
pub fn run<T, F>(job: F) -> oneshot::Receiver<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (answer, answered) = oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = answer.send(job());
    });
    let syncs = SYNCS.get_or_init(start_syncs);
    if let Err(mpsc::SendError(job)) = syncs.send(job) {
        // No thread could be started: run it here rather than lose it.
        job();
    }
    answered
}

/// Hands `job`, a page-cache write that never waits for a sync, to the write thread, which runs
/// it within [`WRITE_TICK`]; nobody waits for it.
pub fn write<F>(job: F)
where
    F: FnOnce() + Send + 'static,
{
    if *WRITE_THREAD.get_or_init(start_writes) {
        lock_writes().push(Box::new(job));
    } else {
        // No thread could be started: run it here rather than lose it.
        job();
    }
}

fn lock_writes() -> std::sync::MutexGuard<'static, Vec<Job>> {
    WRITES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn start_writes() -> bool {
    let spawned = std::thread::Builder::new()
        .name("safetake-writes".into())
        .stack_size(STACK_BYTES)
        .spawn(|| loop {
            std::thread::sleep(WRITE_TICK);
            let jobs = std::mem::take(&mut *lock_writes());
            for job in jobs {
                job();
            }
        });
    match spawned {
        Ok(_) => true,
        Err(error) => {
            tracing::error!(%error, "the storage write thread could not be started");
            false
        }
    }
}

fn start_syncs() -> mpsc::Sender<Job> {
    let (jobs, waiting) = mpsc::channel::<Job>();
    let waiting = std::sync::Arc::new(Mutex::new(waiting));
    for n in 0..SYNC_THREADS {
        let waiting = waiting.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("safetake-sync-{n}"))
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
