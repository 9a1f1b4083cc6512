//! The build compressed for upload, made once per build and kept on this
//! machine's disk.
//!
//! A cold connect sends the build through the transport, and fewer bytes
//! are faster on every link measured: over loopback ssh, sshd buffers the
//! upload by reallocating and copying, so its time grows with the bytes; on
//! a slow link a build larger than ssh's 2 MiB channel window costs a round
//! trip more (docs/performance.md, "The cold connect, traced"). gzip at its
//! best level takes the release build from 4.1 to 1.8 MB, but costs about
//! 0.4 s of CPU, more than a login over loopback; so it is done once per
//! build and the result kept in `$XDG_CACHE_HOME/mitogen-packed` (else
//! `~/.cache/mitogen-packed`) as `HASH.gz`, and each process makes or reads
//! it on a thread of its own while the transport logs in.
//!
//! # Why a stored file can be trusted
//!
//! It is not, on its own: every file read is inflated and compared with the
//! running build's own bytes, and used only if it is one gzip member that
//! inflates to exactly them with nothing after it (`gzip -dc` on the far
//! side then writes exactly the build). Anything else (a damaged file,
//! another build's, a file with a second member or trailing bytes) is
//! replaced. So whoever can write there can at most make a connect compress
//! again, never have another program uploaded. The directory is besides
//! made 0700 and used only if it is the user's own (made 0700 again if
//! found open to others), and names in it are opened without following links, so
//! nobody else can read or plant entries; entries are written under no name
//! (`O_TMPFILE`, or a temporary name) and linked in whole, mode 0600.
//!
//! Only the [`KEEP`] entries used last stay: a developer's machine makes a
//! new build at each change. Builds above [`LARGE`] (debug builds, test
//! programs) are compressed at the fastest level, in memory only, as before.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use rustix::fs::{AtFlags, Mode, OFlags};

use crate::core::binary::HASH_HEX;

/// How many stored builds a directory keeps (the ones used last).
pub(crate) const KEEP: usize = 4;

/// Builds larger than this (8 MiB) are compressed at gzip's fastest level
/// and not stored: most are debug builds (tens of MB, made anew at each
/// change), whose best compression would take seconds (about 0.1 s a MiB)
/// and whose files would fill the disk.
pub(crate) const LARGE: usize = 8 << 20;

/// The directory's name under the user's cache directory.
const DIR_NAME: &str = "mitogen-packed";

/// Each build's compressed bytes, made or read once per process: every
/// router of the process shares them, and one making them makes the others
/// wait rather than compress again.
type Cell = Arc<OnceLock<Arc<Vec<u8>>>>;
static MADE: OnceLock<Mutex<HashMap<String, Cell>>> = OnceLock::new();

/// `bytes` (the build named `hash`) gzip-compressed: from the disk when a
/// stored file proves to hold exactly them, else compressed now (and
/// stored). Never fails: without a usable directory it only compresses.
pub(crate) fn gzipped(hash: &str, bytes: &[u8]) -> Arc<Vec<u8>> {
    let cell = MADE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(hash.to_owned())
        .or_default()
        .clone();
    cell.get_or_init(|| Arc::new(make(hash, bytes))).clone()
}

/// True for the first caller for `hash` in this process, false once
/// [`gzipped`] has been asked for it (done, or under way): so that a master
/// connecting to many hosts at once starts one compressing thread, not one
/// per host.
pub(crate) fn claim(hash: &str) -> bool {
    let mut made = MADE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if made.contains_key(hash) {
        return false;
    }
    made.insert(hash.to_owned(), Cell::default());
    true
}

fn make(hash: &str, bytes: &[u8]) -> Vec<u8> {
    if bytes.len() > LARGE {
        return compress(bytes, flate2::Compression::fast());
    }
    let dir = user_dir().and_then(|p| open_dir(&p).ok());
    if let Some(dir) = &dir {
        if let Some(gz) = load(dir.as_fd(), hash, bytes) {
            return gz;
        }
    }
    let gz = compress(bytes, flate2::Compression::best());
    if let Some(dir) = &dir {
        if let Err(e) = store(dir.as_fd(), hash, &gz) {
            tracing::debug!("not keeping the compressed build: {e}");
        }
    }
    gz
}

fn compress(bytes: &[u8], level: flate2::Compression) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(bytes.len() / 2), level);
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

