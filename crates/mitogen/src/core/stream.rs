//! [`Stream`]: framing of messages over a pair of [`Side`]s.
//!
//! Writing is shared: any thread may send. When nothing is queued, the sending
//! thread writes its frame itself under the stream's lock (no broker wake-up on
//! the hot path); whatever the kernel does not take is queued, and the broker is
//! asked to finish the job when the descriptor becomes writable. Frames queued
//! meanwhile leave together in one `writev` (`transmit`).
//!
//! Reading is done by the broker, or by a thread waiting for a reply on this
//! stream (`lead`), through a [`FrameReader`] (module `reader`).
//!
//! A frame relayed cut-through (module `cut_through`) is queued before its body
//! has arrived: its tail comes out of a pipe as the incoming stream fills it,
//! and the frames queued behind it wait until it is through.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use bytes::Bytes;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use super::cut_through::{can_splice, CutThrough};
use super::message::{ContextId, HEADER_LEN};
use super::side::Side;

pub use super::reader::{FrameReader, ReadStatus, CHUNK_SIZE};
pub(crate) use lead::Lead;

mod lead;
mod transmit;

/// Queued bytes above which flow-controlled senders wait for the queue to drain.
pub const HIGH_WATER: usize = 8 * 1024 * 1024;

/// How many frames one `writev` may carry.
const MAX_IOV: usize = 64;

struct Frame {
    header: [u8; HEADER_LEN],
    body: Bytes,
    /// The rest of a frame relayed cut-through, still arriving.
    tail: Option<Arc<CutThrough>>,
    /// Bytes of header + body (+ tail) already written.
    done: usize,
}

impl Frame {
    /// Header and in-memory body: what `writev` sends.
    fn head_len(&self) -> usize {
        HEADER_LEN + self.body.len()
    }

    fn len(&self) -> usize {
        self.head_len() + self.tail.as_ref().map_or(0, |t| t.len())
    }
}

struct Tx {
    queue: VecDeque<Frame>,
    /// True while the broker should watch the transmit side for writability.
    armed: bool,
    /// True while the broker should watch the receive side (false while a
    /// thread reads the stream itself, see [`Stream::lead`]).
    rx_wanted: bool,
    /// What is registered with the poller now, for the receive side (and, on
    /// one descriptor, both) and for a separate transmit side.
    rx_registered: bool,
    tx_registered: bool,
    closed: bool,
    /// Threads waiting in [`Stream::wait_for_room`]: waking a condition
    /// variable is a system call even with nobody waiting, so it is done only
    /// when somebody is.
    room_waiters: usize,
}

/// Where a stream's descriptors are registered with the broker's poller.
pub(crate) struct Registration {
    pub registry: Registry,
    pub rx_token: Token,
    pub tx_token: Token,
    /// For the pipe of a frame being relayed from this stream, while it is full.
    pub pipe_token: Token,
}

/// What sending on a stream observed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SendStatus {
    /// Written or queued.
    Queued,
    /// The stream is gone; the message was dropped.
    Disconnected,
}

/// A framed, bidirectional connection to one directly connected context.
pub struct Stream {
    name: String,
    rx: Arc<Side>,
    tx: Arc<Side>,
    remote_id: AtomicU32,
    tx_state: Mutex<Tx>,
    drained: Condvar,
    pending: AtomicUsize,
    dead: AtomicBool,
    reg: std::sync::OnceLock<Registration>,
    /// The receive state. The broker reads under this lock, and so does a
    /// thread that reads the stream itself while it waits for a reply
    /// ([`Stream::lead`]); whoever holds it reads, the other steps aside.
    reader: Mutex<FrameReader>,
    /// The frame being relayed cut-through from this stream, and where to: if
    /// this stream dies, the relay must be told (the reader may be locked by
    /// a waiting thread then, so this lives apart).
    relaying: Mutex<Option<(Arc<CutThrough>, Arc<Stream>)>>,
    /// Whether the descriptors can take part in `splice(2)`.
    splice_in: bool,
    splice_out: bool,
    /// Whether the peer is a process on this machine (see `Launch::local_peer`).
    local_peer: AtomicBool,
    /// True when the peer is this process's parent (messages from it carry the
    /// authority of our ancestors).
    pub(crate) is_parent: bool,
    /// Reading is paused: what came from here fills the parent stream faster
    /// than it drains (see `RouterInner::hold`).
    held: AtomicBool,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("name", &self.name)
            .field("remote_id", &self.remote_id())
            .field("pending_bytes", &self.pending_bytes())
            .finish()
    }
}

