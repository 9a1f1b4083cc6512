//! Taking a descriptor out of another process: how a parent gets a direct
//! socket to a child that a container engine started (`pidfd_getfd(2)`).
//!
//! The child names itself as it sees itself: its pid in its own pid
//! namespace and that namespace's inode. [`find_in_pid_namespace`] turns
//! that into a pid here, [`take_fd`] duplicates the named descriptor of
//! that process. Neither trusts the naming: a namespace equal to ours is
//! refused outright (every process of the host, the parent's own included,
//! lives there, and none of them is a container's child), and the caller
//! checks what it got (a Unix stream socket made by that process, holding a
//! secret only the child was told) before reading a byte from it.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{AddressFamily, SocketType};
use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags};

/// The inode of the pid namespace of process `pid` (`"self"` for ours).
fn pid_namespace_of(pid: &str) -> io::Result<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/pid"))?;
    // "pid:[4026531836]"
    link.to_str()
        .and_then(|s| s.strip_prefix("pid:["))
        .and_then(|s| s.strip_suffix(']'))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("unexpected namespace link {link:?}")))
}

/// The inode of this process's pid namespace.
pub(crate) fn own_pid_namespace() -> io::Result<u64> {
    pid_namespace_of("self")
}

/// The last entry of the `NSpid:` line of `/proc/PID/status`: the process's
/// pid in its innermost pid namespace.
fn innermost_pid(pid: u32) -> io::Result<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no NSpid for process {pid}")))
}

/// Whether host process `host` is the process `pid` of the pid namespace
/// with inode `ns`.
fn is(host: u32, ns: u64, pid: u32) -> bool {
    pid_namespace_of(&host.to_string()).is_ok_and(|n| n == ns)
        && innermost_pid(host).is_ok_and(|p| p == pid)
}

/// The pid, in this process's namespace, of the process that is `pid` in
/// the pid namespace with inode `ns`; `Ok(None)` when no such process is
/// visible. A namespace equal to ours is an error: no process there can
/// stand for a child in a container.
///
/// Newest first (highest pid first): the process sought has usually just
/// been started, so it is found after a few `readlink`s of
/// `/proc/PID/ns/pid`, with a read of `status` only for processes in that
/// namespace; at worst one `readlink` per process. Cheap enough to run on
/// every connection.
pub(crate) fn find_in_pid_namespace(ns: u64, pid: u32) -> io::Result<Option<u32>> {
    if ns == own_pid_namespace()? {
        return Err(io::Error::other(
            "the process names this process's own pid namespace",
        ));
    }
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable_by(|a, b| b.cmp(a));
    Ok(pids.into_iter().find(|&host| is(host, ns, pid)))
}

/// A duplicate of descriptor `fd` of host process `host`, which must still
/// be the process `pid` of namespace `ns` once held by a pidfd (so a pid
/// reused since the scan is caught). Needs the right to ptrace it
/// (`PTRACE_MODE_ATTACH_REALCREDS`: root, or its owner where Yama allows).
/// The duplicate is close-on-exec.
pub(crate) fn take_fd(host: u32, fd: i32, ns: u64, pid: u32) -> io::Result<OwnedFd> {
    let raw = i32::try_from(host)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::other(format!("invalid pid {host}")))?;
    let pidfd = rustix::process::pidfd_open(raw, PidfdFlags::empty())?;
    if ns == own_pid_namespace()? || !is(host, ns, pid) {
        return Err(io::Error::other(format!(
            "process {host} is no longer the one named"
        )));
    }
    Ok(rustix::process::pidfd_getfd(
        &pidfd,
        fd,
        PidfdGetfdFlags::empty(),
    )?)
}

/// Whether `fd` is a Unix stream socket.
pub(crate) fn is_unix_stream(fd: BorrowedFd<'_>) -> bool {
    rustix::net::sockopt::socket_domain(fd).is_ok_and(|d| d == AddressFamily::UNIX)
        && rustix::net::sockopt::socket_type(fd).is_ok_and(|t| t == SocketType::STREAM)
}

/// Copies up to `buf.len()` bytes waiting on socket `fd` without taking
/// them (`MSG_PEEK`) and without waiting; returns how many there were.
pub(crate) fn peek(fd: impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    use rustix::net::RecvFlags;
    let (got, _) = rustix::net::recv(fd, buf, RecvFlags::PEEK | RecvFlags::DONTWAIT)?;
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_namespace_is_refused() {
        let ns = own_pid_namespace().unwrap();
        assert!(find_in_pid_namespace(ns, std::process::id()).is_err());
        assert!(take_fd(std::process::id(), 0, ns, std::process::id()).is_err());
    }

    #[test]
    fn a_socketpair_is_a_unix_stream_and_a_peek_takes_nothing() {
        let (a, b) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        assert!(is_unix_stream(a.as_fd()));
        let (r, _w) = rustix::pipe::pipe().unwrap();
        assert!(!is_unix_stream(r.as_fd()));
        rustix::io::write(&a, b"secret").unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(peek(&b, &mut buf).unwrap(), 6);
        assert_eq!(peek(&b, &mut buf).unwrap(), 6);
        assert_eq!(&buf[..6], b"secret");
    }
}
