//! Deaths: a child whose parent dies exits, a killed child fails its pending
//! calls and ends its channels at once, and a killed hop leaves no orphans.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use mitogen::{Error, Router};

use super::INTERMEDIATE_ENV;
use crate::calls::{add, sleep_ms};
use crate::routing::Chain;
use crate::util::{self, kill9, local, pid_of, proc_state, wait_dead, wait_until};

pub fn child_exits_when_parent_dies(_: &Router) -> Result<()> {
    let exe = std::env::current_exe()?;
    let mut mid = Command::new(exe)
        .env(INTERMEDIATE_ENV, "1")
        .env_remove(mitogen::testing::CHILD_ENV)
        .env_remove(mitogen::testing::PARENT_PID_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mid_pid = mid.id();
    let out = mid.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(l) => l,
        Err(_) => {
            let _ = mid.kill();
            let _ = mid.wait();
            bail!("the intermediate master printed nothing");
        }
    };
    let r = (|| -> Result<()> {
        let mut words = line.split_whitespace();
        ensure!(
            words.next() == Some("grandchild"),
            "intermediate said {line:?}"
        );
        let gpid: u32 = words.next().context("no pid")?.parse()?;
        ensure!(
            words.next() == Some("true"),
            "the grandchild did not answer: {line:?}"
        );
        ensure!(
            util::proc_ppid(gpid) == Some(mid_pid),
            "{gpid} is not a child of {mid_pid}"
        );
        kill9(mid_pid)?;
        let _ = mid.wait();
        let started = Instant::now();
        ensure!(
            wait_dead(gpid, Duration::from_secs(2)),
            "grandchild {gpid} still {:?} 2 s after its parent died",
            proc_state(gpid)
        );
        println!(
            "    (grandchild exited {:?} after its parent)",
            started.elapsed()
        );
        Ok(())
    })();
    let _ = mid.kill();
    let _ = mid.wait();
    r
}

pub fn killed_child_fails_pending_call_at_once(router: &Router) -> Result<()> {
    let other = local(router)?;
    let ctx = local(router)?;
    let pid = pid_of(&ctx)?;
    let running = ctx.call_async(sleep_ms, (30_000,));
    let queued = ctx.call_async(add, (1, 2));
    std::thread::sleep(Duration::from_millis(100));
    kill9(pid)?;
    let started = Instant::now();
    for (what, r) in [
        ("running", running.get_timeout(Duration::from_secs(10))),
        ("queued", queued.get_timeout(Duration::from_secs(10))),
    ] {
        match r {
            Err(Error::Disconnected { context, .. }) if context == ctx.name() => {}
            other => bail!(
                "{what} call: expected Disconnected naming {:?}, got {other:?}",
                ctx.name()
            ),
        }
    }
    ensure!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    match ctx.call_timeout(add, (1, 2), Duration::from_secs(5)) {
        Err(Error::Disconnected { context, .. }) if context == ctx.name() => {}
        other => bail!("a new call: expected Disconnected, got {other:?}"),
    }
    ensure!(
        wait_until(Duration::from_secs(2), || ctx.exit_status().is_some()),
        "killed child not reaped"
    );
    ensure!(ctx.exit_status().and_then(|s| s.signal()) == Some(9));
    ensure!(
        proc_state(pid).is_none(),
        "pid {pid} in state {:?}",
        proc_state(pid)
    );
    ensure!(
        other.call(add, (2, 2))? == 4,
        "another context was affected"
    );
    Ok(())
}

