//! Calls in every form, channels, bulk data and `Select`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use mitogen::{Blob, CallErrorKind, Error, Router, Select, Sender};
use serde::{Deserialize, Serialize};

use crate::util::local;

#[mitogen::remote]
pub fn add(a: u64, b: u64) -> u64 {
    a + b
}

/// The process id of the context it runs in.
#[mitogen::remote]
pub fn pid() -> u32 {
    std::process::id()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub x: i64,
    pub label: String,
    pub tags: Vec<String>,
    pub extra: Option<(u8, bool)>,
}

/// Exercises a struct argument and a tuple result.
#[mitogen::remote]
pub fn describe(p: Point) -> (String, usize, Point) {
    let mut q = p.clone();
    q.x = -q.x;
    (format!("{}@{}", p.label, p.x), p.tags.len(), q)
}

#[mitogen::remote]
pub fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

static VALUE: AtomicU64 = AtomicU64::new(0);

#[mitogen::remote]
pub fn set_value(v: u64) {
    VALUE.store(v, Ordering::SeqCst);
}

#[mitogen::remote]
pub fn get_value() -> u64 {
    VALUE.load(Ordering::SeqCst)
}

#[mitogen::remote]
pub fn fail_with(msg: String) -> std::io::Result<()> {
    Err(std::io::Error::other(msg))
}

/// Streams `n` squares and closes the channel.
#[mitogen::remote]
pub fn squares(n: u64, out: Sender<u64>) -> mitogen::Result<()> {
    for i in 0..n {
        out.send(i * i)?;
    }
    out.close()
}

/// Streams `n` chunks of `size` bytes, chunk `i` filled with the byte `i`.
#[mitogen::remote]
pub fn send_chunks(n: u32, size: u32, out: Sender<Blob>) -> mitogen::Result<()> {
    for i in 0..n {
        out.send(Blob::from(vec![i as u8; size as usize]))?;
    }
    out.close()
}

/// Sends one value after a delay.
#[mitogen::remote]
pub fn send_after(ms: u64, value: String, out: Sender<String>) -> mitogen::Result<()> {
    std::thread::sleep(Duration::from_millis(ms));
    out.send(value)
}

pub fn typed_call(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    ensure!(ctx.call(add, (2, 3))? == 5);
    ensure!(ctx.call(pid, ())? == crate::util::pid_of(&ctx)?);
    ensure!(
        ctx.call(pid, ())? != std::process::id(),
        "ran in the master"
    );
    let p = Point {
        x: 7,
        label: "p".into(),
        tags: vec!["a".into(), "b".into()],
        extra: Some((9, true)),
    };
    let (s, n, q) = ctx.call(describe, (p.clone(),))?;
    ensure!(s == "p@7" && n == 2, "got {s:?} {n}");
    ensure!(q == Point { x: -7, ..p });
    Ok(())
}

pub fn call_async_blocking(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let slow = ctx.call_async(sleep_ms, (100,));
    let fast = ctx.call_async(add, (40, 2));
    // Calls run in order on the child's main thread.
    ensure!(slow.get()? == 100);
    ensure!(fast.get_timeout(Duration::from_secs(10))? == 42);
    Ok(())
}

pub fn call_async_awaited_under_tokio(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    rt.block_on(async {
        let work = async {
            let a = ctx.call_async(add, (1, 2));
            let b = ctx.call_async(sleep_ms, (50,));
            let (a, b) = tokio::join!(a, b);
            ensure!(a? == 3 && b? == 50);

            let (tx, rx) = ctx.channel::<u64>();
            ctx.call_no_reply(squares, (4, tx))?;
            let mut got = Vec::new();
            for _ in 0..4 {
                got.push(rx.recv_async().await?);
            }
            ensure!(got == [0, 1, 4, 9], "got {got:?}");
            match rx.recv_async().await {
                Err(Error::ChannelClosed(_)) => {}
                other => bail!("expected ChannelClosed, got {other:?}"),
            }
            // An await that must wait while the runtime's only thread is free.
            let started = Instant::now();
            let slow = ctx.call_async(sleep_ms, (200,));
            let ticker = async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Instant::now()
            };
            let (slow, ticked) = tokio::join!(slow, ticker);
            ensure!(slow? == 200);
            ensure!(
                ticked - started < Duration::from_millis(190),
                "the await blocked the runtime"
            );
            Ok(())
        };
        tokio::time::timeout(Duration::from_secs(20), work).await?
    })
}

