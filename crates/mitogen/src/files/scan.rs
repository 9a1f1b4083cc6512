//! The sending side's walk of a file or tree: what it holds, in an order a
//! receiver can apply (a directory before what it contains, siblings in
//! name order), small files' content read and hashed on the way.
//!
//! The walk is an iterator, so that a push sends the first entries while it
//! reads the rest (the receiver works in parallel). Below the root it goes
//! by directory descriptors (`openat` and friends with `O_NOFOLLOW`): no
//! symbolic link is followed, whatever changes during the walk, and each
//! file costs an open, a status, a read and a close, with no path lookup
//! from the root.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, CWD};
use rustix::io::Errno;

use super::stamp;
use super::wire::{Entry, Kind};
use crate::core::file_error::{FileError, FileErrorKind};

/// Files up to this size ride in the call that announces them.
pub(crate) const SMALL: u64 = 128 * 1024;

/// Walks `root` without following any symbolic link (a link is an entry of
/// its own), all at once. See [`Scan`].
pub(crate) fn scan(
    root: &Path,
    context: &str,
    inline_budget: u64,
) -> Result<Vec<Entry>, FileError> {
    Scan::new(root, context, inline_budget).collect()
}

/// Where an entry still to be listed is: the directory it is in (the root
/// itself: none, it is reached by its path) and its name there, with the
/// type the directory listing gave (unknown on some file systems).
struct Pending {
    rel: Vec<u8>,
    at: Option<(Arc<OwnedFd>, OsString)>,
    hint: FileType,
}

/// The walk of a file or tree, one [`Entry`] at a time. Small files are
/// read while their budget lasts (`inline_budget` bytes in all); the rest
/// are streamed later. An error ends the walk.
pub(crate) struct Scan<'a> {
    root: &'a Path,
    context: &'a str,
    budget: u64,
    todo: Vec<Pending>,
    failed: bool,
    /// Files whose stamp this process has hashed before are listed by
    /// hash, unread ([`Kind::Hashed`]); a push only (its receiver asks
    /// for what it lacks).
    pub(crate) by_stamp: bool,
}

