//! `chroot:/PATH`: a context inside a busybox tree, with `/proc` and `/dev`
//! left as they are, mounted fresh or bound from the host in a private mount
//! namespace (never in the host's table), chains through it, and refusals.

use std::os::unix::fs::symlink;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use mitogen::{Chroot, Local, Router, Sudo, TreeDev, TreeProc};

use super::{host_mounts_under, inside, BusyRoot};

const CALL: Duration = Duration::from_secs(20);

/// Left as it is, `/proc` is the tree's empty directory: the context runs
/// in the tree without it, and the tree is unchanged after.
pub fn chroot_leaves_proc_and_dev_as_they_are(router: &Router) -> Result<()> {
    let tree = BusyRoot::new("chroot-asis")?;
    let master = inside();
    let ctx = router.connect(format!("chroot:{}", tree.dir.display()))?;
    let got = ctx.call_timeout(inside, (), CALL)?;
    ctx.shutdown_timeout(Duration::from_secs(10))?;
    ensure!(got.marker, "the root is not the tree");
    ensure!(!got.host_visible, "the host's files are visible inside");
    ensure!(got.mounts.is_none(), "a /proc inside: {:?}", got.mounts);
    ensure!(!got.dev_pts, "the host's /dev inside");
    ensure!(got.hostname == master.hostname, "another host name");
    ensure!(
        std::fs::read_dir(tree.dir.join("proc"))?.next().is_none(),
        "the tree's /proc was written to"
    );
    ensure!(
        host_mounts_under(&tree.dir)?.is_empty(),
        "mounts in the tree"
    );

    // Without a /proc the program cannot start itself again there: a hop
    // after the tree fails, named with the bracketed path, saying why.
    let target = format!("chroot:[{}]/local", tree.dir.display());
    let e = router
        .connect(target.as_str())
        .err()
        .context("started a local hop in a tree without /proc")?
        .to_string();
    ensure!(
        e.contains(&format!("{target:?}")) && e.contains("/proc"),
        "unclear error: {e}"
    );
    Ok(())
}

/// A fresh `/proc` and the host's `/dev`, mounted in the context's own
/// mount namespace: visible inside, absent from the host's mount table
/// while it runs and after; `chroot:[PATH]/local` (here `start(Local)`)
/// runs the program again inside.
pub fn chroot_mounts_proc_and_dev_privately(router: &Router) -> Result<()> {
    let tree = BusyRoot::new("chroot-mounts")?;
    let ctx = router.start(
        None,
        Chroot::new(&tree.dir)
            .proc(TreeProc::Fresh)
            .dev(TreeDev::Host),
    )?;
    let got = ctx.call_timeout(inside, (), CALL)?;
    let mounts = got.mounts.clone().context("no /proc inside")?;
    ensure!(
        mounts.iter().any(|m| m == "/proc") && mounts.iter().any(|m| m == "/dev"),
        "/proc and /dev are not mounted inside: {mounts:?}"
    );
    ensure!(got.dev_pts, "the host's /dev/pts is not inside");
    ensure!(got.marker && !got.host_visible, "not the tree's root");
    let leaked = host_mounts_under(&tree.dir)?;
    ensure!(leaked.is_empty(), "mounts in the host's table: {leaked:?}");

    let local = ctx.start(Local::new())?;
    let again = local.call_timeout(inside, (), CALL)?;
    ensure!(
        again.marker && !again.host_visible,
        "the local hop is not inside"
    );
    local.shutdown_timeout(Duration::from_secs(10))?;
    ctx.shutdown_timeout(Duration::from_secs(10))?;

    // The host's /proc, and the target string with a hop after the path.
    let ctx = router.start(None, Chroot::new(&tree.dir).proc(TreeProc::Host))?;
    let got = ctx.call_timeout(inside, (), CALL)?;
    ensure!(got.mounts.is_some(), "the host's /proc is not inside");
    ctx.shutdown_timeout(Duration::from_secs(10))?;

    ensure!(
        host_mounts_under(&tree.dir)?.is_empty(),
        "mounts left in the host's table"
    );
    Ok(())
}

/// Not a directory, no such path, a relative path, `proc` a link out of the
/// tree, and a caller that is not root: each a clear error naming the hop;
/// nothing mounted anywhere.
pub fn chroot_refusals_are_clear(router: &Router) -> Result<()> {
    let tree = BusyRoot::new("chroot-refuse")?;
    let expect = |r: mitogen::Result<mitogen::Context>, what: &str| -> Result<String> {
        match r {
            Ok(ctx) => {
                let _ = ctx.shutdown_timeout(Duration::from_secs(5));
                anyhow::bail!("{what}: connected")
            }
            Err(e) => Ok(e.to_string()),
        }
    };
    let file = tree.dir.join(super::MARKER);
    let e = expect(router.start(None, Chroot::new(&file)), "a file")?;
    ensure!(
        e.contains("is not a directory") && e.contains("chroot:"),
        "{e}"
    );
    let e = expect(
        router.start(None, Chroot::new(tree.dir.join("nonexistent"))),
        "a missing path",
    )?;
    ensure!(e.contains("does not exist"), "{e}");
    let e = expect(router.start(None, Chroot::new("srv/image")), "relative")?;
    ensure!(e.contains("not an absolute path"), "{e}");
    let e = expect(router.connect("chroot:srv"), "relative target")?;
    ensure!(e.contains("not an absolute path"), "{e}");

    // `proc` planted as a link to a host directory: refused, not followed.
    std::fs::remove_dir(tree.dir.join("proc"))?;
    symlink("/etc", tree.dir.join("proc"))?;
    let before = std::fs::read_to_string("/proc/self/mounts")?;
    let e = expect(
        router.start(None, Chroot::new(&tree.dir).proc(TreeProc::Fresh)),
        "proc a link",
    )?;
    ensure!(e.contains("/proc in the tree is not a directory"), "{e}");
    ensure!(
        std::fs::read_to_string("/proc/self/mounts")? == before,
        "the host's mount table changed"
    );

    let user = crate::sshd::user("mitogen-t1", "/bin/sh")?;
    let plain = router.start(None, Sudo::new().user(&user.name))?;
    let e = expect(plain.start(Chroot::new(&tree.dir)), "not root")?;
    plain.shutdown_timeout(Duration::from_secs(10))?;
    ensure!(e.contains("the chroot method needs root"), "{e}");
    Ok(())
}

crate::tests! {
    chroot_leaves_proc_and_dev_as_they_are,
    chroot_mounts_proc_and_dev_privately,
    chroot_refusals_are_clear => 120,
}
