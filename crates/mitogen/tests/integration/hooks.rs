//! Typed hooks (the seed's Signals): disconnect, route added / removed,
//! shutdown, and `Context::on_disconnect`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Result};
use mitogen::{ContextId, Router};

use crate::calls::add;
use crate::routing::Chain;
use crate::util::{kill9, wait_until};

type Seen = Arc<Mutex<Vec<(ContextId, String)>>>;

fn seen() -> Seen {
    Arc::new(Mutex::new(Vec::new()))
}

fn has(seen: &Seen, id: ContextId) -> bool {
    seen.lock().unwrap().iter().any(|(i, _)| *i == id)
}

pub fn route_and_disconnect_hooks_through_a_chain(router: &Router) -> Result<()> {
    let (added, removed, gone) = (seen(), seen(), seen());
    let a = added.clone();
    let _s1 = router.on_route_added(move |id, name| a.lock().unwrap().push((id, name.into())));
    let r = removed.clone();
    let _s2 = router.on_route_removed(move |id| r.lock().unwrap().push((id, String::new())));
    let g = gone.clone();
    let _s3 = router.on_disconnect(move |id, name| g.lock().unwrap().push((id, name.into())));

    let chain = Chain::new(router, "hk-chain", 3)?;
    for h in &chain.hops {
        ensure!(
            added
                .lock()
                .unwrap()
                .iter()
                .any(|(i, n)| *i == h.id() && n == h.name()),
            "no route_added for {}",
            h.name()
        );
    }
    let pids = chain.pids()?;
    // The middle hop dies: the hooks fire for it and the hop below it, and
    // for nothing above.
    kill9(pids[1])?;
    let below = [&chain.hops[1], &chain.hops[2]];
    ensure!(
        wait_until(Duration::from_secs(2), || below.iter().all(|h| has(
            &gone,
            h.id()
        ) && has(
            &removed,
            h.id()
        ))),
        "disconnect {:?} / route_removed {:?}",
        gone.lock().unwrap(),
        removed.lock().unwrap()
    );
    for h in below {
        ensure!(
            gone.lock()
                .unwrap()
                .iter()
                .any(|(i, n)| *i == h.id() && n == h.name()),
            "disconnect hook without the name of {}",
            h.name()
        );
        ensure!(h.is_disconnected());
    }
    ensure!(!has(&gone, chain.hops[0].id()) && !has(&removed, chain.hops[0].id()));
    // Each context is reported gone once, however many paths report it.
    std::thread::sleep(Duration::from_millis(200));
    let n = gone
        .lock()
        .unwrap()
        .iter()
        .filter(|(i, _)| *i == chain.hops[2].id())
        .count();
    ensure!(n == 1, "the leaf was reported gone {n} times");
    ensure!(chain.hops[0].call(add, (1, 1))? == 2);
    Ok(())
}

pub fn context_on_disconnect_fires_once_even_when_late(router: &Router) -> Result<()> {
    let ctx = router.local()?;
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let _sub = ctx.on_disconnect(move || {
        h.fetch_add(1, Ordering::SeqCst);
    });
    // A dropped subscription never fires.
    let dropped = Arc::new(AtomicUsize::new(0));
    let d = dropped.clone();
    drop(ctx.on_disconnect(move || {
        d.fetch_add(1, Ordering::SeqCst);
    }));
    ctx.shutdown()?;
    ensure!(
        wait_until(Duration::from_secs(2), || hits.load(Ordering::SeqCst) == 1),
        "fired {} times",
        hits.load(Ordering::SeqCst)
    );
    ensure!(dropped.load(Ordering::SeqCst) == 0);
    // Registered after the fact: fires at once.
    let late = Arc::new(AtomicUsize::new(0));
    let l = late.clone();
    let _late = ctx.on_disconnect(move || {
        l.fetch_add(1, Ordering::SeqCst);
    });
    ensure!(late.load(Ordering::SeqCst) == 1);
    std::thread::sleep(Duration::from_millis(100));
    ensure!(hits.load(Ordering::SeqCst) == 1 && late.load(Ordering::SeqCst) == 1);
    Ok(())
}

pub fn shutdown_hook_fires_before_contexts_go(_: &Router) -> Result<()> {
    let r = Router::builder().build()?;
    let ctx = r.local()?;
    // The hook sees the context still up: shutdown has only begun.
    let up_at_shutdown = Arc::new(Mutex::new(None));
    let u = up_at_shutdown.clone();
    let c = ctx.clone();
    r.on_shutdown(move || {
        *u.lock().unwrap() = Some(!c.is_disconnected());
    })
    .forever();
    drop(r);
    ensure!(
        *up_at_shutdown.lock().unwrap() == Some(true),
        "shutdown hook: {:?}",
        up_at_shutdown.lock().unwrap()
    );
    ensure!(ctx.is_disconnected());
    Ok(())
}

crate::tests! {
    route_and_disconnect_hooks_through_a_chain,
    context_on_disconnect_fires_once_even_when_late,
    shutdown_hook_fires_before_contexts_go,
}
