//! A fetch from a hostile child: one whose answers to the listing and the
//! file stream are crafted (the child runs this test binary's stand-ins,
//! `evil_scan` and `evil_send`, through `testing::fetch_from_impostor`; what
//! receives is the library's real fetch). Nothing may be written outside the
//! destination, no set-id bit kept, no lie about sizes or hashes accepted,
//! and a silent child cannot hang the caller.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use bytes::{BufMut, BytesMut};
use mitogen::files::{FileErrorKind, FileOptions};
use mitogen::{Blob, Error, FileError, Router, Sender};
use serde::{Deserialize, Serialize};

use super::{listing, Scratch};
use crate::util::local;

/// The wire form of a listed entry (the library's, field for field).
#[derive(Clone, Serialize, Deserialize)]
pub struct EvilEntry {
    pub(super) path: Vec<u8>,
    pub(super) kind: EvilKind,
    pub(super) mode: u32,
    pub(super) mtime: (i64, u32),
    pub(super) uid: u32,
    pub(super) gid: u32,
}

#[derive(Clone, Serialize, Deserialize)]
pub enum EvilKind {
    Dir,
    File {
        size: u64,
        inline: Option<(Vec<u8>, [u8; 32])>,
    },
    Link {
        target: Vec<u8>,
    },
}

/// The wire form of the receiver's options.
#[derive(Clone, Copy, Serialize, Deserialize)]
pub struct EvilOpts {
    pub(super) update: bool,
    pub(super) owner: bool,
    pub(super) mode: bool,
    pub(super) times: bool,
    pub(super) strip_setid: bool,
    pub(super) chunk: u32,
    pub(super) window: u32,
    pub(super) idle_ms: u64,
}

#[derive(Serialize, Deserialize)]
pub struct EvilReply<T>(pub(super) Result<T, FileError>);

fn entry(path: &[u8], kind: EvilKind, mode: u32) -> EvilEntry {
    EvilEntry {
        path: path.to_vec(),
        kind,
        mode,
        mtime: (1_600_000_000, 0),
        uid: 0,
        gid: 0,
    }
}

fn inline(data: &[u8]) -> EvilKind {
    EvilKind::File {
        size: data.len() as u64,
        inline: Some((data.to_vec(), *blake3::hash(data).as_bytes())),
    }
}

/// A listing crafted for the scenario named by `src`; `OUTSIDE` in names
/// and link targets is replaced by the path given after a `|`.
#[mitogen::remote]
pub fn evil_scan(src: Vec<u8>, _budget: u64) -> EvilReply<Vec<EvilEntry>> {
    let text = String::from_utf8_lossy(&src).to_string();
    let (scenario, outside) = text.split_once('|').unwrap_or((&text, ""));
    let root = entry(b"", EvilKind::Dir, 0o755);
    let list = match scenario {
        "dotdot" => vec![root, entry(b"../escaped", inline(b"pwned"), 0o644)],
        "deep-dotdot" => vec![
            root,
            entry(b"d", EvilKind::Dir, 0o755),
            entry(b"d/../../escaped", inline(b"pwned"), 0o644),
        ],
        "absolute" => vec![
            root,
            entry(
                format!("{outside}/escaped").as_bytes(),
                inline(b"pwned"),
                0o644,
            ),
        ],
        "nul" => vec![root, entry(b"a\0b", inline(b"pwned"), 0o644)],
        "through-link" => vec![
            root,
            entry(
                b"a",
                EvilKind::Link {
                    target: outside.as_bytes().to_vec(),
                },
                0o777,
            ),
            entry(b"a/escaped", inline(b"pwned"), 0o644),
        ],
        "root-link-then-file" => vec![
            entry(
                b"",
                EvilKind::Link {
                    target: outside.as_bytes().to_vec(),
                },
                0o777,
            ),
            entry(b"escaped", inline(b"pwned"), 0o644),
        ],
        "setuid" => vec![root, entry(b"suid", inline(b"#!/bin/sh\n"), 0o6755)],
        "bad-hash" => vec![
            root,
            entry(
                b"f",
                EvilKind::File {
                    size: 5,
                    inline: Some((b"pwned".to_vec(), [7; 32])),
                },
                0o644,
            ),
        ],
        "short-inline" => vec![
            root,
            entry(
                b"f",
                EvilKind::File {
                    size: 50,
                    inline: Some((b"pwned".to_vec(), *blake3::hash(b"pwned").as_bytes())),
                },
                0o644,
            ),
        ],
        // Large entries: the stream is evil_send's.
        "oversize" | "silent" | "wrong-hash" => vec![
            root,
            entry(
                b"big",
                EvilKind::File {
                    size: 1 << 20,
                    inline: None,
                },
                0o644,
            ),
        ],
        _ => {
            return EvilReply(Err(FileError::new(
                FileErrorKind::Io,
                "evil",
                scenario,
                "unknown scenario",
            )))
        }
    };
    EvilReply(Ok(list))
}

