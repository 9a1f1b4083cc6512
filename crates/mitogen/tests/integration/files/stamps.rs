//! The stamp cache (`files/stamp.rs`): a file hashed before, whose device,
//! inode, size, times and change time are still those recorded, is not read
//! again, on either side; a file changed behind it (in place with its size
//! and time put back, or replaced by a rename) is sent again all the same.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use mitogen::{Context, Router};

use super::{pattern, set_mtime, Scratch};
use crate::util::{local, pid_of};

const FILES: usize = 200;
const SIZE: usize = 4096;
/// Longer than the cache's margin (2 s): a file changed less than that
/// before it was hashed is hashed again at its next check.
const SETTLE: Duration = Duration::from_millis(2_200);

/// Bytes read by process `pid` (`rchar`: files and sockets alike).
fn rchar(pid: &str) -> Result<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io"))?;
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|n| n.trim().parse().ok())
        .context("no rchar in /proc/PID/io")
}

/// A tree of [`FILES`] files of [`SIZE`] bytes at `src`, with old
/// modification times.
fn make_tree(src: &Path) -> Result<()> {
    write_tree(src, true)
}

/// The tree of [`make_tree`], its modification times old or those of its
/// writing (now).
fn write_tree(src: &Path, old_times: bool) -> Result<()> {
    std::fs::create_dir_all(src)?;
    for i in 0..FILES {
        let mut data = pattern(SIZE);
        data[0] = i as u8;
        data[1] = (i >> 8) as u8;
        let f = src.join(format!("f{i:03}"));
        std::fs::write(&f, &data)?;
        if old_times {
            set_mtime(&f, 1_600_000_000 + i as i64, 5)?;
        }
    }
    Ok(())
}

/// A tree (see [`make_tree`]) pushed twice to `dst` with [`SETTLE`] before each push: the
/// first push's receiver wrote the files (too recent to record), the
/// second one hashed them and recorded them.
fn warm(ctx: &Context, s: &Scratch) -> Result<()> {
    let src = s.join("src");
    make_tree(&src)?;
    std::thread::sleep(SETTLE);
    let t = ctx.push(&src, s.join("dst"))?;
    ensure!(t.files == FILES as u64, "first push: {t:?}");
    std::thread::sleep(SETTLE);
    let t = ctx.push(&src, s.join("dst"))?;
    ensure!(
        t.skipped == FILES as u64 && t.files == 0,
        "second push: {t:?}"
    );
    Ok(())
}

/// An unchanged tree pushed again once both sides have hashed it is read
/// on neither: the bytes the master and the target read through the whole
/// push stay far below the tree's content.
pub fn an_unchanged_tree_is_read_on_neither_side(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let s = Scratch::new("stamps-read")?;
    warm(&ctx, &s)?;
    let pid = pid_of(&ctx)?.to_string();
    let (theirs, ours) = (rchar(&pid)?, rchar("self")?);
    let t = ctx.push(s.join("src"), s.join("dst"))?;
    let (theirs, ours) = (rchar(&pid)? - theirs, rchar("self")? - ours);
    ensure!(t.skipped == FILES as u64 && t.files == 0, "{t:?}");
    let tree = (FILES * SIZE) as u64;
    ensure!(
        theirs < tree / 4 && ours < tree / 4,
        "the target read {theirs} bytes and the master {ours}, for a tree of {tree}"
    );
    // Known files pushed to a place that lacks them: a single file, and
    // the tree (listed by hash, the content sent after).
    let t = ctx.push(s.join("src/f007"), s.join("single"))?;
    ensure!(t.files == 1, "{t:?}");
    ensure!(std::fs::read(s.join("src/f007"))? == std::fs::read(s.join("single"))?);
    let t = ctx.push(s.join("src"), s.join("elsewhere"))?;
    ensure!(t.files == FILES as u64 && t.bytes == tree, "{t:?}");
    super::same_tree(&s.join("src"), &s.join("elsewhere"), true)?;
    Ok(())
}

/// Writes `data` over `f` in place (same inode) and puts its modification
/// time back: only the change time tells.
fn rewrite_in_place(f: &Path, data: &[u8]) -> Result<()> {
    let m = std::fs::metadata(f)?;
    use std::os::unix::fs::MetadataExt;
    std::fs::write(f, data)?;
    set_mtime(f, m.mtime(), m.mtime_nsec() as u32)?;
    ensure!(std::fs::metadata(f)?.ino() == m.ino(), "not in place");
    Ok(())
}

