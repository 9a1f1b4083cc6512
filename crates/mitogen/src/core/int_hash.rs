//! A hash for tables keyed by numbers that no other process chooses.
//!
//! The standard library's keyed SipHash is what a table needs when another
//! process picks its keys (it could otherwise pick ones that collide). Two
//! per-message tables do not need it: the router's handles (well-known
//! numbers below 1000, and reply and channel handles drawn from
//! `core::token`, a keyed pseudo-random function: a sender can ask for any
//! handle, but cannot place any) and the child's calls in flight (keyed by
//! the caller and its reply handle; only parents may call, and whoever can
//! call can already run any function there). SipHash cost about 90
//! instructions per operation there, several operations per call; this one
//! multiplication costs a few.

use std::hash::{BuildHasherDefault, Hasher};

/// Builds [`IntHasher`]s, for `HashMap::with_hasher` / `default()`.
pub(crate) type IntHash = BuildHasherDefault<IntHasher>;

/// Hashes one integer key with a folded 64x64->128 multiplication, which
/// spreads every bit of the key into both the low bits (the bucket) and the
/// high ones (the tag).
#[derive(Default)]
pub(crate) struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        let m = u128::from(self.0) * 0x9E37_79B9_7F4A_7C15_u128;
        (m as u64) ^ ((m >> 64) as u64)
    }

    fn write(&mut self, bytes: &[u8]) {
        // Integer keys use the methods below; this keeps any other key
        // correct, if slow.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn neighbouring_keys_land_in_different_buckets_and_tags() {
        let h = IntHash::default();
        let hashes: std::collections::HashSet<u64> =
            (0u32..4096).map(|k| h.hash_one(k) & 0xfff).collect();
        assert!(hashes.len() > 2500, "{} buckets of 4096", hashes.len());
        let tags: std::collections::HashSet<u64> =
            (0u32..4096).map(|k| h.hash_one(k) >> 57).collect();
        assert_eq!(tags.len(), 128);
    }
}
