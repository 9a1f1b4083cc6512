//! Many connect/call/shutdown cycles leave nothing behind in the master:
//! not a descriptor, a thread, a process (child or deeper, ssh clients
//! included), a registered handle, a record of a context that is gone, nor
//! more memory than a stated bound.
//!
//! The cycles run in a master of their own (this executable started again
//! with [`CLEAN_MASTER_ENV`]), without the test harness's log capture, which
//! keeps every event and would grow with each cycle itself. Descriptors,
//! threads, processes, handles and the router's records of contexts are
//! compared exactly with a snapshot taken after a warm-up round (so one-time
//! initialisation does not count): a leak of one per cycle would show as
//! hundreds. Memory is bounded instead; see [`RSS_BOUND_KIB`] and
//! `docs/testing.md`.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use mitogen::{ConnectOptions, Router, Target};

use crate::calls::{add, sleep_ms};
use crate::sshd::{self, Sshd};
use crate::util::{child_processes, descendants, fd_count, proc_state, thread_count, wait_until};

/// Set to a scenario's name: this process is a master that runs it and exits.
pub const CLEAN_MASTER_ENV: &str = "MITOGEN_TEST_LEAKS_MASTER";
/// The ssh target of the `ssh` scenario.
const SSH_TARGET_ENV: &str = "MITOGEN_TEST_LEAKS_SSH_TARGET";
/// The client key of the `ssh` scenario.
const SSH_KEY_ENV: &str = "MITOGEN_TEST_LEAKS_SSH_KEY";

/// Growth of the master's resident memory allowed over a whole scenario (its
/// cycles together, not each): the allocator keeps some freed memory (up
/// to about 250 KiB measured), while the router's records of a context are
/// counted exactly (`Router::context_records`). A leak of 768 bytes a local
/// cycle is past it.
pub const RSS_BOUND_KIB: u64 = 768;

/// This process's resident memory (`VmRSS` of `/proc/self/status`), in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn running(pid: u32) -> bool {
    !matches!(proc_state(pid), None | Some('Z' | 'X'))
}

/// What the master holds, to compare before and after many cycles.
struct Snapshot {
    fds: usize,
    threads: usize,
    /// Every process below the master, however deep.
    processes: HashSet<u32>,
    handles: usize,
    /// Records of the router's table of shared hops.
    hop_records: usize,
    /// Records the router keeps per context (routes, names, latches...).
    context_records: usize,
    rss_kib: u64,
}

impl Snapshot {
    fn take(router: &Router) -> Snapshot {
        Snapshot {
            fds: fd_count(),
            threads: thread_count(),
            processes: descendants(std::process::id()).into_iter().collect(),
            handles: router.handle_count(),
            hop_records: router.shared_hop_records(),
            context_records: router.context_records(),
            rss_kib: rss_kib(),
        }
    }

    /// Processes below the master now that were not there before.
    fn new_processes(&self) -> Vec<u32> {
        descendants(std::process::id())
            .into_iter()
            .filter(|p| !self.processes.contains(p) && running(*p))
            .collect()
    }

    /// [`new_processes`](Self::new_processes) for a report: how many, and
    /// the first few.
    fn new_processes_report(&self) -> String {
        let new = self.new_processes();
        format!("{} new processes {:?}", new.len(), &new[..new.len().min(8)])
    }

