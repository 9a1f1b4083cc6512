//! Cut-through relaying: a large frame passing through this context moves from
//! one stream to the next through a kernel pipe, as it arrives, without being
//! copied into this process.
//!
//! A relay that buffers a whole frame before forwarding it reads every byte
//! into memory and writes it out again: two copies per hop, on top of the
//! sender's and the receiver's. On a chain of hops sharing a few CPUs those
//! copies are the whole cost of streaming. Here, once the header of a frame of
//! at least [`CUT_THROUGH_MIN`] bytes has arrived, and the router has decided
//! it goes out on another stream, the relay
//!
//! 1. queues the header and the part of the body it already has on the
//!    outgoing stream, flagged [`FLAG_TRAILER`] (see below);
//! 2. moves the rest with `splice(2)`, socket → pipe → socket, which passes
//!    page references instead of bytes; the incoming stream is not read for
//!    anything else until the frame has passed, and a full pipe pauses it,
//!    which is also this path's flow control.
//!
//! ## The trailer byte
//!
//! The header (with its length) leaves before the body has arrived, so a relay
//! whose source dies half-way cannot take the frame back. A cut-through frame
//! therefore carries one byte more than its body, last: `1` when every byte
//! arrived, `0` when the relay had to pad the rest with zeros because its
//! source went away. The destination checks and strips it (a `0` drops the
//! frame and answers its `reply_to` as a disconnection); relays in between pass
//! it on untouched. Only relays add trailers: a sender never does.
//!
//! [`FLAG_TRAILER`]: super::message::FLAG_TRAILER

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rustix::io::Errno;

/// Bodies at least this large are relayed as they arrive; smaller ones are
/// buffered whole (a pipe costs more than copying them).
pub const CUT_THROUGH_MIN: usize = 256 * 1024;

/// True when `fd` can be a `splice(2)` endpoint (`sys` says which can).
pub(crate) use crate::sys::can_splice;

/// The body of one frame in transit: the pipe it passes through and how far it
/// has got. Shared by the incoming stream's reader, which fills the pipe, and
/// the outgoing stream's queue, which empties it.
pub(crate) struct CutThrough {
    pipe_r: OwnedFd,
    pipe_w: OwnedFd,
    /// Body bytes that travel through the pipe (the part of the body that had
    /// not arrived when the frame was queued).
    body: usize,
    /// Bytes in the pipe now.
    in_pipe: AtomicUsize,
    /// The source went away before `body` bytes arrived: the writer pads.
    aborted: AtomicBool,
    /// The outgoing stream went away: the reader discards the rest.
    abandoned: AtomicBool,
    /// Whether the outgoing frame ends with a trailer byte of this relay's
    /// own (false when an earlier relay added it: it is the body's last byte).
    own_trailer: bool,
}

/// What [`CutThrough::fill`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fill {
    /// Moved this many bytes into the pipe.
    Moved(usize),
    /// Nothing to read now, and the pipe is empty: wait for the source.
    WouldBlock,
    /// The pipe may be full (it holds bytes and took no more): wait for the
    /// outgoing stream to drain it.
    Stalled,
    /// The source ended.
    Eof,
}

/// Where the writer is with the part of a frame that comes through the pipe.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Drain {
    /// Wrote this many bytes (body or trailer).
    Wrote(usize),
    /// The pipe is empty and more is to come from the source.
    Waiting,
    /// The outgoing descriptor is full.
    WouldBlock,
    /// The outgoing descriptor is gone.
    Disconnected,
}

/// Zeros to pad an aborted frame with.
static ZEROS: [u8; 16 * 1024] = [0; 16 * 1024];

impl CutThrough {
    /// A pipe for `body` more bytes of a frame. `own_trailer`: whether this relay
    /// appends the trailer byte.
    pub(crate) fn new(body: usize, own_trailer: bool) -> io::Result<CutThrough> {
        let (pipe_r, pipe_w) = crate::sys::relay_pipe()?;
        Ok(CutThrough {
            pipe_r,
            pipe_w,
            body,
            in_pipe: AtomicUsize::new(0),
            aborted: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            own_trailer,
        })
    }