impl<'a> Scan<'a> {
    /// A walk of `root`; `context` names this side in errors.
    pub(crate) fn new(root: &'a Path, context: &'a str, inline_budget: u64) -> Scan<'a> {
        Scan {
            root,
            context,
            budget: inline_budget,
            todo: vec![Pending {
                rel: Vec::new(),
                at: None,
                hint: FileType::Unknown,
            }],
            failed: false,
            by_stamp: false,
        }
    }

    /// Content bytes small files may still carry.
    pub(crate) fn budget_left(&self) -> u64 {
        self.budget
    }

    fn shown(&self, rel: &[u8]) -> String {
        if rel.is_empty() {
            self.root.display().to_string()
        } else {
            self.root
                .join(std::ffi::OsStr::from_bytes(rel))
                .display()
                .to_string()
        }
    }

    fn error(&self, rel: &[u8], e: Errno) -> FileError {
        let e = std::io::Error::from(e);
        FileError::new(
            FileError::kind_of(&e),
            self.context,
            self.shown(rel),
            e.to_string(),
        )
    }

    /// The next entry: `Ok(None)` when one was left out (gone since its
    /// directory was listed, or not a file, directory or link).
    fn entry(&mut self, p: Pending) -> Result<Option<Entry>, FileError> {
        let Pending { rel, at, hint } = p;
        let gone = |e: Errno| e == Errno::NOENT && !rel.is_empty();
        // The type from the listing; a status only where it gave none.
        let kind = match hint {
            FileType::Unknown => {
                let st = match &at {
                    Some((dir, name)) => {
                        rustix::fs::statat(&**dir, name, AtFlags::SYMLINK_NOFOLLOW)
                    }
                    None => rustix::fs::statat(CWD, self.root, AtFlags::SYMLINK_NOFOLLOW),
                };
                match st {
                    Ok(st) => FileType::from_raw_mode(st.st_mode),
                    Err(e) if gone(e) => return Ok(None),
                    Err(e) => return Err(self.error(&rel, e)),
                }
            }
            t => t,
        };
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let open = |extra: OFlags| match &at {
            Some((dir, name)) => rustix::fs::openat(&**dir, name, flags | extra, Mode::empty()),
            None => rustix::fs::open(self.root, flags | extra, Mode::empty()),
        };
        let (kind, st) = match kind {
            FileType::Directory => {
                let fd = match open(OFlags::DIRECTORY) {
                    Ok(fd) => fd,
                    Err(e) if gone(e) => return Ok(None),
                    Err(e) => return Err(self.error(&rel, e)),
                };
                let st = rustix::fs::fstat(&fd).map_err(|e| self.error(&rel, e))?;
                self.list(&rel, fd)?;
                (Kind::Dir, st)
            }
            FileType::Symlink => {
                let (dir, name): (&dyn AsFd, &std::ffi::OsStr) = match &at {
                    Some((dir, name)) => (&**dir, name),
                    None => (&CWD, self.root.as_os_str()),
                };
                let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => st,
                    Err(e) if gone(e) => return Ok(None),
                    Err(e) => return Err(self.error(&rel, e)),
                };
                let target = rustix::fs::readlinkat(dir, name, Vec::new())
                    .map_err(|e| self.error(&rel, e))?;
                (
                    Kind::Link {
                        target: target.into_bytes(),
                    },
                    st,
                )
            }
            FileType::RegularFile => {
                // Within a tree only: a single file rides in its call (a
                // destination that lacks it would cost a round trip more).
                if self.by_stamp && !rel.is_empty() {
                    if let Some(e) = self.hashed(&rel, &at)? {
                        return Ok(Some(e));
                    }
                }
                // Before the status the content's hash is recorded under.
                let taken = stamp::now_ns();
                // Opened without blocking: a file swapped for a FIFO since
                // the listing does not hang the walk.
                let fd = match open(OFlags::NONBLOCK | OFlags::NOCTTY) {
                    Ok(fd) => fd,
                    Err(e) if gone(e) => return Ok(None),
                    Err(e) => return Err(self.error(&rel, e)),
                };
                let st = rustix::fs::fstat(&fd).map_err(|e| self.error(&rel, e))?;
                if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                    return Err(self.changed(&rel, "not a regular file any more".to_owned()));
                }
                let size = st.st_size as u64;
                let inline = if size <= SMALL && size <= self.budget {
                    self.budget -= size;
                    let (data, hash) = self.read_small(&rel, &fd, &st)?;
                    stamp::note_fs(&fd, &st);
                    stamp::record(&st, taken, hash);
                    Some((data, hash))
                } else {
                    None
                };
                (Kind::File { size, inline }, st)
            }
            _ => {
                tracing::debug!(path = %self.shown(&rel), "not a file, directory or link: left out");
                return Ok(None);
            }
        };
        Ok(Some(entry_of(rel, kind, &st)))
    }

    /// A regular file listed by the hash this process recorded for its
    /// stamp, when there is one: one status and nothing read.
    fn hashed(
        &self,
        rel: &[u8],
        at: &Option<(Arc<OwnedFd>, OsString)>,
    ) -> Result<Option<Entry>, FileError> {
        let st = match at {
            Some((dir, name)) => rustix::fs::statat(&**dir, name, AtFlags::SYMLINK_NOFOLLOW),
            None => rustix::fs::statat(CWD, self.root, AtFlags::SYMLINK_NOFOLLOW),
        };
        // Anything unusual (gone, another type) is the slow path's to say.
        let Ok(st) = st else { return Ok(None) };
        let Some(hash) = stamp::lookup(&st) else {
            return Ok(None);
        };
        Ok(Some(entry_of(
            rel.to_vec(),
            Kind::Hashed {
                size: st.st_size as u64,
                hash,
            },
            &st,
        )))
    }

    /// Puts the entries of directory `fd` (at `rel`) on the stack, so that
    /// they come out in name order.
    fn list(&mut self, rel: &[u8], fd: OwnedFd) -> Result<(), FileError> {
        let mut children = Vec::new();
        let dir = rustix::fs::Dir::read_from(&fd).map_err(|e| self.error(rel, e))?;
        for item in dir {
            let item = item.map_err(|e| self.error(rel, e))?;
            let name = item.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            children.push((name.to_vec(), item.file_type()));
        }
        // Sorted, then reversed onto the stack: siblings come out in name
        // order, each directory before its contents.
        children.sort_by(|a, b| b.0.cmp(&a.0));
        let fd = Arc::new(fd);
        for (name, hint) in children {
            let mut r = Vec::with_capacity(rel.len() + 1 + name.len());
            r.extend_from_slice(rel);
            if !r.is_empty() {
                r.push(b'/');
            }
            r.extend_from_slice(&name);
            self.todo.push(Pending {
                rel: r,
                at: Some((fd.clone(), OsString::from_vec(name))),
                hint,
            });
        }
        Ok(())
    }

    fn changed(&self, rel: &[u8], detail: String) -> FileError {
        FileError::new(
            FileErrorKind::Changed,
            self.context,
            self.shown(rel),
            detail,
        )
    }

    /// Reads a small file whole and hashes it; a file whose size or time
    /// moved since `st` was taken is [`FileErrorKind::Changed`].
    fn read_small(
        &self,
        rel: &[u8],
        fd: &OwnedFd,
        st: &Stat,
    ) -> Result<(Bytes, [u8; 32]), FileError> {
        match read_whole(fd, st).map_err(|e| self.error(rel, e))? {
            Ok(read) => Ok(read),
            Err(detail) => Err(self.changed(rel, detail)),
        }
    }
}

