//! The receiving side: where each entry of a tree goes, made safely.
//!
//! The destination's own path is resolved as given (it is the caller's
//! choice, links and all); below it nothing is followed. Every name the
//! sender gives is checked (no `..`, no `.`, no empty or absolute name), and
//! each directory on the way is opened relative to its parent with
//! `O_NOFOLLOW | O_DIRECTORY`, so an entry cannot reach outside the
//! destination through a symbolic link, whether the link was there before or
//! came earlier in the same transfer.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};

use super::progress::{count, Progress};
use super::temp::{random_name, TempFile};
use super::wire::{Done, Entry, Hash, Kind, WireOpts};
use super::{fine_times, stamp};
use crate::core::file_error::{FileError, FileErrorKind};

/// The destination of one transfer, in the context that receives it.
pub(crate) struct Dest {
    context: String,
    shown: String,
    /// The directory the destination goes in, and the destination's name.
    parent: Arc<OwnedFd>,
    root_name: OsString,
    pub(crate) opts: WireOpts,
    /// Owners are kept only by a receiver running as root.
    as_root: bool,
    /// The directory opened last, by path below the root.
    cached: Option<(Vec<u8>, Arc<OwnedFd>)>,
    pub(crate) done: Done,
    /// The buffer files are hashed through, kept from one to the next.
    buf: Vec<u8>,
    /// The caller's counter of bytes written, on a fetch's local side.
    pub(crate) progress: Option<Progress>,
}

