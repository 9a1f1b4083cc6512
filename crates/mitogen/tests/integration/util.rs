//! Process inspection through `/proc`, and small helpers shared by the tests.

use std::time::{Duration, Instant};

/// The state letter of `pid` (`R`, `S`, `Z`, ...), or `None` if it is gone.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().next()?.chars().next()
}

pub use mitogen_testkit::proc::ppid as proc_ppid;

/// The session id of `pid`, from `/proc` (field 6 of `stat`). Read from `/proc`
/// rather than `getsid(2)` because a process may legitimately be in session 0
/// (started by a container's init), which `rustix::getsid` cannot represent.
pub fn proc_sid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(3)?.parse().ok()
}

/// Waits up to `timeout` for `pid` to be gone from `/proc` entirely (exited and
/// reaped).
pub fn wait_gone(pid: u32, timeout: Duration) -> bool {
    wait_until(timeout, || proc_state(pid).is_none())
}

/// Waits up to `timeout` for `pid` to stop running: gone, or a zombie that its
/// (possibly adopted) parent has not reaped yet.
pub fn wait_dead(pid: u32, timeout: Duration) -> bool {
    wait_until(timeout, || {
        matches!(proc_state(pid), None | Some('Z' | 'X'))
    })
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Open descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Threads of this process.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// Every process whose parent is this one, zombies included, with its state.
pub fn child_processes() -> Vec<(u32, char)> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| proc_ppid(pid) == Some(me))
        .filter_map(|pid| Some((pid, proc_state(pid)?)))
        .collect()
}

pub use mitogen_testkit::proc::descendants;

/// Sends SIGKILL to `pid`.
pub fn kill9(pid: u32) -> anyhow::Result<()> {
    let p = rustix::process::Pid::from_raw(pid as i32)
        .ok_or_else(|| anyhow::anyhow!("bad pid {pid}"))?;
    rustix::process::kill_process(p, rustix::process::Signal::KILL)?;
    Ok(())
}

/// A context that is shut down when the test is done with it, pass or fail.
pub struct Guard(pub mitogen::Context);

impl std::ops::Deref for Guard {
    type Target = mitogen::Context;
    fn deref(&self) -> &mitogen::Context {
        &self.0
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.shutdown_timeout(Duration::from_secs(5));
    }
}

/// Starts a local context that is shut down at the end of the test.
pub fn local(router: &mitogen::Router) -> anyhow::Result<Guard> {
    Ok(Guard(router.local()?))
}

/// The pid of a context this router started.
pub fn pid_of(ctx: &mitogen::Context) -> anyhow::Result<u32> {
    ctx.pid()
        .ok_or_else(|| anyhow::anyhow!("context {} has no local pid", ctx.name()))
}
