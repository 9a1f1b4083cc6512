//! The direct socket: a parent that started its child through a container
//! engine's client (`docker exec -i`, where every byte goes client → daemon
//! → shim → process and back) takes a socket to the child itself, and keeps
//! the client's pipe only as the lifeline.
//!
//! ```text
//! parent                                          child (in the container)
//!   | -- prelude: configuration, direct = T ----->  |  socketpair (a, b); T into a
//!   | <-- "MITOGEN-RS/DIRECT PID NS FD\n" ---------  |  pid, pid namespace, b
//!   |  find PID of NS here; pidfd_getfd(FD);        |
//!   |  a Unix stream socket made by that process,   |
//!   |  holding exactly T (peeked), else close it    |
//!   | -- 'S' (use it) or 'P' (stay) -------------->  |  closes b
//!   | <========= frames over the socket =========>  |  (or over the pipe)
//! ```
//!
//! All of it happens before the stream exists, so no frame ever moves
//! between transports. Anything that does not check out (the parent may not
//! take the descriptor, the child's report names a process that is not in
//! the container, or a socket without the secret) leaves the stream on the
//! pipe, as without the offer; only the debug log says why.
//!
//! What a hostile child (the container's root) can do with its report: name
//! any pid and namespace. A process in the parent's own pid namespace (the
//! host's, where every process outside a container lives) is refused before
//! anything is opened; a process in another namespace (another container)
//! may have a descriptor duplicated, and then closed unread unless it is a
//! Unix stream socket that process made holding the secret, which only this
//! child was told: a peek reads without taking, so a wrong socket loses
//! nothing and nothing is ever written to it.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use crate::core::handshake::{
    self, DirectOffer, StepError, DIRECT_STAY, DIRECT_TOKEN_LEN, DIRECT_USE, MAX_DIRECT_REPORT,
};

/// A fresh secret for one offer, or `None` when the random source fails
/// (the connection then makes no offer).
pub(crate) fn token() -> Option<[u8; DIRECT_TOKEN_LEN]> {
    let mut t = [0u8; DIRECT_TOKEN_LEN];
    crate::sys::random_bytes(&mut t).ok()?;
    Some(t)
}

/// After the greeting (`after` is what came with it): reads the child's
/// report, takes and checks its socket, and answers. Returns the socket
/// when the stream is to run over it, and the bytes read after the report
/// (the start of the child's frames when it stays on the pipe).
pub(crate) fn settle(
    pipe: BorrowedFd<'_>,
    mut after: Vec<u8>,
    token: &[u8; DIRECT_TOKEN_LEN],
    name: &str,
    deadline: Instant,
) -> Result<(Option<OwnedFd>, Vec<u8>), StepError> {
    let nl = loop {
        if let Some(nl) = after.iter().position(|&b| b == b'\n') {
            break nl;
        }
        if after.len() > MAX_DIRECT_REPORT {
            return Err(StepError::Io(std::io::Error::other(
                "no direct-socket report",
            )));
        }
        handshake::read_some::<dyn handshake::Prompts>(pipe, &mut after, deadline, None)?;
    };
    let rest = after.split_off(nl + 1);
    after.pop();
    let t0 = Instant::now();
    let socket = match handshake::parse_direct_report(&after) {
        Ok(Some(offer)) => match take(offer, token) {
            Ok(s) => Some(s),
            Err(why) => {
                tracing::debug!(context = name, ?offer, "staying on the pipe: {why}");
                None
            }
        },
        Ok(None) => {
            tracing::debug!(
                context = name,
                "staying on the pipe: the child has no socket"
            );
            None
        }
        Err(why) => return Err(StepError::Io(std::io::Error::other(why))),
    };
    let answer = if socket.is_some() {
        DIRECT_USE
    } else {
        DIRECT_STAY
    };
    handshake::write_all(pipe, &[answer], deadline)?;
    if socket.is_some() {
        tracing::debug!(
            context = name,
            took_us = t0.elapsed().as_micros() as u64,
            "stream runs over a direct socket"
        );
    }
    Ok((socket, rest))
}

/// Takes the socket `offer` names and checks it, then reads the secret off
/// it; why not otherwise.
fn take(offer: DirectOffer, token: &[u8; DIRECT_TOKEN_LEN]) -> Result<OwnedFd, String> {
    let host = crate::sys::find_in_pid_namespace(offer.ns, offer.pid)
        .map_err(|e| e.to_string())?
        .ok_or("no such process in that namespace")?;
    let fd = crate::sys::take_fd(host, offer.fd, offer.ns, offer.pid)
        .map_err(|e| format!("taking descriptor {} of process {host}: {e}", offer.fd))?;
    verify(fd.as_fd(), host, token)?;
    // Checked: now take the secret off it, so the frames come next.
    let mut buf = [0u8; DIRECT_TOKEN_LEN];
    let (got, _) = rustix::net::recv(&fd, &mut buf, rustix::net::RecvFlags::DONTWAIT)
        .map_err(|e| e.to_string())?;
    if got != DIRECT_TOKEN_LEN {
        return Err("the secret went away".into());
    }
    crate::core::side::set_nonblock(fd.as_fd(), true).map_err(|e| e.to_string())?;
    Ok(fd)
}

/// A Unix stream socket made by process `host`, holding exactly `token`
/// (looked at, not taken).
fn verify(fd: BorrowedFd<'_>, host: u32, token: &[u8; DIRECT_TOKEN_LEN]) -> Result<(), String> {
    if !crate::sys::is_unix_stream(fd) {
        return Err("not a Unix stream socket".into());
    }
    let peer = crate::sys::peer_credentials(fd).map_err(|e| e.to_string())?;
    if peer.pid != Some(host) {
        return Err(format!(
            "a socket made by process {:?}, not by {host}",
            peer.pid
        ));
    }
    let mut seen = [0u8; DIRECT_TOKEN_LEN + 1];
    let n = crate::sys::peek(fd, &mut seen).map_err(|e| format!("peeking: {e}"))?;
    if n != DIRECT_TOKEN_LEN || seen[..n] != token[..] {
        return Err("the socket does not hold the secret".into());
    }
    Ok(())
}
