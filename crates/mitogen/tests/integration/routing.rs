//! Calls, channels and shutdown through chains of contexts (local/local/local):
//! every hop is a real process started by the hop before it, and messages
//! travel the tree by context id.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use mitogen::builtins::getpid;
use mitogen::{Blob, Context, Error, Local, Receiver, Router};

use crate::calls::{add, fail_with, send_chunks, squares};
use crate::util::{proc_ppid, proc_state, wait_dead};

/// A chain of contexts, each started by the one before it; shut down deepest
/// first when dropped, so a failing test leaves nothing behind.
pub struct Chain {
    /// The hops, nearest the master first.
    pub hops: Vec<Context>,
}

impl Chain {
    /// Starts `n` local hops named `{tag}-1` … `{tag}-n`.
    pub fn new(router: &Router, tag: &str, n: usize) -> Result<Chain> {
        let mut chain = Chain { hops: Vec::new() };
        for i in 1..=n {
            let method = Local::new().name(format!("{tag}-{i}"));
            let ctx = router
                .start(chain.hops.last(), method)
                .with_context(|| format!("starting hop {i} of {tag}"))?;
            chain.hops.push(ctx);
        }
        Ok(chain)
    }

    /// The deepest hop.
    pub fn leaf(&self) -> &Context {
        self.hops.last().expect("a chain has hops")
    }

    /// The process id of every hop: the first from the master's own record,
    /// deeper ones as each reports it.
    pub fn pids(&self) -> Result<Vec<u32>> {
        self.hops
            .iter()
            .map(|h| match h.pid() {
                Some(p) => Ok(p),
                None => Ok(h.call_timeout(getpid, (), Duration::from_secs(10))?),
            })
            .collect()
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        for h in self.hops.iter().rev() {
            let _ = h.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

/// Every process whose `argv[0]` names a context starting with `prefix`.
pub fn processes_named(prefix: &str) -> Vec<u32> {
    let want = format!("mitogen:{prefix}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let argv0 = c.split(|&b| b == 0).next().unwrap_or_default();
                argv0.starts_with(want.as_bytes())
            })
        })
        .filter(|&pid| !matches!(proc_state(pid), None | Some('Z' | 'X')))
        .collect()
}

/// Receives until the channel closes.
fn drain<T: mitogen::Payload>(rx: &Receiver<T>) -> Result<Vec<T>> {
    let mut got = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(v) => got.push(v),
            Err(Error::ChannelClosed(_)) => return Ok(got),
            Err(e) => bail!("after {} values: {e}", got.len()),
        }
    }
}

pub fn calls_through_chain(router: &Router) -> Result<()> {
    let chain = Chain::new(router, "rt-calls", 3)?;
    for (i, hop) in chain.hops.iter().enumerate() {
        ensure!(hop.call(add, (i as u64, 1))? == i as u64 + 1, "hop {i}");
    }
    // Each hop really is a child of the one before it.
    let pids = chain.pids()?;
    ensure!(proc_ppid(pids[0]) == Some(std::process::id()));
    for w in pids.windows(2) {
        ensure!(
            proc_ppid(w[1]) == Some(w[0]),
            "{} is not a child of {}",
            w[1],
            w[0]
        );
    }
    // Pipelined calls through three hops all come back, in any order of
    // waiting.
    let leaf = chain.leaf();
    let pending: Vec<_> = (0..200u64).map(|i| leaf.call_async(add, (i, i))).collect();
    for (i, p) in pending.into_iter().enumerate().rev() {
        ensure!(p.get_timeout(Duration::from_secs(10))? == 2 * i as u64);
    }
    // An error raised three hops down names the hop it came from.
    match leaf.call(fail_with, ("deep".into(),)) {
        Err(Error::Call(e)) if e.context == leaf.name() && e.message.contains("deep") => {}
        other => bail!("expected a CallError from {:?}, got {other:?}", leaf.name()),
    }
    Ok(())
}

pub fn channels_through_chain(router: &Router) -> Result<()> {
    let chain = Chain::new(router, "rt-chan", 3)?;
    let leaf = chain.leaf();
    let want: Vec<u64> = (0..1000u64).map(|i| i * i).collect();

    // A sender handed three hops down streams back to the master.
    let (tx, rx) = router.channel::<u64>();
    let done = leaf.call_async(squares, (1000, tx));
    ensure!(drain(&rx)? == want, "router channel");
    done.get()?;

    // A channel tied to the leaf.
    let (tx, rx) = leaf.channel::<u64>();
    leaf.call_no_reply(squares, (1000, tx))?;
    ensure!(drain(&rx)? == want, "leaf channel");

    // A channel tied to the first hop, fed by its descendant.
    let (tx, rx) = chain.hops[0].channel::<u64>();
    leaf.call_no_reply(squares, (1000, tx))?;
    ensure!(drain(&rx)? == want, "first hop's channel fed by the leaf");

    // Bulk chunks through every hop arrive whole and in order.
    let (tx, rx) = leaf.channel::<Blob>();
    leaf.call_no_reply(send_chunks, (32, 256 * 1024, tx))?;
    let chunks = drain(&rx)?;
    ensure!(chunks.len() == 32, "{} chunks", chunks.len());
    for (i, c) in chunks.iter().enumerate() {
        ensure!(
            c.len() == 256 * 1024 && c.iter().all(|&b| b == i as u8),
            "chunk {i}"
        );
    }
    Ok(())
}

