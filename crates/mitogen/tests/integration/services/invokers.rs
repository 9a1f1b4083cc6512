//! Invokers: one call at a time in arrival order, and identical calls run
//! once for every asker.

use std::time::Duration;

use anyhow::{ensure, Result};
use mitogen::Router;

use super::{Dedup, Ordered};
use crate::util::Guard;

pub fn serialized_calls_run_one_at_a_time_in_order(router: &Router) -> Result<()> {
    let child = Guard(router.local()?);
    let ordered = child.service::<Ordered>();
    // Earlier calls sleep longer: side by side, later ones would finish
    // (and record themselves) first.
    let pending: Vec<_> = (0..6u64)
        .map(|i| ordered.call_async(Ordered::push, (i, 120 - i * 20)))
        .collect();
    for p in pending {
        p.get_timeout(Duration::from_secs(20))?;
    }
    let log = ordered.call(Ordered::log, ())?;
    ensure!(
        log == (0..6).collect::<Vec<_>>(),
        "ran in the order {log:?}"
    );
    Ok(())
}

pub fn deduplicated_calls_run_once_for_every_asker(router: &Router) -> Result<()> {
    let child = Guard(router.local()?);
    let dedup = child.service::<Dedup>();
    let askers: Vec<_> = (0..8)
        .map(|_| dedup.call_async(Dedup::compute, 21))
        .collect();
    let other = dedup.call_async(Dedup::compute, 5);
    for (i, p) in askers.into_iter().enumerate() {
        let got = p.get_timeout(Duration::from_secs(20))?;
        ensure!(got == 42, "asker {i} got {got}");
    }
    ensure!(other.get_timeout(Duration::from_secs(20))? == 10);
    let runs = dedup.call(Dedup::runs, 21)?;
    ensure!(runs == 1, "8 identical calls ran {runs} times");
    ensure!(dedup.call(Dedup::runs, 5)? == 1);
    // Only calls in progress are shared: a later one runs again.
    ensure!(dedup.call(Dedup::compute, 21)? == 42);
    ensure!(dedup.call(Dedup::runs, 21)? == 2);
    Ok(())
}

crate::tests! {
    serialized_calls_run_one_at_a_time_in_order,
    deduplicated_calls_run_once_for_every_asker,
}
