//! `mitogen bench`: the figures of the speed table, measured the same
//! way as `benches/python/bench_mitogen.py` measures Python Mitogen, so the two
//! can be compared key by key (`benches/compare.py`).

mod remote;

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use mitogen::builtins::{noop, rss_kib};
use mitogen::{Blob, Context, Router, Target};
use serde::Serialize;

use crate::args::BenchArgs;

/// One mebibyte: the chunk size of the throughput test.
const MIB: u32 = 1024 * 1024;

/// Generous per-operation limits (the Python side's): a healthy run stays far
/// below them; they turn a wedged child into an error instead of a hang.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const CHUNK_TIMEOUT: Duration = Duration::from_secs(60);

/// The result of `mitogen bench`: every figure is a median over repetitions.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchReport {
    /// Start a new context and get its first no-op call's result (warm master).
    pub connect_ms: f64,
    /// One sequential no-op call.
    pub rtt_us: f64,
    /// No-op calls per second when many are issued at once, then collected.
    pub pipelined_calls_per_s: f64,
    /// MiB per second streamed child to master in 1 MiB chunks.
    pub throughput_mib_s: f64,
    /// The child's VmRSS in KiB after the rtt and pipelined calls, before
    /// streaming.
    pub child_rss_kib: u64,
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

fn connect(router: &Router, target: &Target) -> anyhow::Result<Context> {
    router
        .connect(target)
        .with_context(|| format!("connecting {target}"))
}

fn call_noop(ctx: &Context) -> anyhow::Result<()> {
    ctx.call_timeout(noop, (), CALL_TIMEOUT)
        .with_context(|| format!("calling noop in {}", ctx.name()))
}

fn measure_connect_ms(router: &Router, target: &Target, reps: usize) -> anyhow::Result<f64> {
    // A first context warms the master (executable pages, broker, allocator)
    // before timing starts.
    let warm = connect(router, target)?;
    call_noop(&warm)?;
    warm.shutdown()?;

    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t0 = Instant::now();
        let ctx = connect(router, target)?;
        call_noop(&ctx)?;
        samples.push(t0.elapsed().as_secs_f64() * 1e3);
        ctx.shutdown()?;
    }
    Ok(median(samples))
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

fn measure_throughput(ctx: &Context, mib: u32, runs: usize) -> anyhow::Result<f64> {
    let expected = u64::from(mib) * u64::from(MIB);
    let mut rates = Vec::with_capacity(runs);
    for _ in 0..runs {
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
        rates.push(f64::from(mib) / elapsed);
    }
    Ok(median(rates))
}

/// Runs every measurement against `args.target`.
pub fn run(router: &Router, args: &BenchArgs) -> anyhow::Result<BenchReport> {
    let plan = Plan::new(args.quick, args.mib);
    let target = &args.target;
    let connect_ms = measure_connect_ms(router, target, plan.reps)?;

    let ctx = connect(router, target)?;
    let measured = (|| {
        let rtt_us = measure_rtt_us(&ctx, plan.calls, plan.warmup)?;
        let pipelined = measure_pipelined(&ctx, plan.pipeline, plan.pipeline_runs)?;
        // Taken before streaming so it shows a context that has served calls,
        // not one still holding megabyte buffers it has freed.
        let rss = ctx
            .call_timeout(rss_kib, (), CALL_TIMEOUT)
            .context("reading the child's VmRSS")?;
        let throughput = measure_throughput(&ctx, plan.mib, plan.throughput_runs)?;
        Ok::<_, anyhow::Error>(BenchReport {
            connect_ms: round(connect_ms, 3),
            rtt_us: round(rtt_us, 2),
            pipelined_calls_per_s: round(pipelined, 1),
            throughput_mib_s: round(throughput, 1),
            child_rss_kib: rss,
        })
    })();
    ctx.shutdown()?;
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