/// Changes `f001` (in place) and `f002` (replaced by a rename: another
/// inode) of the pushed tree `dst` with their size and modification time
/// kept.
fn change_behind(dst: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    rewrite_in_place(&dst.join("f001"), &other())?;
    let m = std::fs::metadata(dst.join("f002"))?;
    std::fs::write(dst.join(".swap"), other())?;
    set_mtime(&dst.join(".swap"), m.mtime(), m.mtime_nsec() as u32)?;
    std::fs::rename(dst.join(".swap"), dst.join("f002"))?;
    Ok(())
}

/// Content of a tree file's size that is none of the tree's.
fn other() -> Vec<u8> {
    pattern(SIZE).iter().map(|b| !b).collect()
}

/// Pushes `src` to `dst` again, expecting `files` (and no others) sent and
/// the same content on both sides.
fn push_expecting(ctx: &Context, src: &Path, dst: &Path, files: &[&str]) -> Result<()> {
    let t = ctx.push(src, dst)?;
    let n = files.len() as u64;
    ensure!(
        t.files == n && t.skipped == FILES as u64 - n,
        "{n} files changed: {t:?}"
    );
    for f in files {
        ensure!(
            std::fs::read(src.join(f))? == std::fs::read(dst.join(f))?,
            "{f}: content differs after the push"
        );
    }
    Ok(())
}

/// What the cache vouched for, changed behind it with the size and
/// modification time kept, is sent again: a destination file rewritten in
/// place (what a hostile account on the receiving host can do), one
/// replaced by a rename of another file, and a source file rewritten in
/// place.
pub fn files_changed_behind_the_cache_are_sent_again(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let s = Scratch::new("stamps-changed")?;
    warm(&ctx, &s)?;
    // At the destination, in place and by a rename; at the source, in
    // place.
    change_behind(&s.join("dst"))?;
    rewrite_in_place(&s.join("src/f003"), &other())?;
    push_expecting(
        &ctx,
        &s.join("src"),
        &s.join("dst"),
        &["f001", "f002", "f003"],
    )
}

/// Whether the file system of `dir` gives a change made after a status
/// read a later change time (Linux 6.13's multigrain timestamps), found
/// out as the library does: three changes of a file's mode, each after a
/// status read, must each move its change time.
fn changes_show_at_once(dir: &Path) -> Result<bool> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let f = dir.join(".probe");
    std::fs::write(&f, b"")?;
    let ctime = |f: &Path| -> Result<(i64, i64)> {
        let m = std::fs::metadata(f)?;
        Ok((m.ctime(), m.ctime_nsec()))
    };
    let mut last = ctime(&f)?;
    let mut fine = true;
    for _ in 0..3 {
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644))?;
        let now = ctime(&f)?;
        fine &= now > last;
        last = now;
    }
    std::fs::remove_file(&f)?;
    Ok(fine)
}

/// A tree pushed again right after its first push: where the file system
/// shows every later change at once, the receiver reads none of the files
/// it has just written (it recorded what it wrote); elsewhere it reads
/// them all (their stamps are too recent to vouch for them).
pub fn a_tree_pushed_again_at_once_is_read_where_times_are_coarse(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let s = Scratch::new("stamps-at-once")?;
    make_tree(&s.join("src"))?;
    // The sender then vouches for its files from the first push on (it
    // lists them by hash): what the receiver reads is its own doing.
    std::thread::sleep(SETTLE);
    let t = ctx.push(s.join("src"), s.join("dst"))?;
    ensure!(t.files == FILES as u64, "first push: {t:?}");
    let pid = pid_of(&ctx)?.to_string();
    let theirs = rchar(&pid)?;
    let t = ctx.push(s.join("src"), s.join("dst"))?;
    let theirs = rchar(&pid)? - theirs;
    ensure!(t.skipped == FILES as u64 && t.files == 0, "{t:?}");
    let tree = (FILES * SIZE) as u64;
    if changes_show_at_once(&s.join("dst"))? {
        ensure!(
            theirs < tree / 4,
            "the receiver read {theirs} bytes, for a tree of {tree} it has just written"
        );
    } else {
        ensure!(
            theirs >= tree,
            "the receiver read {theirs} bytes, for a tree of {tree} too recent to vouch for"
        );
    }
    Ok(())
}

