//! [`Latch`]: the one waiting primitive everything else is built on.
//!
//! A latch is a queue that any thread may put into and any thread may wait on,
//! with a deadline, or `.await` from async code. Blocking waiters sleep on a
//! futex-backed condition variable (no file descriptor per waiter), and a latch can
//! notify a [`Select`](crate::Select) so one thread can wait on many latches.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use super::error::Error;
use super::spin;

/// Why a latch yielded no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LatchError {
    /// The deadline passed with the queue still empty.
    Timeout,
    /// The latch was closed (its owner shut down); the reason says why.
    Closed(String),
    /// Nothing queued right now (`try_get` only).
    Empty,
}

impl LatchError {
    /// Converts to the crate's error, naming the `waited` duration for time-outs.
    pub fn into_error(self, waited: Option<Duration>) -> Error {
        match self {
            LatchError::Timeout => Error::Timeout(waited.unwrap_or_default()),
            LatchError::Closed(r) => Error::ChannelClosed(r),
            LatchError::Empty => Error::Timeout(Duration::ZERO),
        }
    }
}

struct State<T> {
    /// Values with their weights (see [`Latch::put_within`]).
    queue: VecDeque<(T, usize)>,
    /// Sum of the weights queued.
    held: usize,
    closed: Option<String>,
    sleepers: usize,
    /// Every task waiting in [`Latch::poll_get`]: all are woken by a put, so
    /// two tasks awaiting one latch cannot lose a wake-up to each other (the
    /// one that finds the queue empty registers again).
    tasks: Vec<Waker>,
    notify: Option<(Arc<Latch<usize>>, usize)>,
}

/// What [`Latch::put_within`] did with a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Put {
    /// Queued.
    Queued,
    /// Dropped: the latch is closed.
    Closed,
    /// Dropped: the latch holds as much as it may.
    Full,
}

/// A thread-safe queue whose consumers can block with a deadline or `.await`.
///
/// ```
/// let latch = std::sync::Arc::new(mitogen::testing::Latch::new());
/// let l2 = latch.clone();
/// std::thread::spawn(move || l2.put(42));
/// assert_eq!(latch.get_timeout(std::time::Duration::from_secs(5)), Ok(42));
/// ```
pub struct Latch<T> {
    state: Mutex<State<T>>,
    cond: Condvar,
    /// Number of queued values, readable without the lock while spinning.
    queued: AtomicUsize,
}

impl<T> Default for Latch<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Latch<T> {
    /// An empty, open latch.
    pub fn new() -> Latch<T> {
        Latch {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                held: 0,
                closed: None,
                sleepers: 0,
                tasks: Vec::new(),
                notify: None,
            }),
            cond: Condvar::new(),
            queued: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding this lock cannot leave the queue half-updated
        // (every critical section is a single push/pop), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a value and wakes one waiter. Returns `false` (dropping the value)
    /// when the latch is closed.
    pub fn put(&self, value: T) -> bool {
        self.put_within(value, 0, usize::MAX) == Put::Queued
    }

    /// Queues `value`, which weighs `weight` (its size in bytes, say), unless
    /// the latch is closed or the weight queued would then exceed `limit`:
    /// how a queue that another process fills is kept bounded.
    pub(crate) fn put_within(&self, value: T, weight: usize, limit: usize) -> Put {
        let mut st = self.lock();
        if st.closed.is_some() {
            return Put::Closed;
        }
        if st.held.saturating_add(weight) > limit {
            return Put::Full;
        }
        st.held += weight;
        st.queue.push_back((value, weight));
        self.queued.store(st.queue.len(), Ordering::Release);
        let tasks = std::mem::take(&mut st.tasks);
        let notify = st.notify.clone();
        let sleepers = st.sleepers;
        drop(st);
        if sleepers > 0 {
            self.cond.notify_one();
        }
        for t in tasks {
            t.wake();
        }
        if let Some((select, index)) = notify {
            select.put(index);
        }
        Put::Queued
    }

