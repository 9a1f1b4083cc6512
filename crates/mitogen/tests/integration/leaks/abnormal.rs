//! Contexts that end in ways that are not an orderly shutdown leave nothing
//! behind.

use std::time::Duration;

use anyhow::{ensure, Result};
use mitogen::Router;

use crate::calls::add;
use crate::util::{child_processes, fd_count, thread_count, wait_until};

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

crate::tests! {
    abnormal_endings_leak_nothing => 300,
}
