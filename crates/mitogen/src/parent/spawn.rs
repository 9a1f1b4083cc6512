//! Starting child processes (the seed's `create_child`).
//!
//! The child's stdin and stdout are both one end of a Unix socketpair, which it
//! takes over as its message stream; its stderr is inherited until the child
//! redirects it into its own log forwarding. Every other descriptor of ours is
//! close-on-exec, so nothing else leaks into the child.

use std::io;
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};

use crate::core::side::socketpair;

/// A started child and our end of its stream.
pub(crate) struct Spawned {
    pub child: Child,
    pub fd: OwnedFd,
}

/// Starts `cmd` with a socketpair on its stdin and stdout.
pub(crate) fn create_child(mut cmd: Command) -> io::Result<Spawned> {
    let (ours, theirs) = socketpair()?;
    cmd.stdin(Stdio::from(theirs.try_clone()?))
        .stdout(Stdio::from(theirs))
        .stderr(Stdio::inherit());
    let child = cmd.spawn()?;
    // Dropping `cmd` closes our copies of the child's end, so its exit is our EOF.
    drop(cmd);
    Ok(Spawned { child, fd: ours })
}
