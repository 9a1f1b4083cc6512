//! Running the system's tools (`useradd`, `ssh-keygen`, `visudo`, ...) from a
//! fixture.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{ensure, Context as _, Result};

/// Runs `cmd` with `input` (or nothing) on its stdin and returns its stdout;
/// a failure says which command failed, how, and what it printed on stderr.
pub fn run(cmd: &mut Command, input: Option<&str>) -> Result<String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes())?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