/// Reads the small file `fd` of status `st` whole and hashes it; `Ok(Err)`
/// (what differs) when its size or time moved since `st` was taken.
pub(crate) fn read_whole(
    fd: &impl AsFd,
    st: &Stat,
) -> Result<Result<(Bytes, [u8; 32]), String>, Errno> {
    let size = st.st_size as usize;
    // One byte more than announced: a file that grew reads past it.
    let mut buf = vec![0u8; size + 1];
    let got = read_listed(fd, &mut buf)?;
    // Size and time again after the read: a file written meanwhile
    // shows here, whatever the read saw.
    let now = rustix::fs::fstat(fd)?;
    if got != size
        || now.st_size != st.st_size
        || (now.st_mtime, now.st_mtime_nsec) != (st.st_mtime, st.st_mtime_nsec)
    {
        return Ok(Err(format!("{size} bytes when listed, {got} read")));
    }
    buf.truncate(size);
    let hash = *blake3::hash(&buf).as_bytes();
    Ok(Ok((Bytes::from(buf), hash)))
}

/// The entry at `rel` of kind `kind` and status `st`.
// The status's field types differ between targets.
#[allow(clippy::unnecessary_cast)]
fn entry_of(rel: Vec<u8>, kind: Kind, st: &Stat) -> Entry {
    Entry {
        path: rel,
        kind,
        mode: st.st_mode & 0o7777,
        mtime: (st.st_mtime as i64, st.st_mtime_nsec as u32),
        uid: st.st_uid,
        gid: st.st_gid,
    }
}

/// Reads a file of a known size into `buf` (one byte longer than that
/// size); the bytes read. A read that stops at exactly the known size is
/// taken as the end (a regular file's reads are short only there), which
/// saves the read that would return 0; a caller that must know the file did
/// not change checks its size and time afterwards.
pub(crate) fn read_listed(fd: impl AsFd, buf: &mut [u8]) -> Result<usize, Errno> {
    let size = buf.len().saturating_sub(1);
    let mut got = 0;
    while got < buf.len() {
        match rustix::io::read(&fd, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                if got == size {
                    break;
                }
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

impl Iterator for Scan<'_> {
    type Item = Result<Entry, FileError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        while let Some(p) = self.todo.pop() {
            match self.entry(p) {
                Ok(Some(e)) => return Some(Ok(e)),
                Ok(None) => continue,
                Err(e) => {
                    self.failed = true;
                    self.todo.clear();
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

/// The owner and group of every entry below `root`, by path.
pub(crate) fn owners(root: &Path) -> Result<super::fanout::Owners, FileError> {
    let me = super::remote::here();
    Ok(scan(root, &me, 0)?
        .into_iter()
        .map(|e| (e.path, (e.uid, e.gid)))
        .collect())
}
