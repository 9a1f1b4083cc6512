//! A 1 GiB file through `local/local`, both ways, with every process's
//! memory measured while it moves.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use mitogen::Router;

use super::{pattern, Scratch};

/// A `/proc/PID/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

const GIB: u64 = 1 << 30;
/// The bound the issue sets for every process, 4 GiB or 1 GiB.
const BOUND_KIB: u64 = 64 * 1024;

/// Pushes and fetches a 1 GiB file through an intermediate. The target and
/// the intermediate (fresh processes) peak under 64 MiB resident
/// (`VmHWM`); this process (the test binary, already large) grows by
/// under 64 MiB while it sends and receives (`VmRSS` sampled every 5 ms).
/// The copies are whole (their hash is checked on arrival, and compared here).
pub fn one_gib_with_bounded_memory(router: &Router) -> Result<()> {
    let s = Scratch::new("large")?;
    let src = s.join("src");
    {
        let block = pattern(1 << 20);
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src)?);
        for i in 0..(GIB >> 20) {
            let mut b = block.clone();
            b[0] = i as u8;
            f.write_all(&b)?;
        }
        f.flush()?;
    }
    let before: Vec<u32> = crate::util::child_processes()
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let ctx = router.connect("local/local")?;
    let hop = crate::util::child_processes()
        .into_iter()
        .map(|(p, _)| p)
        .find(|p| !before.contains(p))
        .context("no intermediate")?;
    let target = ctx.call(crate::calls::pid, ())?;
    let me = std::process::id();
    let base = status_kib(me, "VmRSS:").context("own VmRSS")?;
    let peak = Arc::new(AtomicU64::new(base));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(r) = status_kib(me, "VmRSS:") {
                    peak.fetch_max(r, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let pushed = ctx.push(&src, s.join("pushed"));
    let fetched = pushed
        .as_ref()
        .ok()
        .map(|_| ctx.fetch(s.join("pushed"), s.join("fetched")));
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let (t_push, t_fetch) = (pushed?, fetched.context("no fetch")??);
    ensure!(
        t_push.bytes == GIB && t_fetch.bytes == GIB,
        "{t_push:?} {t_fetch:?}"
    );
    let grew = peak.load(Ordering::Relaxed).saturating_sub(base);
    let hop_hwm = status_kib(hop, "VmHWM:").context("intermediate VmHWM")?;
    let target_hwm = status_kib(target, "VmHWM:").context("target VmHWM")?;
    tracing::info!(
        push = ?t_push.elapsed, fetch = ?t_fetch.elapsed, grew_kib = grew, hop_hwm, target_hwm,
        "1 GiB through local/local"
    );
    ensure!(grew < BOUND_KIB, "this process grew by {grew} KiB");
    ensure!(
        hop_hwm < BOUND_KIB,
        "the intermediate peaked at {hop_hwm} KiB"
    );
    ensure!(
        target_hwm < BOUND_KIB,
        "the target peaked at {target_hwm} KiB"
    );
    let hash = |p: &std::path::Path| -> Result<blake3::Hash> {
        let mut h = blake3::Hasher::new();
        h.update_reader(std::fs::File::open(p)?)?;
        Ok(h.finalize())
    };
    let want = hash(&src)?;
    ensure!(
        hash(&s.join("pushed"))? == want && hash(&s.join("fetched"))? == want,
        "copies differ"
    );
    ctx.shutdown()?;
    Ok(())
}

crate::tests! {
    one_gib_with_bounded_memory => 300,
}