    /// Waits (up to 10 s, for exits and reaping to finish) until nothing
    /// counted has grown, then checks memory against [`RSS_BOUND_KIB`].
    fn expect_no_growth(&self, router: &Router, what: &str) -> Result<()> {
        let settled = wait_until(Duration::from_secs(10), || {
            fd_count() <= self.fds
                && thread_count() <= self.threads
                && router.handle_count() <= self.handles
                && router.shared_hop_records() <= self.hop_records
                && router.context_records() <= self.context_records
                && self.new_processes().is_empty()
        });
        let rss = rss_kib();
        let counts = format!(
            "fds {} -> {}, threads {} -> {}, handles {} -> {}, \
             shared-hop records {} -> {}, context records {} -> {}",
            self.fds,
            fd_count(),
            self.threads,
            thread_count(),
            self.handles,
            router.handle_count(),
            self.hop_records,
            router.shared_hop_records(),
            self.context_records,
            router.context_records(),
        );
        eprintln!(
            "leaks: {what}: {counts}, processes {} -> {}, RSS {} -> {rss} KiB",
            self.processes.len(),
            descendants(std::process::id()).len(),
            self.rss_kib,
        );
        ensure!(
            settled,
            "after {what}: {counts}, {}",
            self.new_processes_report()
        );
        let grown = rss.saturating_sub(self.rss_kib);
        ensure!(
            grown <= RSS_BOUND_KIB,
            "after {what}: RSS grew from {} to {rss} KiB, over the bound of {RSS_BOUND_KIB} KiB",
            self.rss_kib
        );
        Ok(())
    }
}

/// `main` of a master started with [`CLEAN_MASTER_ENV`]: runs the scenario
/// named there; the exit status says how it went, stderr why.
pub fn clean_master_main(router: &Router) -> usize {
    let scenario = std::env::var(CLEAN_MASTER_ENV).unwrap_or_default();
    let r = match scenario.as_str() {
        "local" => local_cycles(router),
        "chain" => chain_cycles(router),
        "ssh" => ssh_cycles(router),
        "timeouts" => timed_out_calls(router),
        other => Err(anyhow::anyhow!("no scenario {other:?}")),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("leaks: {scenario}: {e:#}");
            1
        }
    }
}

/// Runs `scenario` in a master of its own, passing its report on.
fn run_clean_master(scenario: &str, env: &[(&str, String)]) -> Result<()> {
    let out = Command::new(std::env::current_exe()?)
        .env(CLEAN_MASTER_ENV, scenario)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .context("starting a master for the scenario")?;
    let report = String::from_utf8_lossy(&out.stderr);
    eprint!("{report}");
    ensure!(
        out.status.success(),
        "scenario {scenario} failed ({}): {}",
        out.status,
        report.trim()
    );
    Ok(())
}

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

