//! Shutdown, router drop, parent death, killed children, reaping.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use mitogen::{Error, Router};

use crate::calls::{add, sleep_ms};
use crate::routing::Chain;
use crate::util::{self, kill9, local, pid_of, proc_state, wait_dead, wait_gone, wait_until};

/// Set in the environment of a copy of this program that acts as an
/// intermediate master: it starts one context, prints its pid and sleeps.
pub const INTERMEDIATE_ENV: &str = "MITOGEN_TEST_INTERMEDIATE";

/// `main` of the intermediate master.
pub fn intermediate_main(router: &Router) -> usize {
    match router.local() {
        Ok(ctx) => {
            let pid = ctx.pid().unwrap_or(0);
            let ok = ctx.call(add, (1, 1)).is_ok();
            println!("grandchild {pid} {ok}");
            let _ = std::io::stdout().flush();
            std::thread::sleep(Duration::from_secs(120));
            0
        }
        Err(e) => {
            println!("error {e}");
            1
        }
    }
}

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

/// Set in the environment of a copy of this program that starts a child and
/// a grandchild, detaches the child, gives it work (a sleep of the variable's
/// value in milliseconds), prints both pids and exits.
pub const DETACH_ENV: &str = "MITOGEN_TEST_DETACH";

/// `main` of the detaching master.
pub fn detach_main(router: &Router) -> usize {
    let run = || -> mitogen::Result<(u32, u32)> {
        let child = router.local()?;
        let grandchild = router.start(Some(&child), mitogen::Local::new())?;
        let gpid = grandchild.call(mitogen::builtins::getpid, ())?;
        child.detach()?;
        // Work queued after the detach keeps the child (and so its subtree)
        // running once this master has gone.
        let ms = std::env::var(DETACH_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(60_000);
        child.call_no_reply(sleep_ms, (ms,))?;
        Ok((child.pid().unwrap_or(0), gpid))
    };
    match run() {
        Ok((pid, gpid)) => {
            println!("detached {pid} {gpid}");
            0
        }
        Err(e) => {
            println!("error {e}");
            1
        }
    }
}

/// Runs the detaching master with `work_ms` of work for the child; returns
/// the pids of the detached child and grandchild, and the master's pid.
fn run_detaching_master(work_ms: u64) -> Result<(u32, u32, u32)> {
    let exe = std::env::current_exe()?;
    let mut master = Command::new(exe)
        .env(DETACH_ENV, work_ms.to_string())
        .env_remove(mitogen::testing::CHILD_ENV)
        .env_remove(mitogen::testing::PARENT_PID_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let master_pid = master.id();
    let mut line = String::new();
    BufReader::new(master.stdout.take().context("no stdout")?).read_line(&mut line)?;
    // The master exits by itself once its main returns.
    let status = master.wait()?;
    let mut words = line.split_whitespace();
    ensure!(words.next() == Some("detached"), "the master said {line:?}");
    let pid: u32 = words.next().context("no pid")?.parse()?;
    let gpid: u32 = words.next().context("no grandchild pid")?.parse()?;
    ensure!(status.success(), "the master exited {status}");
    Ok((pid, gpid, master_pid))
}

fn alive(p: u32) -> bool {
    !matches!(proc_state(p), None | Some('Z' | 'X'))
}

pub fn detached_child_outlives_master(_: &Router) -> Result<()> {
    let (pid, gpid, master_pid) = run_detaching_master(60_000)?;
    let r = (|| -> Result<()> {
        // Give a parent-death signal or a parent-lost exit time to strike.
        std::thread::sleep(Duration::from_millis(500));
        ensure!(
            alive(pid),
            "the detached child {pid} is {:?}",
            proc_state(pid)
        );
        ensure!(
            alive(gpid),
            "the detached child's own child {gpid} is {:?}",
            proc_state(gpid)
        );
        ensure!(
            util::proc_ppid(pid) != Some(master_pid),
            "still a child of the master"
        );
        ensure!(
            util::proc_ppid(gpid) == Some(pid),
            "the grandchild changed parents"
        );
        // In a session of its own, away from the master's terminal signals.
        let sid = util::proc_sid;
        ensure!(
            sid(pid) == Some(pid) && sid(pid) != sid(std::process::id()),
            "not in a session of its own: {:?}",
            sid(pid)
        );
        Ok(())
    })();
    // Clean up: these are nobody's children here, so kill them outright.
    for p in [gpid, pid] {
        if alive(p) {
            let _ = kill9(p);
        }
    }
    for p in [gpid, pid] {
        ensure!(wait_dead(p, Duration::from_secs(2)), "{p} survived SIGKILL");
    }
    r
}

pub fn detached_child_exits_when_its_work_is_done(_: &Router) -> Result<()> {
    let (pid, gpid, _) = run_detaching_master(1_000)?;
    let r = (|| -> Result<()> {
        std::thread::sleep(Duration::from_millis(300));
        ensure!(alive(pid) && alive(gpid), "gone before its work was done");
        for p in [pid, gpid] {
            ensure!(
                wait_dead(p, Duration::from_secs(4)),
                "{p} still {:?} after the detached work ended",
                proc_state(p)
            );
        }
        Ok(())
    })();
    for p in [gpid, pid] {
        if alive(p) {
            let _ = kill9(p);
        }
    }
    r
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
    child_exits_when_parent_dies,
    killed_child_fails_pending_call_at_once,
    killed_child_ends_its_channels,
    no_zombies_after_shutdowns,
    calls_after_shutdown_fail_cleanly,
    killing_first_hop_leaves_no_orphans,
    killing_middle_hop_leaves_no_orphans,
    killing_last_hop_leaves_no_orphans,
    detached_child_outlives_master,
    detached_child_exits_when_its_work_is_done,
    busy_remote_context_shutdown_says_it_did_not_exit,
}
