//! Files without a name until they are complete: `O_TMPFILE` and `linkat`.

use std::ffi::OsStr;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, Mode, OFlags, CWD};

/// Opens a new regular file in the directory `dir` that has no name yet
/// (`O_TMPFILE`): if the process dies before [`link_unnamed`], the kernel
/// frees it and nothing is left behind. `Ok(None)` when the file system
/// cannot (older kernels, some network and FUSE file systems): the caller
/// then makes a named temporary file.
pub(crate) fn open_unnamed(dir: BorrowedFd<'_>, mode: u32) -> std::io::Result<Option<OwnedFd>> {
    let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, ".", flags, Mode::from_raw_mode(mode)) {
        Ok(fd) => Ok(Some(fd)),
        Err(e)
            if e == rustix::io::Errno::OPNOTSUPP
                || e == rustix::io::Errno::ISDIR
                || e == rustix::io::Errno::INVAL
                || e == rustix::io::Errno::NOSYS =>
        {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Gives a file from [`open_unnamed`] the name `name` in `dir` (failing with
/// `EEXIST` if it is taken). `AT_EMPTY_PATH` needs `CAP_DAC_READ_SEARCH`;
/// without it the file is linked through `/proc/self/fd`.
pub(crate) fn link_unnamed(
    file: BorrowedFd<'_>,
    dir: BorrowedFd<'_>,
    name: &OsStr,
) -> std::io::Result<()> {
    match rustix::fs::linkat(file, "", dir, name, AtFlags::EMPTY_PATH) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::NOENT || e == rustix::io::Errno::PERM => {
            let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file));
            rustix::fs::linkat(CWD, path.as_str(), dir, name, AtFlags::SYMLINK_FOLLOW)
                .map_err(Into::into)
        }
        Err(e) => Err(e.into()),
    }
}
