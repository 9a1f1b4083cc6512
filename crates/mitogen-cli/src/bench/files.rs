//! `mitogen bench --files` / `--files-only`: the file-transfer figures. A file
//! of `--file-mib` MiB pushed to the target and fetched back, a tree of
//! `--tree-files` files of 1 KiB pushed, then pushed again unchanged, and the
//! peak memory of every process on the path: the keys `benches/files.py` sets
//! beside Python Mitogen's FileService, scp, sftp and rsync.
//!
//! Everything is made in fresh temporary directories, here and in the target
//! (its `TMPDIR`), and removed at the end, also when a step fails. Every timed
//! transfer starts after `sync(2)` on both sides, so that none pays for the
//! dirty pages the one before left behind.

use std::fs::{self, DirBuilder, File};
use std::io::{BufWriter, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use mitogen::files::FileOptions;
use mitogen::{Context, Router};
use serde::Serialize;

use super::{connect, median, round, Chain};
use crate::args::BenchArgs;

/// Generous limit for the small calls around the transfers.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Files per directory of the tree: a tree, not one flat directory.
const PER_DIR: usize = 100;

const MIB: usize = 1 << 20;

/// A little more than the library's stamp margin (2 s, docs/files.md).
const STAMP_MARGIN: Duration = Duration::from_millis(2_100);

/// The file-transfer figures; medians over `--file-runs` runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FilesReport {
    /// MiB per second of pushing the `--file-mib` MiB file into the target
    /// (from the call until the file is in place, verified).
    pub push_mib_s: f64,
    /// MiB per second of fetching that copy back from the target.
    pub fetch_mib_s: f64,
    /// Files per second of pushing the tree of `--tree-files` 1 KiB files
    /// to a place where it is not.
    pub small_files_per_s: f64,
    /// Milliseconds of pushing the same tree again, unchanged.
    pub repush_ms: f64,
    /// Files that second push left alone (every file, when the skip works).
    pub repush_skipped: u64,
    /// Milliseconds of pushing the unchanged tree once more, after a push
    /// more than 2 s after the first has checked it: both sides know every
    /// file's stamp (docs/files.md, "unchanged"), and read none.
    pub repush_warm_ms: f64,
    /// Peak resident set (`VmHWM`, KiB) after all of it: this process, then
    /// every hop's context, the target last.
    pub peak_rss_kib: Vec<u64>,
    /// With `--cpu`: CPU milliseconds per GiB pushed, of this process and of
    /// every hop's context in order, over all the pushes of the large file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_cpu_ms_per_gib: Option<Vec<f64>>,
    /// With `--cpu`: the same for the fetches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fetch_cpu_ms_per_gib: Option<Vec<f64>>,
}

/// What the file figures are taken with.
#[derive(Clone, Debug)]
pub struct FilesPlan {
    /// MiB of the large file.
    pub mib: u32,
    /// An existing file to push instead of one made for the run.
    pub source: Option<PathBuf>,
    /// Files of 1 KiB in the tree.
    pub tree_files: usize,
    /// Timed runs of each transfer.
    pub runs: usize,
    /// Whether to add the CPU time of every process on the path.
    pub cpu: bool,
    /// `--file-window` and `--file-chunk` (MiB, KiB), when given: the
    /// transfers' options; the library's defaults otherwise.
    pub window_mib: Option<u32>,
    pub chunk_kib: Option<u32>,
    /// `--keep-trees`: leave the trees in place at the end.
    pub keep_trees: bool,
}

impl FilesPlan {
    fn options(&self) -> FileOptions {
        let mut o = FileOptions::default();
        // Counted as `mitogen copy` and `fetch` count for their progress
        // line, so that the figures are theirs.
        o.progress = Some(mitogen::files::Progress::new());
        if let Some(w) = self.window_mib {
            o.window = w as usize * MIB;
        }
        if let Some(c) = self.chunk_kib {
            o.chunk_size = c as usize * 1024;
        }
        o
    }
}

impl FilesPlan {
    /// The plan `args` ask for (`--quick`: one run unless `--file-runs`).
    pub fn from_args(args: &BenchArgs) -> FilesPlan {
        FilesPlan {
            mib: args.file_mib,
            source: args.file_from.clone(),
            tree_files: args.tree_files as usize,
            runs: args
                .file_runs
                .map_or(if args.quick { 1 } else { 3 }, |n| n as usize),
            cpu: args.cpu,
            window_mib: args.file_window,
            chunk_kib: args.file_chunk,
            keep_trees: args.keep_trees,
        }
    }
}