/// Whether `dir` is on a local file system with change times finer than a
/// millisecond (ext2/3/4, XFS, Btrfs, tmpfs, F2FS), as the stamp cache
/// tells, for its shorter margin: the type from `stat -f`, the grain from
/// a file's change time.
fn local_and_fine(dir: &Path) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let out = std::process::Command::new("stat")
        .args(["-f", "-c", "%t"])
        .arg(dir)
        .output()?;
    let kind = u32::from_str_radix(String::from_utf8_lossy(&out.stdout).trim(), 16)?;
    let local = [0xEF53, 0x5846_5342, 0x9123_683E, 0x0102_1994, 0xF2F5_2010].contains(&kind);
    let f = dir.join(".grain");
    std::fs::write(&f, b"")?;
    let fine = std::fs::metadata(&f)?.ctime_nsec() % 1_000_000 != 0;
    std::fs::remove_file(&f)?;
    Ok(local && fine)
}

/// A tree written a moment ago (more than the local margin, 50 ms, and far
/// less than 2 s: its modification times too), pushed twice in a row: on a
/// local file system with fine change times the sender records what it
/// read at the first push, and the receiver what it wrote where changes
/// also show at once, so the second push reads nothing on either side;
/// elsewhere they read the tree again.
pub fn a_tree_made_a_moment_ago_is_read_once_where_times_are_local(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let s = Scratch::new("stamps-moment")?;
    write_tree(&s.join("src"), false)?;
    std::thread::sleep(Duration::from_millis(120));
    let t = ctx.push(s.join("src"), s.join("dst"))?;
    ensure!(t.files == FILES as u64, "first push: {t:?}");
    let pid = pid_of(&ctx)?.to_string();
    let (ours, theirs) = (rchar("self")?, rchar(&pid)?);
    let t = ctx.push(s.join("src"), s.join("dst"))?;
    let (ours, theirs) = (rchar("self")? - ours, rchar(&pid)? - theirs);
    ensure!(t.skipped == FILES as u64 && t.files == 0, "{t:?}");
    let tree = (FILES * SIZE) as u64;
    let read = ours >= tree;
    ensure!(
        read != local_and_fine(&s.join("src"))?,
        "the sender read {ours} bytes of a tree of {tree} it read a moment before"
    );
    // The receiver wrote the files with times put back 120 ms old: where
    // the file system is local with fine times and shows changes at once,
    // it recorded them as it wrote them, and reads none now.
    let dst = s.join("dst");
    let read = theirs >= tree;
    ensure!(
        read != (local_and_fine(&dst)? && changes_show_at_once(&dst)?),
        "the receiver read {theirs} bytes of a tree of {tree} it wrote a moment before"
    );
    Ok(())
}

/// The same for a large file (sent in frames, not in the listing): pushed
/// again right after, it is not read again where changes show at once.
pub fn a_large_file_pushed_again_at_once_is_read_where_times_are_coarse(
    router: &Router,
) -> Result<()> {
    const BIG: usize = 4 << 20;
    let ctx = local(router)?;
    let s = Scratch::new("stamps-large")?;
    let src = s.join("src");
    std::fs::create_dir_all(&src)?;
    std::fs::write(src.join("big"), pattern(BIG))?;
    set_mtime(&src.join("big"), 1_600_000_000, 0)?;
    std::thread::sleep(SETTLE);
    let t = ctx.push(&src, s.join("dst"))?;
    ensure!(t.files == 1 && t.bytes == BIG as u64, "first push: {t:?}");
    let pid = pid_of(&ctx)?.to_string();
    let theirs = rchar(&pid)?;
    let t = ctx.push(&src, s.join("dst"))?;
    let theirs = rchar(&pid)? - theirs;
    ensure!(t.skipped == 1 && t.files == 0, "{t:?}");
    let read = theirs >= BIG as u64;
    ensure!(
        read != changes_show_at_once(&s.join("dst"))?,
        "the receiver read {theirs} bytes of the {BIG} it has just written"
    );
    Ok(())
}

/// Files the receiver has just written and recorded, changed right after
/// the push (in place with size and modification time put back, or
/// replaced by a rename), are sent again by the next push.
pub fn files_changed_right_after_their_push_are_sent_again(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let s = Scratch::new("stamps-right-after")?;
    make_tree(&s.join("src"))?;
    let t = ctx.push(s.join("src"), s.join("dst"))?;
    ensure!(t.files == FILES as u64, "first push: {t:?}");
    change_behind(&s.join("dst"))?;
    push_expecting(&ctx, &s.join("src"), &s.join("dst"), &["f001", "f002"])
}

crate::tests! {
    an_unchanged_tree_is_read_on_neither_side,
    files_changed_behind_the_cache_are_sent_again,
    a_tree_pushed_again_at_once_is_read_where_times_are_coarse,
    files_changed_right_after_their_push_are_sent_again,
    a_large_file_pushed_again_at_once_is_read_where_times_are_coarse,
    a_tree_made_a_moment_ago_is_read_once_where_times_are_local,
}