/// Never called by these scenarios (nothing exists at the destination).
#[mitogen::remote]
pub fn evil_hash(
    _src: Vec<u8>,
    _rel: Vec<u8>,
    _size: u64,
    _mtime: (i64, u32),
) -> EvilReply<[u8; 32]> {
    EvilReply(Ok([0; 32]))
}

fn frame(tag: u8, n: u64, body: &[u8]) -> Blob {
    let mut b = BytesMut::with_capacity(16 + body.len());
    b.put_u8(tag);
    b.put_bytes(0, 7);
    b.put_u64_le(n);
    b.put_slice(body);
    Blob(b.freeze())
}

/// A crafted stream for a 1 MiB file: twice the data (`oversize`), the
/// right data under a wrong hash (`wrong-hash`), or nothing for 5 s
/// (`silent`).
#[mitogen::remote]
pub fn evil_send(
    src: Vec<u8>,
    _rel: Vec<u8>,
    _listed: (u64, (i64, u32)),
    _opts: EvilOpts,
    data: Sender<Blob>,
    ready: Sender<()>,
) -> EvilReply<()> {
    let _ = ready.send(());
    let chunk = vec![0x5a; 1 << 20];
    match String::from_utf8_lossy(&src).split('|').next() {
        Some("oversize") => {
            let _ = data.send(frame(1, chunk.len() as u64, &chunk));
            let _ = data.send(frame(1, chunk.len() as u64, &chunk));
        }
        Some("wrong-hash") => {
            let _ = data.send(frame(1, chunk.len() as u64, &chunk));
            let _ = data.send(frame(3, chunk.len() as u64, &[9; 32]));
        }
        _ => std::thread::sleep(Duration::from_secs(5)),
    }
    EvilReply(Ok(()))
}