pub fn killed_child_ends_its_channels(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let (_tx, rx) = ctx.channel::<u64>();
    kill9(pid_of(&ctx)?)?;
    match rx.recv_timeout(Duration::from_secs(5)) {
        Err(Error::Disconnected { context, .. }) if context == ctx.name() => {}
        other => bail!("expected Disconnected, got {other:?}"),
    }
    // Every later wait ends the same way at once: nothing can arrive any more.
    for _ in 0..2 {
        let started = Instant::now();
        match rx.recv_timeout(Duration::from_secs(2)) {
            Err(Error::Disconnected { .. }) => {}
            other => bail!("a later recv: expected Disconnected, got {other:?}"),
        }
        ensure!(
            started.elapsed() < Duration::from_millis(500),
            "a later recv blocked"
        );
    }
    // A channel made after the context died fails at once too.
    let (_tx, late) = ctx.channel::<u64>();
    match late.recv_timeout(Duration::from_secs(2)) {
        Err(Error::Disconnected { .. }) => Ok(()),
        other => bail!("a channel made after the disconnect: expected Disconnected, got {other:?}"),
    }
}

/// Kills hop `victim` of a fresh 3-hop chain with SIGKILL and checks that
/// nothing below it survives or hangs, and nothing above it notices.
fn kill_hop(router: &Router, victim: usize) -> Result<()> {
    let tag = format!("lc-kill{victim}");
    let chain = Chain::new(router, &tag, 3)?;
    let pids = chain.pids()?;
    // A long call pending in the victim and in every hop below it.
    let doomed: Vec<_> = chain.hops[victim..]
        .iter()
        .map(|h| (h.name().to_owned(), h.call_async(sleep_ms, (30_000,))))
        .collect();
    // A short call in every hop above it, which must still complete.
    let fine: Vec<_> = chain.hops[..victim]
        .iter()
        .map(|h| h.call_async(sleep_ms, (300,)))
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    kill9(pids[victim])?;
    let started = Instant::now();
    for (name, call) in doomed {
        match call.get_timeout(Duration::from_secs(10)) {
            Err(Error::Disconnected { context, .. }) if context == name => {}
            other => {
                bail!("pending call in {name:?}: expected Disconnected naming it, got {other:?}")
            }
        }
    }
    ensure!(
        started.elapsed() < Duration::from_secs(1),
        "pending calls took {:?} to fail",
        started.elapsed()
    );
    // The master has forgotten every context from the victim down.
    for h in &chain.hops[victim..] {
        ensure!(
            h.wait_disconnect(Duration::from_secs(1)),
            "{} is not disconnected",
            h.name()
        );
    }
    // No process below the victim outlives it.
    for (i, &pid) in pids.iter().enumerate().skip(victim) {
        ensure!(
            wait_dead(pid, Duration::from_secs(2)),
            "hop {} ({pid}) still {:?} 2 s after hop {} was killed",
            i + 1,
            proc_state(pid),
            victim + 1
        );
    }
    let mut left = crate::routing::processes_named(&format!("{tag}-"));
    left.sort_unstable();
    ensure!(
        left == pids[..victim],
        "processes left: {left:?}, expected {:?}",
        &pids[..victim]
    );
    // Everything above goes on as before, and can start children again.
    for call in fine {
        ensure!(call.get_timeout(Duration::from_secs(10))? == 300);
    }
    for h in &chain.hops[..victim] {
        ensure!(h.call(add, (1, 2))? == 3, "{} stopped answering", h.name());
        ensure!(!h.is_disconnected());
    }
    if let Some(last) = chain.hops[..victim].last() {
        let again = router.start(
            Some(last),
            mitogen::Local::new().name(format!("{tag}-again")),
        )?;
        ensure!(again.call(add, (2, 2))? == 4);
        again.shutdown()?;
    }
    Ok(())
}

pub fn killing_first_hop_leaves_no_orphans(router: &Router) -> Result<()> {
    kill_hop(router, 0)
}

pub fn killing_middle_hop_leaves_no_orphans(router: &Router) -> Result<()> {
    kill_hop(router, 1)
}

pub fn killing_last_hop_leaves_no_orphans(router: &Router) -> Result<()> {
    kill_hop(router, 2)
}

crate::tests! {
    child_exits_when_parent_dies,
    killed_child_fails_pending_call_at_once,
    killed_child_ends_its_channels,
    killing_first_hop_leaves_no_orphans,
    killing_middle_hop_leaves_no_orphans,
    killing_last_hop_leaves_no_orphans,
}
