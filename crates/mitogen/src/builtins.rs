//! Remote functions every program carries, used by the `mitogen` command and
//! available to any program.

use serde::{Deserialize, Serialize};

/// Does nothing: the cheapest possible round trip (for measuring and pinging).
#[crate::remote]
pub fn noop() {}

/// The remote process's id.
#[crate::remote]
pub fn getpid() -> u32 {
    std::process::id()
}

/// The remote process's resident set size (`VmRSS`) in KiB.
#[crate::remote]
pub fn rss_kib() -> std::io::Result<u64> {
    crate::sys::resident_set_kib()
}

/// What a command run by [`run_command`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutput {
    /// Exit code, or `None` when killed by a signal.
    pub code: Option<i32>,
    /// Signal number that killed it, if any.
    pub signal: Option<i32>,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
}

impl CommandOutput {
    /// True when the command exited with status 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs `argv[0]` with arguments `argv[1..]` (no shell), stdin from
/// `/dev/null`, and returns its exit status and output.
///
/// The command starts in a session of its own, without a controlling
/// terminal: a context started by sudo, su or doas has the prompt's pty as its
/// terminal, which nobody reads once the context is up (and under su *is* the
/// context's stream). A command that asks on `/dev/tty` gets an error at once
/// instead of hanging, or of writing into the stream.
#[crate::remote]
pub fn run_command(argv: Vec<String>) -> std::io::Result<CommandOutput> {
    use std::os::unix::process::ExitStatusExt;
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"))?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args).stdin(std::process::Stdio::null());
    // The command must not outlive the context: a context killed because its
    // caller gave up (or lost its parent) takes the command with it. Calls run
    // on the context's main thread, which lives as long as the process, so the
    // signal (sent when the forking *thread* exits) means the process is gone.
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and makes only
    // async-signal-safe system calls (setsid, `sys::die_with_parent`); it allocates
    // nothing, not even for an error (an `Errno` converts to an OS error
    // without one).
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            rustix::process::setsid()?;
            crate::sys::die_with_parent(parent)
        });
    }
    let out = cmd
        .output()
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot run {program:?}: {e}")))?;
    Ok(CommandOutput {
        code: out.status.code(),
        signal: out.status.signal(),
        stdout: out.stdout,
        stderr: out.stderr,
    })
}
