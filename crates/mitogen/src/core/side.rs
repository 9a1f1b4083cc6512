//! [`Side`]: one file descriptor of a stream.
//!
//! A stream reads from one side and writes to another; for a socket both are the
//! same descriptor, for a pair of pipes (ssh's stdin and stdout) they differ.
//! Either way a side is non-blocking and close-on-exec, and every way in which a
//! socket, pipe or tty reports that the other end is gone (`EPIPE`, `ECONNRESET`,
//! `EIO` from a pty, a zero-length read) is read as plain end-of-file, so the
//! stream above has one disconnection path (the seed's `io_op`).

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use rustix::io::Errno;

/// What a read or write on a side observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoStatus {
    /// This many bytes moved.
    Done(usize),
    /// Nothing can move now; wait for readiness.
    WouldBlock,
    /// The other end is gone.
    Disconnected,
}

/// One non-blocking, close-on-exec file descriptor of a stream.
#[derive(Debug)]
pub struct Side {
    fd: OwnedFd,
}

/// Errors that mean "the other end went away" rather than "something is broken".
pub(crate) fn is_disconnect(e: Errno) -> bool {
    matches!(
        e,
        Errno::PIPE | Errno::CONNRESET | Errno::IO | Errno::NOTCONN | Errno::BADF
    )
}

impl Side {
    /// Takes ownership of `fd`, making it non-blocking and close-on-exec.
    pub fn new(fd: OwnedFd) -> io::Result<Side> {
        set_nonblock(fd.as_fd(), true)?;
        set_cloexec(fd.as_fd())?;
        Ok(Side { fd })
    }

    /// Reads into `buf`; a zero-length read or a disconnection error is
    /// [`IoStatus::Disconnected`].
    pub fn read(&self, buf: &mut [MaybeUninit<u8>]) -> io::Result<IoStatus> {
        loop {
            match rustix::io::read(&self.fd, &mut *buf) {
                Ok(([], _)) => return Ok(IoStatus::Disconnected),
                Ok((init, _)) => return Ok(IoStatus::Done(init.len())),
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => return Ok(IoStatus::WouldBlock),
                Err(e) if is_disconnect(e) => return Ok(IoStatus::Disconnected),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Writes as much of `bufs` as the descriptor takes now.
    pub fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<IoStatus> {
        loop {
            match rustix::io::writev(&self.fd, bufs) {
                Ok(n) => return Ok(IoStatus::Done(n)),
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => return Ok(IoStatus::WouldBlock),
                Err(e) if is_disconnect(e) => return Ok(IoStatus::Disconnected),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl AsFd for Side {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Side {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Sets or clears `O_NONBLOCK`.
pub fn set_nonblock(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let mut flags = rustix::fs::fcntl_getfl(fd)?;
    flags.set(rustix::fs::OFlags::NONBLOCK, on);
    rustix::fs::fcntl_setfl(fd, flags)?;
    Ok(())
}

/// Clears `O_NONBLOCK` (the seed's `set_block`).
pub fn set_block(fd: BorrowedFd<'_>) -> io::Result<()> {
    set_nonblock(fd, false)
}

/// Sets `FD_CLOEXEC`, so the descriptor does not leak into spawned programs.
pub fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = rustix::io::fcntl_getfd(fd)?;
    rustix::io::fcntl_setfd(fd, flags | rustix::io::FdFlags::CLOEXEC)?;
    Ok(())
}

/// A connected pair of close-on-exec Unix stream sockets with large buffers (the
/// seed's `create_socketpair`): the fastest local transport, and the data channel
/// of every locally spawned context.
pub fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let (a, b) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    for s in [&a, &b] {
        // Bigger kernel buffers mean fewer wake-ups per MiB streamed; the kernel
        // caps the value at net.core.[rw]mem_max, which is fine.
        let _ = rustix::net::sockopt::set_socket_send_buffer_size(s, 1 << 20);
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size(s, 1 << 20);
    }
    Ok((a, b))
}
