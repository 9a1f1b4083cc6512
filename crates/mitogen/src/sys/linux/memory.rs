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

/// Buffers up to this size come from the allocator's heaps, not from a
/// mapping of their own: a large file moves as 256 KiB frames and a stream
/// as chunks of up to 1 MiB, each allocated and freed once per frame.
const MMAP_THRESHOLD: i32 = 4 << 20;

/// Free memory at the top of a heap is handed back to the system only past
/// this much: twice the 8 MiB window of frames a transfer has in flight.
const TRIM_THRESHOLD: i32 = 16 << 20;

/// Keeps glibc's allocator from mapping and unmapping memory for every large
/// buffer. By default glibc hands the top of a heap back once 2 × the last
/// large block is free there (its dynamic trim threshold, about 512 KiB
/// after a frame of 256 KiB), so a transfer, which frees each frame as the
/// next arrives, gave its pages back and faulted them in again all the
/// time: a local fetch of 1 GiB took 240,000 to 470,000 page faults in the
/// master, and ran at 1.75 to 2.7 GiB/s; with these thresholds, 8,000
/// faults and 3.3 to 3.5 GiB/s (peak memory of each process 20 MiB instead
/// of 14 to 16). Idle contexts still give their free memory back
/// ([`release_free_memory`]). Setting either value also turns glibc's
/// dynamic thresholds off, so both are set. musl and other allocators are
/// left alone.
pub(crate) fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets the allocator's own parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
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
