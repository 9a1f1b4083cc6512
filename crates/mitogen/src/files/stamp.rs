//! What this process knows of files it has hashed: a file's stamp (device,
//! inode, size, modification and change times) and its BLAKE3, as git's
//! index keeps them, so that an unchanged file is not read again.
//!
//! A change time (`ctime`) moves with every write, rename onto the name,
//! `chmod` or `utimensat`, and no user can set it: a file whose stamp is
//! the one recorded still has the content recorded. The exception is git's
//! "racy" case: a write within the same clock tick as the stamp recorded
//! leaves the same times. So a file hashed after reading it is recorded
//! only when its change and modification times are older than the moment
//! the stamp was taken by more than [`MARGIN`] (well above a file system's
//! clock tick, and room for a network file system's clock running behind
//! ours); a file hashed within that margin of its last change is read and
//! hashed again at its next check, and recorded afresh then.
//!
//! A file this process has just written is recorded at once where the file
//! system gives every change made after a status read a later change time
//! ([`record_written`], `fine_times.rs`): the push right after the first
//! then reads nothing either.
//!
//! Bounded: at most [`CAP`] entries, so that the table never grows past
//! 65,536 slots of 81 bytes (an entry of 80 and a control byte): 5.1 MiB at
//! most (twice that for the moment it is rebuilt). When full, the half used
//! longest ago goes, into a new table.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::Stat;

use super::wire::Hash;

/// How much older than the moment its stamp was taken a file's last change
/// must be for the stamp to vouch for its content.
pub(crate) const MARGIN: Duration = Duration::from_secs(2);

/// The same on a local file system with change times finer than a
/// millisecond ([`margin`]): five times the slowest kernel tick.
pub(crate) const LOCAL_MARGIN: Duration = Duration::from_millis(50);

/// Entries kept at most: seven eighths of 65,536, the most a table of that
/// many slots holds before it doubles.
pub(crate) const CAP: usize = (1 << 16) / 8 * 7;

/// The fields of a file's status that change when its content may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fields {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

/// A recorded file: only files whose status vouches for their content are
/// recorded (see [`record`] and [`record_written`]).
struct Known {
    fields: Fields,
    hash: Hash,
    /// Last use, for eviction.
    used: u64,
}

#[derive(Default)]
struct Cache {
    map: HashMap<(u64, u64), Known>,
    clock: u64,
}

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

/// The time now, in nanoseconds since the epoch: taken before the status
/// that [`record`] is given.
pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64)
}

// The status's field types differ between targets.
#[allow(clippy::unnecessary_cast)]
fn key_and_fields(st: &Stat) -> ((u64, u64), Fields) {
    // Nanoseconds fit an i64 until 2262; a time out of range saturates
    // (and is then compared as any other).
    let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
    (
        (st.st_dev as u64, st.st_ino as u64),
        Fields {
            size: st.st_size as u64,
            mtime_ns: ns(st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime_ns: ns(st.st_ctime as i64, st.st_ctime_nsec as i64),
        },
    )
}

/// Whether a stamp taken at `taken_ns` vouches for the content: the file's
/// last change and modification came more than the margin before
/// ([`margin`]).
fn settled(f: &Fields, taken_ns: i64, local: bool) -> bool {
    let before = taken_ns.saturating_sub(margin(f, local).as_nanos() as i64);
    f.ctime_ns < before && f.mtime_ns < before
}

/// How much older than the stamp a file's last change must be: [`MARGIN`],
/// or [`LOCAL_MARGIN`] on a local file system (`local`: its times come from
/// this machine's clock) whose change times are finer than a millisecond
/// (this file's is not a whole number of them: one of a second or a
/// millisecond would be). There a change after the stamp was taken gets a
/// change time of at least the clock's coarse tick then, which is at most
/// a tick (10 ms at the slowest kernel tick) behind the time the stamp was
/// taken, so later than one more than `LOCAL_MARGIN` older.
fn margin(f: &Fields, local: bool) -> Duration {
    if local && f.ctime_ns % 1_000_000 != 0 {
        LOCAL_MARGIN
    } else {
        MARGIN
    }
}

impl Cache {
    /// The hash kept for `key` when its fields are still `fields`.
    fn get(&mut self, key: (u64, u64), fields: Fields) -> Option<Hash> {
        self.clock += 1;
        let clock = self.clock;
        let k = self.map.get_mut(&key)?;
        if k.fields != fields {
            return None;
        }
        k.used = clock;
        Some(k.hash)
    }

    /// Keeps `hash` for `key`, making room first when full.
    fn put(&mut self, key: (u64, u64), fields: Fields, hash: Hash) {
        self.clock += 1;
        if self.map.len() >= CAP && !self.map.contains_key(&key) {
            // The half used longest ago goes: amortised over CAP / 2 inserts.
            // Into a new table: one emptied in place keeps its removed
            // slots as tombstones, and would double to make room.
            let keep_after = self.clock.saturating_sub(CAP as u64 / 2);
            let old = std::mem::take(&mut self.map);
            self.map = HashMap::with_capacity(CAP);
            self.map
                .extend(old.into_iter().filter(|(_, k)| k.used > keep_after));
        }
        let used = self.clock;
        self.map.insert(key, Known { fields, hash, used });
    }
}

/// The hash of the file whose fresh status is `st`, when it was hashed
/// before with exactly this status, settled (see the module's notes).
pub(crate) fn lookup(st: &Stat) -> Option<Hash> {
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return None;
    }
    let (key, fields) = key_and_fields(st);
    let mut guard = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    guard.as_mut()?.get(key, fields)
}

