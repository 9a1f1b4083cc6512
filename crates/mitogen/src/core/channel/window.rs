//! A sending process's credit on one channel: the [`Window`].
//!
//! Every process that holds a [`Sender`](crate::Sender) has one window per
//! channel, shared by its copies (it lives in the process's
//! [`Holder`](super::senders::Holder)). Sending a value spends its
//! [`weight`]; the receiver gives credit back as its reader *takes* values
//! (see [`flow`](super::flow)), and a send that would overrun the window
//! waits for it. So at most the window's size is ever sent but not yet
//! consumed, from each process: a fast producer cannot fill the memory of a
//! slow consumer, nor of any hop between them.
//!
//! A value larger than the whole window may go when nothing is in flight,
//! so that every value the frame limit allows can be sent. A waiting sender
//! asks the receiver once for what it has consumed (`Control::Want`), as the
//! receiver otherwise gives credit back only in batches. The wait ends with
//! an error when the window is ended: the receiver was dropped or closed,
//! its context disconnected, or this router shut down.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use crate::core::error::Error;
use crate::core::message::Message;

/// Window of a channel unless its receiver says otherwise: deep enough that
/// a local channel streams as fast as it did without windows on a loaded
/// machine (16 MiB lost ~15 % there, interleaved runs of `mitogen bench`),
/// and the bandwidth-delay product of a 100 ms link at ~250 MiB/s (the
/// receiver gives credit back every eighth of a window, so seven eighths
/// stay in flight); small enough that a file streamed through keeps each
/// process under 64 MiB.
pub const DEFAULT_WINDOW: usize = 32 * 1024 * 1024;

/// What one queued message costs besides its body, so that a flood of
/// empty values is bounded by the window too (the router weighs queued
/// messages the same way).
pub(crate) const MESSAGE_OVERHEAD: u64 = 64;

/// What sending `msg` spends of a window.
pub(crate) fn weight(msg: &Message) -> u64 {
    msg.body.len() as u64 + MESSAGE_OVERHEAD
}

/// Why a window no longer gives credit.
#[derive(Debug, Clone)]
pub(crate) enum Ended {
    /// The receiver was dropped, the channel closed, or it cut us off.
    Closed(String),
    /// The receiver's context (or the way to it) is gone.
    Disconnected { context: String, reason: String },
}

impl Ended {
    fn error(&self) -> Error {
        match self {
            Ended::Closed(r) => Error::ChannelClosed(r.clone()),
            Ended::Disconnected { context, reason } => Error::Disconnected {
                context: context.clone(),
                reason: reason.clone(),
            },
        }
    }
}

struct State {
    /// Bytes sent (by [`weight`]) and not yet given back by the receiver.
    in_flight: u64,
    ended: Option<Ended>,
    /// A `Want` went out since the last grant: one is enough.
    wanted: bool,
    /// Threads waiting on the condition variable (notified only if any).
    sleepers: usize,
    /// Tasks waiting in [`Window::poll_take`].
    tasks: Vec<Waker>,
}

/// One process's credit on one channel (see the module docs).
pub(crate) struct Window {
    size: u64,
    state: Mutex<State>,
    cond: Condvar,
}

/// What a sender must do before it waits (see [`Window::take`]).
pub(crate) trait OnBlock {
    /// The window is spent: ask the receiver for what it consumed.
    fn blocked(&self);
}