pub fn call_no_reply_runs_in_order(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    for v in 1..=50 {
        ctx.call_no_reply(set_value, (v,))?;
    }
    ensure!(ctx.call(get_value, ())? == 50);
    Ok(())
}

pub fn call_timeout_then_context_still_works(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let started = Instant::now();
    match ctx.call_timeout(sleep_ms, (1500,), Duration::from_millis(200)) {
        Err(Error::Timeout(_)) => {}
        other => bail!("expected a timeout, got {other:?}"),
    }
    let waited = started.elapsed();
    ensure!(
        waited >= Duration::from_millis(200) && waited < Duration::from_millis(1200),
        "waited {waited:?}"
    );
    // The late reply goes to a handle nobody listens on any more; the next call
    // (queued behind the sleep) still gets its own answer.
    ensure!(ctx.call_timeout(add, (1, 1), Duration::from_secs(10))? == 2);
    ensure!(!ctx.is_disconnected());
    Ok(())
}

pub fn many_pipelined_calls(router: &Router) -> Result<()> {
    let a = local(router)?;
    let b = local(router)?;
    let n = 3000u64;
    let pending: Vec<_> = (0..n)
        .map(|i| {
            let ctx = if i % 2 == 0 { &a } else { &b };
            ctx.call_async(add, (i, 1000))
        })
        .collect();
    // Collect in reverse, so replies have to wait in their latches.
    for (i, p) in pending.into_iter().enumerate().rev() {
        let got = p.get_timeout(Duration::from_secs(30))?;
        ensure!(got == i as u64 + 1000, "call {i} returned {got}");
    }
    Ok(())
}

pub fn call_chain_fails_after_first_error_and_resets(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    ctx.call(set_value, (1,))?;
    let chain = ctx.chain();
    chain.call_no_reply(fail_with, ("the first error".into(),))?;
    chain.call_no_reply(set_value, (99,))?; // must be skipped
    match chain.call(add, (1, 2)) {
        Err(Error::Call(e)) => {
            ensure!(e.kind == CallErrorKind::ChainFailed, "kind {:?}", e.kind);
            ensure!(
                e.message.contains("the first error"),
                "message {:?}",
                e.message
            );
            ensure!(e.context == ctx.name(), "context {:?}", e.context);
        }
        other => bail!("expected ChainFailed, got {other:?}"),
    }
    ensure!(
        ctx.call(get_value, ())? == 1,
        "a call after the failure ran"
    );
    // Other chains and plain calls are not affected.
    ensure!(ctx.chain().call(add, (2, 2))? == 4);
    ensure!(ctx.call(add, (3, 3))? == 6);
    chain.reset()?;
    ensure!(chain.call(add, (1, 2))? == 3);
    chain.call_no_reply(set_value, (7,))?;
    ensure!(chain.call(get_value, ())? == 7);
    Ok(())
}

pub fn context_channel_streams_values(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let (tx, rx) = ctx.channel::<u64>();
    let done = ctx.call_async(squares, (1000, tx));
    let mut got = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(v) => got.push(v),
            Err(Error::ChannelClosed(_)) => break,
            Err(e) => bail!("after {} values: {e}", got.len()),
        }
    }
    done.get()?;
    ensure!(got.len() == 1000, "got {} values", got.len());
    ensure!(got.iter().enumerate().all(|(i, &v)| v == (i * i) as u64));
    // The same through the iterator.
    let (tx, rx) = ctx.channel::<u64>();
    ctx.call_no_reply(squares, (5, tx))?;
    ensure!(rx.iter().collect::<Vec<_>>() == [0, 1, 4, 9, 16]);
    Ok(())
}

pub fn router_channel_streams_values(router: &Router) -> Result<()> {
    let a = local(router)?;
    let b = local(router)?;
    let (tx, rx) = router.channel::<u64>();
    // Two producers on one receiver.
    a.call_no_reply(squares, (10, tx.clone()))?;
    b.call_no_reply(squares, (10, tx))?;
    let mut got = Vec::new();
    let mut closed = 0;
    while closed < 2 {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(v) => got.push(v),
            Err(Error::ChannelClosed(_)) => closed += 1,
            Err(e) => bail!("after {} values: {e}", got.len()),
        }
    }
    got.sort_unstable();
    let mut want: Vec<u64> = (0..10).flat_map(|i| [i * i, i * i]).collect();
    want.sort_unstable();
    ensure!(got == want, "got {got:?}");
    Ok(())
}

