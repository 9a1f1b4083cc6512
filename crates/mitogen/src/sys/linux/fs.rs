//! Paths and files reached through descriptors.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use rustix::fs::{Mode, OFlags};

/// Longest path `bind(2)` takes: `sun_path` (108 bytes on Linux) less its
/// terminating NUL.
pub(crate) const SUN_PATH_MAX: usize = 107;

/// A path to `name` inside the directory open as `dir` that resolves through
/// the descriptor, whatever has become of the directory's own path (renamed,
/// replaced by a link): for calls such as `bind(2)` that take a path only.
/// Valid in this process only, while `dir` stays open.
pub(crate) fn path_through_fd(dir: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    p.push(name);
    p
}

/// Opens `name` in `dir` for `fstat` only: a link is not followed, and
/// nothing is opened for real (`O_PATH`: no device opened, no FIFO waited on).
pub(crate) fn open_for_stat(dir: impl AsFd, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn tmpdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "mitogen-sys-fs-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).unwrap();
        d
    }

    fn open_dir(p: &std::path::Path) -> OwnedFd {
        rustix::fs::open(
            p,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap()
    }

    #[test]
    fn a_path_through_the_descriptor_survives_a_rename() {
        let d = tmpdir();
        std::fs::write(d.join("f"), b"x").unwrap();
        let fd = open_dir(&d);
        let moved = d.with_extension("moved");
        let _ = std::fs::remove_dir_all(&moved);
        std::fs::rename(&d, &moved).unwrap();
        let p = path_through_fd(fd.as_fd(), OsStr::new("f"));
        assert_eq!(std::fs::read(&p).unwrap(), b"x");
        std::fs::remove_dir_all(&moved).unwrap();
    }

    #[test]
    fn open_for_stat_does_not_follow_links_or_open_fifos() {
        let d = tmpdir();
        std::fs::write(d.join("f"), b"x").unwrap();
        std::os::unix::fs::symlink(d.join("f"), d.join("l")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            d.join("p"),
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let fd = open_dir(&d);
        let meta = |n: &str| {
            std::fs::File::from(open_for_stat(&fd, OsStr::new(n)).unwrap())
                .metadata()
                .unwrap()
        };
        assert!(meta("l").file_type().is_symlink());
        // A FIFO with no writer would block a real open.
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(
            &meta("p").file_type()
        ));
        assert_eq!(
            meta("f").ino(),
            std::fs::metadata(d.join("f")).unwrap().ino()
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_socket_path_of_sun_path_max_bytes_binds_and_a_longer_one_does_not() {
        use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
        let d = tmpdir();
        let bind = |len: usize| {
            let mut p = d.as_os_str().to_owned();
            p.push("/");
            let name = "s".repeat(len - p.len());
            p.push(name);
            let fd = rustix::net::socket_with(
                AddressFamily::UNIX,
                SocketType::STREAM,
                SocketFlags::CLOEXEC,
                None,
            )
            .unwrap();
            SocketAddrUnix::new(std::path::Path::new(&p)).and_then(|a| rustix::net::bind(&fd, &a))
        };
        assert!(bind(SUN_PATH_MAX).is_ok());
        // Linux takes a path filling `sun_path` without its NUL too, which
        // not every system (nor every C client) reads right: never made here.
        assert!(bind(SUN_PATH_MAX + 2).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
