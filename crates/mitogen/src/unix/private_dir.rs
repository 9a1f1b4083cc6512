//! The directory a listener's socket lives in: one that only this user may
//! enter, opened without following a symbolic link and checked on the open
//! descriptor (owner and mode from `fstat`, never by looking the path up
//! again), so that nothing can be swapped in between the check and the bind.
//!
//! The socket is then created *through* that descriptor
//! (`/proc/self/fd/N/NAME`), not through the path: whatever happens to the
//! path afterwards, the socket lands in the directory that was checked.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, CWD};

/// Longest path `bind(2)` takes (`sun_path` less its terminating NUL).
const SUN_PATH_MAX: usize = crate::sys::SUN_PATH_MAX;

/// A directory only this user may enter, held open.
#[derive(Debug)]
pub(super) struct PrivateDir {
    fd: OwnedFd,
    path: PathBuf,
    /// Set when the directory was made for this listener and goes with it
    /// (on drop): the directory it was made in, held open, and its name there.
    made: Option<(OwnedFd, OsString)>,
}

impl PrivateDir {
    /// Opens the existing directory `path` and checks that it is private.
    pub(super) fn open(path: &Path) -> io::Result<PrivateDir> {
        let fd = open_dir(CWD, path)?;
        check(fd.as_fd(), path)?;
        Ok(PrivateDir {
            fd,
            path: path.to_owned(),
            made: None,
        })
    }

    /// `$XDG_RUNTIME_DIR` when it is set and private to this user (after
    /// `sudo` it may still name the invoking user's directory: then it is
    /// not used).
    pub(super) fn runtime() -> Option<PrivateDir> {
        let dir = std::env::var_os("XDG_RUNTIME_DIR")?;
        let path = Path::new(&dir);
        if !path.is_absolute() {
            return None;
        }
        match PrivateDir::open(path) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::debug!("unix listener: not using $XDG_RUNTIME_DIR: {e}");
                None
            }
        }
    }

    /// Makes a new directory of an unguessable name, mode 0700, in the
    /// temporary directory.
    /// A name someone else took first (`mkdir` never follows or reuses
    /// anything) is skipped for another. It is removed on drop.
    pub(super) fn make_temp() -> io::Result<PrivateDir> {
        let base_path = std::env::temp_dir();
        let base = rustix::fs::openat(
            CWD,
            &base_path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| with_path(e.into(), &base_path))?;
        for _ in 0..16 {
            let name = OsString::from(format!("mitogen-unix-{:016x}", random()));
            match rustix::fs::mkdirat(&base, name.as_os_str(), Mode::from_raw_mode(0o700)) {
                Ok(()) => {}
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => return Err(with_path(e.into(), &base_path)),
            }
            let path = base_path.join(&name);
            let fd = open_dir(&base, &name)
                .and_then(|fd| check(fd.as_fd(), &path).map(|()| fd))
                .inspect_err(|_| {
                    let _ = rustix::fs::unlinkat(&base, name.as_os_str(), AtFlags::REMOVEDIR);
                })?;
            return Ok(PrivateDir {
                fd,
                path,
                made: Some((base, name)),
            });
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "no free name for a private directory in {}",
                base_path.display()
            ),
        ))
    }

    /// The directory's path (as given; what clients connect through).
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// A path to `name` inside this directory that resolves through the
    /// open descriptor, whatever has become of [`path`](Self::path).
    pub(super) fn path_through_fd(&self, name: &OsStr) -> io::Result<PathBuf> {
        let p = crate::sys::path_through_fd(self.fd.as_fd(), name);
        if p.as_os_str().len() > SUN_PATH_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "socket name {:?} is too long (at most {} bytes)",
                    name,
                    SUN_PATH_MAX - (p.as_os_str().len() - name.len())
                ),
            ));
        }
        Ok(p)
    }

    /// The open directory.
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Removes `name` from the directory.
    pub(super) fn remove(&self, name: &OsStr) {
        let _ = rustix::fs::unlinkat(&self.fd, name, AtFlags::empty());
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        if let Some((base, dir)) = &self.made {
            // Only when empty: anything else in it is not ours to delete.
            let _ = rustix::fs::unlinkat(base, dir.as_os_str(), AtFlags::REMOVEDIR);
        }
    }
}

/// Opens a directory, refusing a symbolic link in the last component.
fn open_dir(at: impl AsFd, path: impl AsRef<Path>) -> io::Result<OwnedFd> {
    let path = path.as_ref();
    rustix::fs::openat(
        at,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        // O_NOFOLLOW|O_DIRECTORY on a symbolic link fails with either; the
        // second look only chooses the message.
        rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_symlink()) =>
        {
            io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is a symbolic link (not followed: the socket's directory must be a real, private one)",
                path.display()
            ),
            )
        }
        e => with_path(e.into(), path),
    })
}

/// Checks on the open descriptor that the directory belongs to this user and
/// that group and others may not enter, list or write it.
fn check(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let st = rustix::fs::fstat(fd)?;
    let me = rustix::process::geteuid().as_raw();
    let mode = st.st_mode & 0o7777;
    if st.st_uid != me || mode & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a private directory (owner uid {}, mode {:o}): a listening \
                 socket's directory must belong to uid {me} and be closed to group and others",
                path.display(),
                st.st_uid,
                mode
            ),
        ));
    }
    Ok(())
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// 64 bits from the standard library's per-process random hash keys: enough
/// that another user cannot guess the name ahead of time.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}
