//! Shutdown and router drop: the process ends, later calls fail cleanly, no
//! zombies are left, and a busy context says it did not exit.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use mitogen::{Error, Router};

use crate::calls::{add, sleep_ms};
use crate::routing::Chain;
use crate::util::{self, kill9, pid_of, proc_state, wait_dead, wait_gone};

pub fn shutdown_ends_process(router: &Router) -> Result<()> {
    let ctx = router.local()?;
    let pid = pid_of(&ctx)?;
    ensure!(proc_state(pid).is_some(), "child {pid} is not running");
    ensure!(ctx.exit_status().is_none());
    // Queued calls finish before the context exits.
    let queued = ctx.call_async(sleep_ms, (300,));
    ctx.shutdown()?;
    ensure!(queued.get_timeout(Duration::from_secs(1))? == 300);
    let status = ctx.exit_status().context("no exit status after shutdown")?;
    ensure!(status.code() == Some(0), "exit status {status}");
    ensure!(ctx.is_disconnected());
    // Reaped: not even a zombie is left.
    ensure!(
        proc_state(pid).is_none(),
        "pid {pid} still in state {:?}",
        proc_state(pid)
    );
    Ok(())
}

pub fn calls_after_shutdown_fail_cleanly(router: &Router) -> Result<()> {
    let ctx = router.local()?;
    ctx.shutdown()?;
    let started = Instant::now();
    match ctx.call_timeout(add, (1, 1), Duration::from_secs(5)) {
        Err(Error::Disconnected { context, .. }) if context == ctx.name() => {}
        other => bail!("expected Disconnected, got {other:?}"),
    }
    ensure!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    // A second shutdown is harmless.
    ctx.shutdown()?;
    Ok(())
}

pub fn dropping_last_router_clone_shuts_children_down(_: &Router) -> Result<()> {
    let r1 = Router::builder().build()?;
    let r2 = r1.clone();
    let a = r1.local()?;
    let b = r2.local()?;
    let (pa, pb) = (pid_of(&a)?, pid_of(&b)?);
    drop(r1);
    // A clone is still alive: nothing happens yet.
    ensure!(a.call_timeout(add, (1, 1), Duration::from_secs(10))? == 2);
    ensure!(proc_state(pa).is_some() && proc_state(pb).is_some());
    let started = Instant::now();
    drop(r2);
    ensure!(
        started.elapsed() < Duration::from_secs(4),
        "shutting down took {:?}, so the children were killed rather than asked",
        started.elapsed()
    );
    for (ctx, pid) in [(&a, pa), (&b, pb)] {
        ensure!(
            ctx.exit_status().is_some(),
            "{} has no exit status",
            ctx.name()
        );
        ensure!(
            wait_gone(pid, Duration::from_secs(1)),
            "pid {pid} in state {:?}",
            proc_state(pid)
        );
    }
    // Contexts outliving their router fail cleanly instead of hanging.
    match a.call_timeout(add, (1, 1), Duration::from_secs(5)) {
        Err(Error::RouterShutdown | Error::Disconnected { .. }) => Ok(()),
        other => bail!("expected RouterShutdown or Disconnected, got {other:?}"),
    }
}

pub fn no_zombies_after_shutdowns(router: &Router) -> Result<()> {
    let mut pids = Vec::new();
    for how in 0..4 {
        let ctx = router.local()?;
        pids.push(pid_of(&ctx)?);
        ctx.call(add, (1, 1))?;
        match how {
            0 => ctx.shutdown()?,
            // 1 ms is seldom enough to exit: killed or not, it is reaped.
            1 => match ctx.shutdown_timeout(Duration::from_millis(1)) {
                Ok(()) | Err(Error::ShutdownTimedOut { killed: true, .. }) => {}
                Err(e) => bail!("shutdown with 1 ms of grace: {e}"),
            },
            2 => {
                kill9(pid_of(&ctx)?)?;
                ctx.wait_disconnect(Duration::from_secs(5));
            }
            _ => {
                // Busy past the grace period: killed by shutdown, which
                // says so, naming the context.
                let _busy = ctx.call_async(sleep_ms, (30_000,));
                match ctx.shutdown_timeout(Duration::from_millis(300)) {
                    Err(Error::ShutdownTimedOut {
                        context,
                        killed: true,
                        grace,
                    }) if context == ctx.name() && grace == Duration::from_millis(300) => {}
                    other => bail!("shutdown of a busy context: expected ShutdownTimedOut {{ killed: true }}, got {other:?}"),
                }
            }
        }
    }
    for pid in pids {
        ensure!(
            wait_gone(pid, Duration::from_secs(3)),
            "pid {pid} left in state {:?}",
            proc_state(pid)
        );
    }
    let zombies: Vec<_> = util::child_processes()
        .into_iter()
        .filter(|(_, s)| *s == 'Z')
        .collect();
    ensure!(zombies.is_empty(), "zombies: {zombies:?}");
    Ok(())
}
pub fn busy_remote_context_shutdown_says_it_did_not_exit(router: &Router) -> Result<()> {
    let chain = Chain::new(router, "lc-busy", 2)?;
    let pids = chain.pids()?;
    let leaf = chain.leaf();
    let _busy = leaf.call_async(sleep_ms, (30_000,));
    // Nothing in the master can kill a remote context: the error says it
    // did not leave, and that it was not killed.
    match leaf.shutdown_timeout(Duration::from_millis(300)) {
        Err(Error::ShutdownTimedOut {
            context,
            killed: false,
            ..
        }) if context == leaf.name() => {}
        other => bail!(
            "shutdown of a busy remote context: expected ShutdownTimedOut {{ killed: false }}, got {other:?}"
        ),
    }
    // Its parent going ends it.
    chain.hops[0].shutdown_timeout(Duration::ZERO)?;
    ensure!(
        wait_dead(pids[1], Duration::from_secs(5)),
        "the busy leaf outlived its parent: {:?}",
        proc_state(pids[1])
    );
    Ok(())
}

crate::tests! {
    shutdown_ends_process,
    dropping_last_router_clone_shuts_children_down,
    no_zombies_after_shutdowns,
    calls_after_shutdown_fail_cleanly,
    busy_remote_context_shutdown_says_it_did_not_exit,
}
