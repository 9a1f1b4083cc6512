//! `mitogen bench`: the figures of the speed table, measured the same
//! way as `benches/python/bench_mitogen.py` measures Python Mitogen, so the two
//! can be compared key by key (`benches/compare.py`).

pub mod chain;
pub mod container;
mod remote;
pub mod ssh;
pub mod sudo;

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use mitogen::builtins::{noop, rss_kib};
use mitogen::{Blob, ConnectOptions, Context, Router, Target};
use serde::Serialize;

use crate::args::BenchArgs;
use chain::ChainFloor;
use container::ContainerFloor;
use ssh::SshFloor;
use sudo::SudoFloor;

/// One mebibyte: the chunk size of the throughput test.
const MIB: u32 = 1024 * 1024;

/// Generous per-operation limits (the Python side's): a healthy run stays far
/// below them; they turn a wedged child into an error instead of a hang.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const CHUNK_TIMEOUT: Duration = Duration::from_secs(60);

/// The result of `mitogen bench`: every figure is a median over repetitions.
/// The `Option` fields exist for ssh targets only and are left out of the
/// JSON otherwise, so a local bench has exactly the Python script's keys.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchReport {
    /// Start a new context and get its first no-op call's result (warm
    /// master; for ssh, the program already in the remote cache).
    pub connect_ms: f64,
    /// `connect_ms` with the remote cache emptied before each sample.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_cold_ms: Option<f64>,
    /// `ssh HOST true` with the same options, interleaved with the connects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_floor_ms: Option<f64>,
    /// `sudo -n -u USER true`, interleaved with the connects (targets that
    /// end with a sudo hop on this machine); for a chain of two or more ssh
    /// and sudo hops, the sum of every hop's floor (`ssh HOST true`, `sudo -n
    /// -u USER true`), each run here, interleaved likewise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor_ms: Option<f64>,
    /// One sequential no-op call.
    pub rtt_us: f64,
    /// No-op calls per second when many are issued at once, then collected.
    pub pipelined_calls_per_s: f64,
    /// MiB per second streamed child to master in 1 MiB chunks.
    pub throughput_mib_s: f64,
    /// MiB per second `ssh HOST 'cat > /dev/null'` takes in (master to
    /// remote), same MiB, interleaved with the throughput runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cat_mib_s: Option<f64>,
    /// MiB per second plain ssh delivers from the remote to the master (the
    /// streaming benchmark's direction), interleaved likewise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_mib_s: Option<f64>,
    /// The child's VmRSS in KiB after the rtt and pipelined calls, before
    /// streaming.
    pub child_rss_kib: u64,
    /// With `--cpu`: CPU milliseconds per GiB streamed, of this process and
    /// of every hop's context in order (the measured context last), over all
    /// the throughput runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_ms_per_gib: Option<Vec<f64>>,
}

/// How much work each measurement does; the numbers match the Python script's.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Fresh contexts timed for `connect_ms`.
    reps: usize,
    /// Sequential calls timed for `rtt_us`, after `warmup` untimed ones.
    calls: usize,
    warmup: usize,
    /// Calls in flight at once for `pipelined_calls_per_s`, and how many runs.
    pipeline: usize,
    pipeline_runs: usize,
    /// MiB per throughput run, and how many runs.
    mib: u32,
    throughput_runs: usize,
}

impl Plan {
    fn new(quick: bool, mib: u32) -> Plan {
        if quick {
            Plan {
                reps: 3,
                calls: 500,
                warmup: 50,
                pipeline: 5000,
                pipeline_runs: 2,
                mib,
                throughput_runs: 1,
            }
        } else {
            Plan {
                reps: 10,
                calls: 2000,
                warmup: 100,
                pipeline: 5000,
                pipeline_runs: 5,
                mib,
                throughput_runs: 3,
            }
        }
    }
}

/// The median (the mean of the middle two for an even count), as Python's
/// `statistics.median`.
fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty(), "median of nothing");
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Rounds to `places` decimals, as the Python script does, so both print
/// comparable figures.
fn round(x: f64, places: i32) -> f64 {
    let m = 10f64.powi(places);
    (x * m).round() / m
}

/// The contexts of every hop of a target, the target's own last.
struct Chain(Vec<Context>);

impl Chain {
    /// The measured context: the target's last hop.
    fn last(&self) -> &Context {
        self.0.last().expect("a chain has at least one hop")
    }

    /// CPU microseconds used so far by this process and by every hop's
    /// context, in that order.
    fn cpu_us(&self) -> anyhow::Result<Vec<u64>> {
        let mut all = vec![remote::process_cpu_us()];
        for ctx in &self.0 {
            let t = ctx
                .call_timeout(remote::cpu_time_us, (), CALL_TIMEOUT)
                .with_context(|| format!("reading the CPU time of {}", ctx.name()))?;
            all.push(t);
        }
        Ok(all)
    }

    /// Shuts every hop down, innermost first, so that no hop of a finished
    /// sample stays up while later samples are timed.
    fn shutdown(&self) -> anyhow::Result<()> {
        for ctx in self.0.iter().rev() {
            ctx.shutdown()
                .with_context(|| format!("shutting down {}", ctx.name()))?;
        }
        Ok(())
    }
}

