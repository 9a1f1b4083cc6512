//! Many connect/call/shutdown cycles leave nothing behind in the master.

use std::time::Duration;

use anyhow::{ensure, Result};
use mitogen::Router;

use crate::calls::add;
use crate::util::{child_processes, fd_count, thread_count, wait_until};

fn cycle(router: &Router, i: u64) -> Result<()> {
    let ctx = router.local()?;
    ensure!(ctx.call(add, (i, 1))? == i + 1);
    ctx.shutdown()?;
    ensure!(ctx.exit_status().is_some(), "cycle {i}: no exit status");
    Ok(())
}

pub fn connect_call_shutdown_cycles_leak_nothing(router: &Router) -> Result<()> {
    // One cycle first, so one-time initialisation is not counted as a leak.
    cycle(router, 0)?;
    let fds = fd_count();
    let threads = thread_count();
    let children = child_processes();
    for i in 1..=100 {
        cycle(router, i)?;
    }
    // Exact: a leaked descriptor, thread or process per cycle would show as
    // 100, and nothing else in the process changes while this test runs.
    let settled = wait_until(Duration::from_secs(5), || {
        fd_count() <= fds
            && thread_count() <= threads
            && child_processes().iter().all(|c| children.contains(c))
    });
    ensure!(
        settled,
        "after 100 cycles: fds {fds} -> {}, threads {threads} -> {}, child processes {children:?} -> {:?}",
        fd_count(),
        thread_count(),
        child_processes()
    );
    Ok(())
}
