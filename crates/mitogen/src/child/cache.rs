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
//! `.HASH.PID`. Anything else in the directory (the `.probe` script of earlier versions, files of
//! the user's own) is left alone, as are symbolic links. A context still
//! running from a build that is removed keeps running: the file stays readable
//! (through `/proc/self/exe`) until the process exits, and the next connection
//! uploads the build again.
//!
//! It runs on a thread of its own after the greeting, so a connection never
//! waits for it; any failure only means the cache stays as it is.
//!
//! All of it goes through the directory the first stage checked and started
//! the build in, held as a descriptor ([`take_stage_dir`]), never through its
//! path: a directory of this user's that nobody else may enter (else nothing
//! is done), whose entry under the hash must still be this very executable.
//! Names in it are looked up relative to that descriptor and never followed
//! if they are links (`O_NOFOLLOW`, `O_PATH` for a look, `unlinkat`), so a
//! link or a rename of the path cannot turn the stamp or a removal onto
//! another file. A child whose hash is wrong removes its entry the same way,
//! and only while the name still refers to its own file: a good build that
//! another connection has uploaded in its place meanwhile stays.
//!
//! [`HASH_HEX`]: crate::core::binary::HASH_HEX

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, Mode, OFlags};

use crate::core::binary::HASH_HEX;

/// A build no context has run for this long is removed.
pub const UNUSED_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// How often a directory is looked through.
const EVERY: Duration = Duration::from_secs(24 * 3600);

/// An upload's temporary file this old belongs to a process that died.
const STALE_UPLOAD: Duration = Duration::from_secs(24 * 3600);

/// The file whose modification time records the last look through a directory.
pub const STAMP: &str = ".pruned";

/// The variable in which the first stage passes the directory it started in:
/// it `exec`s the build from inside the cache directory, and the program
/// goes back there (see [`take_stage_dir`]).
pub(crate) const CWD_ENV: &str = "MITOGEN_CWD";