fn connect(router: &Router, target: &Target, options: &ConnectOptions) -> anyhow::Result<Chain> {
    router
        .connect_chain_with(target, options)
        .map(Chain)
        .with_context(|| format!("connecting {target}"))
}

fn call_noop(ctx: &Context) -> anyhow::Result<()> {
    ctx.call_timeout(noop, (), CALL_TIMEOUT)
        .with_context(|| format!("calling noop in {}", ctx.name()))
}

/// Milliseconds from starting to connect until the first no-op call's result.
fn connect_sample(
    router: &Router,
    target: &Target,
    options: &ConnectOptions,
) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let chain = connect(router, target, options)?;
    let called = call_noop(chain.last());
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    chain.shutdown()?;
    called?;
    Ok(ms)
}

/// Attempts at a cold sample before giving up: another program of the same
/// remote user may refill a shared cache directory between the emptying and
/// the connect, and such a sample is not cold.
const COLD_ATTEMPTS: usize = 3;

/// A connect sample that uploaded the program (checked, since a sample that
/// found it cached would pass for an impossibly fast cold connect).
fn cold_sample(
    router: &Router,
    target: &Target,
    options: &ConnectOptions,
    floor: &SshFloor,
) -> anyhow::Result<f64> {
    for _ in 0..COLD_ATTEMPTS {
        floor.clear_cache()?;
        let uploaded = router.uploaded_bytes();
        let ms = connect_sample(router, target, options)?;
        if router.uploaded_bytes() > uploaded {
            return Ok(ms);
        }
    }
    bail!(
        "{COLD_ATTEMPTS} connects right after emptying the remote cache uploaded nothing: \
         something else keeps the program cached there"
    )
}

/// The floor reported as `floor_ms`: a sudo target's, a chain's, or a
/// container hop's (`docker exec … C true`).
enum TargetFloor {
    Sudo(SudoFloor),
    Chain(ChainFloor),
    Container(ContainerFloor),
}

impl TargetFloor {
    fn for_target(target: &Target, options: &ConnectOptions) -> Option<TargetFloor> {
        SudoFloor::for_target(target)
            .map(TargetFloor::Sudo)
            .or_else(|| ChainFloor::for_target(target, options).map(TargetFloor::Chain))
            .or_else(|| ContainerFloor::for_target(target).map(TargetFloor::Container))
    }

    fn true_ms(&self) -> anyhow::Result<f64> {
        match self {
            TargetFloor::Sudo(f) => f.true_ms(),
            TargetFloor::Chain(f) => f.true_ms(),
            TargetFloor::Container(f) => f.true_ms(),
        }
    }
}

/// The connect figures: warm always; cold and the ssh floor for single-hop
/// ssh targets; `floor_ms` for sudo targets, chains of ssh and sudo hops and
/// one container hop.
struct ConnectFigures {
    warm_ms: f64,
    cold_ms: Option<f64>,
    floor_ms: Option<f64>,
    target_floor_ms: Option<f64>,
}

fn measure_connect(
    router: &Router,
    target: &Target,
    options: &ConnectOptions,
    floor: Option<&SshFloor>,
    target_floor: Option<&TargetFloor>,
    reps: usize,
) -> anyhow::Result<ConnectFigures> {
    // A first context warms the master (executable pages, broker, allocator)
    // and, for ssh, fills the remote cache (of every hop of a chain), before
    // timing starts.
    connect_sample(router, target, options)?;

    let (mut warm, mut cold, mut floors, mut target_floors) = (vec![], vec![], vec![], vec![]);
    for _ in 0..reps {
        if let Some(f) = target_floor {
            // One floor sample (for a chain, one of each hop's) before each
            // connect sample, for the same reason as ssh's below.
            target_floors.push(f.true_ms()?);
        }
        if let Some(floor) = floor {
            // Interleaved, so that drift in the machine's or the network's
            // state affects ssh alone and mitogen over ssh alike.
            floors.push(floor.true_ms()?);
            cold.push(cold_sample(router, target, options, floor)?);
        }
        warm.push(connect_sample(router, target, options)?);
    }
    let opt_median = |v: Vec<f64>| (!v.is_empty()).then(|| median(v));
    Ok(ConnectFigures {
        warm_ms: median(warm),
        cold_ms: opt_median(cold),
        floor_ms: opt_median(floors),
        target_floor_ms: opt_median(target_floors),
    })
}

fn measure_rtt_us(ctx: &Context, calls: usize, warmup: usize) -> anyhow::Result<f64> {
    for _ in 0..warmup {
        call_noop(ctx)?;
    }
    // Per-call samples: the median discards scheduler noise that a mean over
    // one long loop would absorb.
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t0 = Instant::now();
        call_noop(ctx)?;
        samples.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    Ok(median(samples))
}