pub fn shutdown_through_chain(router: &Router) -> Result<()> {
    let chain = Chain::new(router, "rt-shut", 3)?;
    let pids = chain.pids()?;
    // The leaf goes; the hops above it keep serving.
    chain.leaf().shutdown()?;
    ensure!(chain.leaf().is_disconnected(), "leaf not disconnected");
    ensure!(
        wait_dead(pids[2], Duration::from_secs(2)),
        "leaf {} still {:?}",
        pids[2],
        proc_state(pids[2])
    );
    for hop in &chain.hops[..2] {
        ensure!(
            hop.call(add, (1, 1))? == 2,
            "{} stopped serving",
            hop.name()
        );
    }
    match chain
        .leaf()
        .call_timeout(add, (1, 1), Duration::from_secs(5))
    {
        Err(Error::Disconnected { .. }) => {}
        other => bail!("a call to the shut leaf: expected Disconnected, got {other:?}"),
    }
    // The first hop goes: the second, below it, goes with it.
    chain.hops[0].shutdown()?;
    ensure!(
        wait_dead(pids[1], Duration::from_secs(2)),
        "hop 2 ({}) outlived its parent: {:?}",
        pids[1],
        proc_state(pids[1])
    );
    ensure!(
        chain.hops[1].wait_disconnect(Duration::from_secs(2)),
        "the master still thinks hop 2 is connected"
    );
    ensure!(processes_named("rt-shut-").is_empty());
    Ok(())
}

pub fn dropping_router_ends_whole_chain(_: &Router) -> Result<()> {
    let r = Router::builder().build()?;
    let leaf = r.connect("local/local/local")?;
    ensure!(
        leaf.name() == "local/local/local",
        "named {:?}",
        leaf.name()
    );
    ensure!(leaf.call(add, (20, 22))? == 42);
    // The master holds no Context of the intermediates here: find them
    // through the process tree.
    let p3 = leaf.call(getpid, ())?;
    let p2 = proc_ppid(p3).context("leaf has no parent")?;
    let p1 = proc_ppid(p2).context("hop 2 has no parent")?;
    ensure!(proc_ppid(p1) == Some(std::process::id()));
    let started = Instant::now();
    drop(r);
    for pid in [p1, p2, p3] {
        ensure!(
            wait_dead(pid, Duration::from_secs(2)),
            "{pid} still {:?} after the router went",
            proc_state(pid)
        );
    }
    ensure!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    match leaf.call_timeout(add, (1, 1), Duration::from_secs(5)) {
        Err(Error::RouterShutdown | Error::Disconnected { .. }) => Ok(()),
        other => bail!("expected RouterShutdown or Disconnected, got {other:?}"),
    }
}

pub fn connect_chain_returns_every_hop(router: &Router) -> Result<()> {
    let hops =
        router.connect_chain_with("local/local/local", &mitogen::ConnectOptions::default())?;
    let names: Vec<&str> = hops.iter().map(Context::name).collect();
    ensure!(
        names == ["local", "local/local", "local/local/local"],
        "{names:?}"
    );
    let pids = hops
        .iter()
        .map(|h| h.call(getpid, ()))
        .collect::<mitogen::Result<Vec<_>>>()?;
    // Each hop is the parent of the next: the chain, not three siblings.
    ensure!(proc_ppid(pids[0]) == Some(std::process::id()));
    ensure!(proc_ppid(pids[1]) == Some(pids[0]));
    ensure!(proc_ppid(pids[2]) == Some(pids[1]));
    ensure!(hops[2].call(add, (20, 22))? == 42);
    for hop in hops.iter().rev() {
        hop.shutdown()?;
    }
    for pid in pids {
        ensure!(
            wait_dead(pid, Duration::from_secs(2)),
            "{pid} still {:?} after the chain was shut down",
            proc_state(pid)
        );
    }
    Ok(())
}

pub fn two_chains_side_by_side(router: &Router) -> Result<()> {
    // Two subtrees at once: ids and routes do not mix.
    let a = Chain::new(router, "rt-two-a", 2)?;
    let b = Chain::new(router, "rt-two-b", 2)?;
    let (pa, pb) = (a.pids()?, b.pids()?);
    ensure!(pa.iter().all(|p| !pb.contains(p)));
    let calls: Vec<_> = (0..50u64)
        .flat_map(|i| {
            [
                a.leaf().call_async(add, (i, 1)),
                b.leaf().call_async(add, (i, 2)),
            ]
        })
        .collect();
    for (n, c) in calls.into_iter().enumerate() {
        let i = (n / 2) as u64;
        ensure!(c.get()? == i + 1 + (n % 2) as u64);
    }
    ensure!(a.leaf().call(getpid, ())? == pa[1]);
    ensure!(b.leaf().call(getpid, ())? == pb[1]);
    Ok(())
}

crate::tests! {
    calls_through_chain,
    channels_through_chain,
    shutdown_through_chain,
    dropping_router_ends_whole_chain,
    connect_chain_returns_every_hop,
    two_chains_side_by_side,
}
