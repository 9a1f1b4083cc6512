//! Functions `mitogen bench` calls in the measured context. They are part of
//! the `mitogen` binary itself, so every context it starts has them.

use bytes::Bytes;
use mitogen::{Blob, Sender};

/// Sends `n_chunks` chunks of `chunk_size` zero bytes to `out`, then closes it,
/// and returns the process id (proof the stream came from the child).
///
/// Every chunk is the same shared buffer: the benchmark measures the
/// transport, not the cost of building payloads in the child.
#[mitogen::remote]
pub fn stream_chunks(out: Sender<Blob>, n_chunks: u32, chunk_size: u32) -> mitogen::Result<u32> {
    let chunk = Bytes::from(vec![0u8; chunk_size as usize]);
    for _ in 0..n_chunks {
        out.send(Blob(chunk.clone()))?;
    }
    out.close()?;
    Ok(std::process::id())
}

/// CPU time this process has used so far, all threads, user and system, in
/// microseconds.
#[mitogen::remote]
pub fn cpu_time_us() -> mitogen::Result<u64> {
    Ok(process_cpu_us())
}

/// [`cpu_time_us`] of the calling process, without a call.
pub fn process_cpu_us() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    let us = i128::from(t.tv_sec) * 1_000_000 + i128::from(t.tv_nsec) / 1_000;
    u64::try_from(us).unwrap_or(0)
}