impl Window {
    /// A window of `size` bytes (at least one).
    pub(crate) fn new(size: u64) -> Window {
        Window {
            size: size.max(1),
            state: Mutex::new(State {
                in_flight: 0,
                ended: None,
                wanted: false,
                sleepers: 0,
                tasks: Vec::new(),
            }),
            cond: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section is a few assignments: nothing is left half
        // done by a panic, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The window's size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Bytes in flight (sent, not yet given back).
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> u64 {
        self.lock().in_flight
    }

    /// Spends `weight` if the window has room for it (or nothing is in flight).
    fn try_spend(&self, st: &mut State, weight: u64) -> Option<Result<(), Error>> {
        if let Some(e) = &st.ended {
            return Some(Err(e.error()));
        }
        if st.in_flight == 0 || st.in_flight.saturating_add(weight) <= self.size {
            st.in_flight = st.in_flight.saturating_add(weight);
            return Some(Ok(()));
        }
        None
    }

    /// Spends `weight`, waiting until `deadline` (`None`: until credit comes
    /// or the window ends) for room. A time-out names `waited`.
    pub(crate) fn take(
        &self,
        weight: u64,
        deadline: Option<Instant>,
        waited: Duration,
        on_block: &dyn OnBlock,
    ) -> Result<(), Error> {
        let mut st = self.lock();
        loop {
            if let Some(r) = self.try_spend(&mut st, weight) {
                return r;
            }
            if !st.wanted {
                st.wanted = true;
                drop(st);
                on_block.blocked();
                st = self.lock();
                continue;
            }
            st.sleepers += 1;
            st = match deadline {
                None => self.cond.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        st.sleepers -= 1;
                        return Err(Error::Timeout(waited));
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

    /// The async form of [`take`](Self::take), without a deadline.
    pub(crate) fn poll_take(
        &self,
        weight: u64,
        cx: &mut TaskContext<'_>,
        on_block: &dyn OnBlock,
    ) -> Poll<Result<(), Error>> {
        let mut st = self.lock();
        if let Some(r) = self.try_spend(&mut st, weight) {
            return Poll::Ready(r);
        }
        if !st.tasks.iter().any(|w| w.will_wake(cx.waker())) {
            st.tasks.push(cx.waker().clone());
        }
        if !st.wanted {
            st.wanted = true;
            drop(st);
            on_block.blocked();
            // Credit or an end may have come meanwhile, and woken nobody
            // (the waker is registered already, so nothing is lost).
        }
        Poll::Pending
    }

    /// Gives back `weight` that was spent on a value that was not sent.
    pub(crate) fn refund(&self, weight: u64) {
        self.grant(weight);
    }

    /// The receiver consumed `n` bytes of what was sent.
    pub(crate) fn grant(&self, n: u64) {
        let mut st = self.lock();
        st.in_flight = st.in_flight.saturating_sub(n);
        st.wanted = false;
        self.wake(st);
    }

    /// No more credit will come: every wait, and every later send, fails
    /// with `why` (the first reason given stays).
    pub(crate) fn end(&self, why: Ended) {
        let mut st = self.lock();
        if st.ended.is_none() {
            st.ended = Some(why);
        }
        self.wake(st);
    }

    /// True once [`end`](Self::end) was called.
    #[cfg(test)]
    pub(crate) fn is_ended(&self) -> bool {
        self.lock().ended.is_some()
    }

    /// True when nothing is in flight or no credit will come: a window no
    /// holder uses can be forgotten then.
    pub(crate) fn is_done(&self) -> bool {
        let st = self.lock();
        st.in_flight == 0 || st.ended.is_some()
    }

    fn wake(&self, mut st: MutexGuard<'_, State>) {
        let tasks = std::mem::take(&mut st.tasks);
        let sleepers = st.sleepers;
        drop(st);
        if sleepers > 0 {
            self.cond.notify_all();
        }
        for t in tasks {
            t.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[derive(Default)]
    struct Count(AtomicUsize);
    impl OnBlock for Count {
        fn blocked(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_spent_window_waits_for_credit_and_asks_once() {
        let w = Arc::new(Window::new(1000));
        let asked = Count::default();
        let none = Some(Instant::now());
        w.take(600, none, Duration::ZERO, &asked).unwrap();
        w.take(400, none, Duration::ZERO, &asked).unwrap();
        assert!(matches!(
            w.take(1, none, Duration::ZERO, &asked),
            Err(Error::Timeout(_))
        ));
        assert!(matches!(
            w.take(1, none, Duration::ZERO, &asked),
            Err(Error::Timeout(_))
        ));
        assert_eq!(asked.0.load(Ordering::Relaxed), 1);
        let w2 = w.clone();
        let t = std::thread::spawn(move || {
            w2.take(500, None, Duration::ZERO, &Count::default())
                .map(|_| w2.in_flight())
        });
        std::thread::sleep(Duration::from_millis(20));
        w.grant(600);
        assert_eq!(t.join().unwrap().unwrap(), 900);
    }

    #[test]
    fn a_value_larger_than_the_window_goes_when_nothing_is_in_flight() {
        let w = Window::new(100);
        let asked = Count::default();
        w.take(5000, None, Duration::ZERO, &asked).unwrap();
        w.grant(5000);
        w.take(10, None, Duration::ZERO, &asked).unwrap();
        assert!(w
            .take(5000, Some(Instant::now()), Duration::ZERO, &asked)
            .is_err());
    }

    #[test]
    fn an_ended_window_wakes_its_waiter() {
        let w = Arc::new(Window::new(10));
        w.take(10, None, Duration::ZERO, &Count::default()).unwrap();
        let w2 = w.clone();
        let t = std::thread::spawn(move || w2.take(10, None, Duration::ZERO, &Count::default()));
        std::thread::sleep(Duration::from_millis(20));
        w.end(Ended::Closed("receiver dropped".into()));
        assert!(
            matches!(t.join().unwrap(), Err(Error::ChannelClosed(r)) if r == "receiver dropped")
        );
        assert!(w.is_ended());
    }
}
