//! A push's second pass: the small files it listed by hash alone
//! ([`Kind::Hashed`], their stamps known to this process) that the receiver
//! lacks, read now and sent with their content in pipelined batches, as the
//! listing's own small files are (one round trip for many, not one each).

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::progress::{count, Progress};
use super::scan::read_whole;
use super::stamp;
use super::wire::{Done, Entry, Kind, Reply, WireOpts};
use crate::core::call::PendingCall;
use crate::core::context::Context;
use crate::core::error::{Error, Result};
use crate::core::file_error::{FileError, FileErrorKind};

/// Entries and content bytes per batch, and batches in flight: as the
/// listing's.
const BATCH_ENTRIES: usize = 64;
const BATCH_BYTES: u64 = 1024 * 1024;
const IN_FLIGHT: usize = 8;

/// Reads the listed small file `e` below `src` again, checking that it is
/// still the file listed (a regular file of the same size and time).
fn reread(src: &Path, e: &Entry, me: &str) -> Result<Entry> {
    let local = if e.path.is_empty() {
        src.to_path_buf()
    } else {
        src.join(std::ffi::OsStr::from_bytes(&e.path))
    };
    let shown = local.display().to_string();
    let fail = |kind, d: String| Error::File(FileError::new(kind, me, &shown, d));
    let os = |err: std::io::Error| fail(FileError::kind_of(&err), err.to_string());
    let f = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(&local)
        .map_err(os)?;
    let taken = stamp::now_ns();
    let st = rustix::fs::fstat(&f).map_err(|err| os(err.into()))?;
    #[allow(clippy::unnecessary_cast)]
    if st.st_mode & libc::S_IFMT != libc::S_IFREG
        || st.st_size as u64 != e.size()
        || (st.st_mtime as i64, st.st_mtime_nsec as u32) != e.mtime
    {
        return Err(fail(
            FileErrorKind::Changed,
            "not the file listed any more".into(),
        ));
    }
    let (data, hash) = read_whole(&f, &st)
        .map_err(|err| os(err.into()))?
        .map_err(|d| fail(FileErrorKind::Changed, d))?;
    stamp::note_fs(&f, &st);
    stamp::record(&st, taken, hash);
    Ok(Entry {
        kind: Kind::File {
            size: e.size(),
            inline: Some((data, hash)),
        },
        ..e.clone()
    })
}

/// Sends `todo` (entries of the listing, [`Kind::Hashed`] small files)
/// with their content to `apply` in `ctx`, adding what the receiver did to
/// `total` and each batch's content, once sent, to the progress counter.
#[allow(clippy::too_many_arguments)]
pub(crate) fn resend(
    ctx: &Context,
    apply: &str,
    dst_b: &[u8],
    shown: &str,
    src: &Path,
    todo: Vec<Entry>,
    wire: WireOpts,
    (idle, progress): (Duration, Option<&Progress>),
    total: &mut Done,
) -> Result<()> {
    let me = ctx.router().name.clone();
    let mut pending: VecDeque<PendingCall<Reply<Done>>> = VecDeque::new();
    let collect = |p: PendingCall<Reply<Done>>, total: &mut Done| -> Result<()> {
        // What it asks for is ignored: it was sent every file's content.
        let done = super::transfer::answer(p, idle, ctx, shown)?;
        total.add(&done);
        Ok(())
    };
    let sent = (|| -> Result<()> {
        let mut batch: Vec<Entry> = Vec::new();
        let mut bytes = 0u64;
        let n = todo.len();
        for (k, e) in todo.iter().enumerate() {
            let e = reread(src, e, &me)?;
            bytes += e.size();
            batch.push(e);
            if batch.len() >= BATCH_ENTRIES || bytes >= BATCH_BYTES || k + 1 == n {
                let call = super::transfer::call_named(ctx, apply, &(dst_b, &*batch, wire));
                pending.push_back(call);
                count(progress, bytes);
                (batch, bytes) = (Vec::new(), 0);
                if pending.len() >= IN_FLIGHT {
                    if let Some(p) = pending.pop_front() {
                        collect(p, total)?;
                    }
                }
            }
        }
        while let Some(p) = pending.pop_front() {
            collect(p, total)?;
        }
        Ok(())
    })();
    if sent.is_err() {
        // As for the listing: nothing changes at the destination once the
        // push has returned.
        let until = Instant::now().checked_add(idle);
        while let Some(p) = pending.pop_front() {
            let left = until.map_or(idle, |u| u.saturating_duration_since(Instant::now()));
            let _ = p.get_timeout(left);
        }
    }
    sent
}