    /// Closes the latch: waiters wake with [`LatchError::Closed`] once the queue is
    /// drained; later `put`s are refused.
    pub fn close(&self, reason: &str) {
        let mut st = self.lock();
        if st.closed.is_none() {
            st.closed = Some(reason.to_owned());
        }
        let tasks = std::mem::take(&mut st.tasks);
        let notify = st.notify.clone();
        drop(st);
        self.cond.notify_all();
        for t in tasks {
            t.wake();
        }
        if let Some((select, index)) = notify {
            select.put(index);
        }
    }

    /// True once [`close`](Self::close) has been called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }

    /// Number of queued values.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes a value if one is queued.
    pub fn try_get(&self) -> Result<T, LatchError> {
        let mut st = self.lock();
        match self.pop(&mut st) {
            Some(v) => Ok(v),
            None => match &st.closed {
                Some(r) => Err(LatchError::Closed(r.clone())),
                None => Err(LatchError::Empty),
            },
        }
    }

    /// Waits without a deadline. Only for waits that something else is guaranteed
    /// to end (a close on disconnection or shutdown).
    pub fn get(&self) -> Result<T, LatchError> {
        self.get_deadline(None)
    }

    /// Waits up to `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, LatchError> {
        self.get_deadline(Instant::now().checked_add(timeout))
    }

    /// Waits until `deadline` (`None`: until a value arrives or the latch closes).
    pub fn get_deadline(&self, deadline: Option<Instant>) -> Result<T, LatchError> {
        let started = Instant::now();
        // A value already queued is no wait (see `core::spin`).
        let waits = self.queued.load(Ordering::Acquire) == 0;
        self.spin(deadline);
        let mut st = self.lock();
        loop {
            if let Some(v) = self.pop(&mut st) {
                if waits {
                    spin::record_wait(started);
                }
                return Ok(v);
            }
            if let Some(r) = &st.closed {
                return Err(LatchError::Closed(r.clone()));
            }
            st.sleepers += 1;
            st = match deadline {
                None => self.cond.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        st.sleepers -= 1;
                        spin::record_timeout(started);
                        return Err(LatchError::Timeout);
                    }
                    self.cond
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
            st.sleepers -= 1;
        }
    }

    /// The async form of [`get`](Self::get): ready with a value or the close reason.
    pub fn poll_get(&self, cx: &mut TaskContext<'_>) -> Poll<Result<T, LatchError>> {
        let mut st = self.lock();
        if let Some(v) = self.pop(&mut st) {
            return Poll::Ready(Ok(v));
        }
        if let Some(r) = &st.closed {
            return Poll::Ready(Err(LatchError::Closed(r.clone())));
        }
        if !st.tasks.iter().any(|w| w.will_wake(cx.waker())) {
            st.tasks.push(cx.waker().clone());
        }
        Poll::Pending
    }

    fn pop(&self, st: &mut State<T>) -> Option<T> {
        let (v, weight) = st.queue.pop_front()?;
        st.held -= weight;
        // A burst (thousands of pipelined calls or replies) grows the queue
        // to its size; once drained, free that rather than keep it resident
        // for the latch's life. Small queues keep their buffer, so steady
        // traffic never reallocates.
        if st.queue.is_empty() && st.queue.capacity() > 256 {
            st.queue = VecDeque::new();
        }
        self.queued.store(st.queue.len(), Ordering::Release);
        Some(v)
    }

    /// Polls briefly for a value before the caller goes to sleep, when that
    /// has been paying off for this thread (`core::spin`).
    fn spin(&self, deadline: Option<Instant>) {
        if self.queued.load(Ordering::Acquire) > 0 {
            return;
        }
        let Some(budget) = spin::budget() else {
            return;
        };
        let start = Instant::now();
        let limit = match deadline {
            Some(d) => d.saturating_duration_since(start).min(budget),
            None => budget,
        };
        loop {
            for _ in 0..64 {
                if self.queued.load(Ordering::Acquire) > 0 {
                    return;
                }
                std::hint::spin_loop();
            }
            if start.elapsed() >= limit {
                return;
            }
            std::thread::yield_now();
        }
    }

    /// Makes every future `put` (and `close`) also put `index` into `select`.
    /// Used by [`Select`](crate::Select); one select per latch at a time.
    pub(crate) fn set_notify(&self, select: Option<(Arc<Latch<usize>>, usize)>) -> bool {
        let mut st = self.lock();
        if select.is_some() && st.notify.is_some() {
            return false;
        }
        st.notify = select;
        true
    }

    /// Takes the first queued value if `f` says so.
    pub(crate) fn take_front_if(&self, f: impl Fn(&T) -> bool) -> Option<T> {
        let mut st = self.lock();
        if !f(&st.queue.front()?.0) {
            return None;
        }
        self.pop(&mut st)
    }

    /// True when a `get` would return at once.
    pub(crate) fn is_ready(&self) -> bool {
        let st = self.lock();
        !st.queue.is_empty() || st.closed.is_some()
    }
}

