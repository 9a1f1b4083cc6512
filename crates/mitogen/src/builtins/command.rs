//! The body of [`run_command`](super::run_command): start the command, then
//! gather its output while watching for its end and for its caller giving up.
//!
//! `Command::output` would do the gathering, but it blocks until the command
//! ends, so a command whose caller gave up (a call timeout, a dropped call)
//! would run on, and hold the context's main thread, for as long as it
//! likes. Here one `poll` waits on the command's stdout, its stderr and a
//! descriptor that becomes readable when it exits; the poll's timeout is
//! only the cadence of the cancellation check.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{kill_process_group, Pid, Signal};

use super::{CommandOutput, CANCEL_CHECK};
use crate::sys::ProcessHandle;

/// Runs `argv` as [`run_command`](super::run_command) documents.
pub(super) fn run(argv: Vec<String>) -> io::Result<CommandOutput> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The command must not outlive the context: a context killed because its
    // caller gave up (or lost its parent) takes the command with it. Calls run
    // on the context's main thread, which lives as long as the process, so the
    // signal (sent when the forking *thread* exits) means the process is gone.
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and makes only
    // async-signal-safe system calls (setsid, `sys::die_with_parent`); it
    // allocates nothing, not even for an error (an `Errno` converts to an OS
    // error without one).
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::setsid()?;
            crate::sys::die_with_parent(parent)
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run {program:?}: {e}")))?;
    let gathered = gather(&mut child);
    if gathered.is_err() {
        // Cancelled, or the gathering itself failed: the command (and what
        // it started in its session) goes, and is reaped.
        kill_session(&child);
    }
    let status = child.wait()?;
    let (stdout, stderr) = gathered?;
    Ok(CommandOutput {
        code: status.code(),
        signal: status.signal(),
        stdout,
        stderr,
    })
}

/// Reads the command's stdout and stderr to their ends and waits for it to
/// exit; an `Interrupted` error as soon as the caller has given up.
fn gather(child: &mut Child) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let handle = ProcessHandle::open(child.id())?;
    let mut out = Pipe::new(child.stdout.take().map(OwnedFd::from));
    let mut err = Pipe::new(child.stderr.take().map(OwnedFd::from));
    let mut exited = false;
    let timeout = Timespec::try_from(CANCEL_CHECK).map_err(io::Error::other)?;
    // As ssh does, the output ends when every writer has closed it, which
    // may be after the command exited (`sleep 5 & echo hi` takes 5 s).
    while !(exited && out.is_done() && err.is_done()) {
        if crate::cancelled() {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "cancelled by the caller",
            ));
        }
        let (o, e) = (out.fd(), err.fd());
        let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(3);
        for fd in [o.as_ref(), e.as_ref()].into_iter().flatten() {
            fds.push(PollFd::new(fd, PollFlags::IN));
        }
        if !exited {
            fds.push(PollFd::new(&handle, PollFlags::IN));
        }
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        let mut i = 0;
        for pipe in [&mut out, &mut err] {
            if pipe.is_done() {
                continue;
            }
            if ready[i] {
                pipe.read_some()?;
            }
            i += 1;
        }
        if !exited && ready[i] {
            exited = true;
        }
    }
    Ok((out.bytes, err.bytes))
}

/// One of the command's output pipes and what came through it.
struct Pipe {
    reader: Option<File>,
    bytes: Vec<u8>,
}

impl Pipe {
    fn new(fd: Option<OwnedFd>) -> Pipe {
        Pipe {
            reader: fd.map(File::from),
            bytes: Vec::new(),
        }
    }

    fn is_done(&self) -> bool {
        self.reader.is_none()
    }

    fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.reader.as_ref().map(AsFd::as_fd)
    }

    /// One read (poll said it will not block); the end closes the pipe.
    fn read_some(&mut self) -> io::Result<()> {
        let Some(reader) = self.reader.as_mut() else {
            return Ok(());
        };
        let mut buf = [0u8; 64 * 1024];
        match reader.read(&mut buf) {
            Ok(0) => self.reader = None,
            Ok(n) => self.bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

/// `SIGKILL` to the command's session (it leads its own process group, and
/// is not reaped yet, so the group's id is still its own).
fn kill_session(child: &Child) {
    let pid = i32::try_from(child.id()).ok().and_then(Pid::from_raw);
    if let Some(pid) = pid {
        // An error means the group is already gone.
        let _ = kill_process_group(pid, Signal::KILL);
    }
}
