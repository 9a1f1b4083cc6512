//! Terminals.

use std::io;
use std::os::fd::BorrowedFd;

/// Makes `tty` the controlling terminal of this process's session (which it
/// must lead: call after `setsid`). Async-signal-safe and allocation-free,
/// for `pre_exec`.
pub(crate) fn set_controlling_terminal(tty: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::process::ioctl_tiocsctty(tty)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    fn pty() -> (rustix::fd::OwnedFd, rustix::fd::OwnedFd) {
        use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
        let master =
            openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let name = ptsname(&master, Vec::new()).unwrap();
        let slave = rustix::fs::open(
            name.as_c_str(),
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        (master, slave)
    }

    /// Runs a shell in a new session (with `tty` as its controlling terminal
    /// if `attach`) that prints its `tty_nr` and whether `/dev/tty` opens.
    fn controlling_tty_of_child(tty: &rustix::fd::OwnedFd, attach: bool) -> String {
        let raw = tty.as_raw_fd();
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "read -r _ _ _ _ _ _ nr _ </proc/self/stat; \
             if (exec 3</dev/tty) 2>/dev/null; then echo \"$nr open\"; else echo \"$nr none\"; fi",
        ])
        .stdout(Stdio::piped())
        .stdin(Stdio::null());
        // SAFETY: setsid and the ioctl are async-signal-safe and allocate
        // nothing; `raw` is open in the parent until spawn returns, so in the
        // child too.
        unsafe {
            cmd.pre_exec(move || {
                rustix::process::setsid()?;
                if attach {
                    set_controlling_terminal(BorrowedFd::borrow_raw(raw))?;
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert!(child.wait().unwrap().success());
        out.trim().to_owned()
    }

    #[test]
    fn a_child_gets_the_pty_as_its_controlling_terminal() {
        let (_master, slave) = pty();
        let rdev = rustix::fs::fstat(&slave).unwrap().st_rdev;
        let (major, minor) = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
        // How /proc/PID/stat encodes a device number.
        let nr = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
        assert_eq!(controlling_tty_of_child(&slave, true), format!("{nr} open"));
        // Without it, a new session has no terminal at all.
        assert_eq!(controlling_tty_of_child(&slave, false), "0 none");
    }
}
