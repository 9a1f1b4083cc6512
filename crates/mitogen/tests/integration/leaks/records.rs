//! The router's records of contexts that are gone: named until forgotten, and
//! forgotten by an intermediate too.

use std::time::Duration;

use anyhow::{bail, ensure, Result};
use mitogen::Router;

use crate::calls::{add, sleep_ms};
use crate::util::wait_until;

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
    gone_context_is_named_until_forgotten,
    intermediate_forgets_grandchildren_that_are_gone,
}
