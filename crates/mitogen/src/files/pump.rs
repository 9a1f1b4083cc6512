//! A large file's content as a stream of frames, and back into a file.
//!
//! Each frame is one [`Blob`]: a 16-byte header (a tag byte, seven zero
//! bytes, a little-endian `u64`) and, for data, the bytes themselves, read
//! straight into the buffer that is sent (no copy into an encoded array).
//!
//! | tag | `u64` | after the header |
//! |---|---|---|
//! | `DATA` | length of the data | the data |
//! | `HOLE` | length of a hole (zeros not stored: sparse files stay sparse) | nothing |
//! | `END` | the file's size | its BLAKE3 hash (32 bytes) |
//!
//! Pacing: the frames' channel is made with the transfer's window
//! (`Context::channel_with_window`): the sender has at most that many bytes
//! sent and not yet taken by the receiver, which takes a frame only once it
//! has written the one before. So a slow disk or a slow link never makes a
//! receiver (or a hop between) hold more than a window and a frame, whatever
//! the file's size, and no message of the transfer's own goes back per frame
//! (the channel gives credit back once per eighth of a window).

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::Duration;

use bytes::{BufMut, BytesMut};

use super::claim::Claim;
use super::progress::{count, Progress};
use super::wire::Hash;
use crate::core::channel::{Receiver, Sender};
use crate::core::error::Error;
use crate::core::file_error::{FileError, FileErrorKind};
use crate::core::payload::Blob;

const DATA: u8 = 1;
const HOLE: u8 = 2;
const END: u8 = 3;
const HEADER: usize = 16;

/// Zeros hashed for holes.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

fn header(buf: &mut BytesMut, tag: u8, n: u64) {
    buf.put_u8(tag);
    buf.put_bytes(0, 7);
    buf.put_u64_le(n);
}

fn hash_zeros(h: &mut blake3::Hasher, mut n: u64) {
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        h.update(&ZEROS[..k]);
        n -= k as u64;
    }
}

/// Where the next data at or after `off` starts and where it ends (the next
/// hole), or `None` when the file system does not say (all data then).
fn data_extent(f: &File, off: u64, size: u64) -> Option<(u64, u64)> {
    use rustix::fs::SeekFrom;
    let start = match rustix::fs::seek(f, SeekFrom::Data(off)) {
        Ok(p) => p.min(size),
        Err(rustix::io::Errno::NXIO) => size,
        Err(_) => return None,
    };
    let end = match rustix::fs::seek(f, SeekFrom::Hole(start)) {
        Ok(p) => p.min(size),
        Err(_) => size,
    };
    Some((start, end))
}

/// How a transfer's channel failure reads as a file error: the peer (or a
/// hop to it) is gone, or did not answer in time.
pub(crate) fn interrupted(e: Error, context: &str, path: &str) -> FileError {
    match e {
        Error::File(f) => f,
        Error::Disconnected { context: c, reason } => FileError::new(
            FileErrorKind::Interrupted,
            c,
            path,
            format!("the peer disconnected: {reason}"),
        ),
        e => FileError::new(FileErrorKind::Interrupted, context, path, e.to_string()),
    }
}