fn local_cycles(router: &Router) -> Result<()> {
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
fn chain_cycles(router: &Router) -> Result<()> {
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

fn ssh_cycles(router: &Router) -> Result<()> {
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

fn timed_out_calls(router: &Router) -> Result<()> {
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

/// Ends a context in one of the ways that are not an orderly shutdown.
fn abnormal_cycle(router: &Router, i: u64) -> Result<()> {
    let ctx = router.local()?;
    ensure!(ctx.call(add, (i, 1))? == i + 1);
    match i % 3 {
        0 => crate::util::kill9(crate::util::pid_of(&ctx)?)?,
        1 => {
            // A broken frame: the master disconnects the stream.
            let mut junk = vec![0u8; 28];
            junk[0] = 0xde;
            let _ = ctx.call(
                crate::bad_input::write_raw,
                (junk, crate::bad_input::After::Nothing, 10_000),
            );
        }
        _ => {
            // A call pending while the context is shut down with no grace.
            let _busy = ctx.call_async(crate::calls::sleep_ms, (10_000,));
            ctx.shutdown_timeout(Duration::ZERO)?;
        }
    }
    ensure!(
        wait_until(Duration::from_secs(5), || ctx.exit_status().is_some()),
        "cycle {i}: the context was not reaped"
    );
    Ok(())
}

pub fn abnormal_endings_leak_nothing(router: &Router) -> Result<()> {
    for i in 0..3 {
        abnormal_cycle(router, i)?;
    }
    let fds = fd_count();
    let threads = thread_count();
    let children = child_processes();
    for i in 3..63 {
        abnormal_cycle(router, i)?;
    }
    let settled = wait_until(Duration::from_secs(5), || {
        fd_count() <= fds
            && thread_count() <= threads
            && child_processes().iter().all(|c| children.contains(c))
    });
    ensure!(
        settled,
        "after 60 abnormal endings: fds {fds} -> {}, threads {threads} -> {}, child processes {children:?} -> {:?}",
        fd_count(),
        thread_count(),
        child_processes()
    );
    Ok(())
}

/// A context that is gone is still named by everything that held on to it
/// (a pending call, a receiver tied to it), and the router forgets it once
/// the last of those is dropped: its records return to what they were
/// before it was started.
pub fn gone_context_is_named_until_forgotten(router: &Router) -> Result<()> {
    use mitogen::{Error, Local};
    // The router keeps the handle of the last context it started, for its
    // shutdown, until it starts the next: a first one puts the count in
    // that state.
    let first = router.start(None, Local::new().name("leaks-first"))?;
    first.shutdown()?;
    drop(first);
    let before = router.context_records();
    let ctx = router.start(None, Local::new().name("leaks-gone"))?;
    let (_tx, rx) = ctx.channel::<u64>();
    let pending = ctx.call_async(sleep_ms, (30_000,));
    crate::util::kill9(crate::util::pid_of(&ctx)?)?;
    ensure!(
        ctx.wait_disconnect(Duration::from_secs(10)),
        "the killed context did not disconnect"
    );
    drop(ctx);
    let named = |what: &str, r: mitogen::Result<u64>| -> Result<()> {
        match r {
            Err(Error::Disconnected { context, .. }) if context == "leaks-gone" => Ok(()),
            other => bail!("{what} ended with {other:?}, not a disconnect naming the context"),
        }
    };
    named(
        "the pending call",
        pending.get_timeout(Duration::from_secs(10)),
    )?;
    // Starting another drops the router's own handle on the one gone: the
    // receiver is the last to hold on to it.
    let next = router.start(None, Local::new().name("leaks-next"))?;
    named("the receiver", rx.recv_timeout(Duration::from_secs(10)))?;
    drop(rx);
    next.shutdown()?;
    drop(next);
    let after = router.context_records();
    ensure!(
        after <= before,
        "the router keeps {after} records per context, {before} before the context that is gone"
    );
    Ok(())
}

/// The records this context's router keeps per context.
#[mitogen::remote]
pub fn router_context_records() -> usize {
    Router::current().map_or(0, |r| r.context_records())
}

/// An intermediate forgets the contexts it relayed for once they are gone:
/// many grandchildren started and shut down through it leave its records
/// as they were.
pub fn intermediate_forgets_grandchildren_that_are_gone(router: &Router) -> Result<()> {
    use mitogen::Local;
    let mid = crate::util::Guard(router.start(None, Local::new().name("leaks-mid"))?);
    let cycle = |i: u64| -> Result<()> {
        let gc = router.start(Some(&mid), Local::new().name(format!("leaks-gc-{i}")))?;
        ensure!(gc.call(add, (i, 1))? == i + 1);
        gc.shutdown()?;
        Ok(())
    };
    cycle(0)?;
    let before = mid.call(router_context_records, ())?;
    for i in 1..41 {
        cycle(i)?;
    }
    let mut after = 0;
    let settled = wait_until(Duration::from_secs(5), || {
        after = mid.call(router_context_records, ()).unwrap_or(usize::MAX);
        after <= before
    });
    ensure!(
        settled,
        "the intermediate keeps {after} records per context after 40 grandchildren, {before} \
         after the first"
    );
    Ok(())
}

crate::tests! {
    connect_call_shutdown_cycles_leak_nothing => 300,
    abnormal_endings_leak_nothing => 300,
    chain_cycles_leak_nothing => 300,
    ssh_cycles_leak_nothing => 300,
    timed_out_calls_leak_nothing => 120,
    gone_context_is_named_until_forgotten,
    intermediate_forgets_grandchildren_that_are_gone,
}
