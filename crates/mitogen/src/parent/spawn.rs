//! Starting child processes (the seed's `create_child`).
//!
//! The child's stdin and stdout are both one end of a Unix socketpair, which it
//! takes over as its message stream; its stderr is inherited until the child
//! redirects it into its own log forwarding. Every other descriptor of ours is
//! close-on-exec, so nothing else leaks into the child.
//!
//! [`create_child_on_pty`] is the seed's `tty_create_child`, for transports
//! (su) that insist on a terminal for stdin: the pty's master is the stream.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Command, Stdio};

use crate::core::side::{set_nonblock, socketpair};

/// A started child and our end of its stream.
pub(crate) struct Spawned {
    pub child: Child,
    pub fd: OwnedFd,
    /// The read end of its stderr, when captured.
    pub stderr: Option<OwnedFd>,
}

/// Starts `cmd` with a socketpair on its stdin and stdout. With
/// `capture_stderr`, its stderr is a pipe whose read end is returned (a
/// transport's diagnostics, for error messages and logs); otherwise it is
/// inherited.
pub(crate) fn create_child(mut cmd: Command, capture_stderr: bool) -> io::Result<Spawned> {
    let (ours, theirs) = socketpair()?;
    // The bootstrap's waits have deadlines only if no write can block: a blocking
    // write of an upload to a remote that stopped reading would never return.
    // (The flag belongs to our end's open file description, not the child's.)
    set_nonblock(ours.as_fd(), true)?;
    cmd.stdin(Stdio::from(theirs.try_clone()?))
        .stdout(Stdio::from(theirs));
    let stderr = if capture_stderr {
        let (r, w) = crate::sys::pipe()?;
        cmd.stderr(Stdio::from(w));
        Some(r)
    } else {
        cmd.stderr(Stdio::inherit());
        None
    };
    let child = cmd.spawn()?;
    // Dropping `cmd` closes our copies of the child's ends, so its exit is our EOF.
    drop(cmd);
    Ok(Spawned {
        child,
        fd: ours,
        stderr,
    })
}

/// Starts `cmd` with the pty `slave` as its stdin, stdout and stderr; `master`
/// becomes our end of its stream. The caller puts the pty in raw mode and
/// makes it the child's controlling terminal ([`super::pty::attach`]).
pub(crate) fn create_child_on_pty(
    mut cmd: Command,
    master: OwnedFd,
    slave: OwnedFd,
) -> io::Result<Spawned> {
    set_nonblock(master.as_fd(), true)?;
    cmd.stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    let child = cmd.spawn()?;
    // No copy of the terminal side may stay here: the child's exit must read
    // as end-of-file (EIO) on the master.
    drop(cmd);
    Ok(Spawned {
        child,
        fd: master,
        stderr: None,
    })
}