impl Dest {
    /// Opens the directory `dst` goes in.
    pub(crate) fn open(dst: &Path, context: &str, opts: WireOpts) -> Result<Dest, FileError> {
        let shown = dst.display().to_string();
        let (dir, name) = match (dst.parent(), dst.file_name()) {
            (Some(p), Some(n)) => (
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                },
                n,
            ),
            _ => {
                return Err(FileError::new(
                    FileErrorKind::Conflict,
                    context,
                    &shown,
                    "the destination must name a file or directory, not a root or `..`",
                ))
            }
        };
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let parent = rustix::fs::open(dir, flags, Mode::empty()).map_err(|e| {
            let e = std::io::Error::from(e);
            let kind = match e.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENOTDIR) => FileErrorKind::NoDestinationDir,
                _ => FileError::kind_of(&e),
            };
            FileError::new(kind, context, dir.display().to_string(), e.to_string())
        })?;
        Ok(Dest {
            context: context.to_owned(),
            shown,
            parent: Arc::new(parent),
            root_name: name.to_owned(),
            opts,
            as_root: rustix::process::geteuid().is_root(),
            cached: None,
            done: Done::default(),
            buf: Vec::new(),
            progress: None,
        })
    }

    /// Where entry `e` goes, for messages.
    pub(crate) fn shown_of(&self, e: &Entry) -> String {
        e.shown(&self.shown)
    }

    /// An error about entry `e`.
    pub(crate) fn error(
        &self,
        e: &Entry,
        kind: FileErrorKind,
        detail: impl Into<String>,
    ) -> FileError {
        FileError::new(kind, &self.context, e.shown(&self.shown), detail)
    }

    /// An error from the OS about entry `e`.
    pub(crate) fn os_error(&self, e: &Entry, err: impl Into<std::io::Error>) -> FileError {
        let err = err.into();
        self.error(e, FileError::kind_of(&err), err.to_string())
    }

    /// The directory entry `e` goes in, and its name there.
    pub(crate) fn place(&mut self, e: &Entry) -> Result<(Arc<OwnedFd>, OsString), FileError> {
        if e.path.is_empty() {
            return Ok((self.parent.clone(), self.root_name.clone()));
        }
        let mut parts = Vec::new();
        for part in e.path.split(|b| *b == b'/') {
            if part.is_empty() || part == b"." || part == b".." || part.contains(&0) {
                return Err(self.error(
                    e,
                    FileErrorKind::Unsafe,
                    "a name with `..`, `.`, an empty part or a leading `/`",
                ));
            }
            parts.push(part);
        }
        let name = OsStr::from_bytes(parts.pop().unwrap_or_default()).to_owned();
        let dir_path = &e.path[..e.path.len() - name.len()];
        if let Some((p, fd)) = &self.cached {
            if p == dir_path {
                return Ok((fd.clone(), name));
            }
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let through = |err: rustix::io::Errno| {
            if err == rustix::io::Errno::LOOP || err == rustix::io::Errno::NOTDIR {
                self.error(
                    e,
                    FileErrorKind::Unsafe,
                    "a part of the path is a symbolic link or not a directory",
                )
            } else {
                self.os_error(e, err)
            }
        };
        let mut fd = rustix::fs::openat(
            &*self.parent,
            self.root_name.as_os_str(),
            flags,
            Mode::empty(),
        )
        .map_err(through)?;
        for part in parts {
            fd = rustix::fs::openat(&fd, OsStr::from_bytes(part), flags, Mode::empty())
                .map_err(through)?;
        }
        let fd = Arc::new(fd);
        self.cached = Some((dir_path.to_vec(), fd.clone()));
        Ok((fd, name))
    }

    /// Applies a batch of entries: directories and links made, small files
    /// written; large files are listed in `done.need`.
    pub(crate) fn apply(&mut self, entries: &[Entry]) -> Result<(), FileError> {
        for (i, e) in entries.iter().enumerate() {
            match &e.kind {
                Kind::Dir => self.mkdir(e)?,
                Kind::Link { target } => self.symlink(e, target)?,
                Kind::File {
                    size,
                    inline: Some((data, hash)),
                } => {
                    // What is here already has the announced hash: left
                    // alone, whatever came with it (it is not written).
                    if self.unchanged(e)? == Some(*hash) {
                        self.done.skipped += 1;
                        continue;
                    }
                    if data.len() as u64 != *size || blake3::hash(data).as_bytes() != hash {
                        return Err(self.error(
                            e,
                            FileErrorKind::Corrupt,
                            "inline content does not match its size and hash",
                        ));
                    }
                    let mut tmp = self.temp(e)?;
                    tmp.file
                        .write_all(data)
                        .map_err(|err| self.os_error(e, err))?;
                    self.commit(tmp, e, *hash)?;
                    self.done.files += 1;
                    self.done.bytes += *size;
                    count(self.progress.as_ref(), *size);
                }
                Kind::File { inline: None, .. } => {
                    let have = self.unchanged(e)?;
                    self.done.need.push((i as u32, have));
                }
                Kind::Hashed { hash, .. } => {
                    let have = self.unchanged(e)?;
                    if have == Some(*hash) {
                        self.done.skipped += 1;
                    } else {
                        self.done.need.push((i as u32, have));
                    }
                }
            }
        }
        Ok(())
    }

    fn mkdir(&mut self, e: &Entry) -> Result<(), FileError> {
        let (dir, name) = self.place(e)?;
        match rustix::fs::mkdirat(&*dir, name.as_os_str(), Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => {
                let st = rustix::fs::statat(&*dir, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|err| self.os_error(e, err))?;
                if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                    return Err(self.error(
                        e,
                        FileErrorKind::Conflict,
                        "exists and is not a directory",
                    ));
                }
            }
            Err(err) => {
                let err = std::io::Error::from(err);
                if e.path.is_empty() && err.raw_os_error() == Some(libc::ENOENT) {
                    return Err(self.error(e, FileErrorKind::NoDestinationDir, err.to_string()));
                }
                return Err(self.os_error(e, err));
            }
        }
        self.done.dirs += 1;
        Ok(())
    }

    fn symlink(&mut self, e: &Entry, target: &[u8]) -> Result<(), FileError> {
        let (dir, name) = self.place(e)?;
        if self.opts.update {
            if let Ok(have) = rustix::fs::readlinkat(&*dir, name.as_os_str(), Vec::new()) {
                if have.as_bytes() == target {
                    self.done.skipped += 1;
                    return Ok(());
                }
            }
        }
        let tmp = random_name();
        rustix::fs::symlinkat(OsStr::from_bytes(target), &*dir, tmp.as_os_str())
            .map_err(|err| self.os_error(e, err))?;
        let set = self.set_meta_at(&dir, &tmp, e, false);
        let moved = set.and_then(|()| {
            rustix::fs::renameat(&*dir, tmp.as_os_str(), &*dir, name.as_os_str())
                .map_err(Into::into)
        });
        if let Err(err) = moved {
            let _ = rustix::fs::unlinkat(&*dir, tmp.as_os_str(), AtFlags::empty());
            return Err(self.os_error(e, err));
        }
        self.done.links += 1;
        Ok(())
    }

    /// The hash of what is at `e`'s place when it is a regular file of the
    /// same size and modification time (and skipping is on).
    pub(crate) fn unchanged(&mut self, e: &Entry) -> Result<Option<Hash>, FileError> {
        if !self.opts.update {
            return Ok(None);
        }
        let (dir, name) = self.place(e)?;
        let taken = stamp::now_ns();
        let Ok(st) = rustix::fs::statat(&*dir, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) else {
            return Ok(None);
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFREG
            || st.st_size as u64 != e.size()
            || (st.st_mtime, st.st_mtime_nsec as u32) != e.mtime
        {
            return Ok(None);
        }
        // Hashed before with this very stamp (inode, size, times, change
        // time): not read again.
        let buf = &mut self.buf;
        Ok(stamp::hash_or_read(&st, taken, || {
            let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
            let fd = rustix::fs::openat(&*dir, name.as_os_str(), flags, Mode::empty()).ok()?;
            stamp::note_fs(&fd, &st);
            // The file opened must be the one stamped (not one renamed
            // onto the name since) when its hash is to be recorded under
            // that stamp; a file just written (the next push's usual case)
            // is not recorded, and spared the status.
            if stamp::worth_recording(&st, taken) {
                let now = rustix::fs::fstat(&fd).ok()?;
                if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
                    return None;
                }
            }
            if e.size() < 1 << 20 {
                // Small (a tree's usual file): one read of the whole.
                let want = e.size() as usize + 1;
                if buf.len() < want {
                    buf.resize(want, 0);
                }
                return match super::scan::read_listed(&fd, &mut buf[..want]) {
                    Ok(n) if n as u64 == e.size() => Some(*blake3::hash(&buf[..n]).as_bytes()),
                    _ => None,
                };
            }
            hash_sized(&mut File::from(fd), e.size(), buf).ok()
        }))
    }

    /// A temporary file beside `e`'s place.
    pub(crate) fn temp(&mut self, e: &Entry) -> Result<TempFile, FileError> {
        let (dir, _) = self.place(e)?;
        TempFile::new(dir).map_err(|err| self.os_error(e, err))
    }

    /// Gives a complete temporary file `e`'s metadata and name; `hash`, the
    /// BLAKE3 of what was written (checked against the sender's), goes to
    /// the stamp cache where the file system lets the status vouch for it
    /// at once.
    pub(crate) fn commit(&mut self, tmp: TempFile, e: &Entry, hash: Hash) -> Result<(), FileError> {
        let (dir, name) = self.place(e)?;
        if e.path.is_empty() {
            // The root replaced by a file: refuse to put a file where a
            // directory is (rename would fail the same, less clearly).
            if let Ok(st) = rustix::fs::statat(&*dir, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
                if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    return Err(self.error(
                        e,
                        FileErrorKind::Conflict,
                        "exists and is a directory",
                    ));
                }
            }
        }
        self.set_meta_fd(&tmp.file, e)
            .map_err(|err| self.os_error(e, err))?;
        let fine = self.opts.times && fine_times::changes_show_at_once(&tmp.file);
        let st = tmp.commit(&name).map_err(|err| self.os_error(e, err))?;
        stamp::record_written(&st, hash, fine);
        Ok(())
    }

    fn mode_of(&self, e: &Entry) -> u32 {
        if self.opts.strip_setid {
            e.mode & 0o1777
        } else {
            e.mode
        }
    }

    fn set_meta_fd(&self, f: &File, e: &Entry) -> std::io::Result<()> {
        // Owner first: changing it clears the set-id bits the mode then sets.
        if self.as_root && self.opts.owner {
            rustix::fs::fchown(f, Some(uid(e.uid)), Some(gid(e.gid)))?;
        }
        let mode = if self.opts.mode {
            self.mode_of(e)
        } else {
            0o644
        };
        rustix::fs::fchmod(f, Mode::from_raw_mode(mode))?;
        if self.opts.times {
            rustix::fs::futimens(f, &times(e))?;
        }
        Ok(())
    }

    /// Owner, mode and times of what is at `name` in `dir`, without following
    /// it (a link's mode cannot be set).
    fn set_meta_at(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        e: &Entry,
        mode: bool,
    ) -> std::io::Result<()> {
        if self.as_root && self.opts.owner {
            rustix::fs::chownat(
                dir,
                name,
                Some(uid(e.uid)),
                Some(gid(e.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
        }
        if mode && self.opts.mode {
            rustix::fs::chmodat(
                dir,
                name,
                Mode::from_raw_mode(self.mode_of(e)),
                AtFlags::empty(),
            )?;
        }
        if self.opts.times {
            rustix::fs::utimensat(dir, name, &times(e), AtFlags::SYMLINK_NOFOLLOW)?;
        }
        Ok(())
    }

    /// Sets the directories' metadata, deepest first (a directory's time
    /// changes as entries are made in it, so this comes last).
    pub(crate) fn finish_dirs(&mut self, dirs: &[Entry]) -> Result<(), FileError> {
        for e in dirs.iter().rev() {
            let (dir, name) = self.place(e)?;
            self.set_meta_at(&dir, &name, e, true)
                .map_err(|err| self.os_error(e, err))?;
        }
        Ok(())
    }
}

fn uid(n: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(n)
}

fn gid(n: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(n)
}

fn times(e: &Entry) -> Timestamps {
    let t = Timespec {
        tv_sec: e.mtime.0,
        tv_nsec: e.mtime.1.into(),
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// BLAKE3 of a whole file.
pub(crate) fn hash_file(f: &mut File) -> std::io::Result<Hash> {
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    hash_sized(f, len, &mut Vec::new())
}

/// BLAKE3 of a whole file of about `size` bytes, read through `buf`
/// (grown to fit, up to 1 MiB, and kept for the next: an unchanged tree of
/// small files is hashed file by file, and a buffer made and zeroed for
/// each would cost more than the rest).
pub(crate) fn hash_sized(f: &mut File, size: u64, buf: &mut Vec<u8>) -> std::io::Result<Hash> {
    let want = (size.saturating_add(1)).clamp(4096, 1 << 20) as usize;
    if buf.len() < want {
        buf.resize(want, 0);
    }
    let buf = &mut buf[..want];
    let mut h = blake3::Hasher::new();
    loop {
        let n = f.read(buf)?;
        if n == 0 {
            return Ok(*h.finalize().as_bytes());
        }
        h.update(&buf[..n]);
    }
}