impl Stream {
    /// A stream reading from `rx` and writing to `tx` (which may be the same side).
    pub(crate) fn new(name: String, rx: Arc<Side>, tx: Arc<Side>, is_parent: bool) -> Stream {
        Stream {
            splice_in: can_splice(rx.as_fd()),
            splice_out: can_splice(tx.as_fd()),
            relaying: Mutex::new(None),
            local_peer: AtomicBool::new(false),
            name,
            rx,
            tx,
            remote_id: AtomicU32::new(u32::MAX),
            tx_state: Mutex::new(Tx {
                queue: VecDeque::new(),
                armed: false,
                rx_wanted: true,
                rx_registered: false,
                tx_registered: false,
                closed: false,
                room_waiters: 0,
            }),
            drained: Condvar::new(),
            pending: AtomicUsize::new(0),
            dead: AtomicBool::new(false),
            reg: std::sync::OnceLock::new(),
            reader: Mutex::new(FrameReader::new(0, &[])),
            is_parent,
            held: AtomicBool::new(false),
        }
    }

    /// Pauses reading; `false` if it was paused already.
    pub(crate) fn hold(&self) -> bool {
        !self.held.swap(true, Ordering::AcqRel)
    }

    /// Resumes reading (the caller reads what waits).
    pub(crate) fn release(&self) {
        self.held.store(false, Ordering::Release);
    }

    /// True while reading is paused.
    pub(crate) fn is_held(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }

    /// Name used in logs and errors (normally the peer context's name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Id of the directly connected context.
    pub fn remote_id(&self) -> ContextId {
        self.remote_id.load(Ordering::Relaxed)
    }

    pub(crate) fn set_remote_id(&self, id: ContextId) {
        self.remote_id.store(id, Ordering::Relaxed);
    }

