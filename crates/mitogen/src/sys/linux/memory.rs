//! The process's memory.

use std::io;

/// The process's resident set now, in KiB (`VmRSS`).
pub(crate) fn resident_set_kib() -> io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::other("no VmRSS in /proc/self/status"))
}

/// Returns the allocator's free memory to the system: glibc keeps it
/// otherwise (musl returns it by itself).
pub(crate) fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resident_set_grows_with_touched_memory() {
        // Other tests of this binary run alongside and may free tens of MiB
        // between the two readings: one clean try of three is enough.
        let mut seen = Vec::new();
        for _ in 0..3 {
            let before = resident_set_kib().unwrap();
            assert!(before > 0);
            let v = vec![1u8; 64 << 20];
            let during = resident_set_kib().unwrap();
            drop(std::hint::black_box(v));
            release_free_memory();
            if during >= before + 32 * 1024 {
                return;
            }
            seen.push((before, during));
        }
        panic!("the resident set never grew by 32 MiB: {seen:?}");
    }
}
