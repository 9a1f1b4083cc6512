//! `Router::connect` shares the hops before a target's last between targets
//! with the same prefix and options, and shuts such a hop down when the last
//! context below it goes.
//!
//! Each test connects with its own `connect_timeout`, which is part of what
//! makes two hops the same hop: a hop another test left up is never shared
//! with these.

use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use mitogen::builtins::getpid;
use mitogen::{ConnectOptions, Context, Error, Router, Target};

use crate::calls::add;
use crate::util::{descendants, kill9, proc_ppid, proc_state, wait_dead, wait_until};

/// Options that no other test uses (see the module's comment).
fn options(secs: u64) -> ConnectOptions {
    ConnectOptions {
        connect_timeout: Some(Duration::from_secs(secs)),
        ..Default::default()
    }
}

fn target(s: &str) -> Result<Target> {
    Ok(s.parse()?)
}

fn running(pid: u32) -> bool {
    !matches!(proc_state(pid), None | Some('Z' | 'X'))
}

/// The pid of `ctx` and of its parent process.
fn pid_and_parent(ctx: &Context) -> Result<(u32, u32)> {
    let pid = ctx.call(getpid, ())?;
    let parent = proc_ppid(pid).with_context(|| format!("{} has no parent", ctx.name()))?;
    Ok((pid, parent))
}

pub fn intermediate_is_shared_and_goes_with_its_last_user(router: &Router) -> Result<()> {
    let opts = options(61);
    let a = router.connect_with(&target("local/local")?, &opts)?;
    let b = router.connect_with(&target("local/local")?, &opts)?;
    let (pa, mid_a) = pid_and_parent(&a)?;
    let (pb, mid_b) = pid_and_parent(&b)?;
    ensure!(
        mid_a == mid_b,
        "two connects of local/local started two intermediates ({mid_a}, {mid_b})"
    );
    ensure!(pa != pb, "both targets got one process");
    ensure!(proc_ppid(mid_a) == Some(std::process::id()));
    a.shutdown()?;
    ensure!(
        wait_dead(pa, Duration::from_secs(5)),
        "{pa} outlived its shutdown"
    );
    ensure!(
        running(mid_a),
        "the intermediate went while a context below it was still up"
    );
    ensure!(b.call(add, (1, 1))? == 2);
    b.shutdown()?;
    ensure!(
        wait_dead(mid_a, Duration::from_secs(5)),
        "the intermediate {mid_a} outlived the last context below it: {:?}",
        proc_state(mid_a)
    );
    Ok(())
}

pub fn concurrent_connects_start_one_intermediate(router: &Router) -> Result<()> {
    let opts = options(62);
    let t = target("local/local")?;
    let ctxs: Vec<Context> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..4)
            .map(|_| s.spawn(|| router.connect_with(&t, &opts)))
            .collect();
        threads
            .into_iter()
            .map(|h| match h.join() {
                Ok(r) => Ok(r?),
                Err(_) => bail!("a connecting thread panicked"),
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let mut mids = Vec::new();
    for c in &ctxs {
        mids.push(pid_and_parent(c)?.1);
    }
    mids.dedup();
    ensure!(
        mids.len() == 1,
        "4 threads connecting local/local at once started intermediates {mids:?}"
    );
    for c in &ctxs {
        c.shutdown()?;
    }
    ensure!(
        wait_dead(mids[0], Duration::from_secs(5)),
        "the intermediate outlived its users"
    );
    Ok(())
}

pub fn dead_intermediate_is_replaced(router: &Router) -> Result<()> {
    let opts = options(63);
    let t = target("local/local")?;
    let a = router.connect_with(&t, &opts)?;
    let (pa, mid) = pid_and_parent(&a)?;
    kill9(mid)?;
    ensure!(
        a.wait_disconnect(Duration::from_secs(5)),
        "the context below a killed hop still looks connected"
    );
    ensure!(
        wait_dead(pa, Duration::from_secs(5)),
        "{pa} outlived its parent"
    );
    let b = router.connect_with(&t, &opts)?;
    let (_, mid2) = pid_and_parent(&b)?;
    ensure!(mid2 != mid && running(mid2), "no fresh intermediate");
    ensure!(b.call(add, (2, 2))? == 4);
    b.shutdown()?;
    ensure!(
        wait_dead(mid2, Duration::from_secs(5)),
        "the fresh intermediate outlived its user"
    );
    Ok(())
}

pub fn hop_connected_directly_stays_the_programs(router: &Router) -> Result<()> {
    let opts = options(64);
    let hop = router.connect_with(&target("local")?, &opts)?;
    let hop_pid = hop.pid().context("a local context has a pid")?;
    let below = router.connect_with(&target("local/local")?, &opts)?;
    let (_, parent) = pid_and_parent(&below)?;
    ensure!(
        parent == hop_pid,
        "local/local did not run through the program's own local ({parent} != {hop_pid})"
    );
    below.shutdown()?;
    // The program's hop is not the table's to shut down.
    std::thread::sleep(Duration::from_millis(200));
    ensure!(running(hop_pid), "the program's own hop was shut down");
    ensure!(hop.call(add, (3, 4))? == 7);
    hop.shutdown()?;
    Ok(())
}

pub fn different_options_are_different_hops(router: &Router) -> Result<()> {
    let t = target("local/local")?;
    let a = router.connect_with(&t, &options(65))?;
    let b = router.connect_with(&t, &options(66))?;
    let (_, mid_a) = pid_and_parent(&a)?;
    let (_, mid_b) = pid_and_parent(&b)?;
    ensure!(
        mid_a != mid_b,
        "hops with different options were shared ({mid_a})"
    );
    a.shutdown()?;
    b.shutdown()?;
    for mid in [mid_a, mid_b] {
        ensure!(wait_dead(mid, Duration::from_secs(5)), "{mid} left running");
    }
    Ok(())
}

pub fn failed_later_hop_leaves_no_earlier_hop(router: &Router) -> Result<()> {
    let me = std::process::id();
    let before = descendants(me);
    match router.connect_with(&target("local/sudo:mitogen-no-such-user")?, &options(67)) {
        Err(Error::Transport { context, .. } | Error::Connect { context, .. })
            if context == "local/sudo:mitogen-no-such-user" => {}
        other => bail!("a hop to a user that does not exist: got {other:?}"),
    }
    ensure!(
        wait_until(Duration::from_secs(5), || descendants(me)
            .iter()
            .all(|p| before.contains(p) || !running(*p))),
        "the first hop of a target that failed is still running: {:?} (was {before:?})",
        descendants(me)
    );
    Ok(())
}

crate::tests! {
    intermediate_is_shared_and_goes_with_its_last_user,
    concurrent_connects_start_one_intermediate,
    dead_intermediate_is_replaced,
    hop_connected_directly_stays_the_programs,
    different_options_are_different_hops,
    failed_later_hop_leaves_no_earlier_hop,
}