/// Runs the blocking `f` on a thread of its own and awaits its result: how a
/// blocking operation (starting a context, waiting for a stream to drain) is
/// offered to async code of any runtime without blocking its executor.
pub(crate) async fn off_thread<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, Error> + Send + 'static,
) -> Result<R, Error> {
    let latch = Arc::new(Latch::new());
    let l2 = latch.clone();
    std::thread::Builder::new()
        .name("mitogen-async".into())
        .spawn(move || {
            // Closed however the thread ends (a panic in `f` included), so
            // the awaiting task never waits for a value that cannot come.
            struct CloseOnDrop<R>(Arc<Latch<Result<R, Error>>>);
            impl<R> Drop for CloseOnDrop<R> {
                fn drop(&mut self) {
                    self.0.close("the thread ended without a result");
                }
            }
            let _close = CloseOnDrop(l2.clone());
            l2.put(f());
        })
        .map_err(|e| Error::io("spawning a thread", e))?;
    match std::future::poll_fn(|cx| latch.poll_get(cx)).await {
        Ok(r) => r,
        Err(e) => Err(e.into_error(None)),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_drained_burst_gives_its_queue_back() {
        let latch = Latch::new();
        for i in 0..5000 {
            latch.put(i);
        }
        for _ in 0..5000 {
            latch.try_get().unwrap();
        }
        assert!(latch.lock().queue.capacity() <= 256);
    }

    use super::*;

    #[test]
    fn deadline_and_close() {
        let l: Latch<u8> = Latch::new();
        assert_eq!(
            l.get_timeout(Duration::from_millis(10)),
            Err(LatchError::Timeout)
        );
        l.put(1);
        l.close("gone");
        assert_eq!(l.get(), Ok(1));
        assert_eq!(l.get(), Err(LatchError::Closed("gone".into())));
        assert!(!l.put(2));
    }

    #[test]
    fn weighed_puts_stop_at_the_limit_and_resume_as_values_go() {
        let l: Latch<u8> = Latch::new();
        assert_eq!(l.put_within(1, 60, 100), Put::Queued);
        assert_eq!(l.put_within(2, 60, 100), Put::Full);
        assert_eq!(l.put_within(3, 40, 100), Put::Queued);
        assert_eq!(l.try_get(), Ok(1));
        assert_eq!(l.put_within(4, 60, 100), Put::Queued);
        assert_eq!(l.len(), 2);
        l.close("gone");
        assert_eq!(l.put_within(5, 0, 100), Put::Closed);
    }

    #[test]
    fn a_put_wakes_every_waiting_task() {
        struct Count(AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let l: Latch<u8> = Latch::new();
        let counts = [Arc::new(Count(0.into())), Arc::new(Count(0.into()))];
        for c in &counts {
            let waker = Waker::from(c.clone());
            assert!(l
                .poll_get(&mut TaskContext::from_waker(&waker))
                .is_pending());
        }
        l.put(1);
        for c in &counts {
            assert_eq!(c.0.load(Ordering::Relaxed), 1);
        }
    }

    #[test]
    fn wakes_a_sleeping_thread() {
        let l = Arc::new(Latch::new());
        let l2 = l.clone();
        let t = std::thread::spawn(move || l2.get_timeout(Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(20));
        l.put(5u32);
        assert_eq!(t.join().unwrap(), Ok(5));
    }
}