/// A fresh owner-only directory under the temporary directory of the
/// process this runs in; its path.
fn make_scratch() -> std::io::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "mitogen-bench-files-{}-{nanos:x}",
        std::process::id()
    ));
    DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

/// Removes `path`, a file or a tree; nothing there is not an error.
fn remove(path: &Path) -> std::io::Result<()> {
    let r = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// This process's peak resident set, `VmHWM` of `/proc/self/status`, in KiB.
fn own_peak_rss_kib() -> std::io::Result<u64> {
    let status = fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| std::io::Error::other("no VmHWM in /proc/self/status"))
}

/// Makes a fresh scratch directory in the target; its path.
#[mitogen::remote]
pub fn scratch_dir() -> std::io::Result<PathBuf> {
    make_scratch()
}

/// Removes a file or a tree in the target.
#[mitogen::remote]
pub fn remove_path(path: PathBuf) -> std::io::Result<()> {
    remove(&path)
}

/// Flushes the target's dirty pages to disk (`sync(2)`).
#[mitogen::remote]
pub fn sync_disks() -> std::io::Result<()> {
    rustix::fs::sync();
    Ok(())
}

/// The target's peak resident set, `VmHWM`, in KiB.
#[mitogen::remote]
pub fn peak_rss_kib() -> std::io::Result<u64> {
    own_peak_rss_kib()
}

/// Bytes no compressor, sparse-file check or block dedup can shorten:
/// xorshift64, every MiB starting with its own index.
struct Pattern(u64);

impl Pattern {
    fn fill(&mut self, buf: &mut [u8]) {
        for word in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            word.copy_from_slice(&self.0.to_le_bytes()[..word.len()]);
        }
    }
}

/// Writes the large source file: `mib` MiB.
fn make_file(path: &Path, mib: u32) -> std::io::Result<()> {
    let mut block = vec![0u8; MIB];
    Pattern(0x9E37_79B9_7F4A_7C15).fill(&mut block);
    let mut f = File::create(path)?;
    for i in 0..u64::from(mib) {
        block[..8].copy_from_slice(&i.to_le_bytes());
        f.write_all(&block)?;
    }
    f.sync_all()
}

/// Writes the tree: `n` files of 1 KiB, [`PER_DIR`] to a directory.
fn make_tree(root: &Path, n: usize) -> std::io::Result<()> {
    let mut pattern = Pattern(0x2545_F491_4F6C_DD1D);
    let mut buf = [0u8; 1024];
    for i in 0..n {
        let dir = root.join(format!("d{:03}", i / PER_DIR));
        if i % PER_DIR == 0 {
            fs::create_dir_all(&dir)?;
        }
        pattern.fill(&mut buf);
        let mut f = BufWriter::new(File::create(dir.join(format!("f{i:05}")))?);
        f.write_all(&buf)?;
        f.flush()?;
    }
    Ok(())
}

/// The two scratch directories of a measurement, removed when it ends
/// however it ends (with `keep_trees`, only the large file made here is:
/// the trees and the directories stay for the caller to remove).
struct Scratch<'a> {
    local: PathBuf,
    remote: Option<PathBuf>,
    ctx: &'a Context,
    keep_trees: bool,
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        if self.keep_trees {
            let _ = remove(&self.local.join("big"));
            return;
        }
        let _ = remove(&self.local);
        if let Some(r) = self.remote.take() {
            let _ = self.ctx.call_timeout(remove_path, (r,), CALL_TIMEOUT);
        }
    }
}

/// CPU microseconds of every process on the path spent in the pushes and
/// in the fetches of the large file, summed over the runs.
#[derive(Default)]
struct CpuSums {
    push: Vec<u64>,
    fetch: Vec<u64>,
}

fn add_cpu(sum: &mut Vec<u64>, before: Option<Vec<u64>>, after: Option<Vec<u64>>) {
    if let (Some(b), Some(a)) = (before, after) {
        sum.resize(a.len(), 0);
        for (s, (b, a)) in sum.iter_mut().zip(b.iter().zip(&a)) {
            *s += a.saturating_sub(*b);
        }
    }
}

/// The file-transfer steps against one context.
struct Bench<'a> {
    chain: &'a Chain,
    ctx: &'a Context,
    scratch: Scratch<'a>,
    plan: FilesPlan,
    /// Bytes of the large file.
    size: u64,
}

