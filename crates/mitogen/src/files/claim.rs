//! Disk space claimed a little ahead of a large file's writes.
//!
//! A receiver allocates the blocks of the data about to arrive
//! (`fallocate(2)`) in steps of [`STEP`], before writing into them. Writing into blocks already allocated skips the file system's
//! per-block reservation of delayed allocation (on ext4,
//! `ext4_da_get_block_prep`, the space and quota reservations and the extent
//! cache for every 4 KiB, done while the page cache is written): measured on
//! this project's machine, 1 GiB written in 512 KiB `pwrite`s cost 0.17 s of
//! system time into delayed allocation and 0.10 s into blocks claimed 32 MiB
//! ahead, fsync included in both. The blocks also end up contiguous.
//!
//! Bounds: never beyond the size the sender announced, and never more than
//! [`STEP`] beyond what has arrived, so a sender that announces a huge file
//! and sends little makes the receiver hold little more disk than it sent
//! (and nothing once the transfer fails: the temporary file goes). A file
//! with holes stays sparse: at its first hole the claiming stops for good
//! and the part of the hole already claimed is given back (punched). A file
//! system without `fallocate` (or out of space for it) is simply written as
//! before: the writes then report what is wrong, as they always did.

use std::fs::File;

use rustix::fs::FallocateFlags;

/// How far ahead of the writes blocks are claimed, in bytes.
pub(crate) const STEP: u64 = 32 * 1024 * 1024;

/// The blocks claimed so far for one file being written.
pub(crate) struct Claim {
    /// Claimed up to here (exclusive).
    end: u64,
    /// The file's announced size: nothing is claimed beyond it.
    size: u64,
    /// False once a hole was seen or `fallocate` failed.
    on: bool,
}

impl Claim {
    /// Nothing claimed yet, for a file of `size` bytes.
    pub(crate) fn new(size: u64) -> Claim {
        Claim {
            end: 0,
            size,
            on: true,
        }
    }

    /// Data of `n` bytes is about to be written at `off`: claims the next
    /// step when the write reaches past what is claimed.
    pub(crate) fn before_data(&mut self, f: &File, off: u64, n: u64) {
        if !self.on || off.saturating_add(n) <= self.end {
            return;
        }
        let start = off.max(self.end);
        let len = STEP.max(n).min(self.size.saturating_sub(start));
        if len == 0 {
            return;
        }
        // The size grows with the claim (never beyond the announced one,
        // which the file gets at the end anyway): blocks claimed beyond the
        // end of a file could not be punched out again at a hole.
        match rustix::fs::fallocate(f, FallocateFlags::empty(), start, len) {
            Ok(()) => self.end = start + len,
            // Not supported here, or no room for the whole step: the writes
            // go on as without a claim and say what is wrong themselves.
            Err(_) => self.on = false,
        }
    }

    /// A hole of `n` bytes at `off`: no more claims for this file, and the
    /// part of the hole already claimed is given back, so that the copy is
    /// as sparse as the source.
    pub(crate) fn at_hole(&mut self, f: &File, off: u64, n: u64) {
        self.on = false;
        let end = off.saturating_add(n).min(self.end);
        if end > off {
            let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
            // Failing leaves allocated zeros: the content is the same.
            let _ = rustix::fs::fallocate(f, flags, off, end - off);
        }
    }
}
