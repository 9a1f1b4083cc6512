//! `push_all`: contexts behind one intermediate get the bytes over the
//! first link once.

use anyhow::{ensure, Context as _, Result};
use mitogen::files::{push_all, FileOptions};
use mitogen::Router;

use super::{pattern, same_tree, sample_tree, Scratch};

/// Bytes this process has written through system calls (`wchar` of
/// `/proc/self/io`): during a push, that is what crosses its first link.
fn written() -> Result<u64> {
    let io = std::fs::read_to_string("/proc/self/io")?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .context("no wchar")?
        .trim()
        .parse()
        .context("wchar")
}

/// Three contexts behind one intermediate (`local/local`, shared): a 24 MiB
/// file pushed to all three leaves this process once (under 1.3 times its
/// size), where three pushes write it three times; every copy is whole and
/// the staging directory in the intermediate is gone afterwards.
pub fn push_all_crosses_the_first_link_once(router: &Router) -> Result<()> {
    let targets: Vec<_> = (0..3)
        .map(|_| router.connect("local/local"))
        .collect::<Result<_, _>>()?;
    let s = Scratch::new("fanout")?;
    let size = 24 * 1024 * 1024;
    std::fs::write(s.join("src"), pattern(size))?;
    let mut opts = FileOptions::default();
    opts.update = false;
    let before = written()?;
    let dsts: Vec<_> = (0..3).map(|i| s.join(format!("dst{i}"))).collect();
    for (t, d) in targets.iter().zip(&dsts) {
        t.push_with(s.join("src"), d, &opts)?;
    }
    let direct = written()? - before;
    ensure!(
        direct >= 3 * size as u64,
        "three direct pushes wrote only {direct} bytes"
    );
    let before = written()?;
    let results = push_all(&targets, s.join("src"), s.join("all"), &opts);
    let fanned = written()? - before;
    for r in results {
        let t = r?;
        ensure!(t.files == 1 && t.bytes == size as u64, "{t:?}");
    }
    ensure!(
        fanned < size as u64 * 13 / 10,
        "push_all to 3 contexts behind one hop wrote {fanned} bytes for a {size}-byte file (direct: {direct})"
    );
    ensure!(std::fs::read(s.join("all"))? == pattern(size), "content");
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())?
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("mitogen-stage-")
        })
        .collect();
    ensure!(left.is_empty(), "staging left behind: {left:?}");
    // A tree fans out the same way, metadata intact.
    sample_tree(&s.join("tree"))?;
    let per: Vec<_> = (0..3).map(|i| s.join(format!("tree{i}"))).collect();
    // Distinct destinations per target show each was written by its own push.
    for (t, d) in targets.iter().zip(&per) {
        let r = push_all(std::slice::from_ref(t), s.join("tree"), d, &opts);
        r.into_iter().next().context("one result")??;
    }
    for r in push_all(&targets, s.join("tree"), s.join("tree-all"), &opts) {
        r?;
    }
    for d in per.iter().chain([&s.join("tree-all")]) {
        same_tree(&s.join("tree"), d, true)?;
    }
    for t in targets {
        t.shutdown()?;
    }
    Ok(())
}

crate::tests! {
    push_all_crosses_the_first_link_once => 120,
}
