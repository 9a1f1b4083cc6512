//! Portable fallbacks for the contract's calls that have one simple enough to
//! be built and tested on Linux too, for the systems that lack the Linux call.
//!
//! Cut-through relaying without `splice(2)`: the frame passes through a
//! socketpair instead of a pipe, and [`splice`] copies through a buffer. A
//! plain read-then-write would lose what it read whenever the destination
//! took less than all of it (a full socket buffer), so the source is only
//! *peeked* at (`MSG_PEEK`), and exactly what the destination accepted is then
//! consumed. Only sockets can be peeked at: a stream whose source is a pipe or
//! a terminal buffers its frames whole instead ([`can_splice`] says no).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{AddressFamily, RecvFlags, SocketFlags, SocketType};

/// Bytes copied per call at most: the buffer lives on the caller's stack.
const CHUNK: usize = 64 * 1024;

/// The channel [`splice`] moves a frame through: a non-blocking, close-on-exec
/// socketpair `(read end, write end)`.
pub(crate) fn relay_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    // Only one direction is used.
    let _ = rustix::net::shutdown(&r, rustix::net::Shutdown::Write);
    let _ = rustix::net::shutdown(&w, rustix::net::Shutdown::Read);
    Ok((r, w))
}

/// Pipes keep the size they were made with.
// On Linux this module is built for its tests alone, which have nothing to
// check of a call that does nothing.
#[cfg_attr(target_os = "linux", allow(dead_code))]
pub(crate) fn widen_stream_pipe(_fd: BorrowedFd<'_>) {}

/// True when `fd` can be a [`splice`] source or destination: a socket.
pub(crate) fn can_splice(fd: BorrowedFd<'_>) -> bool {
    match rustix::fs::fstat(fd) {
        Ok(st) => rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Socket,
        Err(_) => false,
    }
}

/// Copies up to `len` bytes from the socket `from` to `to` without blocking,
/// with the same results as the Linux `splice`: `Errno::AGAIN` when the source
/// has nothing or the destination has no room, `Ok(0)` at the source's end,
/// and no byte taken from the source that the destination did not take.
pub(crate) fn splice(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    len: usize,
) -> rustix::io::Result<usize> {
    let mut buf = [MaybeUninit::<u8>::uninit(); CHUNK];
    let want = len.min(CHUNK);
    let ((seen, _), _) = rustix::net::recv(
        from,
        &mut buf[..want],
        RecvFlags::PEEK | RecvFlags::DONTWAIT,
    )?;
    if seen.is_empty() {
        return Ok(0);
    }
    let n = loop {
        match rustix::io::write(to, seen) {
            Err(Errno::INTR) => continue,
            r => break r?,
        }
    };
    // Consume exactly what went out: it is there, as we just peeked it, and
    // nobody else reads this socket.
    let mut sink = [MaybeUninit::<u8>::uninit(); CHUNK];
    let mut taken = 0;
    while taken < n {
        match rustix::net::recv(from, &mut sink[..n - taken], RecvFlags::DONTWAIT) {
            Ok(((got, _), _)) if !got.is_empty() => taken += got.len(),
            Ok(_) => return Err(Errno::IO),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    fn nonblocking_pair() -> (OwnedFd, OwnedFd) {
        rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .unwrap()
    }

    type Relay = fn() -> io::Result<(OwnedFd, OwnedFd)>;
    type Move = fn(BorrowedFd<'_>, BorrowedFd<'_>, usize) -> rustix::io::Result<usize>;

    /// Streams `data` socket → relay → socket with `mv`, the reader and the
    /// writer taking turns as the broker does; returns what came out.
    fn relay(data: &[u8], relay_pipe: Relay, mv: Move) -> Vec<u8> {
        let (src_w, src_r) = nonblocking_pair();
        let (dst_w, dst_r) = nonblocking_pair();
        let (pipe_r, pipe_w) = relay_pipe().unwrap();
        let (mut sent, mut moved, mut out) = (0, 0, Vec::new());
        let mut buf = vec![0u8; 1 << 16];
        let mut idle = 0;
        while out.len() < data.len() {
            let mut progress = false;
            if sent < data.len() {
                if let Ok(n) = rustix::io::write(&src_w, &data[sent..]) {
                    sent += n;
                    progress = true;
                }
            }
            match mv(src_r.as_fd(), pipe_w.as_fd(), data.len() - moved) {
                Ok(n) => {
                    moved += n;
                    progress = true;
                }
                Err(Errno::AGAIN) => {}
                Err(e) => panic!("fill: {e}"),
            }
            match mv(pipe_r.as_fd(), dst_w.as_fd(), 1 << 20) {
                Ok(_) => progress = true,
                Err(Errno::AGAIN) => {}
                Err(e) => panic!("drain: {e}"),
            }
            if let Ok(n) = rustix::io::read(&dst_r, &mut buf[..]) {
                out.extend_from_slice(&buf[..n]);
                progress = true;
            }
            idle = if progress { 0 } else { idle + 1 };
            assert!(idle < 100_000, "stuck at {} of {}", out.len(), data.len());
        }
        // The source is empty now.
        assert_eq!(mv(src_r.as_fd(), pipe_w.as_fd(), 1), Err(Errno::AGAIN));
        drop(src_w);
        assert_eq!(mv(src_r.as_fd(), pipe_w.as_fd(), 1), Ok(0));
        out
    }

    #[test]
    fn the_plain_copy_moves_the_same_bytes_as_splice() {
        let data: Vec<u8> = (0..(5 << 20) + 17)
            .map(|i: u32| (i * 7 + i / 4096) as u8)
            .collect();
        let spliced = relay(&data, crate::sys::relay_pipe, crate::sys::splice);
        let copied = relay(&data, relay_pipe, splice);
        assert!(spliced == data, "splice changed the bytes");
        assert!(copied == data, "the plain copy changed the bytes");
    }

    #[test]
    fn a_full_destination_takes_nothing_from_the_source() {
        let (src_w, src_r) = nonblocking_pair();
        let (pipe_r, pipe_w) = relay_pipe().unwrap();
        // A small relay, so that it fills before the source is empty.
        rustix::net::sockopt::set_socket_send_buffer_size(&pipe_w, 4096).unwrap();
        // More than the relay holds, all in the source at once.
        let mut sent = 0;
        while let Ok(n) = rustix::io::write(&src_w, &[9u8; CHUNK][..]) {
            sent += n;
        }
        let mut filled = 0;
        loop {
            match splice(src_r.as_fd(), pipe_w.as_fd(), CHUNK) {
                Ok(n) => filled += n,
                Err(Errno::AGAIN) => break,
                Err(e) => panic!("{e}"),
            }
        }
        let count = |fd: &OwnedFd| {
            let mut total = 0;
            let mut buf = vec![0u8; CHUNK];
            while let Ok(n) = rustix::io::read(fd, &mut buf[..]) {
                total += n;
            }
            total
        };
        let (in_relay, in_source) = (count(&pipe_r), count(&src_r));
        assert_eq!(in_relay, filled);
        assert!(
            in_source > 0,
            "the relay took everything: make the source fuller"
        );
        assert_eq!(in_relay + in_source, sent, "bytes lost");
    }

    #[test]
    fn pipes_and_terminals_are_not_sources() {
        let (r, _w) = rustix::pipe::pipe().unwrap();
        assert!(!can_splice(r.as_fd()));
        let (a, _b) = nonblocking_pair();
        assert!(can_splice(a.as_fd()));
    }
}
