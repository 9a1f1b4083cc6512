//! Files and trees, pushed and fetched, locally and through a hop: what is
//! kept, and what a repeated transfer skips.

use std::os::unix::fs::MetadataExt;

use anyhow::{ensure, Result};
use mitogen::files::FileOptions;
use mitogen::Router;

use super::{pattern, same_tree, sample_tree, set_mtime, temporaries, Scratch};
use crate::util::local;

/// One small and one large file pushed and fetched: content, mode, mtime.
pub fn single_files_push_and_fetch(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let s = Scratch::new("single")?;
    for (name, len) in [
        ("small", 1000usize),
        ("large", 9 * 1024 * 1024 + 3),
        ("empty", 0),
    ] {
        let src = s.join(name);
        std::fs::write(&src, pattern(len))?;
        set_mtime(&src, 1_500_000_000, 42)?;
        let t = ctx.push(&src, s.join(format!("{name}.pushed")))?;
        ensure!(
            t.files == 1 && t.bytes == len as u64 && t.skipped == 0,
            "{name}: {t:?}"
        );
        let t = ctx.fetch(
            s.join(format!("{name}.pushed")),
            s.join(format!("{name}.fetched")),
        )?;
        ensure!(t.files == 1 && t.bytes == len as u64, "{name}: {t:?}");
        for copy in ["pushed", "fetched"] {
            let c = s.join(format!("{name}.{copy}"));
            ensure!(std::fs::read(&c)? == pattern(len), "{name}.{copy}: content");
            let (a, b) = (std::fs::metadata(&src)?, std::fs::metadata(&c)?);
            ensure!(
                a.mode() == b.mode() && a.mtime() == b.mtime() && a.mtime_nsec() == b.mtime_nsec(),
                "{name}.{copy}: metadata"
            );
        }
    }
    ensure!(temporaries(&s.0)?.is_empty(), "temporary files left");
    Ok(())
}

/// A tree pushed, then fetched back: every entry, kind, link, mode, time.
pub fn tree_push_and_fetch(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let s = Scratch::new("tree")?;
    sample_tree(&s.join("src"))?;
    let t = ctx.push(s.join("src"), s.join("pushed"))?;
    ensure!(
        t.files == 7 && t.links == 2 && t.dirs == 5 && t.skipped == 0,
        "{t:?}"
    );
    same_tree(&s.join("src"), &s.join("pushed"), true)?;
    let t = ctx.fetch(s.join("pushed"), s.join("fetched"))?;
    ensure!(t.files == 7 && t.links == 2, "{t:?}");
    same_tree(&s.join("src"), &s.join("fetched"), true)?;
    ensure!(temporaries(&s.0)?.is_empty(), "temporary files left");
    Ok(())
}

/// A second push of an unchanged tree writes nothing; a changed file (new
/// content, same size and time) is sent again, found by its hash.
pub fn unchanged_files_are_skipped(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let s = Scratch::new("skip")?;
    sample_tree(&s.join("src"))?;
    ctx.push(s.join("src"), s.join("dst"))?;
    let ino = std::fs::metadata(s.join("dst/a/big.bin"))?.ino();
    let t = ctx.push(s.join("src"), s.join("dst"))?;
    ensure!(t.files == 0 && t.bytes == 0 && t.skipped == 7 + 2, "{t:?}");
    ensure!(
        std::fs::metadata(s.join("dst/a/big.bin"))?.ino() == ino,
        "rewritten"
    );
    // Same size and time, other content: only the hash tells.
    let mut data = pattern(5 * 1024 * 1024 + 17);
    data[4_000_000] ^= 1;
    std::fs::write(s.join("src/a/big.bin"), &data)?;
    set_mtime(&s.join("src/a/big.bin"), 1_600_000_003, 123_456_789)?;
    let t = ctx.push(s.join("src"), s.join("dst"))?;
    ensure!(t.files == 1 && t.bytes == data.len() as u64, "{t:?}");
    same_tree(&s.join("src"), &s.join("dst"), true)?;
    // Fetch skips the same way.
    ctx.fetch(s.join("dst"), s.join("back"))?;
    let t = ctx.fetch(s.join("dst"), s.join("back"))?;
    ensure!(t.files == 0 && t.skipped == 9, "{t:?}");
    let mut opts = FileOptions::default();
    opts.update = false;
    let t = ctx.push_with(s.join("src"), s.join("dst"), &opts)?;
    ensure!(t.files == 7 && t.skipped == 0, "{t:?}");
    Ok(())
}

/// Through an intermediate (`local/local`): a tree both ways.
pub fn tree_through_a_hop(router: &Router) -> Result<()> {
    let ctx = router.connect("local/local")?;
    let s = Scratch::new("hop")?;
    sample_tree(&s.join("src"))?;
    ctx.push(s.join("src"), s.join("pushed"))?;
    same_tree(&s.join("src"), &s.join("pushed"), true)?;
    ctx.fetch(s.join("pushed"), s.join("fetched"))?;
    same_tree(&s.join("src"), &s.join("fetched"), true)?;
    ctx.shutdown()?;
    Ok(())
}

/// A sparse file keeps its holes (allocated blocks stay far below its size).
pub fn sparse_files_stay_sparse(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let s = Scratch::new("sparse")?;
    let src = s.join("sparse");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&src)?;
        f.set_len(64 * 1024 * 1024)?;
        f.write_all_at(b"start", 0)?;
        f.write_all_at(&pattern(1 << 20), 30 * 1024 * 1024)?;
    }
    ctx.push(&src, s.join("pushed"))?;
    ctx.fetch(s.join("pushed"), s.join("fetched"))?;
    for c in ["pushed", "fetched"] {
        let m = std::fs::metadata(s.join(c))?;
        ensure!(m.len() == 64 * 1024 * 1024, "{c}: size {}", m.len());
        ensure!(
            m.blocks() * 512 < 8 * 1024 * 1024,
            "{c}: {} bytes allocated",
            m.blocks() * 512
        );
        ensure!(
            std::fs::read(s.join(c))? == std::fs::read(&src)?,
            "{c}: content"
        );
    }
    Ok(())
}

crate::tests! {
    single_files_push_and_fetch,
    tree_push_and_fetch,
    unchanged_files_are_skipped,
    tree_through_a_hop,
    sparse_files_stay_sparse,
}
