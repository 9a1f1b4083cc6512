//! The `run_command` builtin (what `mitogen run` calls): the whole output of
//! both streams, output written after the command itself ended, and a
//! command whose caller gave up killed with its session.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use mitogen::builtins::{noop, run_command};
use mitogen::{Error, Router};

use crate::files::Scratch;
use crate::util::local;

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

/// Both pipes are read as the command writes them: a command that fills
/// stderr before it writes its stdout does not stall.
pub fn large_output_on_both_streams(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let out = ctx.call(
        run_command,
        sh("head -c 1000000 /dev/zero >&2; head -c 700000 /dev/zero; exit 3"),
    )?;
    ensure!(out.code == Some(3), "exit code {:?}", out.code);
    ensure!(out.stderr.len() == 1_000_000, "stderr {}", out.stderr.len());
    ensure!(out.stdout.len() == 700_000, "stdout {}", out.stdout.len());
    Ok(())
}

/// As over ssh, the output ends when its last writer closes it, which may
/// be a process the command left running.
pub fn output_written_after_the_command_ended_is_kept(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let out = ctx.call(run_command, sh("echo a; (sleep 0.3; echo b) &"))?;
    ensure!(out.success());
    ensure!(
        out.stdout == b"a\nb\n",
        "stdout {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}

/// A call that timed out takes its command, and everything the command
/// started in its session, with it; the context is free for the next call.
pub fn cancelled_command_is_killed_with_its_session(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let dir = Scratch::new("command")?;
    let pids = dir.join("pids");
    let script = format!(
        "sleep 60 & echo $! > {p}.tmp; echo $$ >> {p}.tmp; mv {p}.tmp {p}; wait",
        p = pids.display()
    );
    match ctx.call_timeout(run_command, sh(&script), Duration::from_millis(500)) {
        Err(Error::Timeout(_)) => {}
        other => bail!("a command past its call's deadline ended with {other:?}"),
    }
    let text = std::fs::read_to_string(&pids).context("the command never wrote its pids")?;
    let pids: Vec<u32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    ensure!(pids.len() == 2, "pids {text:?}");
    let deadline = Instant::now() + Duration::from_secs(2);
    for pid in &pids {
        // Gone, or a zombie of a parent that is itself gone and being reaped.
        while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        }) {
            ensure!(
                Instant::now() < deadline,
                "process {pid} still runs 2 s after the cancel"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let t = Instant::now();
    ctx.call_timeout(noop, (), Duration::from_secs(5))?;
    ensure!(
        t.elapsed() < Duration::from_secs(2),
        "the context stayed busy"
    );
    Ok(())
}

crate::tests! {
    large_output_on_both_streams,
    output_written_after_the_command_ended_is_kept,
    cancelled_command_is_killed_with_its_session,
}