    /// The same pipe for another frame, if this one went through whole and
    /// left it empty: a pipe costs four system calls to make and close, per
    /// frame relayed.
    pub(crate) fn reuse(self, body: usize, own_trailer: bool) -> Option<CutThrough> {
        let clean = self.in_pipe.load(Ordering::Acquire) == 0
            && !self.aborted.load(Ordering::Acquire)
            && !self.abandoned.load(Ordering::Acquire);
        clean.then(|| CutThrough {
            pipe_r: self.pipe_r,
            pipe_w: self.pipe_w,
            body,
            in_pipe: AtomicUsize::new(0),
            aborted: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            own_trailer,
        })
    }

    /// Bytes of the outgoing frame that pass through here: the rest of the
    /// body, plus the trailer byte if it is this relay's.
    pub(crate) fn len(&self) -> usize {
        self.body + usize::from(self.own_trailer)
    }

    /// The pipe's write end, to wait on while [`Fill::Stalled`].
    pub(crate) fn pipe_w(&self) -> BorrowedFd<'_> {
        self.pipe_w.as_fd()
    }

    /// Reader side: moves up to `want` bytes from `from` into the pipe.
    ///
    /// How much the pipe takes is the kernel's business: its slots hold page
    /// fragments of any size, so a byte count of our own would call it full
    /// when the kernel does not, and the kernel would never say it has room.
    pub(crate) fn fill(&self, from: BorrowedFd<'_>, want: usize) -> io::Result<Fill> {
        if self.aborted.load(Ordering::Acquire) {
            return Ok(Fill::Eof);
        }
        loop {
            let held = self.in_pipe.load(Ordering::Acquire);
            let r = crate::sys::splice(from, self.pipe_w.as_fd(), want);
            return match r {
                Ok(0) => Ok(Fill::Eof),
                Ok(n) => {
                    self.in_pipe.fetch_add(n, Ordering::AcqRel);
                    Ok(Fill::Moved(n))
                }
                Err(Errno::INTR) => continue,
                // Either the source is empty or the pipe is full; only a
                // pipe holding bytes can be full.
                Err(Errno::AGAIN) if held > 0 => Ok(Fill::Stalled),
                Err(Errno::AGAIN) => Ok(Fill::WouldBlock),
                Err(e) if super::side::is_disconnect(e) => Ok(Fill::Eof),
                Err(e) => Err(e.into()),
            };
        }
    }

    /// Reader side: the source ended before the whole body arrived.
    pub(crate) fn abort(&self) {
        self.aborted.store(true, Ordering::Release);
    }

    /// True once the outgoing stream has gone.
    pub(crate) fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Acquire)
    }

    /// Writer side, when its stream dies with this frame queued: empties the
    /// pipe, which wakes a reader waiting for room so it can see the news.
    pub(crate) fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
        let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); 16 * 1024];
        while let Ok((got, _)) = rustix::io::read(&self.pipe_r, &mut scratch[..]) {
            if got.is_empty() {
                break;
            }
        }
    }

    /// Writer side: writes what can go now of the part of the frame that
    /// comes through here, `written` bytes of which are already out.
    pub(crate) fn drain(&self, to: BorrowedFd<'_>, written: usize) -> io::Result<Drain> {
        let status = if written < self.body {
            let held = self.in_pipe.load(Ordering::Acquire);
            if held > 0 {
                let r = crate::sys::splice(self.pipe_r.as_fd(), to, held);
                if let Ok(n) = r {
                    self.in_pipe.fetch_sub(n, Ordering::AcqRel);
                }
                r
            } else if self.aborted.load(Ordering::Acquire)
                && self.in_pipe.load(Ordering::Acquire) == 0
            {
                // The source died: pad, so the stream stays in step. When
                // the trailer byte is not ours, the body's last byte is a
                // zero too, which marks the frame as aborted all the same.
                let n = (self.body - written).min(ZEROS.len());
                rustix::io::write(to, &ZEROS[..n])
            } else {
                return Ok(Drain::Waiting);
            }
        } else {
            let ok = u8::from(!self.aborted.load(Ordering::Acquire));
            rustix::io::write(to, &[ok])
        };
        match status {
            Ok(0) if written < self.len() => Ok(Drain::WouldBlock),
            Ok(n) => Ok(Drain::Wrote(n)),
            Err(Errno::AGAIN) | Err(Errno::INTR) => Ok(Drain::WouldBlock),
            Err(e) if super::side::is_disconnect(e) => Ok(Drain::Disconnected),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (OwnedFd, OwnedFd) {
        let (a, b) = super::super::side::socketpair().unwrap();
        for s in [&a, &b] {
            super::super::side::set_nonblock(s.as_fd(), true).unwrap();
        }
        (a, b)
    }

    fn read_all(fd: &OwnedFd, n: usize) -> Vec<u8> {
        let mut out = vec![0u8; n];
        let mut got = 0;
        while got < n {
            match rustix::io::read(fd, &mut out[got..]) {
                Ok(k) => got += k,
                Err(Errno::AGAIN) => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        out
    }

    #[test]
    fn passes_bytes_then_the_trailer() {
        let (src_w, src_r) = pair();
        let (dst_w, dst_r) = pair();
        let cut = CutThrough::new(5, true).unwrap();
        rustix::io::write(&src_w, b"hello").unwrap();
        assert_eq!(cut.fill(src_r.as_fd(), 5).unwrap(), Fill::Moved(5));
        assert_eq!(cut.drain(dst_w.as_fd(), 0).unwrap(), Drain::Wrote(5));
        assert_eq!(cut.drain(dst_w.as_fd(), 5).unwrap(), Drain::Wrote(1));
        assert_eq!(read_all(&dst_r, 6), b"hello\x01");
    }

    #[test]
    fn an_aborted_body_is_padded_and_marked() {
        let (src_w, src_r) = pair();
        let (dst_w, dst_r) = pair();
        let cut = CutThrough::new(6, true).unwrap();
        rustix::io::write(&src_w, b"ab").unwrap();
        assert_eq!(cut.fill(src_r.as_fd(), 6).unwrap(), Fill::Moved(2));
        // Bytes in the pipe and none to read: it might be full, as far as
        // the reader can tell.
        assert_eq!(cut.fill(src_r.as_fd(), 4).unwrap(), Fill::Stalled);
        assert_eq!(cut.drain(dst_w.as_fd(), 0).unwrap(), Drain::Wrote(2));
        assert_eq!(cut.fill(src_r.as_fd(), 4).unwrap(), Fill::WouldBlock);
        assert_eq!(cut.drain(dst_w.as_fd(), 2).unwrap(), Drain::Waiting);
        drop(src_w);
        assert_eq!(cut.fill(src_r.as_fd(), 4).unwrap(), Fill::Eof);
        cut.abort();
        assert_eq!(cut.drain(dst_w.as_fd(), 2).unwrap(), Drain::Wrote(4));
        assert_eq!(cut.drain(dst_w.as_fd(), 6).unwrap(), Drain::Wrote(1));
        assert_eq!(read_all(&dst_r, 7), b"ab\0\0\0\0\0");
    }

    #[test]
    fn a_full_pipe_stalls_the_reader_until_drained() {
        let (src_w, src_r) = pair();
        let (dst_w, dst_r) = pair();
        let cut = CutThrough::new(8 << 20, true).unwrap();
        let chunk = vec![7u8; 256 * 1024];
        let writer = std::thread::spawn(move || {
            super::super::side::set_nonblock(src_w.as_fd(), false).unwrap();
            for _ in 0..32 {
                let mut off = 0;
                while off < chunk.len() {
                    match rustix::io::write(&src_w, &chunk[off..]) {
                        Ok(n) => off += n,
                        Err(_) => return,
                    }
                }
            }
        });
        let mut filled = 0;
        let mut stalled = false;
        while filled < (8 << 20) {
            match cut.fill(src_r.as_fd(), (8 << 20) - filled).unwrap() {
                Fill::Moved(n) => filled += n,
                Fill::Stalled => {
                    stalled = true;
                    break;
                }
                Fill::WouldBlock => std::thread::yield_now(),
                Fill::Eof => panic!("early end"),
            }
        }
        assert!(stalled, "the pipe took {filled} bytes");
        // Draining makes room for more.
        let mut written = 0;
        while let Drain::Wrote(n) = cut.drain(dst_w.as_fd(), written).unwrap() {
            written += n;
            if written >= filled {
                break;
            }
        }
        let _ = read_all(&dst_r, written);
        assert!(matches!(
            cut.fill(src_r.as_fd(), 1 << 20).unwrap(),
            Fill::Moved(_) | Fill::WouldBlock
        ));
        drop(src_r);
        let _ = writer.join();
    }
}
