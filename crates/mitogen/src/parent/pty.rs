//! Pseudo-terminals for password prompts (the seed's `hybrid_tty_create_child`
//! and `tty_create_child`).
//!
//! ssh, sudo, su and doas read passwords from their controlling terminal, never
//! from a pipe. A child that may prompt gets a new session whose controlling
//! terminal is a pty we hold the master side of; its data stream still runs
//! over the socketpair, so the pty carries nothing but the conversation with
//! the prompt.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Command;

/// Opens a pty pair with echo off (so a password written to it is not read back).
pub(crate) fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(
        name.as_c_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    // grantpt leaves the terminal writable by the `tty` group, so `write` and
    // `wall` (setgid tty) could put text that looks like a prompt on it: only
    // we and the tool may.
    rustix::fs::fchmod(&slave, rustix::fs::Mode::from_raw_mode(0o600))?;
    let mut t = rustix::termios::tcgetattr(&slave)?;
    t.local_modes.remove(rustix::termios::LocalModes::ECHO);
    rustix::termios::tcsetattr(&slave, rustix::termios::OptionalActions::Now, &t)?;
    Ok((master, slave))
}

/// Makes `cmd` start in a new session with `slave` as its controlling terminal.
pub(crate) fn attach(cmd: &mut Command, slave: &OwnedFd) -> io::Result<()> {
    let raw = slave.as_raw_fd();
    // SAFETY: runs between fork and exec and makes only async-signal-safe
    // system calls (setsid, `sys::set_controlling_terminal`).
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, move || {
            rustix::process::setsid()?;
            // SAFETY: `raw` stays open in the parent until the spawn returns, so
            // it is open in the forked child too.
            let fd = std::os::fd::BorrowedFd::borrow_raw(raw);
            crate::sys::set_controlling_terminal(fd)
        });
    }
    Ok(())
}

/// Puts the terminal in raw mode (`cfmakeraw`): no echo, no line editing, no
/// signal characters, no CR/NL translation. A full pty carries the program's
/// upload and its binary frames, which the line discipline would otherwise
/// mangle; a password prompt still works, as the answer is written whole,
/// newline included.
pub(crate) fn make_raw(tty: &OwnedFd) -> io::Result<()> {
    let mut t = rustix::termios::tcgetattr(tty)?;
    t.make_raw();
    rustix::termios::tcsetattr(tty, rustix::termios::OptionalActions::Now, &t)?;
    Ok(())
}
