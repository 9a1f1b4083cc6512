//! `FileOptions::progress`: the counter a caller reads while a push or
//! fetch runs. It must end at exactly the bytes moved (a large file in many
//! frames, a tree of small files sent in batches), move while a large file
//! is under way (not only at its end), stay put when nothing needs moving,
//! and count a fan-out's bytes once, as this process sends them once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{ensure, Result};
use mitogen::files::{push_all, FileOptions, Progress};
use mitogen::Router;

use super::{pattern, sample_tree, Scratch};

/// Options counting on a fresh counter, and the counter.
fn counted() -> (FileOptions, Progress) {
    let p = Progress::new();
    let mut opts = FileOptions::default();
    opts.progress = Some(p.clone());
    (opts, p)
}

/// The content bytes of every regular file below `root`.
fn file_bytes(root: &std::path::Path) -> Result<u64> {
    let mut n = 0;
    for e in super::listing(root)? {
        let m = std::fs::symlink_metadata(root.join(&e))?;
        if m.is_file() {
            n += m.len();
        }
    }
    Ok(n)
}

/// Runs `f` while a thread reads `p` every millisecond; answers what `f`
/// answers and how many values strictly between 0 and `end` were seen.
fn watching<T>(p: &Progress, end: u64, f: impl FnOnce() -> T) -> (T, usize) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let seen = s.spawn(|| {
            let mut seen = std::collections::BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                let b = p.bytes();
                if b > 0 && b < end {
                    seen.insert(b);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            seen.len()
        });
        let r = f();
        stop.store(true, Ordering::Relaxed);
        (r, seen.join().unwrap_or(0))
    })
}

/// A 32 MiB file (128 frames) pushed through `local/local` and fetched
/// back: each counter ends at the size exactly, having moved frame by
/// frame on the way; pushing it again unchanged counts nothing.
pub fn the_counter_follows_a_large_file_frame_by_frame(router: &Router) -> Result<()> {
    let ctx = router.connect("local/local")?;
    let s = Scratch::new("progress-large")?;
    let size = 32 * 1024 * 1024 + 5;
    std::fs::write(s.join("src"), pattern(size))?;
    let (opts, p) = counted();
    let (t, between) = watching(&p, size as u64, || {
        ctx.push_with(s.join("src"), s.join("pushed"), &opts)
    });
    let t = t?;
    ensure!(t.bytes == size as u64, "{t:?}");
    ensure!(
        p.bytes() == size as u64,
        "push counted {} of {size}",
        p.bytes()
    );
    ensure!(
        between >= 2,
        "the push's counter took {between} values between 0 and the end"
    );
    ctx.push_with(s.join("src"), s.join("pushed"), &opts)?;
    ensure!(
        p.bytes() == size as u64,
        "an unchanged push counted {}",
        p.bytes() - size as u64
    );
    let (opts, p) = counted();
    let (t, between) = watching(&p, size as u64, || {
        ctx.fetch_with(s.join("pushed"), s.join("fetched"), &opts)
    });
    let t = t?;
    ensure!(t.bytes == size as u64, "{t:?}");
    ensure!(
        p.bytes() == size as u64,
        "fetch counted {} of {size}",
        p.bytes()
    );
    ensure!(
        between >= 2,
        "the fetch's counter took {between} values between 0 and the end"
    );
    ctx.fetch_with(s.join("pushed"), s.join("fetched"), &opts)?;
    ensure!(p.bytes() == size as u64, "an unchanged fetch counted more");
    Ok(())
}

/// A tree of small files (sent in batches with the listing) and one large
/// one: the counters end at the tree's content bytes, both ways, and an
/// unchanged tree pushed or fetched again counts nothing.
pub fn the_counter_sums_a_tree_and_skips_what_is_unchanged(router: &Router) -> Result<()> {
    let ctx = router.local()?;
    let s = Scratch::new("progress-tree")?;
    sample_tree(&s.join("src"))?;
    for i in 0..300 {
        std::fs::write(s.join(format!("src/a/f{i:03}")), pattern(1000 + i))?;
    }
    let total = file_bytes(&s.join("src"))?;
    // Older than any margin of the stamp cache (stamp.rs), so that the
    // second push lists the files by hash, unread and unsent.
    std::thread::sleep(Duration::from_millis(2100));
    let (opts, p) = counted();
    let t = ctx.push_with(s.join("src"), s.join("pushed"), &opts)?;
    ensure!(t.bytes == total && t.files == 307, "{t:?} of {total}");
    ensure!(p.bytes() == total, "push counted {} of {total}", p.bytes());
    let t = ctx.push_with(s.join("src"), s.join("pushed"), &opts)?;
    ensure!(t.files == 0 && t.skipped == 307 + 2, "{t:?}");
    ensure!(
        p.bytes() == total,
        "an unchanged push counted {} more",
        p.bytes() - total
    );
    let (opts, p) = counted();
    let t = ctx.fetch_with(s.join("pushed"), s.join("fetched"), &opts)?;
    ensure!(t.bytes == total, "{t:?} of {total}");
    ensure!(p.bytes() == total, "fetch counted {} of {total}", p.bytes());
    let t = ctx.fetch_with(s.join("pushed"), s.join("fetched"), &opts)?;
    ensure!(t.files == 0, "{t:?}");
    ensure!(p.bytes() == total, "an unchanged fetch counted more");
    Ok(())
}

/// `push_all` to three contexts behind one shared hop: the master sends
/// the file to the hop once, and counts it once (the hop's sending on is
/// its own, not counted here); three direct pushes count it three times.
pub fn a_fan_out_counts_what_this_process_sends(router: &Router) -> Result<()> {
    let targets: Vec<_> = (0..3)
        .map(|_| router.connect("local/local"))
        .collect::<Result<_, _>>()?;
    let s = Scratch::new("progress-fanout")?;
    let size = 4 * 1024 * 1024 + 1;
    std::fs::write(s.join("src"), pattern(size))?;
    let (mut opts, p) = counted();
    opts.update = false;
    for r in push_all(&targets, s.join("src"), s.join("all"), &opts) {
        ensure!(r?.bytes == size as u64);
    }
    ensure!(
        p.bytes() == size as u64,
        "a fan-out to 3 counted {} for {size} bytes",
        p.bytes()
    );
    let (mut opts, p) = counted();
    opts.update = false;
    let direct = [router.local()?, router.local()?];
    for r in push_all(&direct, s.join("src"), s.join("direct"), &opts) {
        ensure!(r?.bytes == size as u64);
    }
    ensure!(
        p.bytes() == 2 * size as u64,
        "pushes to 2 direct children counted {} for {size} bytes",
        p.bytes()
    );
    Ok(())
}

crate::tests! {
    the_counter_follows_a_large_file_frame_by_frame => 120,
    the_counter_sums_a_tree_and_skips_what_is_unchanged => 120,
    a_fan_out_counts_what_this_process_sends => 120,
}
