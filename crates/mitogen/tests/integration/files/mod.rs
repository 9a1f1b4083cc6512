//! Pushing and fetching files and trees (`mitogen::files`) between real
//! contexts: what is kept, what is skipped, what fails and how, and what a
//! hostile context cannot do with it.
//!
//! The parts: `basic` (files and trees, locally and through a hop, what is
//! preserved, update-skipping), `failures` (typed errors, nothing partial
//! left), `hostile` (a fetched tree from a child that lies), `pipelined` (a
//! tree in many batches: order, and an error midway), `large_claim` (the disk
//! a large file's receiver claims ahead of the data).

pub mod basic;
pub mod failures;
pub mod fanout;
pub mod fanout_parallel;
pub mod hostile;
pub mod large;
pub mod large_claim;
pub mod over_ssh;
pub mod pipelined;
pub mod stamps;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{ensure, Context as _, Result};

/// A directory of the test's own under /tmp, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Result<Scratch> {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "mitogen-files-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
        Ok(Scratch(p))
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sets a file's modification time (and access time) to `secs`.`nsec`.
pub fn set_mtime(p: &Path, secs: i64, nsec: u32) -> Result<()> {
    let t = std::fs::FileTimes::new()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::new(secs as u64, nsec));
    std::fs::File::options().write(true).open(p)?.set_times(t)?;
    Ok(())
}

/// A tree with what a copy must keep: nested directories, an empty one,
/// files of several sizes and modes (one executable, one private), a
/// symbolic link inside the tree and one pointing out of it, odd names.
pub fn sample_tree(root: &Path) -> Result<()> {
    std::fs::create_dir_all(root.join("a/b/c"))?;
    std::fs::create_dir_all(root.join("empty"))?;
    std::fs::write(root.join("small.txt"), b"hello\n")?;
    std::fs::write(root.join("a/zero"), b"")?;
    std::fs::write(root.join("a/b/c/deep.bin"), pattern(200_000))?;
    std::fs::write(root.join("a/big.bin"), pattern(5 * 1024 * 1024 + 17))?;
    std::fs::write(root.join("name with spaces & ümlauts"), b"x")?;
    std::fs::write(root.join("run.sh"), b"#!/bin/sh\necho hi\n")?;
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(root.join("secret"), b"s3cret")?;
    std::fs::set_permissions(root.join("secret"), std::fs::Permissions::from_mode(0o600))?;
    std::os::unix::fs::symlink("small.txt", root.join("link-in"))?;
    std::os::unix::fs::symlink("/etc/passwd", root.join("a/link-out"))?;
    for (i, f) in [
        "small.txt",
        "a/zero",
        "a/b/c/deep.bin",
        "a/big.bin",
        "run.sh",
    ]
    .iter()
    .enumerate()
    {
        set_mtime(&root.join(f), 1_600_000_000 + i as i64, 123_456_789)?;
    }
    std::fs::set_permissions(root.join("a/b"), std::fs::Permissions::from_mode(0o750))?;
    Ok(())
}

/// `n` bytes of a pattern that differs at every offset modulo 251.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8 ^ (i >> 12) as u8).collect()
}

/// Every entry below `root`, sorted, relative.
pub fn listing(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let p = e.path();
            out.push(p.strip_prefix(root)?.to_path_buf());
            if e.file_type()?.is_dir() {
                todo.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Checks that `b` is a copy of `a`: the same entries, kinds, content, link
/// targets, permission bits and modification times (directories included),
/// and owners when `owners` is set.
pub fn same_tree(a: &Path, b: &Path, owners: bool) -> Result<()> {
    let (la, lb) = (listing(a)?, listing(b)?);
    ensure!(la == lb, "entries differ: {la:?} vs {lb:?}");
    for rel in std::iter::once(PathBuf::new()).chain(la) {
        let (pa, pb) = (a.join(&rel), b.join(&rel));
        let (ma, mb) = (
            std::fs::symlink_metadata(&pa)?,
            std::fs::symlink_metadata(&pb)?,
        );
        ensure!(ma.file_type() == mb.file_type(), "{rel:?}: kinds differ");
        if ma.file_type().is_symlink() {
            ensure!(
                std::fs::read_link(&pa)? == std::fs::read_link(&pb)?,
                "{rel:?}: link targets differ"
            );
        } else {
            ensure!(
                ma.mode() == mb.mode(),
                "{rel:?}: mode {:o} vs {:o}",
                ma.mode(),
                mb.mode()
            );
            ensure!(
                (ma.mtime(), ma.mtime_nsec()) == (mb.mtime(), mb.mtime_nsec()),
                "{rel:?}: mtime {}.{} vs {}.{}",
                ma.mtime(),
                ma.mtime_nsec(),
                mb.mtime(),
                mb.mtime_nsec()
            );
        }
        if ma.is_file() {
            ensure!(
                std::fs::read(&pa)? == std::fs::read(&pb)?,
                "{rel:?}: content differs"
            );
        }
        if owners {
            ensure!(
                (ma.uid(), ma.gid()) == (mb.uid(), mb.gid()),
                "{rel:?}: owner differs"
            );
        }
    }
    Ok(())
}

/// Names in `dir` that look like a transfer's temporary files.
pub fn temporaries(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(listing(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .into_iter()
        .filter(|p| {
            p.file_name()
                .map(OsStr::as_bytes)
                .is_some_and(|n| n.starts_with(b".mitogen-"))
        })
        .collect())
}

/// A tmpfs of `size` (as `mount -o size=` takes it) mounted at `mnt` (made
/// here), unmounted when the guard is dropped; a machine that cannot mount
/// one cannot run the test (docs/testing.md).
pub fn mount_tmpfs(mnt: &Path, size: &str) -> Result<Unmount> {
    std::fs::create_dir(mnt)?;
    let out = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size}"),
            "mitogen-files-test",
        ])
        .arg(mnt)
        .output()?;
    if !out.status.success() {
        return Err(crate::harness::cannot_run(format!(
            "mount -t tmpfs: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(Unmount(mnt.to_path_buf()))
}

/// Unmounts its mount point (lazily: a file still open in it does not keep
/// it) when dropped.
pub struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
