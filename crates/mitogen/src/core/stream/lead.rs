//! A waiting thread reads the stream its reply comes on itself
//! ([`Stream::lead`]), so the message that ends its wait costs one wake-up
//! instead of two.

use std::sync::Arc;
use std::time::Instant;

use super::Stream;
use crate::core::reader::{pump, Pumped};

/// Longest a leading thread sleeps in `poll` before it looks at its condition
/// again.
const LEAD_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// How [`Stream::lead`] ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lead {
    /// The caller's condition became true.
    Done,
    /// Another thread (the broker or another leader) is reading the stream.
    Busy,
    /// The stream ended or failed; the broker takes it from here.
    Ended,
    /// The deadline passed.
    Timeout,
}

impl Stream {
    /// Reads and routes this stream's messages on the calling thread until
    /// `done()` holds, instead of waiting for the broker to do it and wake us.
    ///
    /// A thread waiting for a reply (or a child's main thread waiting for its
    /// next call) blocks in `poll` on the stream itself, so the message that
    /// ends its wait costs one wake-up instead of two (broker, then waiter):
    /// on a busy machine, and over ssh, a cross-CPU wake-up costs more than the
    /// rest of the round trip. The broker stops watching the descriptor
    /// meanwhile and takes over again afterwards. If another thread is reading
    /// already, this returns [`Lead::Busy`] at once.
    pub(crate) fn lead(
        self: &Arc<Self>,
        router: &crate::core::router::RouterInner,
        done: &dyn Fn() -> bool,
        deadline: Option<Instant>,
    ) -> Lead {
        if self.is_dead() {
            return Lead::Ended;
        }
        if self.is_relaying() {
            // Relaying waits on a pipe too, which the broker watches. Checked
            // before taking the reader, which the broker may want right now
            // (it does not retry when the reader is taken).
            return Lead::Busy;
        }
        let Some(mut reader) = self.try_reader() else {
            return Lead::Busy;
        };
        self.want_rx(false);
        let started = Instant::now();
        let spin_until = crate::core::spin::budget().map(|b| started + b);
        let outcome = 'lead: loop {
            match pump(self, &mut reader, router) {
                Pumped::Progress if reader.is_relaying() => break 'lead Lead::Busy,
                Pumped::Progress => continue,
                Pumped::WouldBlock => {}
                Pumped::Stalled | Pumped::Held => break 'lead Lead::Busy,
                Pumped::Ended => break 'lead Lead::Ended,
            }
            if done() {
                break Lead::Done;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                break Lead::Timeout;
            }
            if spin_until.is_some_and(|t| now < t) {
                // Recent waits on this thread ended within the polling window:
                // the message is probably microseconds away, and catching it
                // awake saves a wake-up that costs more than the whole round
                // trip. Yield after every look: when the thread that is to
                // send it waits for this CPU (two polling processes on one
                // CPU, a relay's broker), it gets the CPU within one look
                // instead of a slice (yielding only every 16th look doubled
                // the local round trip whenever the scheduler put both ends
                // on one CPU); with nothing else to run, the yield returns at
                // once.
                std::thread::yield_now();
                continue;
            }
            // Wake now and then to look at `done()`, which other threads can
            // also satisfy (a shutdown, a reply routed by the broker).
            let wait = deadline
                .map(|d| d - now)
                .unwrap_or(LEAD_POLL)
                .min(LEAD_POLL);
            let ts = rustix::event::Timespec {
                tv_sec: wait.as_secs() as i64,
                tv_nsec: wait.subsec_nanos() as i64,
            };
            let mut pfd = [rustix::event::PollFd::new(
                &*self.rx,
                rustix::event::PollFlags::IN,
            )];
            let _ = rustix::event::poll(&mut pfd, Some(&ts));
        };
        drop(reader);
        match outcome {
            Lead::Done => crate::core::spin::record_wait(started),
            Lead::Timeout => crate::core::spin::record_timeout(started),
            Lead::Busy | Lead::Ended => {}
        }
        if outcome == Lead::Ended {
            // Let the broker see the end (or the bad frame) and tear down.
            let stream = self.clone();
            router.broker.defer(move |core| core.disconnect(&stream));
        }
        self.want_rx(true);
        outcome
    }
}
