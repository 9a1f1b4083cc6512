//! Connect/call/shutdown cycles in a master of their own, compared with a
//! snapshot: local contexts, two-hop chains, ssh, and calls that time out.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use mitogen::{ConnectOptions, Router, Target};

use super::{run_clean_master, running, Snapshot, SSH_KEY_ENV, SSH_TARGET_ENV};
use crate::calls::{add, sleep_ms};
use crate::sshd::{self, Sshd};
use crate::util::{descendants, wait_until};

fn local_cycle(router: &Router, i: u64) -> Result<()> {
    // Both ways of starting a local context: the method, and a target.
    let ctx = if i.is_multiple_of(2) {
        router.local()?
    } else {
        router.connect("local")?
    };
    ensure!(ctx.call(add, (i, 1))? == i + 1);
    ctx.shutdown()?;
    ensure!(ctx.exit_status().is_some(), "cycle {i}: no exit status");
    Ok(())
}

pub(super) fn local_cycles(router: &Router) -> Result<()> {
    for i in 0..2 {
        local_cycle(router, i)?;
    }
    let before = Snapshot::take(router);
    let started = Instant::now();
    for i in 2..1002 {
        local_cycle(router, i)?;
    }
    eprintln!("leaks: 1000 local cycles took {:?}", started.elapsed());
    before.expect_no_growth(router, "1000 local cycles")
}

pub fn connect_call_shutdown_cycles_leak_nothing(_: &Router) -> Result<()> {
    run_clean_master("local", &[])
}

/// A two-hop target: the intermediate is started for it and must go with it.
pub(super) fn chain_cycles(router: &Router) -> Result<()> {
    let target: Target = "local/local".parse()?;
    let cycle = |i: u64| -> Result<()> {
        let ctx = router.connect(&target)?;
        ensure!(ctx.call(add, (i, 1))? == i + 1);
        ctx.shutdown()?;
        Ok(())
    };
    for i in 0..2 {
        cycle(i)?;
    }
    let before = Snapshot::take(router);
    let started = Instant::now();
    for i in 2..302 {
        cycle(i)?;
    }
    eprintln!("leaks: 300 local/local cycles took {:?}", started.elapsed());
    before.expect_no_growth(router, "300 local/local cycles")
}

pub fn chain_cycles_leak_nothing(_: &Router) -> Result<()> {
    run_clean_master("chain", &[])
}

/// The sshd listener of `sshd`: the process whose command line names its
/// directory.
fn listener_pid(sshd: &Sshd) -> Result<u32> {
    let dir = sshd.dir.to_string_lossy().into_owned();
    let dir = dir.as_bytes();
    std::fs::read_dir("/proc")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.windows(dir.len()).any(|w| w == dir))
        })
        .context("no sshd listener found")
}

/// ssh clients below this process.
fn ssh_clients() -> Vec<u32> {
    descendants(std::process::id())
        .into_iter()
        .filter(|p| {
            running(*p)
                && std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "ssh")
        })
        .collect()
}

pub(super) fn ssh_cycles(router: &Router) -> Result<()> {
    let target: Target = std::env::var(SSH_TARGET_ENV)?.parse()?;
    let options = ConnectOptions {
        ssh_config: Some("/dev/null".into()),
        ssh_options: vec![
            format!("IdentityFile={}", std::env::var(SSH_KEY_ENV)?),
            "IdentitiesOnly=yes".into(),
            "StrictHostKeyChecking=no".into(),
            "UserKnownHostsFile=/dev/null".into(),
        ],
        connect_timeout: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    // `HOST/local` too: the ssh hop is started for the local one below it
    // and must go with it.
    let chain: Target = format!("{target}/local").parse()?;
    let cycle = |target: &Target, i: u64| -> Result<()> {
        let ctx = router.connect_with(target, &options)?;
        ensure!(ctx.call(add, (i, 1))? == i + 1);
        ctx.shutdown()?;
        Ok(())
    };
    for i in 0..2 {
        cycle(&target, i)?;
        cycle(&chain, i)?;
    }
    let before = Snapshot::take(router);
    let started = Instant::now();
    for i in 2..102 {
        cycle(&target, i)?;
    }
    eprintln!("leaks: 100 ssh cycles took {:?}", started.elapsed());
    for i in 0..30 {
        cycle(&chain, i)?;
    }
    eprintln!(
        "leaks: 100 ssh and 30 ssh/local cycles took {:?}",
        started.elapsed()
    );
    ensure!(
        wait_until(Duration::from_secs(10), || ssh_clients().is_empty()),
        "ssh clients left: {:?}",
        ssh_clients()
    );
    before.expect_no_growth(router, "100 ssh and 30 ssh/local cycles")
}

pub fn ssh_cycles_leak_nothing(_: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    // A user of its own: no other test empties its cache meanwhile.
    let user = sshd::user("mitogen-leaks", "/bin/sh")?;
    sshd.authorize(&user.name)?;
    let listener = listener_pid(&sshd)?;
    let sessions = || -> Vec<u32> {
        descendants(listener)
            .into_iter()
            .filter(|p| running(*p))
            .collect()
    };
    run_clean_master(
        "ssh",
        &[
            (
                SSH_TARGET_ENV,
                format!("{}@127.0.0.1:{}", user.name, sshd.port),
            ),
            (SSH_KEY_ENV, sshd.client_key.display().to_string()),
        ],
    )?;
    // The master has exited, so anything still below sshd was left by the
    // cycles (a master's exit ends its contexts, but not a session of sshd
    // whose client went quiet).
    ensure!(
        wait_until(Duration::from_secs(10), || sessions().is_empty()),
        "sshd sessions left after the ssh cycles: {:?}",
        sessions()
    );
    Ok(())
}

pub(super) fn timed_out_calls(router: &Router) -> Result<()> {
    let ctx = router.local()?;
    // Calls run in order: once the first sleeps, none of the others replies
    // while this runs.
    let warm = ctx.call_timeout(sleep_ms, (60_000,), Duration::from_millis(1));
    ensure!(matches!(warm, Err(mitogen::Error::Timeout(_))), "{warm:?}");
    let before = Snapshot::take(router);
    let started = Instant::now();
    for i in 0..1000u32 {
        match ctx.call_timeout(sleep_ms, (60_000,), Duration::from_millis(1)) {
            Err(mitogen::Error::Timeout(_)) => {}
            other => bail!("call {i}: expected a time-out, got {other:?}"),
        }
        if i.is_multiple_of(2) {
            // The other way to wait: a pending call and its deadline.
            let pending = ctx.call_async(sleep_ms, (60_000,));
            ensure!(pending.get_timeout(Duration::ZERO).is_err());
        }
    }
    eprintln!("leaks: 1500 timed-out calls took {:?}", started.elapsed());
    // Checked while the context is still up: a reply handle left behind
    // would otherwise only go when the context does.
    before.expect_no_growth(router, "1500 calls that timed out")?;
    ctx.shutdown_timeout(Duration::ZERO)?;
    Ok(())
}

pub fn timed_out_calls_leak_nothing(_: &Router) -> Result<()> {
    run_clean_master("timeouts", &[])
}

crate::tests! {
    connect_call_shutdown_cycles_leak_nothing => 300,
    chain_cycles_leak_nothing => 300,
    ssh_cycles_leak_nothing => 300,
    timed_out_calls_leak_nothing => 120,
}
