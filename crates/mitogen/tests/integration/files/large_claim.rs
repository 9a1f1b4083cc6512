//! The disk a large file's receiver claims ahead of the data it has
//! (`fallocate`, in steps of 32 MiB): a child that announces a large file
//! and sends little makes the fetching side hold little more than it sent,
//! and everything is given back when the transfer fails.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use bytes::{BufMut, BytesMut};
use mitogen::files::{FileErrorKind, FileOptions};
use mitogen::{Blob, Error, Router, Sender};

use super::{listing, Scratch};
use crate::util::local;

/// What the child announces, and what it sends of it before it stalls.
const ANNOUNCED: u64 = 256 << 20;
const SENT: usize = 1 << 20;
/// The receiver's step (files/claim.rs), and what a tmpfs rounds to.
const STEP: u64 = 32 << 20;

// The wire forms of the library's types, as the hostile tests spell them.
use super::hostile::{EvilEntry, EvilKind, EvilOpts, EvilReply};

/// Lists one file of [`ANNOUNCED`] bytes, to be streamed.
#[mitogen::remote]
pub fn lying_scan(_src: Vec<u8>, _budget: u64) -> EvilReply<Vec<EvilEntry>> {
    EvilReply(Ok(vec![EvilEntry {
        path: Vec::new(),
        kind: EvilKind::File {
            size: ANNOUNCED,
            inline: None,
        },
        mode: 0o644,
        mtime: (0, 0),
        uid: 0,
        gid: 0,
    }]))
}

/// Never called (nothing exists at the destination).
#[mitogen::remote]
pub fn lying_hash(
    _src: Vec<u8>,
    _rel: Vec<u8>,
    _size: u64,
    _mtime: (i64, u32),
) -> EvilReply<[u8; 32]> {
    EvilReply(Ok([0; 32]))
}

/// Sends [`SENT`] bytes of the file, then nothing for 2.5 s.
#[mitogen::remote]
pub fn lying_send(
    _src: Vec<u8>,
    _rel: Vec<u8>,
    _listed: (u64, (i64, u32)),
    _opts: EvilOpts,
    data: Sender<Blob>,
    ready: Sender<()>,
) -> EvilReply<()> {
    let _ = ready.send(());
    let mut b = BytesMut::with_capacity(16 + SENT);
    b.put_u8(1);
    b.put_bytes(0, 7);
    b.put_u64_le(SENT as u64);
    b.put_bytes(0x5a, SENT);
    let _ = data.send(Blob(b.freeze()));
    std::thread::sleep(Duration::from_millis(2500));
    EvilReply(Ok(()))
}

fn used(mnt: &Path) -> Result<u64> {
    let st = rustix::fs::statvfs(mnt)?;
    Ok((st.f_blocks - st.f_bfree) * st.f_frsize)
}

/// A child announces a 256 MiB file, sends 1 MiB and stalls: the fetching
/// side's disk (a 512 MiB tmpfs) holds at most that and one step of 32 MiB
/// meanwhile, not the announced size; the fetch ends `Interrupted` and
/// leaves the disk empty.
pub fn a_lying_sender_gets_one_step_of_disk(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let s = Scratch::new("claim")?;
    let mnt = s.join("disk");
    let _unmount = super::mount_tmpfs(&mnt, "512m")?;
    let fns = (
        "integration::files::large_claim::lying_scan",
        "integration::files::large_claim::lying_hash",
        "integration::files::large_claim::lying_send",
    );
    let mut opts = FileOptions::default();
    opts.idle_timeout = Duration::from_millis(1500);
    let dst = mnt.join("big");
    let started = Instant::now();
    let fetch = {
        let (ctx, dst) = (ctx.clone(), dst.clone());
        std::thread::spawn(move || {
            mitogen::testing::fetch_from_impostor(&ctx, fns, Path::new("lie"), &dst, &opts)
        })
    };
    let mut peak = 0;
    while !fetch.is_finished() && started.elapsed() < Duration::from_secs(10) {
        peak = peak.max(used(&mnt)?);
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = fetch
        .join()
        .map_err(|_| anyhow::anyhow!("the fetch panicked"))?;
    match r {
        Err(Error::File(e)) if e.kind == FileErrorKind::Interrupted => {}
        other => bail!("expected Interrupted, got {other:?}"),
    }
    ensure!(
        peak >= SENT as u64,
        "the sent data never showed on the disk ({peak} bytes at most)"
    );
    ensure!(
        peak <= SENT as u64 + STEP,
        "{peak} bytes of disk held for {SENT} sent (announced {ANNOUNCED})"
    );
    ensure!(used(&mnt)? == 0, "{} bytes still held", used(&mnt)?);
    ensure!(listing(&mnt)?.is_empty(), "left: {:?}", listing(&mnt)?);
    // The child's call ends after its stall: let it, before other tests'
    // calls queue behind it.
    std::thread::sleep(Duration::from_millis(2500).saturating_sub(started.elapsed()));
    Ok(())
}

crate::tests! {
    a_lying_sender_gets_one_step_of_disk,
}
