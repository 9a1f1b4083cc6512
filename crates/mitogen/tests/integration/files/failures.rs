//! Typed errors naming the context and the path, and nothing partial left:
//! missing source, no permission, no destination directory, a full disk, a
//! source changing while read, a peer or an intermediate killed mid-transfer.

use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use mitogen::files::{FileErrorKind, FileOptions};
use mitogen::{Error, Router, Sudo};

use super::{listing, pattern, temporaries, Scratch};
use crate::util::{kill9, local, pid_of, Guard};

/// The file error of a result, or why there is none.
fn file_error<T: std::fmt::Debug>(r: mitogen::Result<T>) -> Result<mitogen::FileError> {
    match r {
        Err(Error::File(e)) => Ok(e),
        other => bail!("expected a file error, got {other:?}"),
    }
}

/// A missing source and a missing destination directory, both ways: the
/// kind, and the context and path named.
pub fn missing_source_and_destination_directory(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let s = Scratch::new("missing")?;
    std::fs::write(s.join("f"), b"data")?;
    let e = file_error(ctx.push(s.join("nope"), s.join("dst")))?;
    ensure!(
        e.kind == FileErrorKind::NotFound
            && e.context == router.name()
            && e.path.ends_with("/nope"),
        "{e:?}"
    );
    let e = file_error(ctx.fetch(s.join("nope"), s.join("dst")))?;
    ensure!(
        e.kind == FileErrorKind::NotFound && e.context == ctx.name() && e.path.ends_with("/nope"),
        "{e:?}"
    );
    let e = file_error(ctx.push(s.join("f"), s.join("no/such/dir/f")))?;
    ensure!(
        e.kind == FileErrorKind::NoDestinationDir
            && e.context == ctx.name()
            && e.path.ends_with("no/such/dir"),
        "{e:?}"
    );
    let e = file_error(ctx.fetch(s.join("f"), s.join("no/such/dir/f")))?;
    ensure!(
        e.kind == FileErrorKind::NoDestinationDir && e.context == router.name(),
        "{e:?}"
    );
    ensure!(e.to_string().contains("no/such/dir"), "message: {e}");
    ensure!(
        listing(&s.0)? == vec![std::path::PathBuf::from("f")],
        "left: {:?}",
        listing(&s.0)?
    );
    Ok(())
}

/// As an unprivileged user (sudo to `mitogen-t1`): a root-only source and a
/// root-owned destination directory are `PermissionDenied`, naming the
/// context; a push by root keeps the source's owners, one by the user gets
/// the user's own.
pub fn permission_denied_and_owners(router: &Router) -> Result<()> {
    let user = mitogen_testkit::sshd::user("mitogen-t1", "/bin/sh")?;
    let ctx = Guard(router.sudo(Sudo::new().user("mitogen-t1"))?);
    let s = Scratch::new("perm")?;
    std::fs::write(s.join("private"), b"root only")?;
    std::fs::set_permissions(s.join("private"), std::fs::Permissions::from_mode(0o600))?;
    std::fs::create_dir(s.join("closed"))?;
    let e = file_error(ctx.fetch(s.join("private"), s.join("got")))?;
    ensure!(
        e.kind == FileErrorKind::PermissionDenied && e.context == ctx.name(),
        "{e:?}"
    );
    let e = file_error(ctx.push(s.join("private"), s.join("closed/x")))?;
    ensure!(
        e.kind == FileErrorKind::PermissionDenied && e.context == ctx.name(),
        "{e:?}"
    );
    ensure!(
        std::fs::read_dir(s.join("closed"))?.next().is_none(),
        "something left in closed/"
    );
    // Owners: a tree owned by the user, pushed by root into a root context,
    // keeps them; into the user's context, the user owns what it writes.
    let src = s.join("owned");
    std::fs::create_dir(&src)?;
    std::fs::write(src.join("f"), pattern(300_000))?;
    std::fs::write(src.join("g"), b"small")?;
    for p in [&src, &src.join("f"), &src.join("g")] {
        user.chown(p)?;
    }
    let root_ctx = local(router)?;
    root_ctx.push(&src, s.join("as-root"))?;
    super::same_tree(&src, &s.join("as-root"), true)?;
    // Into the user's context, the user owns what it writes.
    std::fs::create_dir(s.join("open"))?;
    std::fs::set_permissions(s.join("open"), std::fs::Permissions::from_mode(0o777))?;
    ctx.push(s.join("as-root"), s.join("open/as-user"))?;
    for p in ["open/as-user", "open/as-user/f", "open/as-user/g"] {
        let m = std::fs::metadata(s.join(p))?;
        ensure!(m.uid() == user.uid, "{p}: owned by {}", m.uid());
    }
    std::fs::set_permissions(s.join("private"), std::fs::Permissions::from_mode(0o644))?;
    let t = ctx.fetch(s.join("private"), s.join("got"))?;
    ensure!(t.files == 1, "{t:?}");
    Ok(())
}