pub fn blob_bulk_chunks(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let (tx, rx) = ctx.channel::<Blob>();
    let n = 48u32;
    let size = 1024 * 1024u32;
    let done = ctx.call_async(send_chunks, (n, size, tx));
    let mut count = 0u32;
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(chunk) => {
                ensure!(
                    chunk.len() == size as usize,
                    "chunk {count} has {} bytes",
                    chunk.len()
                );
                ensure!(
                    chunk.iter().all(|&b| b == count as u8),
                    "chunk {count} corrupt"
                );
                count += 1;
            }
            Err(Error::ChannelClosed(_)) => break,
            Err(e) => bail!("after {count} chunks: {e}"),
        }
    }
    done.get()?;
    ensure!(count == n, "got {count} chunks");
    Ok(())
}

pub fn select_over_two_receivers(router: &Router) -> Result<()> {
    let a = local(router)?;
    let b = local(router)?;
    let (txa, rxa) = a.channel::<String>();
    let (txb, rxb) = b.channel::<String>();
    let mut select = Select::new();
    let _ia = select.add(&rxa)?;
    let ib = select.add(&rxb)?;
    match select.wait_timeout(Duration::from_millis(100)) {
        Err(Error::Timeout(_)) => {}
        other => bail!("expected a timeout on an empty select, got {other:?}"),
    }
    a.call_no_reply(send_after, (400, "slow".into(), txa))?;
    b.call_no_reply(send_after, (0, "fast".into(), txb))?;
    let first = select.wait_timeout(Duration::from_secs(10))?;
    ensure!(first == ib, "first ready was {first}");
    ensure!(rxb.recv()? == "fast");
    // b has dropped its sender, so rxb ends, and an ended receiver is ready
    // (its recv returns at once): wait for the other one alone.
    ensure!(matches!(
        rxb.recv_timeout(Duration::from_secs(10)),
        Err(Error::ChannelClosed(_))
    ));
    drop(select);
    let mut select = Select::new();
    let ia = select.add(&rxa)?;
    ensure!(select.ready().is_none());
    let second = select.wait_timeout(Duration::from_secs(10))?;
    ensure!(second == ia, "second ready was {second}");
    ensure!(rxa.recv()? == "slow");
    Ok(())
}

pub fn calls_from_many_threads(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let ctx: &mitogen::Context = &ctx;
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..8u64)
            .map(|t| {
                s.spawn(move || -> Result<()> {
                    for i in 0..200u64 {
                        let n = t * 1000 + i;
                        if i % 2 == 0 {
                            ensure!(ctx.call(add, (n, 1))? == n + 1);
                        } else {
                            let p = ctx.call_async(add, (n, 2));
                            ensure!(p.get_timeout(Duration::from_secs(30))? == n + 2);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a worker panicked"))??;
        }
        Ok(())
    })
}

pub fn select_over_pending_calls(router: &Router) -> Result<()> {
    let ctx_a = local(router)?;
    let ctx_b = local(router)?;
    let slow = ctx_a.call_async(sleep_ms, (300,));
    let fast = ctx_b.call_async(sleep_ms, (10,));
    let mut select = Select::new();
    select.add(&slow)?;
    let ifast = select.add(&fast)?;
    ensure!(select.wait_timeout(Duration::from_secs(10))? == ifast);
    drop(select);
    ensure!(fast.get()? == 10 && slow.get()? == 300);
    Ok(())
}

crate::tests! {
    typed_call,
    call_async_blocking,
    call_async_awaited_under_tokio,
    call_no_reply_runs_in_order,
    call_timeout_then_context_still_works,
    many_pipelined_calls,
    call_chain_fails_after_first_error_and_resets,
    context_channel_streams_values,
    router_channel_streams_values,
    blob_bulk_chunks,
    select_over_two_receivers,
    select_over_pending_calls,
    calls_from_many_threads,
}
