//! Keeping a host's cache of builds from growing without end.
//!
//! The first stage stores every build it is sent under its hash (see
//! [`crate::parent::first_stage`]) and never removes one: a host that a
//! deployer reaches after each of its releases would gather a copy of every
//! release. So a context started from the cache
//!
//! 1. marks its own build as used, by setting the file's modification time to
//!    now (the first stage runs a cached build without touching it, and the
//!    access time is not kept on `noatime` or `relatime` mounts);
//! 2. at most once a day per directory (a stamp file, [`STAMP`], records the
//!    last time), removes the builds in that directory that no context has
//!    marked for [`UNUSED_FOR`], and the temporary files of uploads that
//!    died before they finished (older than a day).
//!
//! Only names the first stage itself writes are considered: a build is
//! exactly [`HASH_HEX`] lowercase hexadecimal digits, an upload in progress is
//! `.HASH.PID`. Anything else in the directory (the `.probe` script, files of
//! the user's own) is left alone, as are symbolic links. A context still
//! running from a build that is removed keeps running: the file stays readable
//! (through `/proc/self/exe`) until the process exits, and the next connection
//! uploads the build again.
//!
//! It runs on a thread of its own after the greeting, so a connection never
//! waits for it; any failure only means the cache stays as it is.
//!
//! [`HASH_HEX`]: crate::master::binary::HASH_HEX

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::master::binary::HASH_HEX;

/// A build no context has run for this long is removed.
pub const UNUSED_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// How often a directory is looked through.
const EVERY: Duration = Duration::from_secs(24 * 3600);

/// An upload's temporary file this old belongs to a process that died.
const STALE_UPLOAD: Duration = Duration::from_secs(24 * 3600);

/// The file whose modification time records the last look through a directory.
pub const STAMP: &str = ".pruned";

/// Where this process runs from, when the first stage started it from the
/// cache with hash `hash`: its executable's path, if that is an entry named
/// for the hash.
pub(crate) fn own_entry(hash: &str) -> Option<PathBuf> {
    let exe = fs::read_link("/proc/self/exe").ok()?;
    (exe.file_name()? == hash && is_build_name(hash)).then_some(exe)
}

/// Marks `entry` as used and, if the day's look through its directory is
/// due, removes what has gone unused; on a thread of its own.
pub(crate) fn tend_in_background(entry: PathBuf) {
    let _ = std::thread::Builder::new()
        .name("mitogen-cache".into())
        .spawn(move || tend(&entry, SystemTime::now()));
}

/// [`tend_in_background`], on this thread, as if the time were `now`.
pub(crate) fn tend(entry: &Path, now: SystemTime) {
    if let Ok(f) = fs::File::open(entry) {
        let _ = f.set_modified(now);
    }
    let Some(dir) = entry.parent() else {
        return;
    };
    let stamp = dir.join(STAMP);
    if let Ok(m) = fs::symlink_metadata(&stamp) {
        // Anything but a regular file there (a link, say) is not ours to write
        // through.
        if !m.file_type().is_file() || age(&m, now) < EVERY {
            return;
        }
    }
    // Claim the day's look before it starts, so concurrent contexts do not
    // all walk the directory.
    match fs::File::create(&stamp) {
        Ok(f) => {
            let _ = f.set_modified(now);
        }
        Err(_) => return,
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let limit = if is_build_name(name) {
            UNUSED_FOR
        } else if is_upload_name(name) {
            STALE_UPLOAD
        } else {
            continue;
        };
        let path = e.path();
        if path == entry {
            continue;
        }
        // Not followed: only regular files the first stage could have made.
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_file() && age(&meta, now) >= limit {
            match fs::remove_file(&path) {
                Ok(()) => tracing::debug!(path = %path.display(), "removed an unused build"),
                Err(e) => tracing::debug!(path = %path.display(), "could not remove: {e}"),
            }
        }
    }
}

/// How long before `now` the file was last modified (zero if in the future).
fn age(meta: &fs::Metadata, now: SystemTime) -> Duration {
    meta.modified()
        .ok()
        .and_then(|m| now.duration_since(m).ok())
        .unwrap_or(Duration::ZERO)
}

/// A build's file name: the content hash, as the first stage names it.
fn is_build_name(name: &str) -> bool {
    name.len() == HASH_HEX
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// An upload's temporary name: `.HASH.PID`.
fn is_upload_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    match rest.split_once('.') {
        Some((hash, pid)) => {
            is_build_name(hash) && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    /// A directory of this test's own, removed at the end.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            let p = std::env::temp_dir().join(format!("mitogen-cache-test-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir(&p).unwrap();
            TempDir(p)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn file(dir: &Path, name: &str, modified: SystemTime) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, b"x").unwrap();
        fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        p
    }

    #[test]
    fn names_are_those_the_first_stage_writes() {
        let h = "0123456789abcdef0123456789abcdef";
        assert!(is_build_name(h));
        assert!(!is_build_name(&h.to_uppercase()));
        assert!(!is_build_name(&h[1..]));
        assert!(is_upload_name(&format!(".{h}.4242")));
        assert!(!is_upload_name(&format!(".{h}.")));
        assert!(!is_upload_name(&format!("{h}.4242")));
        assert!(!is_upload_name(".probe"));
    }

    #[test]
    fn removes_only_what_went_unused_once_a_day() {
        let dir = TempDir::new();
        let now = SystemTime::now();
        let long_ago = now - UNUSED_FOR - DAY;
        let own = file(dir.path(), &"a".repeat(HASH_HEX), long_ago);
        let old = file(dir.path(), &"b".repeat(HASH_HEX), long_ago);
        let recent = file(dir.path(), &"c".repeat(HASH_HEX), now - DAY);
        let stale_upload = file(
            dir.path(),
            &format!(".{}.77", "d".repeat(HASH_HEX)),
            now - 2 * DAY,
        );
        let fresh_upload = file(dir.path(), &format!(".{}.78", "d".repeat(HASH_HEX)), now);
        let foreign = file(dir.path(), "notes.txt", long_ago);
        let probe = file(dir.path(), ".probe", long_ago);

        tend(&own, now);
        assert!(own.exists() && recent.exists() && fresh_upload.exists());
        assert!(foreign.exists() && probe.exists());
        assert!(!old.exists() && !stale_upload.exists());
        let marked = fs::metadata(&own).unwrap().modified().unwrap();
        assert!(age(&fs::metadata(&own).unwrap(), now) < DAY, "{marked:?}");

        // Within the day, nothing more is removed, however old.
        let again = file(dir.path(), &"e".repeat(HASH_HEX), long_ago);
        tend(&own, now + DAY / 2);
        assert!(again.exists());
        tend(&own, now + DAY + Duration::from_secs(1));
        assert!(!again.exists());

        // A stamp that is not a plain file is never written through.
        let target = file(dir.path(), "target", now);
        fs::remove_file(dir.path().join(STAMP)).unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(STAMP)).unwrap();
        let later = file(dir.path(), &"f".repeat(HASH_HEX), long_ago);
        tend(&own, now + 3 * DAY);
        assert!(later.exists());
        assert_eq!(fs::read(&target).unwrap(), b"x");
    }
}
