//! Whether a file system gives a change made after a file's status was
//! read a change time of its own (Linux's "multigrain" timestamps, 6.13
//! and later on ext4, XFS, Btrfs and tmpfs).
//!
//! Elsewhere a change time is the clock's coarse tick (a few milliseconds):
//! a write within the same tick as the status read leaves the same times,
//! which is why the stamp cache trusts only files whose last change is
//! [`MARGIN`](super::stamp::MARGIN) old. Where times are fine-grained
//! once read, the kernel guarantees that any change after a status was
//! read moves the change time past the one read. So a receiver that reads
//! the status of a file it has just written, and finds it as it left it,
//! may record that status with the content it wrote: any later write shows.
//!
//! No flag says which kind a file system is, so this is found out on a
//! file of our own, once per device: read its status, change its mode (to
//! what it is: a change all the same), read it again, three times. With
//! coarse times the change times repeat (three changes a few microseconds
//! apart fall in one tick, or at most two); fine-grained, each one is later
//! than the last.

use std::fs::File;
use std::os::fd::AsFd;
use std::sync::Mutex;

use rustix::fs::Mode;

/// File systems whose change times come from this machine's clock, at its
/// tick (a few milliseconds at most) when not finer: ext2/3/4, XFS, Btrfs,
/// tmpfs, F2FS. A network file system's come from its server's clock, which
/// may run behind ours; FUSE's from whatever serves it.
const LOCAL_TYPES: [u32; 5] = [0xEF53, 0x5846_5342, 0x9123_683E, 0x0102_1994, 0xF2F5_2010];

/// Devices whose file system type is known, and whether it is local.
static LOCAL: Mutex<Vec<(u64, bool)>> = Mutex::new(Vec::new());

/// Notes whether the file system of `fd` (on device `dev`) is one of
/// [`LOCAL_TYPES`], once per device; [`is_local`] answers from this.
pub(crate) fn note_local(fd: impl AsFd, dev: u64) {
    let mut known = LOCAL.lock().unwrap_or_else(|p| p.into_inner());
    if known.iter().any(|(d, _)| *d == dev) {
        return;
    }
    // The type's width differs between targets; its 32 low bits name it.
    #[allow(clippy::unnecessary_cast)]
    let local = rustix::fs::fstatfs(fd)
        .map(|s| LOCAL_TYPES.contains(&(s.f_type as i64 as u32)))
        .unwrap_or(false);
    if known.len() >= KEEP {
        known.remove(0);
    }
    known.push((dev, local));
}

/// Whether device `dev` was noted as a local file system ([`note_local`]);
/// one not noted is not.
pub(crate) fn is_local(dev: u64) -> bool {
    let known = LOCAL.lock().unwrap_or_else(|p| p.into_inner());
    known.iter().any(|&(d, local)| d == dev && local)
}

/// Devices probed so far, and what was found: few in any process (the
/// places a process writes to), and bounded all the same.
static PROBED: Mutex<Vec<(u64, bool)>> = Mutex::new(Vec::new());

/// Devices remembered at most; past that, the oldest is probed again.
const KEEP: usize = 32;

/// Whether the file system of `f` (a file of ours that no one else writes
/// to yet: its mode is changed to what it is) shows every change made
/// after a status read. Any failure answers no: the margin then applies.
// The status's field types differ between targets.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn changes_show_at_once(f: &File) -> bool {
    let Ok(st) = rustix::fs::fstat(f) else {
        return false;
    };
    let dev = st.st_dev as u64;
    // Whether it is local too, for the margin of what is recorded.
    note_local(f, dev);
    let mut probed = PROBED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(&(_, fine)) = probed.iter().find(|(d, _)| *d == dev) {
        return fine;
    }
    let fine = probe(f, Mode::from_raw_mode(st.st_mode as u32 & 0o7777));
    if probed.len() >= KEEP {
        probed.remove(0);
    }
    probed.push((dev, fine));
    fine
}

#[allow(clippy::unnecessary_cast)]
fn probe(f: &File, mode: Mode) -> bool {
    let ctime = |f: &File| {
        rustix::fs::fstat(f)
            .ok()
            .map(|s| (s.st_ctime as i64, s.st_ctime_nsec as i64))
    };
    let Some(mut last) = ctime(f) else {
        return false;
    };
    for _ in 0..3 {
        if rustix::fs::fchmod(f, mode).is_err() {
            return false;
        }
        match ctime(f) {
            Some(now) if now > last => last = now,
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probe leaves the file's mode as it was, and answers the same
    /// twice (the second from memory).
    #[test]
    fn the_probe_keeps_the_mode_and_its_answer() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("fine-times-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let path = dir.join("f");
        let f = File::create(&path).expect("scratch file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("mode");
        let first = changes_show_at_once(&f);
        let mode = std::fs::metadata(&path)
            .expect("status")
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o640);
        assert_eq!(changes_show_at_once(&f), first);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
