//! A tree pushed in many batches at once (the listing goes out while the
//! sender is still reading): order kept across batches, and an error in one
//! batch reported with its path while those after it are still in flight,
//! leaving only whole files and nothing moving once the push returns.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Result};
use mitogen::files::FileErrorKind;
use mitogen::{Error, Router};

use super::{listing, pattern, same_tree, set_mtime, temporaries, Scratch};
use crate::util::local;

/// Directories of the wide tree, and files in each.
const DIRS: usize = 12;
const PER_DIR: usize = 80;

/// A tree of `DIRS` × `PER_DIR` small files (some nested a level deeper),
/// a few large ones and links: many batches of the listing. Its files in
/// walk order (name order, each directory before its contents).
fn wide_tree(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for d in 0..DIRS {
        let dir = PathBuf::from(format!("d{d:02}"));
        std::fs::create_dir_all(root.join(&dir).join("sub"))?;
        for i in 0..PER_DIR {
            // Names sort as made: `f000`…, then `sub/`.
            let rel = if i % 10 == 9 {
                dir.join("sub").join(format!("g{i:03}"))
            } else {
                dir.join(format!("f{i:03}"))
            };
            let len = if i == 40 { 300_000 } else { 100 + i * 13 + d };
            std::fs::write(root.join(&rel), pattern(len))?;
            set_mtime(&root.join(&rel), 1_600_000_000 + i as i64, d as u32)?;
            files.push(rel);
        }
        std::os::unix::fs::symlink("f000", root.join(&dir).join("link"))?;
    }
    files.sort();
    Ok(files)
}

/// Pushed, pushed again unchanged, fetched back: a tree of hundreds of
/// entries in many batches arrives whole, each directory made before what
/// goes in it, every file skipped the second time.
pub fn a_wide_tree_in_many_batches(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let s = Scratch::new("wide")?;
    let files = wide_tree(&s.join("src"))?.len() as u64;
    let t = ctx.push(s.join("src"), s.join("dst"))?;
    ensure!(
        t.files == files && t.links == DIRS as u64 && t.skipped == 0,
        "{t:?}"
    );
    same_tree(&s.join("src"), &s.join("dst"), true)?;
    let t = ctx.push(s.join("src"), s.join("dst"))?;
    ensure!(
        t.files == 0 && t.skipped == files + DIRS as u64,
        "second push: {t:?}"
    );
    let t = ctx.fetch(s.join("dst"), s.join("back"))?;
    ensure!(t.files == files, "{t:?}");
    same_tree(&s.join("src"), &s.join("back"), true)?;
    ensure!(temporaries(&s.0)?.is_empty(), "temporary files left");
    Ok(())
}

/// Every file below `root`, with its size and inode.
fn state(root: &Path) -> Result<Vec<(PathBuf, u64, u64)>> {
    let mut out = Vec::new();
    for rel in listing(root)? {
        let m = std::fs::symlink_metadata(root.join(&rel))?;
        out.push((rel, m.len(), m.ino()));
    }
    Ok(out)
}

/// A file in the middle of the tree cannot be put in place (a directory
/// is there): the push fails naming that file, every file before it is
/// there whole, whatever is there after it is whole too, no temporary file
/// is left, and nothing at the destination changes once the push returned
/// (the batches sent after the failing one are waited for).
pub fn a_file_failing_midway(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let s = Scratch::new("midway")?;
    let files = wide_tree(&s.join("src"))?;
    let bad = files[files.len() / 2].clone();
    std::fs::create_dir_all(s.join("dst").join(&bad).join("in-the-way"))?;
    let e = match ctx.push(s.join("src"), s.join("dst")) {
        Err(Error::File(e)) => e,
        other => bail!("expected a file error, got {other:?}"),
    };
    ensure!(
        e.kind == FileErrorKind::Conflict
            && e.context == ctx.name()
            && e.path.ends_with(&*bad.to_string_lossy()),
        "{e:?}"
    );
    let before = state(&s.join("dst"))?;
    std::thread::sleep(Duration::from_millis(300));
    ensure!(
        state(&s.join("dst"))? == before,
        "the destination changed after the push returned"
    );
    for (i, rel) in files.iter().enumerate() {
        let (src, dst) = (s.join("src").join(rel), s.join("dst").join(rel));
        // Large files are streamed after the listing, so none came.
        let small = std::fs::metadata(&src)?.len() < 128 * 1024;
        if i < files.len() / 2 && small {
            ensure!(dst.is_file(), "{rel:?} (before the failing file) missing");
        }
        if dst.is_file() {
            ensure!(
                std::fs::read(&src)? == std::fs::read(&dst)?,
                "{rel:?}: not whole"
            );
        }
    }
    ensure!(temporaries(&s.0)?.is_empty(), "temporary files left");
    Ok(())
}

crate::tests! {
    a_wide_tree_in_many_batches,
    a_file_failing_midway,
}
