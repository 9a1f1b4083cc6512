//! The threads a service's calls run on: up to its number of threads,
//! started as calls need them and ended after a while without work, taking
//! jobs in the order they came. Each service has its own, so a long call of
//! one service never waits for another's, and none runs on the context's
//! main thread (where `#[mitogen::remote]` functions run).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How long a thread without work waits for some before it ends.
const IDLE_EXIT: Duration = Duration::from_secs(30);

/// A job and the bytes it holds (its message), counted against the queue's
/// bound.
type Job = (Box<dyn FnOnce() + Send>, usize);

/// A service's threads and its queue.
pub(crate) struct Pool {
    name: &'static str,
    max_threads: usize,
    state: Arc<(Mutex<State>, Condvar)>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    /// Bytes held by the jobs queued.
    queued_bytes: usize,
    threads: usize,
    /// Threads waiting for a job.
    idle: usize,
}

/// Why a job was not taken.
#[derive(Debug)]
pub(crate) enum NotTaken {
    /// The jobs queued already hold the bound.
    Full,
    /// The pool has no thread, and none could be started.
    NoThread,
}

impl Pool {
    pub(crate) fn new(name: &'static str, max_threads: usize) -> Pool {
        Pool {
            name,
            max_threads: max_threads.max(1),
            state: Default::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `job`, which holds `bytes`; refused when the jobs queued
    /// already hold more than `limit` bytes (what callers may make this
    /// context hold is bounded, as for any receiver).
    pub(crate) fn run(
        &self,
        bytes: usize,
        limit: usize,
        job: impl FnOnce() + Send + 'static,
    ) -> Result<(), NotTaken> {
        let mut st = self.lock();
        if st.queued_bytes.saturating_add(bytes) > limit && !st.queue.is_empty() {
            return Err(NotTaken::Full);
        }
        if st.idle <= st.queue.len() && st.threads < self.max_threads {
            // Every thread is busy or spoken for: one more, if it can be
            // started (else the job waits for a busy one).
            if self.spawn(&mut st).is_err() && st.threads == 0 {
                // Never queued for a thread that does not exist; nor run
                // here, on the router's thread, which must not block.
                return Err(NotTaken::NoThread);
            }
        }
        st.queue.push_back((Box::new(job), bytes));
        st.queued_bytes += bytes;
        self.state.1.notify_one();
        Ok(())
    }

    fn spawn(&self, st: &mut State) -> std::io::Result<()> {
        let state = self.state.clone();
        std::thread::Builder::new()
            .name(format!("mitogen-svc-{}", st.threads))
            .spawn(move || work(&state))?;
        st.threads += 1;
        tracing::trace!(
            service = self.name,
            threads = st.threads,
            "service thread started"
        );
        Ok(())
    }
}

/// A pool thread: takes jobs until none has come for [`IDLE_EXIT`].
fn work(state: &(Mutex<State>, Condvar)) {
    let (lock, cv) = state;
    let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if let Some((job, bytes)) = st.queue.pop_front() {
            st.queued_bytes -= bytes;
            drop(st);
            // A job catches its own panics (they are the call's error);
            // this one is a last guard, so the thread and its count stay
            // right whatever happens.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            st = lock.lock().unwrap_or_else(|e| e.into_inner());
            continue;
        }
        st.idle += 1;
        let (guard, timeout) = cv
            .wait_timeout(st, IDLE_EXIT)
            .unwrap_or_else(|e| e.into_inner());
        st = guard;
        st.idle -= 1;
        if timeout.timed_out() && st.queue.is_empty() {
            st.threads -= 1;
            return;
        }
    }
}
