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
//!
//! This module holds the master of their own, its snapshot and the bounds.
//! The tests are in the parts: `cycles` (the cycles run in that master: local,
//! chains, ssh, calls that time out), `abnormal` (contexts that end other than
//! by an orderly shutdown) and `records` (the router's records of contexts
//! that are gone).

pub mod abnormal;
pub mod cycles;
pub mod records;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use mitogen::Router;

use self::cycles::{chain_cycles, local_cycles, ssh_cycles, timed_out_calls};
use crate::util::{descendants, fd_count, proc_state, thread_count, wait_until};

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
