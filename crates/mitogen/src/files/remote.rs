//! The remote functions a transfer calls in the context at the other end.
//!
//! They are stateless: each call opens what it needs again, so a caller that
//! disappears leaves nothing behind but what a finished call committed.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::dest::{hash_file, Dest};
use super::pump::{interrupted, receive_file, send_file};
use super::scan::scan;
use super::wire::{Done, Entry, Hash, Reply, WireOpts};
use crate::core::channel::{Receiver, Sender};
use crate::core::file_error::{FileError, FileErrorKind};
use crate::core::payload::Blob;
use crate::core::router::current_inner;

/// This context's name, for errors.
pub(crate) fn here() -> String {
    current_inner()
        .map(|r| r.name.clone())
        .unwrap_or_else(|| "?".to_owned())
}

fn path(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}

/// Applies a batch of a pushed tree (see `Dest::apply`).
#[crate::remote]
pub(crate) fn files_apply(dst: Vec<u8>, entries: Vec<Entry>, opts: WireOpts) -> Reply<Done> {
    Reply((|| {
        let mut dest = Dest::open(path(&dst), &here(), opts)?;
        dest.apply(&entries)?;
        Ok(dest.done)
    })())
}

/// Receives one large file of a push: answers on `back` with the channel to
/// send its frames to (its window the transfer's: what paces the sender);
/// the file takes its name only once complete and verified.
#[crate::remote]
pub(crate) fn files_receive(
    dst: Vec<u8>,
    entry: Entry,
    opts: WireOpts,
    back: Sender<Sender<Blob>>,
) -> Reply<Done> {
    Reply((|| {
        let me = here();
        let mut dest = Dest::open(path(&dst), &me, opts)?;
        let shown = entry.shown(&path(&dst).display().to_string());
        let tmp = dest.temp(&entry)?;
        let router = current_inner().ok_or_else(|| {
            FileError::new(FileErrorKind::Interrupted, &me, &shown, "shutting down")
        })?;
        let data = Receiver::<Blob>::with_window_size(
            router,
            Some(back.context_id()),
            opts.window as usize,
        );
        let lost = |e| interrupted(e, &me, &shown);
        back.send(data.sender()).map_err(lost)?;
        let err = |kind, detail: String| FileError::new(kind, &me, &shown, detail);
        let idle = Duration::from_millis(opts.idle_ms);
        let (written, hash) =
            receive_file(&tmp.file, entry.size(), &data, idle, &err, &lost, None)?;
        dest.commit(tmp, &entry, hash)?;
        Ok(Done {
            files: 1,
            bytes: written,
            ..Done::default()
        })
    })())
}

/// Sets the directories' metadata once a pushed tree is complete.
#[crate::remote]
pub(crate) fn files_finish(dst: Vec<u8>, dirs: Vec<Entry>, opts: WireOpts) -> Reply<()> {
    Reply((|| {
        Dest::open(path(&dst), &here(), opts)?.finish_dirs(&dirs)
    })())
}

/// Lists a file or tree to fetch, small files' content included while
/// `budget` bytes last.
#[crate::remote]
pub(crate) fn files_scan(src: Vec<u8>, budget: u64) -> Reply<Vec<Entry>> {
    Reply(scan(path(&src), &here(), budget))
}

/// Opens `rel` below `src`, checking that it is still the file listed.
fn open_listed(
    src: &[u8],
    rel: &[u8],
    size: u64,
    mtime: (i64, u32),
) -> Result<(File, PathBuf), FileError> {
    let mut p = PathBuf::from(OsStr::from_bytes(src));
    if !rel.is_empty() {
        // Only names the scan produced come back here; anything else is
        // refused rather than resolved.
        if rel
            .split(|b| *b == b'/')
            .any(|c| c.is_empty() || c == b"." || c == b"..")
        {
            return Err(FileError::new(
                FileErrorKind::Unsafe,
                here(),
                p.display().to_string(),
                "a name with `..`",
            ));
        }
        p.push(OsStr::from_bytes(rel));
    }
    let shown = p.display().to_string();
    let f = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(&p)
        .map_err(|e| FileError::new(FileError::kind_of(&e), here(), &shown, e.to_string()))?;
    let m = f
        .metadata()
        .map_err(|e| FileError::new(FileError::kind_of(&e), here(), &shown, e.to_string()))?;
    if !m.is_file() || m.len() != size || (m.mtime(), m.mtime_nsec() as u32) != mtime {
        return Err(FileError::new(
            FileErrorKind::Changed,
            here(),
            &shown,
            "not the file listed any more",
        ));
    }
    Ok((f, p))
}

/// The hash of a listed file, for a caller deciding whether to fetch it.
#[crate::remote]
pub(crate) fn files_hash(src: Vec<u8>, rel: Vec<u8>, size: u64, mtime: (i64, u32)) -> Reply<Hash> {
    Reply((|| {
        let (mut f, p) = open_listed(&src, &rel, size, mtime)?;
        hash_file(&mut f).map_err(|e| {
            FileError::new(
                FileError::kind_of(&e),
                here(),
                p.display().to_string(),
                e.to_string(),
            )
        })
    })())
}

/// Sends one large file of a fetch on `data` (paced by its window), once
/// it has told `ready` that the file is open and is the one listed.
#[crate::remote]
pub(crate) fn files_send(
    src: Vec<u8>,
    rel: Vec<u8>,
    listed: (u64, (i64, u32)),
    opts: WireOpts,
    data: Sender<Blob>,
    ready: Sender<()>,
) -> Reply<()> {
    Reply((|| {
        let me = here();
        let (f, p) = open_listed(&src, &rel, listed.0, listed.1)?;
        let shown = p.display().to_string();
        let lost = |e| interrupted(e, &me, &shown);
        ready.send(()).map_err(lost)?;
        let idle = Duration::from_millis(opts.idle_ms);
        let changed = |d: String| FileError::new(FileErrorKind::Changed, &me, &shown, d);
        send_file(
            &f,
            listed,
            &data,
            opts.chunk as usize,
            idle,
            &changed,
            &lost,
            None,
        )?;
        Ok(())
    })())
}