/// For a process the first stage started: takes its working directory, the
/// cache directory the stage entered and checked (held from here on as a
/// descriptor, so no later rename or link can put another directory in its
/// place), then goes back to the directory the stage started in
/// ([`CWD_ENV`]; else `$HOME`, else `/`), so that the program runs where any
/// command run by the same transport would.
pub(crate) fn take_stage_dir() -> Option<OwnedFd> {
    let dir = rustix::fs::open(
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok();
    let back = [std::env::var_os(CWD_ENV), std::env::var_os("HOME")];
    let went_back = back
        .into_iter()
        .flatten()
        .filter(|d| !d.is_empty())
        .any(|d| std::env::set_current_dir(d).is_ok());
    if !went_back {
        let _ = std::env::set_current_dir("/");
    }
    dir
}

/// A build in its cache directory, both held open. Every change to the
/// directory goes through the directory's descriptor and never follows a
/// symbolic link, so a path swapped under it redirects nothing.
pub(crate) struct Entry {
    dir: OwnedFd,
    name: String,
    file: fs::File,
}

impl Entry {
    /// The entry this process runs from: `dir` (from [`take_stage_dir`])
    /// must be a directory of this user that nobody else may enter (the
    /// first stage leaves it so), and hold this process's own executable
    /// under the name `hash`.
    pub(crate) fn own(dir: OwnedFd, hash: &str) -> Option<Entry> {
        let exe = crate::sys::open_own_exe().ok()?;
        let entry = Entry::in_dir(dir, hash, exe)?;
        let found = stat_at(&entry.dir, hash)?;
        same_file(&found, &entry.file.metadata().ok()?).then_some(entry)
    }

    /// The build `name` in the directory at `path`, for tests.
    #[cfg(test)]
    fn open(path: &std::path::Path, name: &str) -> Option<Entry> {
        let dir = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let file = rustix::fs::openat(
            &dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        Entry::in_dir(dir, name, file.into())
    }

    fn in_dir(dir: OwnedFd, name: &str, file: fs::File) -> Option<Entry> {
        if !is_build_name(name) {
            return None;
        }
        let meta = fs::File::from(dir.try_clone().ok()?).metadata().ok()?;
        let private = meta.is_dir()
            && meta.uid() == rustix::process::geteuid().as_raw()
            && meta.mode() & 0o077 == 0;
        private.then(|| Entry {
            dir,
            name: name.to_owned(),
            file,
        })
    }

    /// Removes the entry, as long as its name still refers to this build: a
    /// build another connection has put in its place meanwhile stays.
    /// (Between the check and the removal lie two system calls; a
    /// replacement that lands exactly there is lost, and the next
    /// connection uploads it again.)
    pub(crate) fn remove(&self) {
        let (Some(found), Ok(ours)) = (stat_at(&self.dir, &self.name), self.file.metadata()) else {
            return;
        };
        if same_file(&found, &ours) {
            let _ = rustix::fs::unlinkat(&self.dir, self.name.as_str(), AtFlags::empty());
        }
    }
}

/// Marks `entry` as used and, if the day's look through its directory is
/// due, removes what has gone unused; on a thread of its own.
pub(crate) fn tend_in_background(entry: Entry) {
    let _ = std::thread::Builder::new()
        .name("mitogen-cache".into())
        .spawn(move || tend(&entry, SystemTime::now()));
}

/// [`tend_in_background`], on this thread, as if the time were `now`.
pub(crate) fn tend(entry: &Entry, now: SystemTime) {
    let _ = entry.file.set_modified(now);
    let dir = &entry.dir;
    if let Some(m) = stat_at(dir, STAMP) {
        // Anything but a regular file there (a link, say) is not ours to write
        // through.
        if !m.file_type().is_file() || age(&m, now) < EVERY {
            return;
        }
    }
    // Claim the day's look before it starts, so concurrent contexts do not
    // all walk the directory. Never through a link, never blocking on a
    // FIFO.
    let stamp = rustix::fs::openat(
        dir,
        STAMP,
        OFlags::WRONLY
            | OFlags::CREATE
            | OFlags::NOFOLLOW
            | OFlags::NONBLOCK
            | OFlags::NOCTTY
            | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    );
    match stamp.map(fs::File::from) {
        Ok(f) if f.metadata().is_ok_and(|m| m.file_type().is_file()) => {
            let _ = f.set_modified(now);
        }
        _ => return,
    }
    let Ok(entries) = rustix::fs::Dir::read_from(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(name) = e.file_name().to_str() else {
            continue;
        };
        let limit = if is_build_name(name) {
            UNUSED_FOR
        } else if is_upload_name(name) {
            STALE_UPLOAD
        } else {
            continue;
        };
        if name == entry.name {
            continue;
        }
        // Not followed: only regular files the first stage could have made.
        let Some(meta) = stat_at(dir, name) else {
            continue;
        };
        if meta.file_type().is_file() && age(&meta, now) >= limit {
            match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
                Ok(()) => tracing::debug!(name, "removed an unused build"),
                Err(e) => tracing::debug!(name, "could not remove: {e}"),
            }
        }
    }
}

/// What `name` in `dir` is, itself (a link is not followed), opened without
/// side effects (`O_PATH`: no device is opened, no FIFO waited on).
fn stat_at(dir: impl AsFd, name: &str) -> Option<fs::Metadata> {
    let fd = crate::sys::open_for_stat(dir, name.as_ref()).ok()?;
    fs::File::from(fd).metadata().ok()
}

fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    a.dev() == b.dev() && a.ino() == b.ino()
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
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    const DAY: Duration = Duration::from_secs(24 * 3600);

    /// A directory of this test's own (0700, as the first stage leaves it),
    /// removed at the end.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(test: &str) -> TempDir {
            let p = std::env::temp_dir()
                .join(format!("mitogen-cache-test-{}-{test}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir(&p).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).unwrap();
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
        let dir = TempDir::new("prune");
        let now = SystemTime::now();
        let long_ago = now - UNUSED_FOR - DAY;
        let own_name = "a".repeat(HASH_HEX);
        let own = file(dir.path(), &own_name, long_ago);
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
        let entry = Entry::open(dir.path(), &own_name).unwrap();

        tend(&entry, now);
        assert!(own.exists() && recent.exists() && fresh_upload.exists());
        assert!(foreign.exists() && probe.exists());
        assert!(!old.exists() && !stale_upload.exists());
        let marked = fs::metadata(&own).unwrap().modified().unwrap();
        assert!(age(&fs::metadata(&own).unwrap(), now) < DAY, "{marked:?}");

        // Within the day, nothing more is removed, however old.
        let again = file(dir.path(), &"e".repeat(HASH_HEX), long_ago);
        tend(&entry, now + DAY / 2);
        assert!(again.exists());
        tend(&entry, now + DAY + Duration::from_secs(1));
        assert!(!again.exists());

        // A stamp that is not a plain file is never written through.
        let target = file(dir.path(), "target", now);
        fs::remove_file(dir.path().join(STAMP)).unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(STAMP)).unwrap();
        let later = file(dir.path(), &"f".repeat(HASH_HEX), long_ago);
        tend(&entry, now + 3 * DAY);
        assert!(later.exists());
        assert_eq!(fs::read(&target).unwrap(), b"x");

        // Nor is a FIFO waited on.
        fs::remove_file(dir.path().join(STAMP)).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.path().join(STAMP),
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        tend(&entry, now + 5 * DAY);
        assert!(later.exists());
    }

    #[test]
    fn works_on_the_directory_it_opened_not_on_its_path() {
        let dir = TempDir::new("moved");
        let elsewhere = TempDir::new("elsewhere");
        let now = SystemTime::now();
        let long_ago = now - UNUSED_FOR - DAY;
        let own_name = "a".repeat(HASH_HEX);
        file(dir.path(), &own_name, now);
        let entry = Entry::open(dir.path(), &own_name).unwrap();
        // The directory goes, and a link to another one takes its name.
        let moved = dir.path().with_extension("moved");
        fs::rename(dir.path(), &moved).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), dir.path()).unwrap();
        let bystander = file(elsewhere.path(), &"b".repeat(HASH_HEX), long_ago);
        let old = file(&moved, &"c".repeat(HASH_HEX), long_ago);
        tend(&entry, now);
        assert!(bystander.exists(), "pruned through a swapped path");
        assert!(!elsewhere.path().join(STAMP).exists());
        assert!(!old.exists(), "the directory it opened was not pruned");
        fs::remove_file(dir.path()).unwrap();
        let _ = fs::remove_dir_all(&moved);
    }

    #[test]
    fn refuses_a_directory_others_may_enter_or_a_link() {
        let dir = TempDir::new("shared");
        let name = "a".repeat(HASH_HEX);
        file(dir.path(), &name, SystemTime::now());
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        assert!(Entry::open(dir.path(), &name).is_none());
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let link = dir.path().with_extension("link");
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        assert!(Entry::open(&link, &name).is_none());
        fs::remove_file(&link).unwrap();
        assert!(Entry::open(dir.path(), &name).is_some());
    }

    #[test]
    fn removes_its_entry_but_not_a_replacement() {
        let dir = TempDir::new("replace");
        let name = "a".repeat(HASH_HEX);
        let path = file(dir.path(), &name, SystemTime::now());
        let entry = Entry::open(dir.path(), &name).unwrap();
        // Another connection uploads the same build meanwhile.
        let upload = file(dir.path(), &format!(".{name}.42"), SystemTime::now());
        fs::rename(&upload, &path).unwrap();
        entry.remove();
        assert!(path.exists(), "a replacement was removed");
        let entry = Entry::open(dir.path(), &name).unwrap();
        entry.remove();
        assert!(!path.exists());
    }
}
