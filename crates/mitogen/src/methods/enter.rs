//! What the setns and chroot methods share: a context started as root by
//! forking this process, entering the target (namespaces, a root directory)
//! between fork and exec, and executing the program there from a sealed
//! in-memory copy opened beforehand.
//!
//! # Why a sealed in-memory copy
//!
//! The program could be written into the target (as the first stage does
//! over ssh), but a container's root is often read-only or has no `/tmp`,
//! and whatever is written there is the target's to replace: a process
//! inside could swap the file between write and exec. Executing through a
//! descriptor opened *before* entering needs nothing inside, and a memory
//! file sealed against writes (`memfd_create`, `F_SEAL_WRITE`) is also safe
//! from the target afterwards: a process inside that opens the program
//! through `/proc/PID/exe` gets that read-only copy, never the program's file
//! on the host, which it could otherwise overwrite through the same link once
//! the program is no longer running (runc's CVE-2019-5736). One copy is made
//! per process and shared by every context it starts this way.
//!
//! A dynamically linked build still needs its loader and C library inside
//! the target; the static build (the workspace's default) needs nothing.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::core::context::Context;
use crate::core::error::{Error, Result, TransportFailure};
use crate::core::message::ContextId;
use crate::core::router::RouterInner;
use crate::sys::{Entry, REPORT_PREFIX};

/// `PATH` of a context started inside a target.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How one such context is started.
pub(crate) struct Enter<'a> {
    /// Context name.
    pub name: &'a str,
    /// Time allowed to start and greet.
    pub timeout: Duration,
    /// The id the master chose, if any.
    pub id: Option<ContextId>,
    /// Variables given by the caller (set after the fixed ones).
    pub env: &'a [(OsString, OsString)],
}

/// Refuses to go on unless this process runs as root.
pub(crate) fn require_root(name: &str, method: &str) -> Result<()> {
    let euid = rustix::process::geteuid();
    if euid.is_root() {
        return Ok(());
    }
    Err(Error::Connect {
        context: name.to_owned(),
        reason: format!(
            "the {method} method needs root, and this process runs as uid {}",
            euid.as_raw()
        ),
    })
}

/// The environment of the new context: fixed, with none of the caller's
/// variables (a process inside the target can read it through
/// `/proc/PID/environ`), then the caller's own additions.
fn environment(extra: &[(OsString, OsString)]) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = vec![
        ("PATH".into(), PATH.into()),
        ("HOME".into(), "/root".into()),
        ("USER".into(), "root".into()),
        ("LOGNAME".into(), "root".into()),
        (crate::parent::CHILD_ENV.into(), "1".into()),
    ];
    for (k, v) in extra {
        env.retain(|(have, _)| have != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

/// An [`Entry`] into `root` that runs the sealed program copy as context
/// `name`, its failed step reported on `report`; the caller adds what else
/// to enter.
pub(crate) fn entry(enter: &Enter<'_>, root: OwnedFd, report: OwnedFd) -> Result<Entry> {
    let exe = crate::sys::sealed_own_exe().map_err(|e| Error::Connect {
        context: enter.name.to_owned(),
        reason: format!("making a sealed copy of the program: {e}"),
    })?;
    let arg0 = OsString::from(format!("mitogen:{}", enter.name));
    let argv: [&OsStr; 1] = [&arg0];
    Entry::new(exe, &argv, &environment(enter.env), report, root).map_err(|e| Error::Connect {
        context: enter.name.to_owned(),
        reason: format!("preparing the start: {e}"),
    })
}

/// The pipe the new process reports on (its stderr until it takes over).
pub(crate) fn report_pipe() -> Result<(OwnedFd, OwnedFd)> {
    crate::sys::pipe().map_err(|e| Error::io("making a pipe for the start's report", e))
}

/// Starts the context: forks, runs `entry` in the child, and bootstraps the
/// program as for a local context. `report` is the read end of the pipe
/// `entry` reports on; a failed start names the step that failed.
pub(crate) fn connect(
    router: &Arc<RouterInner>,
    enter: &Enter<'_>,
    entry: Entry,
    report: OwnedFd,
) -> Result<Context> {
    let entry = Mutex::new(Some(entry));
    let command = |_force: bool| {
        // The program named here never runs: the entry executes the sealed
        // copy itself, or fails.
        let mut cmd = Command::new("/proc/self/exe");
        let taken = entry.lock().unwrap_or_else(|e| e.into_inner()).take();
        // SAFETY: `Entry::enter` makes system calls only (no allocation, no
        // lock), as a child forked from a multi-threaded process must.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || match &taken {
                Some(entry) => entry.enter(),
                None => Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
            })
        };
        cmd
    };
    let started = crate::parent::connect(
        router,
        &crate::parent::Launch {
            command: &command,
            name: enter.name,
            timeout: enter.timeout,
            stage: None,
            id: enter.id,
            classify: &|_| TransportFailure::Other,
            prompt: None,
            local_peer: true,
            direct: false,
        },
    );
    match started {
        Ok(ctx) => {
            // Whatever the program or the process waiting for it prints on
            // that stderr later becomes log records.
            router.broker.add_log_pipe(report, "stderr");
            Ok(ctx)
        }
        Err(Error::Connect { context, reason }) => Err(Error::Connect {
            context,
            reason: explain(&reason, &read_report(&report)),
        }),
        Err(e) => Err(e),
    }
}

