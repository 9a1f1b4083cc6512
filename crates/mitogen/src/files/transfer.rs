//! The caller's side of a push and a fetch: list, send what is needed in
//! pipelined batches, stream large files, finish directories.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::dest::{hash_file, Dest};
use super::progress::count;
use super::pump::{interrupted, receive_file, send_file};
use super::remote::{files_apply, files_finish, files_hash, files_receive, files_scan, files_send};
use super::scan::{Scan, SMALL};
use super::stamp;
use super::wire::{Done, Entry, Kind, Reply, WireOpts};
use super::{FileOptions, Transfer};
use crate::core::call::encode_call;
use crate::core::call::PendingCall;
use crate::core::context::Context;
use crate::core::error::{Error, Result};
use crate::core::file_error::{FileError, FileErrorKind};
use crate::core::payload::Blob;
use crate::core::remote::RemoteFn;

/// Inline content per batch call, and entries per batch: small batches, so
/// that the receiver starts on the first while the rest are read (an
/// unchanged tree is read and hashed on both sides, at the same time).
const BATCH_BYTES: u64 = 1024 * 1024;
const BATCH_ENTRIES: usize = 64;
/// Batch calls in flight at once (at most 8 MiB of content).
const BATCHES_IN_FLIGHT: usize = 8;

fn local_name(ctx: &Context) -> String {
    ctx.router().name.clone()
}

/// The answer of a call, its file error lifted into [`Error::File`].
pub(crate) fn answer<T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static>(
    p: PendingCall<Reply<T>>,
    idle: Duration,
    ctx: &Context,
    path: &str,
) -> Result<T> {
    match p.get_timeout(idle) {
        Ok(Reply(r)) => r.map_err(Error::File),
        Err(e @ (Error::Disconnected { .. } | Error::Timeout(_))) => {
            Err(Error::File(interrupted(e, ctx.name(), path)))
        }
        Err(e) => Err(e),
    }
}

pub(crate) fn push(
    ctx: &Context,
    src: &Path,
    dst: &Path,
    opts: &FileOptions,
    owners: Option<&super::fanout::Owners>,
) -> Result<Transfer> {
    push_asking(ctx, src, dst, opts, owners, files_apply::NAME)
}

