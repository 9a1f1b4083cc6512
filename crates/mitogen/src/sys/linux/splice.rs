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

/// The size asked for a pipe that a context's stream arrives or leaves on
/// (sshd and most container engines give the command pipes of 64 KiB).
/// 256 KiB lets the peer write a whole large frame while this process is off
/// the CPU, which on two cores shared with ssh and sshd is often: a fetch
/// over ssh measured 7 % faster (four runs, interleaved), a push the same
/// within 1 %. It is kept at a quarter
/// of the relay pipe's because an unprivileged user has 64 MiB of pipe
/// buffers in all (`pipe-user-pages-soft`) before the kernel gives their new
/// pipes one page: two pipes of 256 KiB per context leave that for 128
/// contexts of one user on one host.
const STREAM_PIPE_SIZE: usize = 256 << 10;

/// Widens `fd` to [`STREAM_PIPE_SIZE`] if it is a pipe smaller than that;
/// anything else (a socket, a terminal), a pipe already as large, or a
/// kernel that refuses is left as it is.
pub(crate) fn widen_stream_pipe(fd: BorrowedFd<'_>) {
    if !matches!(
        rustix::fs::fstat(fd).map(|st| rustix::fs::FileType::from_raw_mode(st.st_mode)),
        Ok(rustix::fs::FileType::Fifo)
    ) {
        return;
    }
    if rustix::pipe::fcntl_getpipe_size(fd).is_ok_and(|n| n < STREAM_PIPE_SIZE) {
        // Best effort: past the user's allowance the pipe keeps its size.
        let _ = rustix::pipe::fcntl_setpipe_size(fd, STREAM_PIPE_SIZE);
    }
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
