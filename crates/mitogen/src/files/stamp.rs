//! What this process knows of files it has hashed: a file's stamp (device,
//! inode, size, modification and change times) and its BLAKE3, as git's
//! index keeps them, so that an unchanged file is not read again.
//!
//! A change time (`ctime`) moves with every write, rename onto the name,
//! `chmod` or `utimensat`, and no user can set it: a file whose stamp is
//! the one recorded still has the content recorded. The exception is git's
//! "racy" case: a write within the same clock tick as the stamp recorded
//! leaves the same times. So an entry is trusted only when the file's
//! change and modification times are older than the moment the stamp was
//! taken by more than [`MARGIN`] (well above a file system's clock tick,
//! and room for a network file system's clock running behind ours); a file
//! hashed within that margin of its last change is read and hashed again
//! at its next check, and recorded afresh then.
//!
//! Bounded: at most [`CAP`] entries (about 120 bytes each with the table's
//! own overhead, so under 8 MiB); when full, the half used longest ago goes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::Stat;

use super::wire::Hash;

/// How much older than the moment its stamp was taken a file's last change
/// must be for the stamp to vouch for its content.
pub(crate) const MARGIN: Duration = Duration::from_secs(2);

/// Entries kept at most.
pub(crate) const CAP: usize = 1 << 16;

/// The fields of a file's status that change when its content may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fields {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

struct Known {
    fields: Fields,
    hash: Hash,
    /// When the status this entry holds was taken (ns since the epoch).
    taken_ns: i128,
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
pub(crate) fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

// The status's field types differ between targets.
#[allow(clippy::unnecessary_cast)]
fn key_and_fields(st: &Stat) -> ((u64, u64), Fields) {
    let ns = |s: i64, n: i64| s as i128 * 1_000_000_000 + n as i128;
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
/// last change and modification came more than [`MARGIN`] before.
fn settled(f: &Fields, taken_ns: i128) -> bool {
    let before = taken_ns - MARGIN.as_nanos() as i128;
    f.ctime_ns < before && f.mtime_ns < before
}

/// The hash of the file whose fresh status is `st`, when it was hashed
/// before with exactly this status, settled (see the module's notes).
pub(crate) fn lookup(st: &Stat) -> Option<Hash> {
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return None;
    }
    let (key, fields) = key_and_fields(st);
    let mut guard = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let cache = guard.as_mut()?;
    cache.clock += 1;
    let clock = cache.clock;
    let k = cache.map.get_mut(&key)?;
    if k.fields != fields || !settled(&k.fields, k.taken_ns) {
        return None;
    }
    k.used = clock;
    Some(k.hash)
}

/// Records that the file whose status `st` was taken at `taken_ns`
/// (before its content was read) has content hashing to `hash`. A file
/// changed within [`MARGIN`] of `taken_ns` is not worth keeping: it would
/// not be trusted.
pub(crate) fn record(st: &Stat, taken_ns: i128, hash: Hash) {
    let (key, fields) = key_and_fields(st);
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || !settled(&fields, taken_ns) {
        return;
    }
    let mut guard = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let cache = guard.get_or_insert_with(Cache::default);
    cache.clock += 1;
    if cache.map.len() >= CAP && !cache.map.contains_key(&key) {
        // The half used longest ago goes: amortised over CAP / 2 inserts.
        let keep_after = cache.clock.saturating_sub(CAP as u64 / 2);
        cache.map.retain(|_, k| k.used > keep_after);
        if cache.map.len() >= CAP {
            cache.map.clear();
        }
    }
    let used = cache.clock;
    cache.map.insert(
        key,
        Known {
            fields,
            hash,
            taken_ns,
            used,
        },
    );
}

/// BLAKE3 of the open file `f` of status `st` (taken at `taken_ns`, before
/// any read), from the cache when it vouches for it, else read through
/// `read` and recorded.
pub(crate) fn hash_or_read(
    st: &Stat,
    taken_ns: i128,
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

    fn f(mtime_s: i128, ctime_s: i128) -> Fields {
        Fields {
            size: 1,
            mtime_ns: mtime_s * 1_000_000_000,
            ctime_ns: ctime_s * 1_000_000_000,
        }
    }

    #[test]
    fn a_stamp_taken_within_the_margin_of_a_change_is_not_trusted() {
        let t = 1_000 * 1_000_000_000;
        assert!(settled(&f(990, 990), t));
        assert!(!settled(&f(990, 999), t), "changed a second before");
        assert!(!settled(&f(999, 990), t), "modified a second before");
        assert!(!settled(&f(2_000, 990), t), "a modification time to come");
    }
}