    /// Bytes queued for transmission and not yet taken by the kernel. Use it to
    /// bound memory in an otherwise unlimited producer.
    pub fn pending_bytes(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// True once the stream has disconnected.
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    pub(crate) fn rx_side(&self) -> &Side {
        &self.rx
    }

    /// Whether frames arriving here may be relayed cut-through: the peer is
    /// a process on this machine and the descriptor can be spliced from.
    pub(crate) fn can_splice_in(&self) -> bool {
        self.splice_in && self.local_peer.load(Ordering::Relaxed)
    }

    /// Marks the peer as a process on this machine that writes its frames
    /// itself, with no network pacing them.
    pub(crate) fn set_local_peer(&self, local: bool) {
        self.local_peer.store(local, Ordering::Relaxed);
    }

    /// Whether frames leaving here can be written by `splice(2)`.
    pub(crate) fn can_splice_out(&self) -> bool {
        self.splice_out
    }

    /// Records (or clears) the frame being relayed from this stream.
    pub(crate) fn set_relaying(&self, relay: Option<(Arc<CutThrough>, Arc<Stream>)>) {
        *self.relaying.lock().unwrap_or_else(|e| e.into_inner()) = relay;
    }

    /// True while a frame is being relayed from this stream.
    pub(crate) fn is_relaying(&self) -> bool {
        self.relaying
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Asks the broker to read this stream again when `pipe` has room. Returns
    /// whether the pipe is now watched.
    pub(crate) fn watch_pipe(&self, pipe: BorrowedFd<'_>) -> bool {
        let Some(reg) = self.reg.get() else {
            return false;
        };
        let fd = pipe.as_raw_fd();
        reg.registry
            .register(&mut SourceFd(&fd), reg.pipe_token, Interest::WRITABLE)
            .is_ok()
    }

    /// Stops watching a relay's pipe.
    pub(crate) fn unwatch_pipe(&self, pipe: BorrowedFd<'_>) {
        if let Some(reg) = self.reg.get() {
            let _ = reg.registry.deregister(&mut SourceFd(&pipe.as_raw_fd()));
        }
    }

    fn same_fd(&self) -> bool {
        Arc::ptr_eq(&self.rx, &self.tx)
    }

    fn lock_tx(&self) -> MutexGuard<'_, Tx> {
        self.tx_state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the reader (with its size limit and any bytes read during the
    /// bootstrap) before the stream is registered.
    pub(crate) fn set_reader(&self, reader: FrameReader) {
        *self.reader.lock().unwrap_or_else(|e| e.into_inner()) = reader;
    }

    /// The receive state, unless another thread is reading.
    pub(crate) fn try_reader(&self) -> Option<MutexGuard<'_, FrameReader>> {
        match self.reader.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Registers the stream with the poller. Called once, by the broker.
    pub(crate) fn register(&self, reg: Registration) -> io::Result<()> {
        let _ = self.reg.set(reg);
        let mut tx = self.lock_tx();
        self.apply_interest(&mut tx)?;
        // Anything queued before registration needs the broker to push it out.
        if !tx.queue.is_empty() && !tx.armed {
            self.flush_locked(&mut tx);
        }
        Ok(())
    }

    /// Removes the stream's descriptors from the poller.
    pub(crate) fn deregister(&self) {
        let mut tx = self.lock_tx();
        tx.rx_wanted = false;
        tx.armed = false;
        let _ = self.apply_interest(&mut tx);
    }

    /// Brings the poller's registrations in line with `rx_wanted` and `armed`.
    fn apply_interest(&self, tx: &mut Tx) -> io::Result<()> {
        let Some(reg) = self.reg.get() else {
            // Not registered yet: `register` applies the wanted state.
            return Ok(());
        };
        let rx_fd = std::os::fd::AsRawFd::as_raw_fd(&*self.rx);
        let tx_fd = std::os::fd::AsRawFd::as_raw_fd(&*self.tx);
        let set = |fd: i32, token: Token, registered: &mut bool, want: Option<Interest>| {
            let r = match (want, *registered) {
                (None, false) => Ok(()),
                (None, true) => reg.registry.deregister(&mut SourceFd(&fd)),
                (Some(i), true) => reg.registry.reregister(&mut SourceFd(&fd), token, i),
                (Some(i), false) => reg.registry.register(&mut SourceFd(&fd), token, i),
            };
            if r.is_ok() {
                *registered = want.is_some();
            }
            r
        };
        let rx_interest = tx.rx_wanted.then_some(Interest::READABLE);
        let tx_interest = tx.armed.then_some(Interest::WRITABLE);
        if self.same_fd() {
            let both = match (rx_interest, tx_interest) {
                (Some(r), Some(w)) => Some(r | w),
                (r, w) => r.or(w),
            };
            set(rx_fd, reg.rx_token, &mut tx.rx_registered, both)
        } else {
            set(rx_fd, reg.rx_token, &mut tx.rx_registered, rx_interest)?;
            set(tx_fd, reg.tx_token, &mut tx.tx_registered, tx_interest)
        }
    }

    /// Watches (or stops watching) the transmit side for writability.
    fn arm(&self, tx: &mut Tx, on: bool) {
        if tx.armed == on {
            return;
        }
        tx.armed = on;
        if let Err(e) = self.apply_interest(tx) {
            tracing::debug!(stream = %self.name, "poller update failed: {e}");
        }
    }

    /// Lets the broker watch the receive side, or stops it.
    fn want_rx(&self, on: bool) {
        let mut tx = self.lock_tx();
        if tx.closed || tx.rx_wanted == on {
            return;
        }
        tx.rx_wanted = on;
        if let Err(e) = self.apply_interest(&mut tx) {
            tracing::debug!(stream = %self.name, "poller update failed: {e}");
        }
    }

    /// Marks the stream dead: sends fail from now on and flow-controlled waiters
    /// wake. Returns `false` if it was already dead.
    pub(crate) fn mark_dead(&self) -> bool {
        let was = self.dead.swap(true, Ordering::AcqRel);
        let mut tx = self.lock_tx();
        self.close_tx(&mut tx);
        drop(tx);
        // A frame relayed from here will never be whole: the next stream pads
        // it and marks it aborted, and goes on with what is queued behind it.
        let relay = self
            .relaying
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((cut, out)) = relay {
            cut.abort();
            out.on_transmit();
        }
        !was
    }
}

/// Bytes whose memory is overwritten with zeros when the last reference goes:
/// for bodies that carry a secret.
pub(crate) fn wipe_on_drop(bytes: Vec<u8>) -> Bytes {
    Bytes::from_owner(zeroize::Zeroizing::new(bytes))
}