/// A full disk (a 4 MiB tmpfs): a 16 MiB push fails with `NoSpace` naming
/// the context, and leaves the file system empty; a small file still fits
/// afterwards.
pub fn full_disk(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let s = Scratch::new("full")?;
    let mnt = s.join("small");
    let _unmount = super::mount_tmpfs(&mnt, "4m")?;
    std::fs::write(s.join("big"), pattern(16 << 20))?;
    let e = file_error(ctx.push(s.join("big"), mnt.join("big")))?;
    ensure!(
        e.kind == FileErrorKind::NoSpace
            && e.context == ctx.name()
            && e.path.ends_with("small/big"),
        "{e:?}"
    );
    let e = file_error(ctx.fetch(s.join("big"), mnt.join("big")))?;
    ensure!(
        e.kind == FileErrorKind::NoSpace && e.context == router.name(),
        "{e:?}"
    );
    ensure!(
        listing(&mnt)?.is_empty(),
        "left on the full disk: {:?}",
        listing(&mnt)?
    );
    let st = rustix::fs::statvfs(&mnt)?;
    ensure!(
        st.f_bfree == st.f_blocks,
        "blocks still used: {} of {}",
        st.f_blocks - st.f_bfree,
        st.f_blocks
    );
    std::fs::write(s.join("small.txt"), b"fits")?;
    ctx.push(s.join("small.txt"), mnt.join("small.txt"))?;
    Ok(())
}

/// A large file rewritten in place while it is pushed or fetched: the
/// transfer fails with `Changed` (naming the reading side) and nothing is
/// renamed into place.
pub fn source_changing_while_read(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let s = Scratch::new("changing")?;
    let src = s.join("moving");
    std::fs::write(&src, pattern(48 << 20))?;
    let mut opts = FileOptions::default();
    // Small frames and window: the transfer takes long enough to be changed
    // under.
    opts.chunk_size = 256 * 1024;
    opts.window = 512 * 1024;
    for fetch in [false, true] {
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (stop, src) = (stop.clone(), src.clone());
            std::thread::spawn(move || -> Result<()> {
                let f = std::fs::File::options().write(true).open(&src)?;
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    f.write_all_at(&[i as u8], (i * 7919) % (48 << 20))?;
                    i += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Ok(())
            })
        };
        let dst = s.join(if fetch { "fetched" } else { "pushed" });
        let r = if fetch {
            ctx.fetch_with(&src, &dst, &opts)
        } else {
            ctx.push_with(&src, &dst, &opts)
        };
        stop.store(true, Ordering::Relaxed);
        writer
            .join()
            .map_err(|_| anyhow::anyhow!("writer panicked"))??;
        let e = file_error(r)?;
        let reader = if fetch {
            ctx.name().to_owned()
        } else {
            router.name().to_owned()
        };
        ensure!(
            e.kind == FileErrorKind::Changed && e.context == reader,
            "{e:?}"
        );
        ensure!(!dst.exists(), "{} exists", dst.display());
    }
    ensure!(temporaries(&s.0)?.is_empty(), "temporary files left");
    Ok(())
}

/// Bytes process `pid` has written through system calls.
fn written_by(pid: u32) -> Result<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io"))?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .context("no wchar")?
        .trim()
        .parse()
        .context("wchar")
}

