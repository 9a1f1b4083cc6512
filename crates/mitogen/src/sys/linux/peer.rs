//! Who is at the other end of a Unix socket.

use std::io;
use std::os::fd::BorrowedFd;

/// The process at the other end of a connected Unix socket, as it was when
/// the connection was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerCredentials {
    /// Its process id, where the system tells (always on Linux).
    pub pid: Option<u32>,
    /// Its effective user id.
    pub uid: u32,
    /// Its effective group id.
    pub gid: u32,
}

/// The peer's credentials (`SO_PEERCRED`).
pub(crate) fn peer_credentials(fd: BorrowedFd<'_>) -> io::Result<PeerCredentials> {
    let c = rustix::net::sockopt::socket_peercred(fd)?;
    Ok(PeerCredentials {
        pid: Some(c.pid.as_raw_nonzero().get() as u32),
        uid: c.uid.as_raw(),
        gid: c.gid.as_raw(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_socketpair_peer_is_this_process() {
        let (a, _b) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let c = peer_credentials(a.as_fd()).unwrap();
        assert_eq!(c.pid, Some(std::process::id()));
        assert_eq!(c.uid, rustix::process::geteuid().as_raw());
        assert_eq!(c.gid, rustix::process::getegid().as_raw());
    }

    #[test]
    fn a_pipe_has_no_peer() {
        let (r, _w) = rustix::pipe::pipe().unwrap();
        assert!(peer_credentials(r.as_fd()).is_err());
    }
}
