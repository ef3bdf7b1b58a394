//! The storage threads: every write and fdatasync of a live track runs on one of two fixed sets
//! of threads. A thousand tracks syncing once a second then make no thousand threads (tokio's
//! blocking pool grows a thread for each job that finds none free, and each keeps its stack and
//! malloc arena), and there are still enough of them for many fdatasyncs to be in flight at
//! once, which the kernel merges into fewer journal commits. The page-cache writes of batches
//! between syncs have threads of their own, so they never queue behind fdatasyncs (the audio
//! they carry would pile up in memory meanwhile), and a busy one takes the next batch without
//! going to sleep.

use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use tokio::sync::oneshot;

/// Threads for syncs, so syncs in flight at once: a second's syncs of 2,500 tracks at ~10 ms.
const SYNC_THREADS: usize = 32;

/// Threads for batch writes: a page-cache write of 16 KiB takes microseconds.
const WRITE_THREADS: usize = 2;

/// A job's stack: a write and an fdatasync need little.
const STACK_BYTES: usize = 256 * 1024;

type Job = Box<dyn FnOnce() + Send>;

static SYNCS: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
static WRITES: OnceLock<mpsc::Sender<Job>> = OnceLock::new();

/// Runs `job` (a sync, or anything that may wait for one) on a sync thread; the answer comes
/// through the receiver (which errs only if the job panicked).
pub fn run<T, F>(job: F) -> oneshot::Receiver<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (answer, answered) = oneshot::channel();
    let sender = SYNCS.get_or_init(|| start("sync", SYNC_THREADS));
    submit(sender, move || {
        let _ = answer.send(job());
    });
    answered
}

/// Runs `job`, a page-cache write that never waits for a sync, on a write thread, with nobody
/// waiting for it.
pub fn write<F>(job: F)
where
    F: FnOnce() + Send + 'static,
{
    submit(WRITES.get_or_init(|| start("write", WRITE_THREADS)), job);
}

fn submit(sender: &mpsc::Sender<Job>, job: impl FnOnce() + Send + 'static) {
    if let Err(mpsc::SendError(job)) = sender.send(Box::new(job)) {
        // No thread could be started: run it here rather than lose it.
        job();
    }
}

fn start(kind: &str, threads: usize) -> mpsc::Sender<Job> {
    let (jobs, waiting) = mpsc::channel::<Job>();
    let waiting = std::sync::Arc::new(Mutex::new(waiting));
    for n in 0..threads {
        let waiting = waiting.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("safetake-{kind}-{n}"))
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
