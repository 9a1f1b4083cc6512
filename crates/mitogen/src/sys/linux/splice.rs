//! Pipes, and moving bytes between descriptors without copying them through
//! this process (cut-through relaying).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::pipe::{PipeFlags, SpliceFlags};

/// The relay pipe size asked for: one 1 MiB chunk fits in flight. The kernel
/// may give less (an unprivileged user past `pipe-user-pages-soft`); any size
/// works.
const RELAY_PIPE_SIZE: usize = 1 << 20;

/// A close-on-exec pipe `(read end, write end)`.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?)
}

/// The non-blocking, close-on-exec channel [`splice`] moves a frame through
/// `(read end, write end)`: a pipe, as large as the kernel allows up to 1 MiB.
pub(crate) fn relay_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
    // Best effort: a smaller pipe only means more system calls.
    let _ = rustix::pipe::fcntl_setpipe_size(&w, RELAY_PIPE_SIZE);
    Ok((r, w))
}

/// True when `fd` can be a [`splice`] endpoint: a socket or a pipe (a
/// terminal, which `su` streams use, cannot).
pub(crate) fn can_splice(fd: BorrowedFd<'_>) -> bool {
    match rustix::fs::fstat(fd) {
        Ok(st) => {
            let t = rustix::fs::FileType::from_raw_mode(st.st_mode);
            matches!(t, rustix::fs::FileType::Socket | rustix::fs::FileType::Fifo)
        }
        Err(_) => false,
    }
}

/// Moves up to `len` bytes from `from` to `to`, one of which is a
/// [`relay_pipe`] end, without blocking: `Errno::AGAIN` when the source has
/// nothing or the destination has no room, `Ok(0)` at the source's end.
#[inline]
pub(crate) fn splice(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    len: usize,
) -> rustix::io::Result<usize> {
    rustix::pipe::splice(
        from,
        None,
        to.as_fd(),
        None,
        len,
        SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_pipe_is_non_blocking_and_close_on_exec() {
        let (r, w) = relay_pipe().unwrap();
        for fd in [&r, &w] {
            assert!(rustix::fs::fcntl_getfl(fd)
                .unwrap()
                .contains(rustix::fs::OFlags::NONBLOCK));
            assert!(rustix::io::fcntl_getfd(fd)
                .unwrap()
                .contains(rustix::io::FdFlags::CLOEXEC));
        }
        let (r, _w) = pipe().unwrap();
        assert!(rustix::io::fcntl_getfd(&r)
            .unwrap()
            .contains(rustix::io::FdFlags::CLOEXEC));
    }

    #[test]
    fn sockets_and_pipes_splice_terminals_do_not() {
        let (r, _w) = pipe().unwrap();
        assert!(can_splice(r.as_fd()));
        let (a, _b) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        assert!(can_splice(a.as_fd()));
        let pty =
            rustix::pty::openpt(rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY)
                .unwrap();
        assert!(!can_splice(pty.as_fd()));
    }
}