/// What the child wrote on its report pipe, without waiting.
fn read_report(fd: &OwnedFd) -> String {
    let _ = crate::core::side::set_nonblock(fd.as_fd(), true);
    let mut out = Vec::new();
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
    while let Ok((got, _)) = rustix::io::read(fd, &mut buf) {
        if got.is_empty() || out.len() > 16 * 1024 {
            break;
        }
        out.extend_from_slice(got);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The failed step, with the system's error from `reason`, and anything
/// else the child printed.
fn explain(reason: &str, report: &str) -> String {
    let step = report
        .lines()
        .filter_map(|l| l.strip_prefix(REPORT_PREFIX))
        .next_back();
    let said: Vec<&str> = report
        .lines()
        .filter(|l| !l.starts_with(REPORT_PREFIX) && !l.trim().is_empty())
        .collect();
    let mut out = match step {
        Some(step) => {
            let errno = reason
                .strip_prefix("cannot start the program: ")
                .unwrap_or(reason);
            format!("{step}: {errno}")
        }
        None => reason.to_owned(),
    };
    if !said.is_empty() {
        let text = said.join("\n");
        let mut start = text.len().saturating_sub(400);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        out.push_str(&format!("; it printed: {:?}", &text[start..]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_is_fixed_and_extended() {
        let env = environment(&[
            ("HOME".into(), "/home/x".into()),
            ("LANG".into(), "C.UTF-8".into()),
        ]);
        let get = |k: &str| env.iter().find(|(h, _)| h == k).map(|(_, v)| v.clone());
        assert_eq!(get("HOME"), Some("/home/x".into()));
        assert_eq!(get("LANG"), Some("C.UTF-8".into()));
        assert_eq!(get("PATH"), Some(PATH.into()));
        assert_eq!(get(crate::parent::CHILD_ENV), Some("1".into()));
        assert_eq!(env.iter().filter(|(k, _)| k == "HOME").count(), 1);
    }

    #[test]
    fn the_failed_step_is_named() {
        let r = explain(
            "cannot start the program: Operation not permitted (os error 1)",
            "mitogen-enter: entering the net namespace\n",
        );
        assert_eq!(
            r,
            "entering the net namespace: Operation not permitted (os error 1)"
        );
        let r = explain("no greeting within 1s", "mitogen child 7: bootstrap: x\n");
        assert!(r.starts_with("no greeting within 1s; it printed: "), "{r}");
    }
}