fn measure_pipelined(ctx: &Context, calls: usize, runs: usize) -> anyhow::Result<f64> {
    let mut rates = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        let pending: Vec<_> = (0..calls).map(|_| ctx.call_async(noop, ())).collect();
        for p in pending {
            p.get_timeout(CALL_TIMEOUT)
                .context("collecting a pipelined call")?;
        }
        rates.push(calls as f64 / t0.elapsed().as_secs_f64());
    }
    Ok(median(rates))
}

/// MiB per second of one streaming run of `mib` 1 MiB chunks.
fn throughput_sample(ctx: &Context, mib: u32) -> anyhow::Result<f64> {
    let expected = u64::from(mib) * u64::from(MIB);
    let (tx, rx) = ctx.channel::<Blob>();
    let t0 = Instant::now();
    let call = ctx.call_async(remote::stream_chunks, (tx, mib, MIB));
    let mut received = 0u64;
    loop {
        match rx.recv_timeout(CHUNK_TIMEOUT) {
            Ok(chunk) => received += chunk.len() as u64,
            Err(mitogen::Error::ChannelClosed(_)) => break,
            Err(e) => return Err(e).context("receiving streamed chunks"),
        }
    }
    let pid = call
        .get_timeout(CALL_TIMEOUT)
        .context("finishing the stream")?;
    let elapsed = t0.elapsed().as_secs_f64();
    if received != expected {
        bail!("received {received} bytes from pid {pid}, expected {expected}");
    }
    Ok(f64::from(mib) / elapsed)
}

/// The streaming figures: ours always; plain ssh's for ssh targets.
struct ThroughputFigures {
    ours: f64,
    cat: Option<f64>,
    pull: Option<f64>,
}

/// Median streaming rate, and for ssh targets the median rates of plain ssh
/// moving the same amount each way, one run of each alternately.
fn measure_throughput(
    ctx: &Context,
    floor: Option<&SshFloor>,
    mib: u32,
    runs: usize,
) -> anyhow::Result<ThroughputFigures> {
    let (mut ours, mut cat, mut pull) = (vec![], vec![], vec![]);
    for _ in 0..runs {
        ours.push(throughput_sample(ctx, mib)?);
        if let Some(floor) = floor {
            cat.push(floor.cat_mib_s(mib).context("timing ssh cat")?);
            pull.push(floor.pull_mib_s(mib).context("timing ssh dd")?);
        }
    }
    let opt_median = |v: Vec<f64>| (!v.is_empty()).then(|| median(v));
    Ok(ThroughputFigures {
        ours: median(ours),
        cat: opt_median(cat),
        pull: opt_median(pull),
    })
}

/// Runs every measurement against `args.target`.
pub fn run(router: &Router, args: &BenchArgs) -> anyhow::Result<BenchReport> {
    let plan = Plan::new(args.quick, args.mib);
    let target = &args.target;
    let options = args.connect.connect_options(&[target])?;
    let floor = SshFloor::for_target(target, &options);
    let target_floor = TargetFloor::for_target(target, &options);
    let connect_figures = measure_connect(
        router,
        target,
        &options,
        floor.as_ref(),
        target_floor.as_ref(),
        plan.reps,
    )?;

    let chain = connect(router, target, &options)?;
    let ctx = chain.last();
    let measured = (|| {
        let rtt_us = measure_rtt_us(ctx, plan.calls, plan.warmup)?;
        let pipelined = measure_pipelined(ctx, plan.pipeline, plan.pipeline_runs)?;
        // Taken before streaming so it shows a context that has served calls,
        // not one still holding megabyte buffers it has freed.
        let rss = ctx
            .call_timeout(rss_kib, (), CALL_TIMEOUT)
            .context("reading the child's VmRSS")?;
        let cpu_before = args.cpu.then(|| chain.cpu_us()).transpose()?;
        let throughput = measure_throughput(ctx, floor.as_ref(), plan.mib, plan.throughput_runs)?;
        let cpu_ms_per_gib = match cpu_before {
            Some(before) => {
                let gib = f64::from(plan.mib) * plan.throughput_runs as f64 / 1024.0;
                let after = chain.cpu_us()?;
                Some(
                    before
                        .iter()
                        .zip(&after)
                        .map(|(b, a)| round(a.saturating_sub(*b) as f64 / 1000.0 / gib, 1))
                        .collect(),
                )
            }
            None => None,
        };
        Ok::<_, anyhow::Error>(BenchReport {
            connect_ms: round(connect_figures.warm_ms, 3),
            connect_cold_ms: connect_figures.cold_ms.map(|v| round(v, 3)),
            ssh_floor_ms: connect_figures.floor_ms.map(|v| round(v, 3)),
            floor_ms: connect_figures.target_floor_ms.map(|v| round(v, 3)),
            rtt_us: round(rtt_us, 2),
            pipelined_calls_per_s: round(pipelined, 1),
            throughput_mib_s: round(throughput.ours, 1),
            cat_mib_s: throughput.cat.map(|v| round(v, 1)),
            pull_mib_s: throughput.pull.map(|v| round(v, 1)),
            child_rss_kib: rss,
            cpu_ms_per_gib,
        })
    })();
    chain.shutdown()?;
    measured
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_matches_pythons() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(round(1.23456, 2), 1.23);
    }
}
