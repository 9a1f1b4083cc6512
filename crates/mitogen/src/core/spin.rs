//! When a waiting thread should poll for a while before it sleeps.
//!
//! A thread that is still running when the value it waits for arrives needs
//! no wake-up, and on virtual machines a cross-CPU wake-up costs tens of
//! microseconds, several times a whole local round trip. Polling costs a CPU
//! that other processes may need, though (on a small machine, the very
//! processes that carry the reply), so a thread polls only while polling has
//! been paying off for it: while most of its recent waits ended within the
//! polling window [`SPIN`].
//!
//! The policy counts *hits* (waits that ended within the window), not the
//! average wait. An average set against a fixed line flips between two stable
//! states when waits sit near the line: a thread whose waits run a little
//! long stops polling, so its waits get longer by a wake-up, which keeps it
//! from polling again. A chain of local contexts answers in about that time,
//! and its round trip was either ~25 µs or ~50 µs depending on which state
//! each thread had fallen into. Hits cannot flip that way: a wait of 50 µs
//! is a hit whether the thread polled for it or slept through it. Streaming
//! (chunks every few hundred microseconds) and slow peers still miss, and
//! stop polling after a few waits.
//!
//! The record is per thread: a thread's waits are alike (a caller waiting
//! for replies, a receiver for chunks), another thread's tell it nothing.
//!
//! Only waits that actually waited are recorded: a value already queued says
//! nothing about how long the next wait will take (a receiver draining a
//! queue of chunks would otherwise look like a thread with instant waits).

use std::cell::Cell;
use std::time::{Duration, Instant};

/// How long a waiter polls before it sleeps: a reply from a local context,
/// even through a chain of them, usually arrives within this.
pub(crate) const SPIN: Duration = Duration::from_micros(100);

/// Weight of a hit in the moving record, out of which [`WORTH`] is the line.
const HIT: u32 = 1024;

/// Polling pays while at least half of the recent waits were hits.
const WORTH: u32 = HIT / 2;

thread_local! {
    /// Moving average of this thread's recent hits (`HIT` each), over about
    /// the last eight waits. A new thread starts out polling.
    static HITS: Cell<u32> = const { Cell::new(HIT) };
}

/// How long this thread should poll before it sleeps, or `None` when its
/// recent waits did not end within the window often enough to pay for it.
pub(crate) fn budget() -> Option<Duration> {
    (HITS.with(Cell::get) >= WORTH).then_some(SPIN)
}

/// Records a wait of this thread that began at `started` and has just ended
/// with a value (a close says nothing about the next wait).
pub(crate) fn record_wait(started: Instant) {
    record(started.elapsed() <= SPIN);
}

/// Records a wait that began at `started` and timed out: a miss if it lasted
/// longer than the window (an idle thread that wakes now and then to look
/// around, such as a relay's main thread, stops polling each time), nothing
/// if its deadline was shorter than that.
pub(crate) fn record_timeout(started: Instant) {
    if started.elapsed() > SPIN {
        record(false);
    }
}

fn record(hit: bool) {
    let hit = if hit { HIT } else { 0 };
    HITS.with(|h| h.set((h.get() * 7 + hit) / 8));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_of(d: Duration) {
        record_wait(Instant::now() - d);
    }

    #[test]
    fn short_waits_keep_polling_long_ones_stop_it() {
        std::thread::spawn(|| {
            assert_eq!(budget(), Some(SPIN), "a new thread polls");
            for _ in 0..20 {
                wait_of(Duration::from_micros(60));
            }
            assert!(budget().is_some(), "60 µs waits end within the window");
            for _ in 0..6 {
                wait_of(Duration::from_micros(300));
            }
            assert!(budget().is_none(), "chunks every 300 µs never do");
            for _ in 0..6 {
                wait_of(Duration::from_micros(20));
            }
            assert!(budget().is_some(), "short waits again: polling again");
            for _ in 0..6 {
                record_timeout(Instant::now() - Duration::from_millis(20));
            }
            assert!(
                budget().is_none(),
                "waking from 20 ms time-outs: no polling"
            );
            for _ in 0..20 {
                record_timeout(Instant::now() - Duration::from_micros(10));
            }
            assert!(budget().is_none(), "short time-outs say nothing");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn one_long_wait_among_short_ones_does_not_stop_polling() {
        std::thread::spawn(|| {
            for _ in 0..20 {
                wait_of(Duration::from_micros(30));
            }
            wait_of(Duration::from_millis(50));
            assert!(budget().is_some());
        })
        .join()
        .unwrap();
    }
}