impl Bench<'_> {
    fn call_remove(&self, path: &Path) -> anyhow::Result<()> {
        self.ctx
            .call_timeout(remove_path, (path.to_path_buf(),), CALL_TIMEOUT)
            .with_context(|| format!("removing {} in {}", path.display(), self.ctx.name()))
    }

    /// `sync(2)` here and in the target, untimed, before a timed step.
    fn settle(&self) -> anyhow::Result<()> {
        rustix::fs::sync();
        self.ctx
            .call_timeout(sync_disks, (), CALL_TIMEOUT)
            .with_context(|| format!("syncing {}", self.ctx.name()))
    }

    fn remote(&self) -> &Path {
        self.scratch
            .remote
            .as_deref()
            .expect("made before the steps")
    }

    fn cpu_us(&self) -> anyhow::Result<Option<Vec<u64>>> {
        self.plan.cpu.then(|| self.chain.cpu_us()).transpose()
    }

    /// One push and one fetch of the large file: MiB/s of each.
    fn big_file(&self, src: &Path, cpu: &mut CpuSums) -> anyhow::Result<(f64, f64)> {
        let size = self.size;
        let mib = size as f64 / MIB as f64;
        let dst = self.remote().join("big");
        let back = self.scratch.local.join("big.back");
        self.call_remove(&dst)?;
        self.settle()?;
        let c0 = self.cpu_us()?;
        let t0 = Instant::now();
        let pushed = self
            .ctx
            .push_with(src, &dst, &self.plan.options())
            .with_context(|| format!("pushing {} to {}", src.display(), self.ctx.name()))?;
        let push = mib / t0.elapsed().as_secs_f64();
        add_cpu(&mut cpu.push, c0, self.cpu_us()?);
        if pushed.bytes != size {
            bail!("the push moved {} bytes, not {size}", pushed.bytes);
        }
        remove(&back)?;
        self.settle()?;
        let c0 = self.cpu_us()?;
        let t0 = Instant::now();
        self.ctx
            .fetch_with(&dst, &back, &self.plan.options())
            .with_context(|| format!("fetching {} from {}", dst.display(), self.ctx.name()))?;
        let fetch = mib / t0.elapsed().as_secs_f64();
        add_cpu(&mut cpu.fetch, c0, self.cpu_us()?);
        let got = fs::metadata(&back)?.len();
        if got != size {
            bail!("the fetched copy has {got} bytes, not {size}");
        }
        remove(&back)?;
        self.call_remove(&dst)?;
        Ok((push, fetch))
    }

    /// One push of the tree where it is not (`tree-RUN`), then one again,
    /// unchanged: files/s of the first, ms and files skipped of the second.
    ///
    /// Each run's copy stays until the end: ext4 without a journal skips
    /// inodes freed in the last seconds when it allocates one, reading
    /// each one's on-disk record to tell, so creating a tree right after
    /// deleting one costs far more than creating it anew.
    fn tree(&self, src: &Path, run: usize) -> anyhow::Result<(f64, f64, f64, u64)> {
        let n = self.plan.tree_files;
        let dst = self.remote().join(format!("tree-{run}"));
        self.settle()?;
        let t0 = Instant::now();
        let first = self
            .ctx
            .push(src, &dst)
            .with_context(|| format!("pushing the tree to {}", self.ctx.name()))?;
        let per_s = n as f64 / t0.elapsed().as_secs_f64();
        let written = Instant::now();
        if first.files != n as u64 {
            bail!("the tree push moved {} files, not {n}", first.files);
        }
        self.settle()?;
        let t0 = Instant::now();
        let again = self
            .ctx
            .push(src, &dst)
            .with_context(|| format!("pushing the tree again to {}", self.ctx.name()))?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        // Where change times are coarse, a file is vouched for by its stamp
        // only once hashed more than 2 s after its last change: the
        // receiver's copies, just written, are hashed again by a push that
        // late, and then not any more (elsewhere they are known already).
        std::thread::sleep(STAMP_MARGIN.saturating_sub(written.elapsed()));
        self.ctx
            .push(src, &dst)
            .with_context(|| format!("pushing the tree again to {}", self.ctx.name()))?;
        self.settle()?;
        let t0 = Instant::now();
        let warm = self
            .ctx
            .push(src, &dst)
            .with_context(|| format!("pushing the tree again to {}", self.ctx.name()))?;
        let warm_ms = t0.elapsed().as_secs_f64() * 1e3;
        Ok((per_s, ms, warm_ms, again.skipped.min(warm.skipped)))
    }
}