/// [`push`], the listing's batches going to the remote function named
/// `apply` (the library's own, or in tests a hostile receiver's stand-in).
pub(crate) fn push_asking(
    ctx: &Context,
    src: &Path,
    dst: &Path,
    opts: &FileOptions,
    owners: Option<&super::fanout::Owners>,
    apply: &str,
) -> Result<Transfer> {
    let started = Instant::now();
    let wire = opts.wire(false);
    let idle = opts.idle_timeout;
    let dst_b = dst.as_os_str().as_bytes().to_vec();
    let shown = dst.display().to_string();
    let me = local_name(ctx);
    // The listing goes out in batches while the walk goes on: the receiver
    // applies one batch (making, or reading and hashing to compare) while
    // this side reads the next.
    let mut walk = Scan::new(src, &me, opts.inline_budget);
    // Files hashed before are listed by hash, unread: an unchanged tree
    // re-pushed is read on neither side (see stamp.rs).
    walk.by_stamp = opts.update;
    let mut entries: Vec<Entry> = Vec::new();
    let mut total = Done::default();
    let mut needs = Vec::new();
    let mut pending: VecDeque<(usize, PendingCall<Reply<Done>>)> = VecDeque::new();
    let mut collect = |start: usize, p: PendingCall<Reply<Done>>, total: &mut Done| -> Result<()> {
        let done = answer(p, idle, ctx, &shown)?;
        total.add(&done);
        needs.extend(done.need.iter().map(|(i, h)| (start + *i as usize, *h)));
        Ok(())
    };
    let sent = (|| -> Result<()> {
        let (mut start, mut bytes) = (0, 0u64);
        loop {
            let next = walk.next().transpose()?;
            let last = next.is_none();
            if let Some(mut e) = next {
                if let Some(&(uid, gid)) = owners.and_then(|o| o.get(&e.path)) {
                    (e.uid, e.gid) = (uid, gid);
                }
                if let Kind::File {
                    inline: Some((d, _)),
                    ..
                } = &e.kind
                {
                    bytes += d.len() as u64;
                }
                entries.push(e);
            }
            let batch = &mut entries[start..];
            let full = batch.len() >= BATCH_ENTRIES || bytes >= BATCH_BYTES;
            if !batch.is_empty() && (full || last) {
                let call = call_named(ctx, apply, &(&dst_b, &*batch, wire));
                pending.push_back((start, call));
                count(opts.progress.as_ref(), bytes);
                // Sent: the content is no longer needed here.
                for e in batch.iter_mut() {
                    if let Kind::File {
                        inline: Some((d, _)),
                        ..
                    } = &mut e.kind
                    {
                        *d = bytes::Bytes::new();
                    }
                }
                (start, bytes) = (entries.len(), 0);
                if pending.len() >= BATCHES_IN_FLIGHT {
                    if let Some((s, p)) = pending.pop_front() {
                        collect(s, p, &mut total)?;
                    }
                }
            }
            if last {
                break;
            }
        }
        while let Some((s, p)) = pending.pop_front() {
            collect(s, p, &mut total)?;
        }
        Ok(())
    })();
    if let Err(e) = sent {
        // The batches already sent are applied all the same: wait for them
        // (all within one `idle`), so that nothing changes at the
        // destination once this returns.
        let until = Instant::now().checked_add(idle);
        while let Some((_, p)) = pending.pop_front() {
            let left = until.map_or(idle, |u| u.saturating_duration_since(Instant::now()));
            let _ = p.get_timeout(left);
        }
        return Err(e);
    }
    let mut budget = walk.budget_left();
    let mut small = Vec::new();
    for (i, have) in needs {
        // The index comes from the receiver: one out of the listing is a
        // lie, refused rather than trusted.
        let Some(e) = entries.get(i).filter(|e| {
            matches!(
                e.kind,
                Kind::File { inline: None, .. } | Kind::Hashed { .. }
            )
        }) else {
            return Err(Error::File(FileError::new(
                FileErrorKind::Unsafe,
                ctx.name(),
                &shown,
                format!(
                    "asked for entry {i} of {}, not a file sent without content",
                    entries.len()
                ),
            )));
        };
        if let Kind::Hashed { size, hash } = e.kind {
            if have == Some(hash) {
                total.skipped += 1;
                continue;
            }
            if size <= SMALL && size <= budget {
                // Read again and sent in batches, after the large ones.
                budget -= size;
                small.push(e.clone());
                continue;
            }
        }
        let local = if e.path.is_empty() {
            src.to_path_buf()
        } else {
            src.join(std::ffi::OsStr::from_bytes(&e.path))
        };
        let f = open_source(&local, &local_name(ctx))?;
        if let Some(h) = have {
            let mut g = f
                .try_clone()
                .map_err(|err| Error::io("duplicating a descriptor", err))?;
            let taken = stamp::now_ns();
            let ours = rustix::fs::fstat(&f).ok().and_then(|st| {
                stamp::note_fs(&f, &st);
                stamp::hash_or_read(&st, taken, || hash_file(&mut g).ok())
            });
            if ours == Some(h) {
                total.skipped += 1;
                continue;
            }
        }
        let done = push_one(ctx, &dst_b, &shown, e, &f, &local, wire, opts)?;
        total.add(&done);
    }
    if !small.is_empty() {
        super::resend::resend(
            ctx,
            apply,
            &dst_b,
            &shown,
            src,
            small,
            wire,
            (idle, opts.progress.as_ref()),
            &mut total,
        )?;
    }
    finish_dirs_remote(ctx, &dst_b, &shown, &entries, wire, idle)?;
    Ok(Transfer::from_done(&total, started.elapsed()))
}

fn finish_dirs_remote(
    ctx: &Context,
    dst_b: &[u8],
    shown: &str,
    entries: &[Entry],
    wire: WireOpts,
    idle: Duration,
) -> Result<()> {
    let dirs: Vec<Entry> = entries
        .iter()
        .filter(|e| matches!(e.kind, Kind::Dir))
        .cloned()
        .collect();
    if dirs.is_empty() {
        return Ok(());
    }
    answer(
        ctx.call_async(files_finish, (dst_b.to_vec(), dirs, wire)),
        idle,
        ctx,
        shown,
    )
}

fn open_source(p: &Path, me: &str) -> Result<File> {
    File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(p)
        .map_err(|e| {
            Error::File(FileError::new(
                FileError::kind_of(&e),
                me,
                p.display().to_string(),
                e.to_string(),
            ))
        })
}

/// Streams one large file to the context.
#[allow(clippy::too_many_arguments)]
fn push_one(
    ctx: &Context,
    dst_b: &[u8],
    root: &str,
    e: &Entry,
    f: &File,
    local: &Path,
    wire: WireOpts,
    opts: &FileOptions,
) -> Result<Done> {
    let shown = e.shown(root);
    let me = local_name(ctx);
    let (back_tx, back_rx) = ctx.channel::<crate::core::channel::Sender<Blob>>();
    let pending = ctx.call_async(files_receive, (dst_b.to_vec(), e.clone(), wire, back_tx));
    let lost = |err| interrupted(err, ctx.name(), &shown);
    let idle = opts.idle_timeout;
    let mut data_tx = None;
    let sent = (|| {
        let data = back_rx.recv_timeout(idle).map_err(lost)?;
        data_tx = Some(data.clone());
        let local_shown = local.display().to_string();
        let changed = |d: String| FileError::new(FileErrorKind::Changed, &me, &local_shown, d);
        send_file(
            f,
            (e.size(), e.mtime),
            &data,
            opts.chunk_size,
            idle,
            &changed,
            &lost,
            opts.progress.as_ref(),
        )
    })();
    if sent.is_err() {
        // The receiver stops at once and discards what it has.
        if let Some(d) = &data_tx {
            let _ = d.close();
        }
    }
    drop(data_tx);
    let remote = answer(pending, idle, ctx, &shown);
    match sent {
        // Our own finding (the source changed) is the cause; the receiver's
        // error is only its consequence.
        Err(err) if err.kind == FileErrorKind::Changed => Err(Error::File(err)),
        Err(err) => match remote {
            Err(r) => Err(r),
            Ok(_) => Err(Error::File(err)),
        },
        Ok(_) => remote,
    }
}