/// True if `gz` is one gzip member that inflates to exactly `bytes`, with
/// nothing after it. Inflates no more than `bytes.len() + 1` bytes, so a
/// file made to inflate without end costs no memory.
pub(crate) fn holds_exactly(gz: &[u8], bytes: &[u8]) -> bool {
    let mut rest = gz;
    let mut out = Vec::with_capacity(bytes.len());
    let mut dec = flate2::bufread::GzDecoder::new(&mut rest).take(bytes.len() as u64 + 1);
    if dec.read_to_end(&mut out).is_err() || out != bytes {
        return false;
    }
    // At the end of its member the decoder reads nothing more: whatever is
    // left of the input (another member, trailing bytes) is refused, as
    // `gzip -dc` would inflate or complain about it.
    drop(dec);
    rest.is_empty()
}

/// `$XDG_CACHE_HOME/mitogen-packed` (an absolute path only, as the XDG
/// specification says), else `$HOME/.cache/mitogen-packed`.
fn user_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|h| h.join(".cache"))
        })?;
    Some(base.join(DIR_NAME))
}

/// Opens (making it, 0700, if missing) the directory at `path`, if it is
/// this user's own (then made 0700 if it is not). Not a link: a link
/// planted under the name is refused, not followed.
pub(crate) fn open_dir(path: &std::path::Path) -> std::io::Result<OwnedFd> {
    // Nothing is made in a directory of another user's (a master run by
    // `sudo` that kept the caller's `HOME`): root's files there would be
    // the caller's clutter, which the caller could not even remove.
    let mine = |p: &std::path::Path| {
        std::fs::symlink_metadata(p).is_ok_and(|m| m.uid() == rustix::process::geteuid().as_raw())
    };
    if let Some(parent) = path.parent() {
        if !parent.exists() && parent.parent().is_some_and(mine) {
            let _ = std::fs::create_dir(parent);
        }
        if mine(parent) {
            let _ = rustix::fs::mkdir(path, Mode::from_raw_mode(0o700));
        }
    }
    let dir = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&dir)?;
    if st.st_uid != rustix::process::geteuid().as_raw() {
        return Err(std::io::Error::other(format!(
            "{} belongs to another user",
            path.display()
        )));
    }
    // Ours, but open to others (made by hand): made private. What others
    // may have put in it meanwhile is harmless, as every entry is checked
    // against the build before use.
    if st.st_mode & 0o077 != 0 {
        rustix::fs::fchmod(&dir, Mode::from_raw_mode(0o700))?;
    }
    Ok(dir)
}

fn entry_name(hash: &str) -> String {
    format!("{hash}.gz")
}

