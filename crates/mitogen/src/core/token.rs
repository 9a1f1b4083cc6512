//! Unguessable numbers: reply handles and channel keys.
//!
//! Each number is part of the output of BLAKE3 in keyed mode over a counter,
//! under a key drawn from the kernel's random source once per process: a
//! pseudo-random function, so a context that sees some numbers (the reply
//! handles of the calls made to it, the keys of the channels handed to it)
//! learns nothing of the others. One hash yields 16 numbers, kept per
//! thread, so drawing one costs a few nanoseconds and takes no lock.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static KEY: OnceLock<[u8; 32]> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Numbers one hash yields.
const POOL: usize = 16;

thread_local! {
    static NUMBERS: Cell<[u32; POOL]> = const { Cell::new([0; POOL]) };
    static LEFT: Cell<usize> = const { Cell::new(0) };
}

/// Draws the process's key, if not done yet. Routers call it as they start,
/// so that a failure of the random source is an error there.
pub(crate) fn init() -> std::io::Result<()> {
    if KEY.get().is_some() {
        return Ok(());
    }
    let key = random_key()?;
    let _ = KEY.set(key);
    Ok(())
}

/// The next unguessable number.
pub(crate) fn next() -> u32 {
    let left = LEFT.with(Cell::get);
    if left == 0 {
        refill();
    }
    let left = LEFT.with(Cell::get);
    LEFT.with(|l| l.set(left - 1));
    NUMBERS.with(Cell::get)[left - 1]
}

fn refill() {
    let key = match KEY.get() {
        Some(k) => k,
        // Routers draw the key before they hand out numbers; this is the
        // path of a failure they already reported.
        None => KEY.get_or_init(|| random_key().unwrap_or_else(|_| fallback_key())),
    };
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut out = [0u8; POOL * 4];
    blake3::Hasher::new_keyed(key)
        .update(&n.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    let mut numbers = [0u32; POOL];
    for (i, chunk) in out.chunks_exact(4).enumerate() {
        numbers[i] = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    NUMBERS.with(|c| c.set(numbers));
    LEFT.with(|l| l.set(POOL));
}

/// A fresh secret key from the kernel's random source.
fn random_key() -> std::io::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    crate::sys::random_bytes(&mut key)?;
    Ok(key)
}

/// A key from the seeds of the standard library's hash maps (themselves from
/// the operating system), for a process whose `getrandom` fails.
fn fallback_key() -> [u8; 32] {
    use std::hash::{BuildHasher, Hasher};
    let mut key = [0u8; 32];
    for (i, chunk) in key.chunks_exact_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(i);
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_do_not_repeat_in_a_long_run_and_differ_between_threads() {
        init().unwrap();
        let mine: std::collections::HashSet<u32> = (0..10_000).map(|_| next()).collect();
        assert!(mine.len() > 9_990, "{} distinct of 10000", mine.len());
        let theirs: Vec<u32> = std::thread::spawn(|| (0..100).map(|_| next()).collect())
            .join()
            .unwrap();
        assert!(theirs.iter().filter(|n| mine.contains(n)).count() < 3);
    }
}
