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
///
/// When the caller gives up on the call (its wait timed out, or it dropped
/// the call), the command's whole session is killed with `SIGKILL` within
/// [`CANCEL_CHECK`], and the call ends with an `Interrupted` error that
/// nobody is sent.
#[crate::remote]
pub fn run_command(argv: Vec<String>) -> std::io::Result<CommandOutput> {
    command::run(argv)
}

/// How often a running [`run_command`] looks whether its caller gave up: the
/// command's own end and its output wake it at once, so this bounds only
/// how long a cancelled command lives on.
pub const CANCEL_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

mod command;
mod machine;
pub use machine::{
    facts, Address, Cpu, Facts, Group, Interface, Kernel, Memory, Mount, Os, User, STATVFS_DEADLINE,
};
