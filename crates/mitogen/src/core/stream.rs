//! [`Stream`]: framing of messages over a pair of [`Side`]s.
//!
//! Writing is shared: any thread may send. When nothing is queued, the sending
//! thread writes its frame itself under the stream's lock (no broker wake-up on
//! the hot path); whatever the kernel does not take is queued, and the broker is
//! asked to finish the job when the descriptor becomes writable. Frames queued
//! meanwhile leave together in one `writev`.
//!
//! Reading belongs to the broker thread alone, through a [`FrameReader`], which
//! copes with frames split across reads and many frames in one read, and hands out
//! bodies that point into its buffer without a copy.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use super::message::{ContextId, FrameError, Header, Message, HEADER_LEN};
use super::side::{IoStatus, Side};

/// Default read size of a side (the seed's `CHUNK_SIZE`); a frame larger than this
/// is read straight into a buffer of its own size.
pub const CHUNK_SIZE: usize = 128 * 1024;

/// Queued bytes above which flow-controlled senders wait for the queue to drain.
pub const HIGH_WATER: usize = 8 * 1024 * 1024;

/// How many frames one `writev` may carry.
const MAX_IOV: usize = 64;

struct Frame {
    header: [u8; HEADER_LEN],
    body: Bytes,
    /// Bytes of header + body already written.
    done: usize,
}

impl Frame {
    fn len(&self) -> usize {
        HEADER_LEN + self.body.len()
    }
}

struct Tx {
    queue: VecDeque<Frame>,
    /// True while the broker watches the transmit side for writability.
    armed: bool,
    closed: bool,
}

