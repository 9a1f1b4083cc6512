//! Push and fetch over a real ssh hop (the fixture's sshd on loopback), as
//! a user and as root, and a fan-out through the ssh hop.

use std::os::unix::fs::MetadataExt;

use anyhow::{ensure, Result};
use mitogen::files::{push_all, FileOptions};
use mitogen::Router;

use super::{pattern, same_tree, sample_tree, Scratch};
use crate::sshd::{self, Sshd};
use crate::util::Guard;

/// A tree and a 24 MiB file pushed to and fetched from an ssh context as
/// `mitogen-t1` (who then owns the copies) and as root (who keeps the
/// owners); a repeated push sends nothing; two contexts below the ssh hop
/// get one `push_all` through it.
pub fn push_and_fetch_over_ssh(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    let user = sshd::user("mitogen-t1", "/bin/sh")?;
    let s = Scratch::new("ssh")?;
    std::fs::set_permissions(&s.0, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
    sample_tree(&s.join("src"))?;
    std::fs::write(s.join("big"), pattern(24 << 20))?;

    let ctx = Guard(router.ssh(sshd.ssh(&user.name)?)?);
    let t = ctx.push(s.join("src"), s.join("as-user"))?;
    ensure!(t.files == 7 && t.links == 2, "{t:?}");
    same_tree(&s.join("src"), &s.join("as-user"), false)?;
    ensure!(
        std::fs::metadata(s.join("as-user/a/big.bin"))?.uid() == user.uid,
        "not the user's"
    );
    let t = ctx.push(s.join("src"), s.join("as-user"))?;
    ensure!(t.files == 0 && t.skipped == 9, "repeat: {t:?}");
    ctx.push(s.join("big"), s.join("big.user"))?;
    ctx.fetch(s.join("big.user"), s.join("big.back"))?;
    ensure!(
        std::fs::read(s.join("big.back"))? == pattern(24 << 20),
        "big content"
    );
    ctx.fetch(s.join("as-user"), s.join("back"))?;
    same_tree(&s.join("src"), &s.join("back"), false)?;
    drop(ctx);

    let root = Guard(router.ssh(sshd.ssh("root")?)?);
    root.push(s.join("src"), s.join("as-root"))?;
    same_tree(&s.join("src"), &s.join("as-root"), true)?;

    // Two local contexts below the ssh hop, one push_all through it.
    let below: Vec<_> = (0..2)
        .map(|_| router.start(Some(&root), mitogen::Local::new()))
        .collect::<Result<_, _>>()?;
    let mut opts = FileOptions::default();
    opts.update = false;
    for r in push_all(&below, s.join("big"), s.join("fanned"), &opts) {
        let t = r?;
        ensure!(t.bytes == 24 << 20, "{t:?}");
    }
    ensure!(
        std::fs::read(s.join("fanned"))? == pattern(24 << 20),
        "fanned content"
    );
    for b in below {
        b.shutdown()?;
    }
    Ok(())
}

crate::tests! {
    push_and_fetch_over_ssh => 180,
}