/// Takes the file figures against the last context of `chain`.
pub(super) fn measure(chain: &Chain, plan: FilesPlan) -> anyhow::Result<FilesReport> {
    let ctx = chain.last();
    let local = make_scratch().context("making a temporary directory here")?;
    let mut scratch = Scratch {
        local,
        remote: None,
        ctx,
        keep_trees: plan.keep_trees,
    };
    let remote = ctx
        .call_timeout(scratch_dir, (), CALL_TIMEOUT)
        .with_context(|| format!("making a temporary directory in {}", ctx.name()))?;
    scratch.remote = Some(remote);
    let src = match &plan.source {
        Some(given) => given.clone(),
        None => {
            let made = scratch.local.join("big");
            make_file(&made, plan.mib).context("writing the source file")?;
            made
        }
    };
    let size = fs::metadata(&src)
        .with_context(|| format!("reading {}", src.display()))?
        .len();
    if size == 0 {
        bail!("{} is empty", src.display());
    }
    let tree = scratch.local.join("tree");
    make_tree(&tree, plan.tree_files).context("writing the source tree")?;

    let bench = Bench {
        chain,
        ctx,
        scratch,
        plan: plan.clone(),
        size,
    };
    let (mut push, mut fetch, mut small) = (vec![], vec![], vec![]);
    let (mut repush, mut warm) = (vec![], vec![]);
    let mut skipped = u64::MAX;
    let mut cpu = CpuSums::default();
    for run in 0..plan.runs {
        let (p, f) = bench.big_file(&src, &mut cpu)?;
        push.push(p);
        fetch.push(f);
        let (s, ms, warm_ms, k) = bench.tree(&tree, run)?;
        small.push(s);
        repush.push(ms);
        warm.push(warm_ms);
        // The fewest any run skipped: one that sent files again shows.
        skipped = skipped.min(k);
    }
    let mut peaks = vec![own_peak_rss_kib().context("reading VmHWM here")?];
    for hop in &chain.0 {
        let kib = hop
            .call_timeout(peak_rss_kib, (), CALL_TIMEOUT)
            .with_context(|| format!("reading VmHWM in {}", hop.name()))?;
        peaks.push(kib);
    }
    let gib = size as f64 * plan.runs as f64 / (1u64 << 30) as f64;
    let per_gib = |sum: Vec<u64>| {
        plan.cpu.then(|| {
            sum.iter()
                .map(|us| round(*us as f64 / 1000.0 / gib, 1))
                .collect()
        })
    };
    Ok(FilesReport {
        push_mib_s: round(median(push), 1),
        fetch_mib_s: round(median(fetch), 1),
        small_files_per_s: round(median(small), 1),
        repush_ms: round(median(repush), 3),
        repush_skipped: skipped,
        repush_warm_ms: round(median(warm), 3),
        peak_rss_kib: peaks,
        push_cpu_ms_per_gib: per_gib(cpu.push),
        fetch_cpu_ms_per_gib: per_gib(cpu.fetch),
    })
}

/// `mitogen bench --files-only`: connects to `args.target` and takes the
/// file figures alone.
pub fn run_only(router: &Router, args: &BenchArgs) -> anyhow::Result<FilesReport> {
    let options = args.connect.connect_options(&[&args.target])?;
    let chain = connect(router, &args.target, &options)?;
    let measured = measure(&chain, FilesPlan::from_args(args));
    chain.shutdown()?;
    measured
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_is_neither_zero_nor_repeating() {
        let dir = make_scratch().unwrap();
        let f = dir.join("f");
        make_file(&f, 2).unwrap();
        let data = fs::read(&f).unwrap();
        assert_eq!(data.len(), 2 * MIB);
        assert_ne!(data[..MIB], data[MIB..], "two MiB alike");
        assert!(data.iter().filter(|b| **b == 0).count() < MIB / 64);
        make_tree(&dir.join("t"), 150).unwrap();
        assert_eq!(fs::read_dir(dir.join("t")).unwrap().count(), 2);
        assert_eq!(fs::read(dir.join("t/d001/f00149")).unwrap().len(), 1024);
        remove(&dir).unwrap();
        assert!(!dir.exists());
        remove(&dir).unwrap();
    }
}