/// Where a stream's descriptors are registered with the broker's poller.
pub(crate) struct Registration {
    pub registry: Registry,
    pub rx_token: Token,
    pub tx_token: Token,
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
    /// True when the peer is this process's parent (messages from it carry the
    /// authority of our ancestors).
    pub(crate) is_parent: bool,
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
            name,
            rx,
            tx,
            remote_id: AtomicU32::new(u32::MAX),
            tx_state: Mutex::new(Tx {
                queue: VecDeque::new(),
                armed: false,
                closed: false,
            }),
            drained: Condvar::new(),
            pending: AtomicUsize::new(0),
            dead: AtomicBool::new(false),
            reg: std::sync::OnceLock::new(),
            is_parent,
        }
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

    fn same_fd(&self) -> bool {
        Arc::ptr_eq(&self.rx, &self.tx)
    }

    fn lock_tx(&self) -> MutexGuard<'_, Tx> {
        self.tx_state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers the receive side with the poller. Called once, by the broker.
    pub(crate) fn register(&self, reg: Registration) -> io::Result<()> {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&*self.rx);
        reg.registry
            .register(&mut SourceFd(&fd), reg.rx_token, Interest::READABLE)?;
        let _ = self.reg.set(reg);
        // Anything queued before registration needs the broker to push it out.
        let mut tx = self.lock_tx();
        if !tx.queue.is_empty() && !tx.armed {
            self.flush_locked(&mut tx);
        }
        Ok(())
    }

    /// Removes the stream's descriptors from the poller.
    pub(crate) fn deregister(&self) {
        if let Some(reg) = self.reg.get() {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&*self.rx);
            let _ = reg.registry.deregister(&mut SourceFd(&fd));
            let tx = self.lock_tx();
            if tx.armed && !self.same_fd() {
                let fd = std::os::fd::AsRawFd::as_raw_fd(&*self.tx);
                let _ = reg.registry.deregister(&mut SourceFd(&fd));
            }
        }
    }

    /// Watches (or stops watching) the transmit side for writability.
    fn arm(&self, tx: &mut Tx, on: bool) {
        if tx.armed == on {
            return;
        }
        let Some(reg) = self.reg.get() else {
            // Not registered yet: `register` flushes what is queued.
            return;
        };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&*self.tx);
        let r = if self.same_fd() {
            let interest = if on {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            reg.registry
                .reregister(&mut SourceFd(&fd), reg.rx_token, interest)
        } else if on {
            reg.registry
                .register(&mut SourceFd(&fd), reg.tx_token, Interest::WRITABLE)
        } else {
            reg.registry.deregister(&mut SourceFd(&fd))
        };
        match r {
            Ok(()) => tx.armed = on,
            Err(e) => tracing::debug!(stream = %self.name, "poller update failed: {e}"),
        }
    }

    /// Queues `msg` and writes what the kernel takes now. Never blocks.
    pub(crate) fn send(&self, msg: &Message) -> SendStatus {
        let mut tx = self.lock_tx();
        if tx.closed {
            return SendStatus::Disconnected;
        }
        let frame = Frame {
            header: msg.encode_header(),
            body: msg.body.clone(),
            done: 0,
        };
        self.pending.fetch_add(frame.len(), Ordering::Relaxed);
        tx.queue.push_back(frame);
        if !tx.armed {
            self.flush_locked(&mut tx);
        }
        if tx.closed {
            SendStatus::Disconnected
        } else {
            SendStatus::Queued
        }
    }

    /// Waits while more than [`HIGH_WATER`] bytes are queued, until the queue is
    /// below half of that, the stream dies, or `deadline` passes. This is the flow
    /// control of bulk senders.
    pub(crate) fn wait_for_room(&self, deadline: Option<Instant>) -> bool {
        if self.pending_bytes() <= HIGH_WATER {
            return true;
        }
        let mut tx = self.lock_tx();
        while self.pending_bytes() > HIGH_WATER / 2 && !tx.closed {
            tx = match deadline {
                None => self.drained.wait(tx).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    self.drained
                        .wait_timeout(tx, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
        !tx.closed
    }

    /// Called by the broker when the transmit side is writable.
    pub(crate) fn on_transmit(&self) -> SendStatus {
        let mut tx = self.lock_tx();
        self.flush_locked(&mut tx);
        if tx.closed {
            SendStatus::Disconnected
        } else {
            SendStatus::Queued
        }
    }

    /// Writes queued frames until the kernel refuses more.
    fn flush_locked(&self, tx: &mut Tx) {
        while !tx.queue.is_empty() {
            let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(MAX_IOV.min(tx.queue.len() * 2));
            for f in tx.queue.iter().take(MAX_IOV / 2) {
                if f.done < HEADER_LEN {
                    iov.push(IoSlice::new(&f.header[f.done..]));
                    if !f.body.is_empty() {
                        iov.push(IoSlice::new(&f.body));
                    }
                } else {
                    iov.push(IoSlice::new(&f.body[f.done - HEADER_LEN..]));
                }
            }
            let status = self.tx.write_vectored(&iov);
            drop(iov);
            match status {
                Ok(IoStatus::Done(mut n)) => {
                    self.pending.fetch_sub(n, Ordering::Relaxed);
                    while n > 0 {
                        let Some(f) = tx.queue.front_mut() else { break };
                        let left = f.len() - f.done;
                        if n >= left {
                            n -= left;
                            tx.queue.pop_front();
                        } else {
                            f.done += n;
                            n = 0;
                        }
                    }
                }
                Ok(IoStatus::WouldBlock) => {
                    self.arm(tx, true);
                    self.notify_drained();
                    return;
                }
                Ok(IoStatus::Disconnected) => {
                    self.close_tx(tx);
                    return;
                }
                Err(e) => {
                    tracing::warn!(stream = %self.name, "write failed: {e}");
                    self.close_tx(tx);
                    return;
                }
            }
        }
        self.arm(tx, false);
        self.notify_drained();
    }

    fn notify_drained(&self) {
        if self.pending_bytes() <= HIGH_WATER / 2 {
            self.drained.notify_all();
        }
    }

    fn close_tx(&self, tx: &mut Tx) {
        tx.closed = true;
        tx.queue.clear();
        self.pending.store(0, Ordering::Relaxed);
        self.drained.notify_all();
    }

    /// Marks the stream dead: sends fail from now on and flow-controlled waiters
    /// wake. Returns `false` if it was already dead.
    pub(crate) fn mark_dead(&self) -> bool {
        let was = self.dead.swap(true, Ordering::AcqRel);
        let mut tx = self.lock_tx();
        self.close_tx(&mut tx);
        !was
    }

    /// Blocks (up to `deadline`) until everything queued has been written: used
    /// before a child exits so its last replies are not lost.
    pub(crate) fn flush_blocking(&self, deadline: Instant) {
        let mut tx = self.lock_tx();
        while !tx.queue.is_empty() && !tx.closed {
            self.flush_locked(&mut tx);
            if tx.queue.is_empty() || tx.closed {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            drop(tx);
            let fd = self.tx.as_ref();
            let mut pfd = [rustix::event::PollFd::new(
                fd,
                rustix::event::PollFlags::OUT,
            )];
            let ms = (deadline - now).as_millis().min(1000) as i32;
            let ts = rustix::event::Timespec {
                tv_sec: (ms / 1000) as i64,
                tv_nsec: ((ms % 1000) as i64) * 1_000_000,
            };
            let _ = rustix::event::poll(&mut pfd, Some(&ts));
            tx = self.lock_tx();
        }
    }
}

/// Reassembles frames from the bytes a side delivers.
pub struct FrameReader {
    buf: BytesMut,
    max: usize,
    header: Option<Header>,
}

/// What one read from a side produced.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadStatus {
    /// Some bytes arrived; call [`FrameReader::next_message`].
    Data,
    /// Nothing available now.
    WouldBlock,
    /// The other end is gone.
    Eof,
}

impl FrameReader {
    /// A reader refusing bodies over `max` bytes, starting with bytes that
    /// arrived during the bootstrap (after the greeting).
    pub fn new(max: usize, initial: &[u8]) -> FrameReader {
        let mut buf = BytesMut::with_capacity(CHUNK_SIZE.max(initial.len()));
        buf.extend_from_slice(initial);
        FrameReader {
            buf,
            max,
            header: None,
        }
    }

    /// Appends raw bytes (for tests and fuzzing).
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Reads once from `side`.
    pub fn read_from(&mut self, side: &Side) -> io::Result<ReadStatus> {
        // Read a large frame's body in one go into a buffer of its own size.
        let want = match self.header {
            Some(h) => (HEADER_LEN + h.len).saturating_sub(self.buf.len()),
            None => 0,
        }
        .max(CHUNK_SIZE);
        self.buf.reserve(want);
        let spare = self.buf.spare_capacity_mut();
        let n = match side.read(spare)? {
            IoStatus::Done(n) => n,
            IoStatus::WouldBlock => return Ok(ReadStatus::WouldBlock),
            IoStatus::Disconnected => return Ok(ReadStatus::Eof),
        };
        // SAFETY: `read` initialised exactly `n` bytes of the spare capacity.
        unsafe { self.buf.set_len(self.buf.len() + n) };
        Ok(ReadStatus::Data)
    }

    /// The next complete message, if one has arrived.
    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        let header = match self.header {
            Some(h) => h,
            None => {
                if self.buf.len() < HEADER_LEN {
                    return Ok(None);
                }
                let h = Header::parse(&self.buf[..HEADER_LEN], self.max)?;
                self.header = Some(h);
                h
            }
        };
        if self.buf.len() < HEADER_LEN + header.len {
            return Ok(None);
        }
        self.header = None;
        let mut frame = self.buf.split_to(HEADER_LEN + header.len);
        let body = frame.split_off(HEADER_LEN).freeze();
        Ok(Some(header.into_message(body)))
    }

    /// Bytes buffered but not yet part of a complete message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}
