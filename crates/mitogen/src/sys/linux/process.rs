//! Processes: watching and killing a child, dying with the parent, and
//! whether the kernel raised our privileges.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use rustix::process::{Pid, PidfdFlags, Signal};

/// A child process, held by a pidfd: readable once the child exits, and a
/// name for it that no later process can take over (signals sent through it
/// reach this child or nobody, even after its pid is reused).
pub(crate) struct ProcessHandle(OwnedFd);

impl ProcessHandle {
    /// Opens a handle on the child `pid` (which must not have been reaped).
    pub(crate) fn open(pid: u32) -> io::Result<ProcessHandle> {
        let pid = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| io::Error::other(format!("invalid pid {pid}")))?;
        Ok(ProcessHandle(rustix::process::pidfd_open(
            pid,
            PidfdFlags::empty(),
        )?))
    }

    /// Sends `SIGKILL` to the child.
    pub(crate) fn kill(&self) -> io::Result<()> {
        Ok(rustix::process::pidfd_send_signal(&self.0, Signal::KILL)?)
    }
}

impl AsFd for ProcessHandle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for ProcessHandle {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Asks the kernel to kill this process when the thread that forked it
/// exits, then checks that `expected_parent` is still its parent (if it died
/// before the request took effect, we were re-parented and nobody would
/// signal us): `ESRCH` then.
///
/// Async-signal-safe and allocation-free (an errno becomes an
/// `io::Error` without allocating), so it may run in `pre_exec`.
pub(crate) fn die_with_parent(expected_parent: u32) -> io::Result<()> {
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
    if rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32) != Some(expected_parent)
    {
        return Err(rustix::io::Errno::SRCH.into());
    }
    Ok(())
}

/// Undoes [`die_with_parent`]: this process outlives its parent.
pub(crate) fn outlive_parent() -> io::Result<()> {
    Ok(rustix::process::set_parent_process_death_signal(None)?)
}

/// True when the kernel raised this program's privileges as it started it
/// (set-user-ID, set-group-ID, file capabilities): `AT_SECURE` in the
/// auxiliary vector.
pub(crate) fn started_privileged() -> bool {
    // SAFETY: getauxval only reads the auxiliary vector, which the kernel
    // set up before the program started and nothing changes.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Child, Command};
    use std::time::{Duration, Instant};

    fn readable_within(fd: BorrowedFd<'_>, ms: i32) -> bool {
        let mut pfd = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        let ts = rustix::event::Timespec {
            tv_sec: (ms / 1000).into(),
            tv_nsec: ((ms % 1000) * 1_000_000).into(),
        };
        rustix::event::poll(&mut pfd, Some(&ts)).unwrap() == 1
    }

    fn wait_with_deadline(child: &mut Child, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the child is still alive after {within:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn the_handle_becomes_readable_when_the_child_exits_and_kills_it() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let h = ProcessHandle::open(child.id()).unwrap();
        assert!(!readable_within(h.as_fd(), 50), "readable while running");
        h.kill().unwrap();
        assert!(readable_within(h.as_fd(), 5000), "not readable after exit");
        let st = wait_with_deadline(&mut child, Duration::from_secs(5));
        assert_eq!(st.signal(), Some(9));
    }

    #[test]
    fn a_child_dies_with_the_thread_that_started_it() {
        let me = std::process::id();
        let mut child = std::thread::spawn(move || {
            let mut cmd = Command::new("sleep");
            cmd.arg("30");
            // SAFETY: die_with_parent is async-signal-safe and allocation-free.
            unsafe { cmd.pre_exec(move || die_with_parent(me)) };
            cmd.spawn().unwrap()
        })
        .join()
        .unwrap();
        let st = wait_with_deadline(&mut child, Duration::from_secs(10));
        assert_eq!(st.signal(), Some(9), "{st:?}");
    }

    #[test]
    fn a_child_whose_parent_is_not_the_one_expected_does_not_start() {
        let mut cmd = Command::new("true");
        // SAFETY: as above.
        unsafe { cmd.pre_exec(|| die_with_parent(1)) };
        let err = cmd.spawn().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH));
    }

    #[test]
    fn a_child_that_outlives_its_parent_survives_it() {
        let me = std::process::id();
        let mut child = std::thread::spawn(move || {
            let mut cmd = Command::new("sleep");
            cmd.arg("0.5");
            // SAFETY: both calls are async-signal-safe and allocation-free.
            unsafe { cmd.pre_exec(move || die_with_parent(me).and_then(|()| outlive_parent())) };
            cmd.spawn().unwrap()
        })
        .join()
        .unwrap();
        let st = wait_with_deadline(&mut child, Duration::from_secs(10));
        assert_eq!(st.code(), Some(0), "{st:?}");
    }

    #[test]
    fn the_test_process_was_not_started_privileged() {
        assert!(!started_privileged());
    }
}