/// Sends `f` (`size` bytes, as listed in `listed`) as frames on `data`,
/// hashing what it reads; each send waits at most `idle` for the channel's
/// window. A file whose size or time changed, or that ends early or late,
/// is [`FileErrorKind::Changed`]: the frames stop and nothing ends. Each
/// data frame's length is counted on `progress` once it is sent.
#[allow(clippy::too_many_arguments)]
pub(crate) fn send_file(
    f: &File,
    listed: (u64, (i64, u32)),
    data: &Sender<Blob>,
    chunk: usize,
    idle: Duration,
    changed: &dyn Fn(String) -> FileError,
    lost: &dyn Fn(Error) -> FileError,
    progress: Option<&Progress>,
) -> Result<Hash, FileError> {
    let (size, mtime) = listed;
    let meta = f.metadata().map_err(|e| changed(e.to_string()))?;
    if meta.len() != size || (meta.mtime(), meta.mtime_nsec() as u32) != mtime {
        return Err(changed(format!(
            "{} bytes when listed, {} now",
            size,
            meta.len()
        )));
    }
    let mut h = blake3::Hasher::new();
    let mut off = 0u64;
    // The current extent of data, asked of the file system once per extent:
    // SEEK_HOLE walks the page cache up to the next hole (on tmpfs, page by
    // page), so asking at every chunk would cost quadratic time.
    let mut extent = (0u64, 0u64);
    while off < size {
        if off >= extent.1 {
            extent = data_extent(f, off, size).unwrap_or((off, size));
        }
        let (start, end) = (extent.0.max(off), extent.1);
        if start > off {
            let mut b = BytesMut::with_capacity(HEADER);
            header(&mut b, HOLE, start - off);
            data.send_timeout(Blob(b.freeze()), idle).map_err(lost)?;
            hash_zeros(&mut h, start - off);
            off = start;
            continue;
        }
        let n = (end - off).min(chunk as u64) as usize;
        let mut b = BytesMut::with_capacity(HEADER + n);
        header(&mut b, DATA, n as u64);
        // Read into the buffer's spare capacity, not zeroed first (zeroing
        // is one more pass over every byte sent); the buffer then travels
        // as it is, header and data.
        let mut got = 0;
        while got < n {
            let spare = &mut b.spare_capacity_mut()[..n - got];
            let k = match rustix::io::pread(f, spare, off + got as u64) {
                Ok((init, _)) => init.len(),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(changed(std::io::Error::from(e).to_string())),
            };
            if k == 0 {
                return Err(changed(format!(
                    "ended at {} of {size} bytes",
                    off + got as u64
                )));
            }
            // SAFETY: `pread` initialised exactly `k` bytes at the start of
            // the spare capacity, right after the bytes already in `b`.
            unsafe { b.set_len(b.len() + k) };
            got += k;
        }
        h.update(&b[HEADER..]);
        data.send_timeout(Blob(b.freeze()), idle).map_err(lost)?;
        count(progress, n as u64);
        off += n as u64;
    }
    let mut probe = [0u8; 1];
    let grew = matches!(f.read_at(&mut probe, size), Ok(1));
    let meta = f.metadata().map_err(|e| changed(e.to_string()))?;
    if grew || meta.len() != size || (meta.mtime(), meta.mtime_nsec() as u32) != mtime {
        return Err(changed(format!(
            "{size} bytes when listed, {} after reading",
            meta.len()
        )));
    }
    let hash = *h.finalize().as_bytes();
    let mut b = BytesMut::with_capacity(HEADER + 32);
    header(&mut b, END, size);
    b.put_slice(&hash);
    data.send_timeout(Blob(b.freeze()), idle).map_err(lost)?;
    Ok(hash)
}

/// Writes the frames arriving on `data` into `f` (a new, empty file), for a
/// file of `size` bytes, hashing as it writes; answers the bytes written
/// and the content's hash, checked against the sender's. Fails with [`FileErrorKind::Unsafe`] on more data than
/// announced or a malformed frame, [`FileErrorKind::Corrupt`] when the hash
/// differs, and with what `lost` makes of the channel ending early. Each
/// data frame's length is counted on `progress` once it is written.
pub(crate) fn receive_file(
    f: &File,
    size: u64,
    data: &Receiver<Blob>,
    idle: Duration,
    err: &dyn Fn(FileErrorKind, String) -> FileError,
    lost: &dyn Fn(Error) -> FileError,
    progress: Option<&Progress>,
) -> Result<(u64, Hash), FileError> {
    let mut h = blake3::Hasher::new();
    let mut off = 0u64;
    let mut written = 0u64;
    let mut claim = Claim::new(size);
    loop {
        let Blob(frame) = data.recv_timeout(idle).map_err(lost)?;
        if frame.len() < HEADER {
            return Err(err(
                FileErrorKind::Unsafe,
                "a frame shorter than its header".into(),
            ));
        }
        let n = u64::from_le_bytes(frame[8..16].try_into().unwrap_or_default());
        match frame[0] {
            DATA if frame.len() - HEADER == n as usize && off.checked_add(n).is_some_and(|e| e <= size) => {
                let body = &frame[HEADER..];
                claim.before_data(f, off, n);
                f.write_all_at(body, off).map_err(|e| err(FileError::kind_of(&e), e.to_string()))?;
                h.update(body);
                count(progress, n);
                off += n;
                written += n;
            }
            HOLE if frame.len() == HEADER && off.checked_add(n).is_some_and(|e| e <= size) => {
                claim.at_hole(f, off, n);
                hash_zeros(&mut h, n);
                off += n;
            }
            END if frame.len() == HEADER + 32 && n == size && off == size => {
                // A trailing hole is made by the length alone.
                f.set_len(size).map_err(|e| err(FileError::kind_of(&e), e.to_string()))?;
                let hash = *h.finalize().as_bytes();
                if hash[..] != frame[HEADER..] {
                    return Err(err(FileErrorKind::Corrupt, "the content's BLAKE3 hash differs from the sender's".into()));
                }
                return Ok((written, hash));
            }
            tag => {
                return Err(err(
                    FileErrorKind::Unsafe,
                    format!("a frame (tag {tag}, {n} bytes) beyond the announced {size} bytes or malformed, at {off}"),
                ))
            }
        }
    }
}