/// The remote functions a fetch asks (by name): the library's own, or in
/// tests, a hostile child's stand-ins with the same arguments and answers.
pub(crate) struct Remotes<'a> {
    pub scan: &'a str,
    pub hash: &'a str,
    pub send: &'a str,
}

impl Remotes<'static> {
    pub(crate) const OWN: Remotes<'static> = Remotes {
        scan: files_scan::NAME,
        hash: files_hash::NAME,
        send: files_send::NAME,
    };
}

/// Starts a call of the function named `name`.
pub(crate) fn call_named<
    A: serde::Serialize,
    T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
>(
    ctx: &Context,
    name: &str,
    args: &A,
) -> PendingCall<T> {
    let body = crate::core::channel::encoding_for(ctx.id(), || encode_call(name, None, args));
    PendingCall::start(ctx, body)
}

pub(crate) fn fetch(
    ctx: &Context,
    src: &Path,
    dst: &Path,
    opts: &FileOptions,
    fns: &Remotes<'_>,
) -> Result<Transfer> {
    let started = Instant::now();
    let idle = opts.idle_timeout;
    let src_b = src.as_os_str().as_bytes().to_vec();
    let src_shown = src.display().to_string();
    let entries: Vec<Entry> = answer(
        call_named(ctx, fns.scan, &(src_b.clone(), opts.inline_budget)),
        idle,
        ctx,
        &src_shown,
    )?;
    let mut dest = Dest::open(dst, &local_name(ctx), opts.wire(true))?;
    dest.progress = opts.progress.clone();
    dest.apply(&entries)?;
    let needs = std::mem::take(&mut dest.done.need);
    for (i, have) in needs {
        let Some(e) = entries.get(i as usize) else {
            continue;
        };
        let shown = e.shown(&src_shown);
        if let Some(h) = have {
            let theirs: super::wire::Hash = answer(
                call_named(
                    ctx,
                    fns.hash,
                    &(src_b.clone(), e.path.clone(), e.size(), e.mtime),
                ),
                idle,
                ctx,
                &shown,
            )?;
            if theirs == h {
                dest.done.skipped += 1;
                continue;
            }
        }
        let written = fetch_one(ctx, &mut dest, &src_b, &shown, e, opts, fns.send)?;
        dest.done.files += 1;
        dest.done.bytes += written;
    }
    let dirs: Vec<Entry> = entries
        .iter()
        .filter(|e| matches!(e.kind, Kind::Dir))
        .cloned()
        .collect();
    dest.finish_dirs(&dirs)?;
    Ok(Transfer::from_done(&dest.done, started.elapsed()))
}

/// Streams one large file from the context into a temporary file here.
fn fetch_one(
    ctx: &Context,
    dest: &mut Dest,
    src_b: &[u8],
    shown: &str,
    e: &Entry,
    opts: &FileOptions,
    send: &str,
) -> Result<u64> {
    let idle = opts.idle_timeout;
    let tmp = dest.temp(e)?;
    // The window paces the sender: it has at most that much sent that
    // this side has not taken (and a frame is taken once the one before is
    // written).
    let (data_tx, data_rx) = ctx.channel_with_window::<Blob>(opts.window);
    let (ready_tx, ready_rx) = ctx.channel::<()>();
    let pending: PendingCall<Reply<()>> = call_named(
        ctx,
        send,
        &(
            src_b.to_vec(),
            e.path.clone(),
            (e.size(), e.mtime),
            dest.opts,
            data_tx,
            ready_tx,
        ),
    );
    let lost = |err| interrupted(err, ctx.name(), shown);
    let dst_shown = dest.shown_of(e);
    let me = local_name(ctx);
    let got = (|| {
        ready_rx.recv_timeout(idle).map_err(lost)?;
        let err = |kind, d: String| FileError::new(kind, &me, &dst_shown, d);
        receive_file(
            &tmp.file,
            e.size(),
            &data_rx,
            idle,
            &err,
            &lost,
            opts.progress.as_ref(),
        )
    })();
    // Dropped: a sender still sending is told the channel is closed.
    drop(data_rx);
    let remote = answer(pending, idle, ctx, shown);
    let (written, hash) = match (got, remote) {
        (Ok(got), Ok(())) => got,
        (Err(err), _) if err.kind != FileErrorKind::Interrupted => return Err(Error::File(err)),
        (_, Err(r)) => return Err(r),
        (Err(err), Ok(())) => return Err(Error::File(err)),
    };
    dest.commit(tmp, e, hash)?;
    Ok(written)
}
