//! A running count of the bytes a push or fetch has moved, for a caller
//! that shows progress while the transfer runs ([`FileOptions::progress`](super::FileOptions::progress)).
//!
//! The transfer adds to it once per frame (a large file's 256 KiB by
//! default) or per batch of small files, never per byte: one relaxed atomic
//! add each, next to a frame's read, hash and send. The count is only ever
//! read for display, so nothing orders other memory by it (`Relaxed`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes of file content moved so far by the transfers given this counter
/// (clones share one count, so one counter may be given to many transfers,
/// on many threads, and read from another).
///
/// What is counted is what *this* process moves: on a push, content it has
/// sent (a large file's data frame as each is sent, small files when the
/// batch carrying them is sent); on a fetch, content it has written. Holes
/// of sparse files are not counted (nothing moves for them), nor are files
/// left alone because the destination has them, except small files sent
/// with a push's listing before the receiver found it had them (they did
/// move). So a fetch's count ends at the sum of its [`Transfer::bytes`](super::Transfer::bytes).
/// A push through [`push_all`](super::push_all) to several contexts behind
/// one shared hop counts the bytes once: this process sends them to that
/// hop once, and the hop sends them on.
///
/// It is not part of what travels to other contexts: a hop that forwards a
/// fan-out counts nothing here.
///
/// ```no_run
/// # fn demo(ctx: mitogen::Context) -> mitogen::Result<()> {
/// use mitogen::files::{FileOptions, Progress};
/// let progress = Progress::new();
/// let mut opts = FileOptions::default();
/// opts.progress = Some(progress.clone());
/// let shown = progress.clone();
/// let ticker = std::thread::spawn(move || {
///     // e.g. a progress bar's tick
///     println!("{} bytes sent", shown.bytes());
/// });
/// let t = ctx.push_with("big.iso", "/srv/big.iso", &opts)?;
/// ticker.join().ok();
/// println!("{} bytes sent in all, {} written there", progress.bytes(), t.bytes);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct Progress(Arc<AtomicU64>);

impl Progress {
    /// A counter at zero.
    pub fn new() -> Progress {
        Progress::default()
    }

    /// The bytes counted so far.
    pub fn bytes(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts `n` more bytes.
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

/// Counts `n` bytes on `p`, if there is one.
pub(crate) fn count(p: Option<&Progress>, n: u64) {
    if let Some(p) = p {
        p.add(n);
    }
}
