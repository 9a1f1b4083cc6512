//! What a hostile caller can make a service's context hold: a grandchild
//! that asks for large answers, as a service open to it allows, and never
//! reads them.

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use mitogen::service::Service;
use mitogen::testing::message::handles;
use mitogen::{Local, Router};
use rustix::process::{kill_process, Pid, Signal};

use super::Bulk;
use crate::hostile_tree::{fork_writer, raw};
use crate::util::{proc_state, wait_until, Guard};

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

pub fn answers_to_a_caller_that_does_not_read_are_bounded(router: &Router) -> Result<()> {
    let host = Guard(router.local()?);
    let bad = Guard(router.start(Some(&host), Local::new().name("svc-flood"))?);
    let host_pid = host.call(mitogen::builtins::getpid, ())?;
    let bad_pid = bad.call(mitogen::builtins::getpid, ())?;
    // 160 calls for 1 MiB each, written on the hostile child's stream by a
    // process of its own while the child itself is stopped and reads
    // nothing: 160 MiB of answers for it, unless its parent stops queuing.
    let mut body = postcard::to_allocvec(&(Bulk::NAME, "bytes"))?;
    body.extend(postcard::to_allocvec(&(1u32 << 20,))?);
    let call = raw(host.id(), bad.id(), handles::CALL_SERVICE, 4242, 0, &body);
    let before = rss_kib(host_pid)?;
    let writer = bad.call(fork_writer, (call, 160, 300))?;
    let pid = |p: u32| Pid::from_raw(p as i32).context("pid");
    kill_process(pid(bad_pid)?, Signal::STOP)?;
    ensure!(wait_until(Duration::from_secs(5), || proc_state(bad_pid) == Some('T')));
    let written = wait_until(Duration::from_secs(60), || {
        matches!(proc_state(writer), None | Some('Z'))
    });
    // A call queued behind the flood ends once the service has worked
    // through it (its threads take calls in order).
    host.service::<Bulk>()
        .call_timeout(Bulk::bytes, 1, Duration::from_secs(90))?;
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(host_pid)?;
    kill_process(pid(bad_pid)?, Signal::CONT)?;
    println!("    (service context {before} KiB before the flood, {after} KiB after)");
    ensure!(written, "the writer did not finish");
    ensure!(
        after < before + (100 << 10),
        "the service's context grew from {before} KiB to {after} KiB"
    );
    // It still serves.
    ensure!(host.service::<Bulk>().call(Bulk::bytes, 3)? == vec![7; 3]);
    Ok(())
}

crate::tests! {
    answers_to_a_caller_that_does_not_read_are_bounded => 180,
}
