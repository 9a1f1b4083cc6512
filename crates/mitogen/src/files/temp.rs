//! A file being written beside its destination, which takes the
//! destination's name only once it is complete.
//!
//! Where the file system allows, it has no name at all while it is written
//! (`O_TMPFILE`): a process killed mid-transfer leaves nothing, not even a
//! temporary file. Elsewhere it is a named file created with `O_EXCL` under
//! an unpredictable name in the same directory, removed when dropped
//! uncommitted.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags, Stat};

/// An open file that is not (yet) at its destination.
pub(crate) struct TempFile {
    /// The content goes here.
    pub file: File,
    dir: Arc<OwnedFd>,
    /// The temporary name, when the file has one (no `O_TMPFILE`).
    name: Option<OsString>,
}

/// A name no other process can predict: `.mitogen-` and 16 random hex digits.
pub(crate) fn random_name() -> OsString {
    let mut b = [0u8; 8];
    if crate::sys::random_bytes(&mut b).is_err() {
        // Without the kernel's randomness the name is still unique to this
        // moment; O_EXCL keeps a planted name from being used.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        b = (t ^ u64::from(std::process::id())).to_le_bytes();
    }
    OsString::from(format!(".mitogen-{:016x}", u64::from_le_bytes(b)))
}

impl TempFile {
    /// A new empty file in `dir`, readable and writable by us only until
    /// its mode is set.
    pub(crate) fn new(dir: Arc<OwnedFd>) -> std::io::Result<TempFile> {
        if let Some(fd) = crate::sys::open_unnamed(dir.as_fd(), 0o600)? {
            return Ok(TempFile {
                file: File::from(fd),
                dir,
                name: None,
            });
        }
        loop {
            let name = random_name();
            let flags =
                OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::RDWR | OFlags::CLOEXEC;
            match rustix::fs::openat(&*dir, name.as_os_str(), flags, Mode::from_raw_mode(0o600)) {
                Ok(fd) => {
                    return Ok(TempFile {
                        file: File::from(fd),
                        dir,
                        name: Some(name),
                    })
                }
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Puts the file at `name` in its directory, replacing what was there
    /// (a file or a link; a directory is refused by the kernel) in one step.
    /// Answers the file's status read right after, the last step of ours
    /// (what the stamp cache may record: `stamp::record_written`).
    pub(crate) fn commit(mut self, name: &OsStr) -> std::io::Result<Stat> {
        let dir = self.dir.clone();
        let tmp = match self.name.take() {
            Some(tmp) => tmp,
            None => match crate::sys::link_unnamed(self.file.as_fd(), dir.as_fd(), name) {
                Ok(()) => return Ok(rustix::fs::fstat(&self.file)?),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    let tmp = random_name();
                    crate::sys::link_unnamed(self.file.as_fd(), dir.as_fd(), &tmp)?;
                    tmp
                }
                Err(e) => return Err(e),
            },
        };
        let moved = rustix::fs::renameat(&*dir, tmp.as_os_str(), &*dir, name);
        if let Err(e) = moved {
            let _ = rustix::fs::unlinkat(&*dir, tmp.as_os_str(), rustix::fs::AtFlags::empty());
            return Err(e.into());
        }
        Ok(rustix::fs::fstat(&self.file)?)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(name) = self.name.take() {
            let _ =
                rustix::fs::unlinkat(&*self.dir, name.as_os_str(), rustix::fs::AtFlags::empty());
        }
    }
}
