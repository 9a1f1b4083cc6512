//! Child-process exit notification (the seed's `ProcessMonitor`).
//!
//! Every process a router starts is watched through a pidfd registered with the
//! broker's poller: when it exits, the broker reaps it at once (no zombies) and
//! records its status, without a `SIGCHLD` handler that would fight with the
//! program's own.

use std::os::fd::{AsRawFd, RawFd};
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex};

use crate::core::latch::Latch;

/// The exit status of a started process, once known.
#[derive(Default)]
pub(crate) struct ExitCell {
    status: Mutex<Option<ExitStatus>>,
    latch: Latch<()>,
}

impl ExitCell {
    /// Exit status, if the process has been reaped.
    pub(crate) fn status(&self) -> Option<ExitStatus> {
        *self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, s: ExitStatus) {
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
        self.latch.close("exited");
    }

    /// Waits up to `timeout` for the exit.
    pub(crate) fn wait(&self, timeout: std::time::Duration) -> Option<ExitStatus> {
        let _ = self.latch.get_timeout(timeout);
        self.status()
    }
}

/// One watched process: its pidfd and the `Child` to reap.
pub(crate) struct ProcessWatch {
    pidfd: crate::sys::ProcessHandle,
    child: Child,
    exit: Arc<ExitCell>,
    on_exit: Option<Box<dyn FnOnce() + Send>>,
}

impl ProcessWatch {
    /// Watches `child`; `exit` receives its status.
    pub(crate) fn new(child: Child, exit: Arc<ExitCell>) -> std::io::Result<ProcessWatch> {
        let pidfd = crate::sys::ProcessHandle::open(child.id())?;
        Ok(ProcessWatch {
            pidfd,
            child,
            exit,
            on_exit: None,
        })
    }

    /// Also runs `f` once the process has exited (and been reaped).
    pub(crate) fn on_exit(mut self, f: Box<dyn FnOnce() + Send>) -> ProcessWatch {
        self.on_exit = Some(f);
        self
    }

    /// Called when the pidfd is readable; returns `true` once reaped.
    pub(crate) fn on_readable(&mut self) -> bool {
        match self.child.try_wait() {
            Ok(Some(status)) => {
                tracing::debug!(pid = self.child.id(), %status, "child process exited");
                self.exit.set(status);
                if let Some(f) = self.on_exit.take() {
                    f();
                }
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(pid = self.child.id(), "waitpid failed: {e}");
                true
            }
        }
    }
}

impl AsRawFd for ProcessWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.pidfd.as_raw_fd()
    }
}