/// Records that the file whose status `st` was taken at `taken_ns`
/// (before its content was read) has content hashing to `hash`. A file
/// changed within [`MARGIN`] of `taken_ns` is not worth keeping: it would
/// not be trusted.
pub(crate) fn record(st: &Stat, taken_ns: i64, hash: Hash) {
    let (key, fields) = key_and_fields(st);
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || !settled(&fields, taken_ns, local(st)) {
        return;
    }
    put(key, fields, hash);
}

fn put(key: (u64, u64), fields: Fields, hash: Hash) {
    let mut guard = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    guard
        .get_or_insert_with(Cache::default)
        .put(key, fields, hash);
}

/// Records that the file whose status `st` was read (by this process, which
/// has just written it: content, mode, times and name) after the last of
/// those steps has content hashing to `hash`, when that status can vouch
/// for it from now on: the file system shows every change made after a
/// status read (`on_fine_times`, from `fine_times.rs`), and the file's
/// modification time (the source's, put back) is older than the margin
/// ([`margin`]: [`LOCAL_MARGIN`] on a local file system with fine times),
/// so that a later write that does not put it back shows in it as well: its
/// time is at most a tick behind the clock, itself later than the margin
/// after the time put back. (A tree pushed a second or so after it was
/// made was not recorded with the 2 s of [`MARGIN`] there, and a push right
/// after read it all again.)
///
/// What this leaves to chance: a write by another process between this
/// process's last step and its status read (microseconds), which puts the
/// modification time back and keeps the size; only an account that may
/// write the file anyway can make it, and it is seen again once the file
/// changes or is sent with `update` off.
pub(crate) fn record_written(st: &Stat, hash: Hash, on_fine_times: bool) {
    let (key, fields) = key_and_fields(st);
    let margin = margin(&fields, local(st));
    let old_enough = fields.mtime_ns < now_ns().saturating_sub(margin.as_nanos() as i64);
    if on_fine_times && old_enough && st.st_mode & libc::S_IFMT == libc::S_IFREG {
        put(key, fields, hash);
    }
}

/// Whether a hash of the file of status `st` (taken at `taken_ns`) would be
/// kept by [`record`]: one changed within [`MARGIN`] would not.
pub(crate) fn worth_recording(st: &Stat, taken_ns: i64) -> bool {
    settled(&key_and_fields(st).1, taken_ns, local(st))
}

/// Notes whether the file system of the open file `fd` of status `st` is
/// local, once per device: its stamps may then be trusted sooner
/// ([`margin`]). Called before [`record`] wherever the file is open.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn note_fs(fd: impl std::os::fd::AsFd, st: &Stat) {
    super::fine_times::note_local(fd, st.st_dev as u64);
}

/// Whether the device of `st` was noted as local (`fine_times::note_local`).
#[allow(clippy::unnecessary_cast)]
fn local(st: &Stat) -> bool {
    super::fine_times::is_local(st.st_dev as u64)
}

/// BLAKE3 of the open file `f` of status `st` (taken at `taken_ns`, before
/// any read), from the cache when it vouches for it, else read through
/// `read` and recorded.
pub(crate) fn hash_or_read(
    st: &Stat,
    taken_ns: i64,
    read: impl FnOnce() -> Option<Hash>,
) -> Option<Hash> {
    if let Some(h) = lookup(st) {
        return Some(h);
    }
    let h = read()?;
    record(st, taken_ns, h);
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(mtime_s: i64, ctime_s: i64) -> Fields {
        Fields {
            size: 1,
            mtime_ns: mtime_s * 1_000_000_000,
            ctime_ns: ctime_s * 1_000_000_000,
        }
    }

    #[test]
    fn a_stamp_taken_within_the_margin_of_a_change_is_not_trusted() {
        let t = 1_000 * 1_000_000_000;
        for local in [false, true] {
            assert!(settled(&f(990, 990), t, local));
            assert!(!settled(&f(990, 999), t, local), "changed a second before");
            assert!(!settled(&f(999, 990), t, local), "modified a second before");
            assert!(
                !settled(&f(2_000, 990), t, local),
                "a modification time to come"
            );
        }
    }

    #[test]
    fn a_local_file_system_with_fine_times_needs_a_shorter_margin() {
        let t = 1_000 * 1_000_000_000;
        // Changed 100 ms before, at a time that is not a whole millisecond.
        let fine = Fields {
            size: 1,
            mtime_ns: t - 100_000_123,
            ctime_ns: t - 100_000_123,
        };
        assert!(settled(&fine, t, true));
        assert!(!settled(&fine, t, false), "not known to be local");
        let coarse = Fields {
            ctime_ns: t - 100_000_000,
            ..fine
        };
        assert!(
            !settled(&coarse, t, true),
            "change times of whole milliseconds"
        );
        let recent = Fields {
            mtime_ns: t - 20_000_123,
            ctime_ns: t - 20_000_123,
            ..fine
        };
        assert!(
            !settled(&recent, t, true),
            "changed within the local margin"
        );
    }

    #[test]
    fn the_cache_stays_within_its_bound_and_drops_the_oldest() {
        let mut c = Cache::default();
        for i in 0..(CAP as u64 * 3) {
            c.put((1, i), f(1, 1), [0; 32]);
            // Used now and then: what is used stays.
            assert_eq!(c.get((1, 0), f(1, 1)), Some([0; 32]), "after {i}");
        }
        assert!(c.map.len() <= CAP, "{} entries", c.map.len());
        assert!(c.map.capacity() <= CAP, "room for {}", c.map.capacity());
        assert_eq!(c.get((1, 5), f(1, 1)), None, "an old entry kept");
        let last = CAP as u64 * 3 - 1;
        assert_eq!(c.get((1, last), f(1, 1)), Some([0; 32]));
        assert_eq!(c.get((1, last), f(2, 1)), None, "another time");
        assert_eq!(std::mem::size_of::<((u64, u64), Known)>(), 80);
    }
}