/// Starts `f` on a thread, and once the sending process `sender` has written
/// `after` more bytes (the transfer is under way), kills `pid`.
fn kill_during(
    sender: u32,
    after: u64,
    pid: u32,
    f: impl FnOnce() -> mitogen::Result<mitogen::files::Transfer> + Send + 'static,
) -> Result<mitogen::Result<mitogen::files::Transfer>> {
    let start = written_by(sender)?;
    let t = std::thread::spawn(f);
    let deadline = Instant::now() + Duration::from_secs(30);
    while written_by(sender)? < start + after {
        ensure!(
            Instant::now() < deadline && !t.is_finished(),
            "the transfer did not get going"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    kill9(pid)?;
    let started = Instant::now();
    let r = t
        .join()
        .map_err(|_| anyhow::anyhow!("transfer thread panicked"))?;
    ensure!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?} after the kill",
        started.elapsed()
    );
    Ok(r)
}

/// The receiving context killed mid-push, the sending one killed mid-fetch,
/// and the intermediate of `local/local` killed mid-push: each fails with
/// `Interrupted` (or the disconnection) at once, and nothing is at the
/// destination, not even a temporary file.
pub fn peer_or_intermediate_killed(router: &Router) -> Result<()> {
    let s = Scratch::new("killed")?;
    let src = s.join("src");
    std::fs::write(&src, pattern(96 << 20))?;
    let mut opts = FileOptions::default();
    opts.chunk_size = 256 * 1024;
    opts.window = 512 * 1024;
    opts.update = false;
    // Push, the receiver killed.
    let ctx = router.local()?;
    let pid = pid_of(&ctx)?;
    let (c, o, a, b) = (ctx.clone(), opts.clone(), src.clone(), s.join("pushed"));
    let me = std::process::id();
    let r = kill_during(me, 8 << 20, pid, move || c.push_with(&a, &b, &o))?;
    interrupted(r, &s.join("pushed"))?;
    // Fetch, the sender killed: this process, the receiver, cleans up.
    let ctx = router.local()?;
    let pid = pid_of(&ctx)?;
    let (c, o, a, b) = (ctx.clone(), opts.clone(), src.clone(), s.join("fetched"));
    let r = kill_during(pid, 8 << 20, pid, move || c.fetch_with(&a, &b, &o))?;
    interrupted(r, &s.join("fetched"))?;
    // Through local/local, the intermediate killed.
    let before: Vec<u32> = crate::util::child_processes()
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let ctx = router.connect("local/local")?;
    let hop_pid = crate::util::child_processes()
        .into_iter()
        .map(|(p, _)| p)
        .find(|p| !before.contains(p))
        .context("no intermediate process")?;
    let (c, o, a, b) = (ctx.clone(), opts.clone(), src.clone(), s.join("via"));
    let r = kill_during(me, 8 << 20, hop_pid, move || c.push_with(&a, &b, &o))?;
    interrupted(r, &s.join("via"))?;
    crate::util::wait_until(Duration::from_secs(10), || {
        temporaries(&s.0).map(|t| t.is_empty()).unwrap_or(false)
    });
    ensure!(
        temporaries(&s.0)?.is_empty(),
        "temporary files left: {:?}",
        temporaries(&s.0)?
    );
    ensure!(
        listing(&s.0)? == vec![std::path::PathBuf::from("src")],
        "left: {:?}",
        listing(&s.0)?
    );
    Ok(())
}

fn interrupted(r: mitogen::Result<mitogen::files::Transfer>, dst: &std::path::Path) -> Result<()> {
    match r {
        Err(Error::File(e)) if e.kind == FileErrorKind::Interrupted => {}
        Err(Error::Disconnected { .. }) => {}
        other => bail!("expected an interruption, got {other:?}"),
    }
    ensure!(!dst.exists(), "{} exists", dst.display());
    Ok(())
}

crate::tests! {
    missing_source_and_destination_directory,
    permission_denied_and_owners => 120,
    full_disk,
    source_changing_while_read => 120,
    peer_or_intermediate_killed => 120,
}
