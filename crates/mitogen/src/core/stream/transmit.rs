//! The sending half of a stream: frames are written by whichever thread sends
//! when nothing is queued, otherwise queued for the broker to push out when
//! the descriptor is writable; queued frames leave together in one `writev`,
//! and a frame relayed cut-through leaves its tail by `splice(2)`.

use std::io::{self, IoSlice};
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::{Frame, SendStatus, Stream, Tx, HIGH_WATER, MAX_IOV};
use crate::core::cut_through::{CutThrough, Drain};
use crate::core::message::{Message, HEADER_LEN};
use crate::core::side::IoStatus;

/// What one write attempt of [`Stream::flush_locked`] came to.
enum Step {
    /// Something was written: go on.
    More,
    /// Nothing to write now.
    Idle,
    /// The kernel takes no more: wait for writability.
    Full,
    /// The peer is gone.
    Gone,
    /// The write failed.
    Failed(io::Error),
}

impl Stream {
    /// Queues `msg` and writes what the kernel takes now. Never blocks.
    pub(crate) fn send(&self, msg: &Message) -> SendStatus {
        let mut tx = self.lock_tx();
        if tx.closed {
            return SendStatus::Disconnected;
        }
        let frame = Frame {
            header: msg.encode_header(),
            body: msg.body.clone(),
            tail: None,
            done: 0,
        };
        self.enqueue(&mut tx, frame)
    }

    /// Queues a frame relayed cut-through: `header` and the part of the body
    /// that has arrived now, the rest to come through `tail`.
    pub(crate) fn send_cut(
        &self,
        header: [u8; HEADER_LEN],
        prefix: Bytes,
        tail: Arc<CutThrough>,
    ) -> SendStatus {
        let mut tx = self.lock_tx();
        if tx.closed {
            return SendStatus::Disconnected;
        }
        let frame = Frame {
            header,
            body: prefix,
            tail: Some(tail),
            done: 0,
        };
        self.enqueue(&mut tx, frame)
    }

    /// Queues `frame` behind what is queued already and, unless the broker
    /// is waiting for writability (it flushes then), writes what the kernel
    /// takes now.
    fn enqueue(&self, tx: &mut Tx, frame: Frame) -> SendStatus {
        self.pending.fetch_add(frame.len(), Ordering::Relaxed);
        tx.queue.push_back(frame);
        if !tx.armed {
            self.flush_locked(tx);
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
        let mut room = true;
        while self.pending_bytes() > HIGH_WATER / 2 && !tx.closed {
            tx.room_waiters += 1;
            tx = match deadline {
                None => self.drained.wait(tx).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        room = false;
                        tx.room_waiters -= 1;
                        break;
                    }
                    self.drained
                        .wait_timeout(tx, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
            tx.room_waiters -= 1;
        }
        room && !tx.closed
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
    pub(super) fn flush_locked(&self, tx: &mut Tx) {
        loop {
            let step = match tx.queue.front() {
                None => Step::Idle,
                // The front frame's tail: it comes out of a pipe, by splice.
                Some(f) if f.done >= f.head_len() && f.tail.is_some() => self.flush_tail(tx),
                Some(_) => self.flush_heads(tx),
            };
            match step {
                Step::More => {}
                Step::Idle => {
                    // Nothing to write now (a relayed tail waits for its
                    // source, which kicks us when it has more).
                    self.arm(tx, false);
                    self.notify_drained(tx);
                    return;
                }
                Step::Full => {
                    self.arm(tx, true);
                    self.notify_drained(tx);
                    return;
                }
                Step::Gone => {
                    self.close_tx(tx);
                    return;
                }
                Step::Failed(e) => {
                    tracing::warn!(stream = %self.name, "write failed: {e}");
                    self.close_tx(tx);
                    return;
                }
            }
        }
    }

    /// One `writev` of the queued frames' headers and in-memory bodies, up to
    /// and including the first relayed frame's (nothing after a relayed frame
    /// can go before its tail).
    fn flush_heads(&self, tx: &mut Tx) -> Step {
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
            if f.tail.is_some() {
                break;
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
                Step::More
            }
            Ok(IoStatus::WouldBlock) => Step::Full,
            Ok(IoStatus::Disconnected) => Step::Gone,
            Err(e) => Step::Failed(e),
        }
    }

    /// Writes what it can of the front frame's relayed tail, popping the
    /// frame once all of it is out.
    fn flush_tail(&self, tx: &mut Tx) -> Step {
        let Some(f) = tx.queue.front_mut() else {
            return Step::Idle;
        };
        let Some(tail) = f.tail.clone() else {
            return Step::Idle;
        };
        let written = f.done - f.head_len();
        match tail.drain(self.tx.as_fd(), written) {
            Ok(Drain::Wrote(n)) => {
                f.done += n;
                self.pending.fetch_sub(n, Ordering::Relaxed);
                if f.done == f.len() {
                    tx.queue.pop_front();
                }
                Step::More
            }
            Ok(Drain::Waiting) => Step::Idle,
            Ok(Drain::WouldBlock) => Step::Full,
            Ok(Drain::Disconnected) => Step::Gone,
            Err(e) => Step::Failed(e),
        }
    }

    fn notify_drained(&self, tx: &Tx) {
        if tx.room_waiters > 0 && self.pending_bytes() <= HIGH_WATER / 2 {
            self.drained.notify_all();
        }
    }

    pub(super) fn close_tx(&self, tx: &mut Tx) {
        tx.closed = true;
        for f in tx.queue.drain(..) {
            if let Some(tail) = f.tail {
                // Its source must stop waiting for room in the pipe.
                tail.abandon();
            }
        }
        self.pending.store(0, Ordering::Relaxed);
        self.drained.notify_all();
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
