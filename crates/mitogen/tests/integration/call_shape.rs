//! The shape of a call: arguments without a one-element tuple, a router-wide
//! default timeout, `Context::start`, `connect` from a string; cancelling a
//! call its caller gave up on (and only its caller can); functions that run
//! concurrently beside the in-order calls.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use bytes::Bytes;
use mitogen::testing::message::{handles, ContextId, Message, MASTER_ID};
use mitogen::{Blob, Context, Error, Local, Router, Sender};

use crate::calls::{add, pid};
use crate::hostile_tree::write_raw_up;
use crate::util::local;

#[mitogen::remote]
pub fn shout(s: String) -> String {
    s.to_uppercase()
}

#[mitogen::remote]
pub fn double(x: u64) -> u64 {
    x * 2
}

#[mitogen::remote]
pub fn pair_sum(p: (u32, u32)) -> u32 {
    p.0 + p.1
}

/// How the last [`wait_for_cancel`] ended: 0 none yet, 1 cancelled, 2 ran
/// out its time.
static OUTCOME: AtomicU32 = AtomicU32::new(0);
static BUMPS: AtomicU64 = AtomicU64::new(0);

/// Waits up to `ms` for its caller to give up; true if it did.
#[mitogen::remote]
pub fn wait_for_cancel(ms: u64) -> bool {
    let end = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < end {
        if mitogen::cancelled() {
            OUTCOME.store(1, Ordering::SeqCst);
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    OUTCOME.store(2, Ordering::SeqCst);
    false
}

#[mitogen::remote]
pub fn outcome() -> u32 {
    OUTCOME.load(Ordering::SeqCst)
}

#[mitogen::remote]
pub fn bump() -> u64 {
    BUMPS.fetch_add(1, Ordering::SeqCst) + 1
}

#[mitogen::remote]
pub fn bumps() -> u64 {
    BUMPS.load(Ordering::SeqCst)
}

static ARRIVED: AtomicU32 = AtomicU32::new(0);

/// Arrives, then waits up to 5 s for `n` calls to have arrived: true if
/// they all did (so they ran at the same time).
#[mitogen::remote(concurrent)]
pub fn rendezvous(n: u32) -> bool {
    ARRIVED.fetch_add(1, Ordering::SeqCst);
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if ARRIVED.load(Ordering::SeqCst) >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

/// A concurrent function that sleeps.
#[mitogen::remote(concurrent)]
pub fn sleep_beside(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

pub fn single_argument_without_a_tuple(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    ensure!(ctx.call(double, 21)? == 42);
    ensure!(ctx.call(double, (21,))? == 42);
    ensure!(ctx.call(shout, "/tmp")? == "/TMP");
    ensure!(ctx.call(shout, String::from("a"))? == "A");
    ensure!(ctx.call(shout, ("b".into(),))? == "B");
    ensure!(ctx.call(pair_sum, (1, 2))? == 3);
    ensure!(ctx.call(pair_sum, ((1, 2),))? == 3);
    ensure!(ctx.call(add, (2, 3))? == 5);
    ensure!(ctx.call_async(double, 4).get()? == 8);
    ensure!(ctx.call_timeout(shout, "x", Duration::from_secs(10))? == "X");
    let chain = ctx.chain();
    chain.call_no_reply(double, 1)?;
    ensure!(chain.call(shout, "c")? == "C");
    Ok(())
}

pub fn default_call_timeout(_router: &Router) -> Result<()> {
    let r = Router::builder()
        .call_timeout(Duration::from_millis(300))
        .build()?;
    let ctx = r.local()?;
    let t = Instant::now();
    match ctx.call(wait_for_cancel, 10_000) {
        Err(Error::Timeout(_)) => {}
        other => bail!("a call past the default timeout ended with {other:?}"),
    }
    ensure!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    // Timed out means cancelled: the function saw it and stopped early.
    ensure!(ctx.call_timeout(outcome, (), Duration::from_secs(10))? == 1);
    ensure!(ctx.call(add, (1, 1))? == 2);
    ctx.shutdown()?;
    Ok(())
}

pub fn context_start_and_connect_from_a_string(router: &Router) -> Result<()> {
    let outer = local(router)?;
    let inner = outer.start(Local::new().name("shape-inner"))?;
    ensure!(inner.call(pid, ())? != outer.call(pid, ())?);
    ensure!(inner.name() == "shape-inner");
    inner.shutdown()?;
    let ctx = router.connect("local")?;
    ensure!(ctx.call(double, 2)? == 4);
    ctx.shutdown()?;
    match router.connect("bad:port:") {
        Err(Error::BadTarget { .. }) => {}
        other => bail!("a bad target string gave {other:?}"),
    }
    Ok(())
}

pub fn dropped_call_is_cancelled_in_the_callee(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let t = Instant::now();
    let running = ctx.call_async(wait_for_cancel, 10_000);
    // Let it start, then give up on it.
    std::thread::sleep(Duration::from_millis(200));
    drop(running);
    // Calls run in order: this one runs once the abandoned one returned.
    ensure!(
        ctx.call(outcome, ())? == 1,
        "the running call never saw the cancel"
    );
    ensure!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    Ok(())
}

pub fn cancelled_queued_call_never_runs(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let busy = ctx.call_async(wait_for_cancel, 600);
    let queued = ctx.call_async(bump, ());
    drop(queued);
    ensure!(!busy.get()?);
    ensure!(ctx.call(bumps, ())? == 0, "the cancelled call ran");
    ensure!(ctx.call(bump, ())? == 1);
    Ok(())
}

pub fn timed_out_call_is_cancelled(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    match ctx.call_timeout(wait_for_cancel, 10_000, Duration::from_millis(200)) {
        Err(Error::Timeout(_)) => {}
        other => bail!("ended with {other:?}"),
    }
    ensure!(ctx.call(outcome, ())? == 1);
    Ok(())
}

/// One raw frame, as a hostile context writes it.
fn raw(dst: ContextId, src: ContextId, handle: u32, body: &[u8]) -> Vec<u8> {
    let msg = Message {
        dst,
        src,
        auth_id: src,
        handle,
        reply_to: 0,
        flags: 0,
        body: Bytes::copy_from_slice(body),
    };
    let mut v = msg.encode_header().to_vec();
    v.extend_from_slice(body);
    v
}

struct Down(Vec<Context>);

impl Drop for Down {
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = c.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

/// A grandchild cancels the calls its parent runs for the master: as
/// itself (it lacks parent authority over its parent), and claiming to be
/// the master (not from behind its stream). Neither cancels it; the
/// master's own drop still does.
pub fn grandchild_cannot_cancel_its_parents_calls(router: &Router) -> Result<()> {
    let host = router.start(None, Local::new().name("shape-host"))?;
    let gc = router.start(Some(&host), Local::new().name("shape-gc"))?;
    let _down = Down(vec![gc.clone(), host.clone()]);
    let call = host.call_async(wait_for_cancel, 1500);
    let h = call.reply_handle().to_le_bytes();
    let (me, parent) = (gc.id(), host.id());
    let mut frames = raw(parent, me, handles::CANCEL_CALL, &h);
    frames.extend(raw(parent, MASTER_ID, handles::CANCEL_CALL, &h));
    gc.call(write_raw_up, frames)?;
    match call.get_timeout(Duration::from_secs(10)) {
        Ok(false) => {}
        other => bail!("the call was cancelled by its grandchild: {other:?}"),
    }
    ensure!(host.call(outcome, ())? == 2);
    Ok(())
}

/// A sibling (with lateral messages allowed) cannot cancel another's call.
pub fn sibling_cannot_cancel_a_call(_router: &Router) -> Result<()> {
    let r = Router::builder().allow_lateral_messages(true).build()?;
    let a = r.start(None, Local::new().name("shape-a"))?;
    let b = r.start(None, Local::new().name("shape-b"))?;
    let _down = Down(vec![a.clone(), b.clone()]);
    let call = a.call_async(wait_for_cancel, 1500);
    let h = call.reply_handle().to_le_bytes();
    let frames = raw(a.id(), b.id(), handles::CANCEL_CALL, &h);
    b.call(write_raw_up, frames)?;
    match call.get_timeout(Duration::from_secs(10)) {
        Ok(false) => {}
        other => bail!("the call was cancelled by a sibling: {other:?}"),
    }
    Ok(())
}

pub fn concurrent_calls_overlap(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let a = ctx.call_async(rendezvous, 2);
    let b = ctx.call_async(rendezvous, 2);
    ensure!(a.get()? && b.get()?, "the concurrent calls did not overlap");
    // An in-order call is not held back by a concurrent one running.
    let slow = ctx.call_async(sleep_beside, 2000);
    let t = Instant::now();
    ensure!(ctx.call(add, (1, 2))? == 3);
    ensure!(
        t.elapsed() < Duration::from_millis(1500),
        "an ordinary call waited {:?} for a concurrent one",
        t.elapsed()
    );
    ensure!(slow.get()? == 2000);
    Ok(())
}

pub fn ordinary_calls_stay_in_order(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    // Two ordinary rendezvous-like calls cannot overlap: the first runs
    // alone and gives up; bumps pipelined behind a slow call keep order.
    let slow = ctx.call_async(wait_for_cancel, 300);
    let pending: Vec<_> = (0..50).map(|_| ctx.call_async(bump, ())).collect();
    ensure!(!slow.get()?);
    for (i, p) in pending.into_iter().enumerate() {
        ensure!(p.get()? == i as u64 + 1, "call {i} ran out of order");
    }
    Ok(())
}

/// More concurrent calls than the pool has threads: the rest wait for a
/// thread and all finish, faster than one after the other.
pub fn concurrent_calls_beyond_the_pool_queue(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    // Warm the pool up, so that starting threads is not timed.
    let warm: Vec<_> = (0..4).map(|_| ctx.call_async(sleep_beside, 50)).collect();
    for w in warm {
        w.get()?;
    }
    let t = Instant::now();
    let calls: Vec<_> = (0..8).map(|_| ctx.call_async(sleep_beside, 400)).collect();
    for c in calls {
        ensure!(c.get()? == 400);
    }
    let took = t.elapsed();
    ensure!(
        took >= Duration::from_millis(800),
        "8 calls on 4 threads took {took:?}"
    );
    ensure!(
        took < Duration::from_millis(2400),
        "8 calls on 4 threads took {took:?}"
    );
    Ok(())
}

/// Sends a `CANCEL_CALL` for `handle` to `dst` from the context it runs in,
/// as a context may: through a sender forged to point at the handle.
#[mitogen::remote]
pub fn cancel_as_me(dst: ContextId, handle: u32) -> anyhow::Result<()> {
    // A sender travels as (context, handle, key, window).
    let window = mitogen::DEFAULT_WINDOW as u64;
    let to: Sender<Blob> = postcard::from_bytes(&postcard::to_allocvec(&(
        dst,
        handles::CANCEL_CALL,
        0u32,
        window,
    ))?)?;
    to.send(Blob(Bytes::copy_from_slice(&handle.to_le_bytes())))?;
    Ok(())
}

/// The parent of a context (an ancestor with authority over it) cannot
/// cancel the calls the master makes there; the master, its caller, can.
pub fn another_ancestor_cannot_cancel_a_call(router: &Router) -> Result<()> {
    let host = router.start(None, Local::new().name("shape-anc-host"))?;
    let gc = router.start(Some(&host), Local::new().name("shape-anc-gc"))?;
    let _down = Down(vec![gc.clone(), host.clone()]);
    // The path works: the caller's own cancellation, sent the same way.
    // A cancelled call sends no reply: its outcome is asked for after it.
    let mine = gc.call_async(wait_for_cancel, 5000);
    cancel_as_me(gc.id(), mine.reply_handle())?;
    // Skipped before it started (0) or stopped while it ran (1).
    let got = gc.call(outcome, ())?;
    ensure!(
        got == 0 || got == 1,
        "the caller's own cancellation did not arrive ({got})"
    );
    drop(mine);
    // The parent hop tries the same for the master's next call.
    let theirs = gc.call_async(wait_for_cancel, 1500);
    host.call(cancel_as_me, (gc.id(), theirs.reply_handle()))?;
    match theirs.get_timeout(Duration::from_secs(10)) {
        Ok(false) => {}
        other => bail!("the parent hop cancelled the master's call: {other:?}"),
    }
    ensure!(gc.call(outcome, ())? == 2);
    Ok(())
}

crate::tests! {
    single_argument_without_a_tuple,
    default_call_timeout,
    context_start_and_connect_from_a_string,
    dropped_call_is_cancelled_in_the_callee,
    cancelled_queued_call_never_runs,
    timed_out_call_is_cancelled,
    grandchild_cannot_cancel_its_parents_calls,
    sibling_cannot_cancel_a_call,
    concurrent_calls_overlap,
    ordinary_calls_stay_in_order,
    concurrent_calls_beyond_the_pool_queue,
    another_ancestor_cannot_cancel_a_call,
}
