//! An sshd restart under an ssh hop: the listener and every sshd session
//! process are sent SIGTERM at once, as a service manager stopping the
//! unit's whole control group does, while a call is pending in the ssh
//! context and in a local context below it; then sshd starts again on the
//! same port. Both calls must fail at once naming a lost context, nothing
//! below the hop may outlive it by more than 2 s, and a new connection to
//! the restarted sshd must work.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Result};
use mitogen::{Error, Router};

use crate::calls::sleep_ms;
use crate::netcut::{expect_far_side_gone, SshAndBelow};
use crate::sshd::{self, Sshd};
use crate::util::{proc_state, wait_dead, wait_gone};

/// How long after the kill the calls may still be pending and the processes
/// below the hop may still run: the bound.
const BOUND: Duration = Duration::from_secs(2);

/// Checks that a pending call's outcome is `Disconnected` naming one of
/// `names`, within [`BOUND`]; `what` says which call, for the message.
fn check_failed(
    what: &str,
    outcome: &(mitogen::Result<u64>, Duration),
    names: &[&str],
    sshd: &Sshd,
) -> Result<()> {
    match outcome {
        (Err(Error::Disconnected { context, reason }), after)
            if names.contains(&context.as_str()) =>
        {
            println!("    call in {what} failed after {after:?}: {context} ({reason})");
            ensure!(
                *after <= BOUND,
                "the call in {what} failed only {after:?} after the kill"
            );
            Ok(())
        }
        (Err(Error::Timeout(_)), after) => bail!(
            "the call in {what} still pending {after:?} after the kill; sshd: {}",
            sshd.log_tail()
        ),
        (other, after) => bail!(
            "call in {what}: expected Disconnected naming {names:?}, got {other:?} after {after:?}"
        ),
    }
}

pub fn sshd_restart_fails_calls_and_leaves_no_orphans(router: &Router) -> Result<()> {
    sshd::require_root_and_sshd()?;
    let mut sshd = Sshd::start()?;
    let SshAndBelow {
        web,
        below,
        web_pid,
        below_pid,
        session,
    } = SshAndBelow::start(router, sshd.ssh("root")?, "restart-below")?;
    let ssh_pid = web.pid();
    let pending_below = below.call_async(sleep_ms, (60_000,));
    let pending_web = web.call_async(sleep_ms, (60_000,));
    // Both calls reach their contexts before sshd goes.
    std::thread::sleep(Duration::from_millis(300));

    // Each call is waited for on its own thread while this one restarts
    // sshd, so that the time each fails is measured, not the restart's.
    let kill = Instant::now();
    let (killed, restarted, below_failed, web_failed) = std::thread::scope(|s| {
        let wait = |p: mitogen::PendingCall<u64>| {
            move || {
                let r = p.get_timeout(Duration::from_secs(10));
                (r, kill.elapsed())
            }
        };
        let below_thread = s.spawn(wait(pending_below));
        let web_thread = s.spawn(wait(pending_web));
        let killed = sshd.restart();
        let restarted = kill.elapsed();
        let joined = |t: std::thread::ScopedJoinHandle<'_, _>| {
            t.join()
                .map_err(|_| anyhow!("a thread waiting for a call panicked"))
        };
        (killed, restarted, joined(below_thread), joined(web_thread))
    });
    let killed = killed?;
    let (below_failed, web_failed) = (below_failed?, web_failed?);
    println!("    sshd restarted in {restarted:?} (SIGTERM to listener and sessions {killed:?})");
    ensure!(
        session.iter().all(|p| killed.contains(p)),
        "the restart did not signal the session {session:?} above the ssh context: {killed:?}"
    );
    let (web_name, below_name) = (web.name(), below.name());
    check_failed(below_name, &below_failed, &[web_name, below_name], &sshd)?;
    check_failed(web_name, &web_failed, &[web_name], &sshd)?;

    let deadline = kill + BOUND;
    let left = || deadline.saturating_duration_since(Instant::now());
    ensure!(
        web.wait_disconnect(left()) && below.wait_disconnect(left()),
        "the router still has the contexts beyond the dead hop {:?} after the kill",
        kill.elapsed()
    );
    if let Some(pid) = ssh_pid {
        ensure!(
            wait_gone(pid, left()),
            "the ssh client ({pid}) is still {:?} {:?} after the kill",
            proc_state(pid),
            kill.elapsed()
        );
    }
    let gone = expect_far_side_gone(
        [("ssh context", web_pid), ("restart-below", below_pid)],
        &session,
        (kill, "the kill"),
        deadline,
        &sshd,
    )?;
    println!(
        "    remote contexts ({web_pid}, {below_pid}), sshd session {session:?} and \
         the ssh client all gone {gone:?} after the kill"
    );

    // The restarted sshd takes a new connection, which runs the build
    // cached by the first one.
    let before = router.uploaded_bytes();
    let started = Instant::now();
    let again = router.ssh(sshd.ssh("root")?)?;
    let again_pid = again.call(mitogen::builtins::getpid, ())?;
    let connected = started.elapsed();
    let uploaded = router.uploaded_bytes() - before;
    ensure!(
        uploaded == 0,
        "the connection after the restart uploaded {uploaded} bytes, not the cached build"
    );
    ensure!(
        again_pid != web_pid,
        "the new ssh context has the old one's pid"
    );
    let again_ssh = again.pid();
    again.shutdown_timeout(Duration::from_secs(5))?;
    ensure!(
        wait_dead(again_pid, Duration::from_secs(5)),
        "the new ssh context ({again_pid}) still {:?} after its shutdown",
        proc_state(again_pid)
    );
    if let Some(pid) = again_ssh {
        ensure!(
            wait_gone(pid, Duration::from_secs(5)),
            "the new ssh client ({pid}) still {:?} after the shutdown",
            proc_state(pid)
        );
    }
    println!("    reconnected to the restarted sshd in {connected:?}, nothing uploaded");
    drop(below);
    drop(web);
    drop(sshd);
    Ok(())
}

crate::tests! {
    sshd_restart_fails_calls_and_leaves_no_orphans => 120,
}