/// Every crafted listing and stream is refused with the kind it deserves,
/// nothing appears outside the destination, and the destination holds no
/// partial or temporary file.
pub fn hostile_child_cannot_write_outside_dst(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let s = Scratch::new("hostile")?;
    let outside = s.join("outside");
    std::fs::create_dir(&outside)?;
    let fns = (
        "integration::files::hostile::evil_scan",
        "integration::files::hostile::evil_hash",
        "integration::files::hostile::evil_send",
    );
    let mut opts = FileOptions::default();
    opts.idle_timeout = Duration::from_secs(1);
    let cases: &[(&str, FileErrorKind)] = &[
        ("dotdot", FileErrorKind::Unsafe),
        ("deep-dotdot", FileErrorKind::Unsafe),
        ("absolute", FileErrorKind::Unsafe),
        ("nul", FileErrorKind::Unsafe),
        ("through-link", FileErrorKind::Unsafe),
        ("root-link-then-file", FileErrorKind::Unsafe),
        ("bad-hash", FileErrorKind::Corrupt),
        ("short-inline", FileErrorKind::Corrupt),
        ("oversize", FileErrorKind::Unsafe),
        ("wrong-hash", FileErrorKind::Corrupt),
        ("silent", FileErrorKind::Interrupted),
    ];
    for (i, (scenario, kind)) in cases.iter().enumerate() {
        let dst = s.join(format!("dst{i}"));
        let src = format!("{scenario}|{}", outside.display());
        let started = Instant::now();
        let r = mitogen::testing::fetch_from_impostor(&ctx, fns, Path::new(&src), &dst, &opts);
        match r {
            Err(Error::File(e)) if e.kind == *kind => {}
            other => bail!("{scenario}: expected {kind:?}, got {other:?}"),
        }
        ensure!(
            started.elapsed() < Duration::from_secs(4),
            "{scenario}: took {:?}",
            started.elapsed()
        );
        ensure!(
            listing(&outside)?.is_empty(),
            "{scenario}: wrote outside: {:?}",
            listing(&outside)?
        );
        ensure!(!s.join("escaped").exists(), "{scenario}: wrote beside dst");
        if dst.exists() && std::fs::symlink_metadata(&dst)?.is_dir() {
            let left: Vec<_> = listing(&dst)?
                .into_iter()
                .filter(|p| !p.starts_with("a") && !p.starts_with("d"))
                .collect();
            ensure!(left.is_empty(), "{scenario}: left in dst: {left:?}");
        }
        // The silent child's call is still running: let it end before the
        // next case's calls queue behind it.
        if *scenario == "silent" {
            std::thread::sleep(Duration::from_secs(5));
        }
    }
    // The set-id bits of a fetched file are dropped.
    let dst = s.join("setuid");
    let src = format!("setuid|{}", outside.display());
    mitogen::testing::fetch_from_impostor(&ctx, fns, Path::new(&src), &dst, &opts)?;
    use std::os::unix::fs::MetadataExt;
    let mode = std::fs::metadata(dst.join("suid"))?.mode() & 0o7777;
    ensure!(mode == 0o755, "fetched mode {mode:o}");
    Ok(())
}

/// The wire form of what a receiver did with a batch.
#[derive(Serialize, Deserialize, Default)]
pub struct EvilDone {
    files: u64,
    bytes: u64,
    skipped: u64,
    dirs: u64,
    links: u64,
    need: Vec<(u32, Option<[u8; 32]>)>,
}

/// A receiver's answer to a pushed listing that asks for entries it must
/// not get: past the listing's end, the link, the root directory, a small
/// file (scenario named by the destination's last component).
#[mitogen::remote]
pub fn evil_apply(dst: Vec<u8>, entries: Vec<EvilEntry>, _opts: EvilOpts) -> EvilReply<EvilDone> {
    let dst = String::from_utf8_lossy(&dst).to_string();
    let index_of = |name: &[u8]| entries.iter().position(|e| e.path == name).unwrap_or(0) as u32;
    let ask = if dst.ends_with("past-the-end") {
        9999
    } else if dst.ends_with("the-link") {
        index_of(b"link")
    } else if dst.ends_with("the-root") {
        0
    } else {
        index_of(b"small")
    };
    EvilReply(Ok(EvilDone {
        need: vec![(ask, None)],
        ..EvilDone::default()
    }))
}

/// A receiver of a push cannot make the pusher read anything but the large
/// files of its own listing: asking for an index past the end, the tree's
/// link (to a file outside the tree), the root directory or a small file is
/// refused as `Unsafe`, naming the receiver.
pub fn hostile_receiver_cannot_make_the_pusher_read_elsewhere(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let s = Scratch::new("hostile-rx")?;
    std::fs::write(s.join("secret"), b"not for the receiver")?;
    std::fs::create_dir(s.join("src"))?;
    std::os::unix::fs::symlink(s.join("secret"), s.join("src/link"))?;
    std::fs::write(s.join("src/small"), b"small")?;
    let apply = "integration::files::hostile::evil_apply";
    for scenario in ["past-the-end", "the-link", "the-root", "a-small-file"] {
        let r = mitogen::testing::push_to_impostor(&ctx, apply, &s.join("src"), &s.join(scenario));
        match r {
            Err(Error::File(e)) if e.kind == FileErrorKind::Unsafe && e.context == ctx.name() => {}
            other => bail!(
                "{scenario}: expected Unsafe from {}, got {other:?}",
                ctx.name()
            ),
        }
    }
    Ok(())
}

crate::tests! {
    hostile_child_cannot_write_outside_dst => 120,
    hostile_receiver_cannot_make_the_pusher_read_elsewhere,
}
