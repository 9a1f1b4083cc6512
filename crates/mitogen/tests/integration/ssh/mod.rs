//! The ssh method against a real sshd on loopback (see `sshd`): the program
//! ships itself to each user's cache, runs there, and every failure is a
//! typed error naming the hop.
//!
//! This module holds what the parts share: the remote functions, connecting
//! and checking who runs where, the cache entry checks and the failure
//! checks. The tests are in the parts: `cache` (the program cache), `failures`
//! (keys, ports, host keys, login shells, hangs, broken uploads), `password`
//! (password logins), `unreachable` (an empty network namespace) and `calls`
//! (target strings, round trips and streaming).

pub mod cache;
pub mod cache_trust;
pub mod calls;
pub mod failures;
pub mod no_gzip;
pub mod password;
pub mod pipelined;
pub mod unreachable;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use mitogen::testing::Binary;
use mitogen::{Blob, Error, Router, Sender, Ssh, TransportFailure};
use serde::{Deserialize, Serialize};

use crate::sshd::{Sshd, User};
use crate::util::Guard;

/// Who and where a context runs.
#[derive(Debug, Serialize, Deserialize)]
pub struct Whoami {
    pub pid: u32,
    pub uid: u32,
    pub home: String,
    pub exe: String,
}

#[mitogen::remote]
pub fn whoami() -> Whoami {
    Whoami {
        pid: std::process::id(),
        uid: rustix::process::getuid().as_raw(),
        home: std::env::var("HOME").unwrap_or_default(),
        exe: std::fs::read_link("/proc/self/exe")
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    }
}

#[mitogen::remote]
pub fn plus_one(v: u64) -> u64 {
    v + 1
}

/// Streams `n` blobs of `size` bytes, blob `i` filled with the byte `i`.
#[mitogen::remote]
pub fn blobs(n: u32, size: u32, out: Sender<Blob>) -> mitogen::Result<()> {
    for i in 0..n {
        out.send(Blob::from(vec![i as u8; size as usize]))?;
    }
    out.close()
}

/// This program as the router ships it (read and compressed once).
pub(crate) fn own() -> &'static Binary {
    static OWN: OnceLock<Binary> = OnceLock::new();
    OWN.get_or_init(|| {
        let b = Binary::load(Path::new("/proc/self/exe")).expect("reading own executable");
        b.gzipped();
        b
    })
}

/// Connects, and shuts the context down when the test is done with it.
fn connect(router: &Router, ssh: Ssh) -> Result<Guard> {
    Ok(Guard(router.ssh(ssh)?))
}

/// Connects and checks who and where the context runs.
fn connect_as(router: &Router, ssh: Ssh, user: &User) -> Result<(Guard, Whoami)> {
    connect_checked(router, ssh, user, false)
}

/// [`connect_as`]; with `replaced_ok`, the file the context runs may have been
/// replaced since it started (by another connection's upload of the same build).
fn connect_checked(
    router: &Router,
    ssh: Ssh,
    user: &User,
    replaced_ok: bool,
) -> Result<(Guard, Whoami)> {
    let ctx = connect(router, ssh)?;
    let mut w = ctx.call_timeout(whoami, (), Duration::from_secs(20))?;
    if replaced_ok {
        if let Some(live) = w.exe.strip_suffix(" (deleted)") {
            w.exe = live.to_owned();
        }
    }
    ensure!(
        w.uid == user.uid,
        "runs as uid {} instead of {}",
        w.uid,
        user.uid
    );
    ensure!(
        Path::new(&w.home) == user.home,
        "HOME {} instead of {}",
        w.home,
        user.home.display()
    );
    ensure!(
        Some(w.pid) != ctx.pid(),
        "the context's pid is the ssh client's"
    );
    ensure!(
        w.exe.ends_with(&format!("/{}", own().hash)),
        "runs {} rather than the cached build {}",
        w.exe,
        own().hash
    );
    Ok((ctx, w))
}

/// The cache entry of this build in `dir`.
fn entry(dir: &Path) -> PathBuf {
    dir.join(&own().hash)
}

fn check_entry(user: &User, dir: &Path) -> Result<()> {
    let path = entry(dir);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    ensure!(
        bytes == **own().bytes,
        "{} differs from the program ({} bytes, expected {})",
        path.display(),
        bytes.len(),
        own().bytes.len()
    );
    let dm = std::fs::metadata(dir)?;
    ensure!(
        dm.permissions().mode() & 0o777 == 0o700,
        "{} has mode {:o}",
        dir.display(),
        dm.permissions().mode()
    );
    ensure!(
        dm.uid() == user.uid,
        "{} not owned by the user",
        dir.display()
    );
    let fm = std::fs::metadata(&path)?;
    ensure!(
        fm.uid() == user.uid,
        "{} not owned by the user",
        path.display()
    );
    ensure!(
        fm.permissions().mode() & 0o100 != 0,
        "{} not executable",
        path.display()
    );
    // No half-written temporary files left behind.
    let leftovers: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!(".{}", own().hash)))
        .collect();
    ensure!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    Ok(())
}

fn uploaded_during<T>(router: &Router, f: impl FnOnce() -> Result<T>) -> Result<(T, u64)> {
    let before = router.uploaded_bytes();
    let t = f()?;
    Ok((t, router.uploaded_bytes() - before))
}

/// The transport error kind of a connection that must fail, after checking
/// that its message names the hop.
pub(crate) fn failure(r: mitogen::Result<mitogen::Context>, hop: &str) -> Result<(Error, String)> {
    match r {
        Ok(ctx) => {
            let _ = ctx.shutdown_timeout(Duration::from_secs(5));
            bail!("connecting {hop} succeeded but must fail")
        }
        Err(e) => {
            let text = e.to_string();
            ensure!(
                text.contains(hop),
                "the error does not name the hop {hop:?}: {text}"
            );
            Ok((e, text))
        }
    }
}

fn expect_kind(
    r: mitogen::Result<mitogen::Context>,
    hop: &str,
    want: TransportFailure,
) -> Result<()> {
    kind_failure(r, hop, want).map(drop)
}

/// [`failure`], which must be a transport error of kind `want`; its text.
pub(crate) fn kind_failure(
    r: mitogen::Result<mitogen::Context>,
    hop: &str,
    want: TransportFailure,
) -> Result<String> {
    let (e, text) = failure(r, hop)?;
    match e {
        Error::Transport { kind, .. } if kind == want => Ok(text),
        _ => bail!("expected a {want:?} transport error, got: {text}"),
    }
}

pub(crate) fn hop(user: &str, sshd: &Sshd) -> String {
    format!("{user}@127.0.0.1:{}", sshd.port)
}

/// Processes whose executable is `path`.
pub(crate) fn running_from(path: &Path) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == path))
        .collect()
}