/// The stored compressed build named `hash`, if it holds exactly `bytes`
/// (its use recorded in its modification time); a file that does not is
/// removed.
pub(crate) fn load(dir: BorrowedFd<'_>, hash: &str, bytes: &[u8]) -> Option<Vec<u8>> {
    let name = entry_name(hash);
    let file = rustix::fs::openat(
        dir,
        name.as_str(),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let st = rustix::fs::fstat(&file).ok()?;
    // A regular file, and not larger than the build itself could ever
    // compress to (gzip's worst case adds a few bytes per 16 KiB).
    let limit = bytes.len() as u64 + bytes.len() as u64 / 1000 + 1024;
    let plain =
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile;
    let mut gz = Vec::new();
    let read = plain
        && (st.st_size as u64) <= limit
        && std::fs::File::from(file)
            .take(limit + 1)
            .read_to_end(&mut gz)
            .is_ok();
    if read && holds_exactly(&gz, bytes) {
        let _ = touch(dir, &name);
        return Some(gz);
    }
    tracing::debug!("the stored compressed build {name} is not this build: replaced");
    let _ = rustix::fs::unlinkat(dir, name.as_str(), AtFlags::empty());
    None
}

/// Sets the modification time of `name` to now: [`prune`] keeps the
/// entries used last.
fn touch(dir: BorrowedFd<'_>, name: &str) -> std::io::Result<()> {
    let now = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
    };
    rustix::fs::utimensat(dir, name, &now, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

/// Stores `gz` as the compressed build named `hash`, whole or not at all,
/// then removes all but the [`KEEP`] entries used last.
pub(crate) fn store(dir: BorrowedFd<'_>, hash: &str, gz: &[u8]) -> std::io::Result<()> {
    let name = entry_name(hash);
    match crate::sys::open_unnamed(dir, 0o600)? {
        Some(file) => {
            std::fs::File::from(file.try_clone()?).write_all(gz)?;
            // Another process may have stored it meanwhile, or a bad file
            // stands there (load removed it, but a racing writer may not
            // have): take the name either way.
            if let Err(e) = crate::sys::link_unnamed(file.as_fd(), dir, OsStr::new(&name)) {
                if e.kind() != std::io::ErrorKind::AlreadyExists {
                    return Err(e);
                }
                rustix::fs::unlinkat(dir, name.as_str(), AtFlags::empty())?;
                crate::sys::link_unnamed(file.as_fd(), dir, OsStr::new(&name))?;
            }
        }
        None => {
            let temp = format!(".{name}.{}", std::process::id());
            let _ = rustix::fs::unlinkat(dir, temp.as_str(), AtFlags::empty());
            let file = rustix::fs::openat(
                dir,
                temp.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?;
            let written = std::fs::File::from(file).write_all(gz);
            let renamed = written.and_then(|()| {
                rustix::fs::renameat(dir, temp.as_str(), dir, name.as_str()).map_err(Into::into)
            });
            if renamed.is_err() {
                let _ = rustix::fs::unlinkat(dir, temp.as_str(), AtFlags::empty());
            }
            renamed?;
        }
    }
    prune(dir, KEEP);
    Ok(())
}

/// Removes all but the `keep` entries of the directory modified last (and
/// temporary files of writers that died, older than a day). Only names this
/// module writes are looked at.
pub(crate) fn prune(dir: BorrowedFd<'_>, keep: usize) {
    let Ok(mut list) = rustix::fs::Dir::read_from(dir) else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut entries = Vec::new();
    while let Some(Ok(e)) = list.next() {
        let name = e.file_name().to_bytes();
        let Ok(st) = rustix::fs::statat(dir, e.file_name(), AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        // `time_t` is 32 bits on some systems.
        #[allow(clippy::unnecessary_cast)]
        let when = st.st_mtime as i64;
        if is_entry(name) {
            entries.push((when, name.to_vec()));
        } else if is_temp(name) && now - when > 24 * 3600 {
            let _ = rustix::fs::unlinkat(dir, e.file_name(), AtFlags::empty());
        }
    }
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    for (_, name) in entries.iter().skip(keep) {
        let _ = rustix::fs::unlinkat(dir, OsStr::from_bytes(name), AtFlags::empty());
    }
}

/// `HASH.gz`, as [`store`] names an entry.
fn is_entry(name: &[u8]) -> bool {
    name.len() == HASH_HEX + 3
        && name.ends_with(b".gz")
        && name[..HASH_HEX]
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `.HASH.gz.PID`, as [`store`] names a file it is writing.
fn is_temp(name: &[u8]) -> bool {
    name.len() > HASH_HEX + 5
        && name[0] == b'.'
        && is_entry(&name[1..HASH_HEX + 4])
        && name[HASH_HEX + 4] == b'.'
        && name[HASH_HEX + 5..].iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    const HASH: &str = "0123456789abcdef0123456789abcdef";

    /// A directory of this test's own, removed at the end.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let p = std::env::temp_dir()
                .join(format!("mitogen-packed-test-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Something shaped like a build: compressible, not trivially.
    fn build(seed: u8) -> Vec<u8> {
        (0..300_000u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) >> 13) as u8 % 17) ^ seed)
            .collect()
    }

    fn stored(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn stored_build_is_read_back_private() {
        let s = Scratch::new("round");
        let path = s.0.join("cache/mitogen-packed");
        let dir = open_dir(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o700);
        let bytes = build(0);
        assert!(load(dir.as_fd(), HASH, &bytes).is_none());
        let gz = compress(&bytes, flate2::Compression::best());
        assert!(
            gz.len() < bytes.len() / 2,
            "{} of {}",
            gz.len(),
            bytes.len()
        );
        store(dir.as_fd(), HASH, &gz).unwrap();
        let file = path.join(format!("{HASH}.gz"));
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o7777, 0o600);
        assert_eq!(load(dir.as_fd(), HASH, &bytes), Some(gz.clone()));
        assert_eq!(stored(&path), [format!("{HASH}.gz")]);
        // Stored again (a racing writer): the name is taken over.
        store(dir.as_fd(), HASH, &gz).unwrap();
        assert_eq!(load(dir.as_fd(), HASH, &bytes), Some(gz));
    }

    #[test]
    fn a_stored_file_that_is_not_exactly_the_build_is_refused_and_removed() {
        let s = Scratch::new("bad");
        let path = s.0.join("mitogen-packed");
        let dir = open_dir(&path).unwrap();
        let bytes = build(0);
        let gz = compress(&bytes, flate2::Compression::best());
        let other = compress(&build(1), flate2::Compression::best());
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("another build", other.clone()),
            ("truncated", gz[..gz.len() - 9].to_vec()),
            ("a byte changed", {
                let mut g = gz.clone();
                let mid = g.len() / 2;
                g[mid] ^= 1;
                g
            }),
            ("trailing bytes", [&gz[..], b"#!/bin/sh\n"].concat()),
            ("a second member", [&gz[..], &other[..]].concat()),
            ("empty", Vec::new()),
            ("not gzip", bytes.clone()),
        ];
        let file = path.join(format!("{HASH}.gz"));
        for (what, data) in cases {
            std::fs::write(&file, &data).unwrap();
            assert!(load(dir.as_fd(), HASH, &bytes).is_none(), "{what}");
            assert!(!file.exists(), "{what}: left in place");
        }
        // A link under the name, to a good file: not followed.
        let elsewhere = s.0.join("elsewhere.gz");
        std::fs::write(&elsewhere, &gz).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &file).unwrap();
        assert!(load(dir.as_fd(), HASH, &bytes).is_none());
        assert!(elsewhere.exists());
    }

    #[test]
    fn one_caller_claims_the_compression() {
        // However many connects start at once, one thread compresses.
        let hash = "fedcba9876543210fedcba9876543210";
        assert!(claim(hash));
        assert!(!claim(hash));
        assert!(!claim(hash));
    }

    #[test]
    fn inflating_stops_past_the_build_size() {
        // 64 MiB of zeros in 64 KiB of gzip, against a 1 KiB build: refused
        // after inflating 1 KiB and a byte, not 64 MiB.
        let bomb = compress(&vec![0u8; 64 << 20], flate2::Compression::best());
        let started = std::time::Instant::now();
        assert!(!holds_exactly(&bomb, &[0u8; 1024]));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn only_a_private_directory_of_the_users_own_is_used() {
        let s = Scratch::new("dirs");
        // A link at the directory's name: refused, not followed.
        let real = s.0.join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(&real, s.0.join("link")).unwrap();
        assert!(open_dir(&s.0.join("link")).is_err());
        // Ours, open to others: made private.
        let open = s.0.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        open_dir(&open).unwrap();
        assert_eq!(std::fs::metadata(&open).unwrap().mode() & 0o7777, 0o700);
        // Another user's (when this test may give one away): refused, and
        // left as it is.
        let theirs = s.0.join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o777)).unwrap();
        if std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).is_ok() {
            assert!(open_dir(&theirs).is_err());
            assert_eq!(std::fs::metadata(&theirs).unwrap().mode() & 0o7777, 0o777);
            // Nor is anything made in another user's home (a `HOME` kept
            // through sudo): not its `.cache`, not the directory in it.
            assert!(open_dir(&theirs.join(".cache/mitogen-packed")).is_err());
            assert!(!theirs.join(".cache").exists());
            std::fs::create_dir(theirs.join(".cache")).unwrap();
            std::os::unix::fs::chown(theirs.join(".cache"), Some(65534), Some(65534)).unwrap();
            assert!(open_dir(&theirs.join(".cache/mitogen-packed")).is_err());
            assert!(!theirs.join(".cache/mitogen-packed").exists());
        }
    }

    #[test]
    fn only_the_entries_used_last_are_kept() {
        let s = Scratch::new("prune");
        let path = s.0.join("mitogen-packed");
        let dir = open_dir(&path).unwrap();
        let hashes: Vec<String> = (0..KEEP + 2).map(|i| format!("{i:032x}")).collect();
        for (i, h) in hashes.iter().enumerate() {
            let p = path.join(format!("{h}.gz"));
            std::fs::write(&p, b"x").unwrap();
            let t = std::time::SystemTime::UNIX_EPOCH
                + std::time::Duration::from_secs(1_000_000 + i as u64);
            std::fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        // Neither names of the user's own nor a writer's fresh temporary
        // file are touched; a dead writer's old one is removed.
        std::fs::write(path.join("notes.txt"), b"mine").unwrap();
        std::fs::write(path.join(format!(".{}.gz.12", hashes[0])), b"x").unwrap();
        let old = path.join(format!(".{}.gz.13", hashes[1]));
        std::fs::write(&old, b"x").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(std::time::SystemTime::UNIX_EPOCH)
            .unwrap();
        prune(dir.as_fd(), KEEP);
        let mut want: Vec<String> = hashes[2..].iter().map(|h| format!("{h}.gz")).collect();
        want.push(format!(".{}.gz.12", hashes[0]));
        want.push("notes.txt".into());
        want.sort();
        assert_eq!(stored(&path), want);
    }
}
