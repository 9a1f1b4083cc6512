//! The sending side's walk of a file or tree: what it holds, in an order a
//! receiver can apply (a directory before what it contains), small files'
//! content read and hashed on the way.

use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use bytes::Bytes;

use super::wire::{Entry, Kind};
use crate::core::file_error::{FileError, FileErrorKind};

/// Files up to this size ride in the call that announces them.
pub(crate) const SMALL: u64 = 128 * 1024;

/// Walks `root` without following any symbolic link (a link is an entry of
/// its own). Small files are read while their budget lasts (`inline_budget`
/// bytes in all); the rest are streamed later. `context` names this side in
/// errors.
pub(crate) fn scan(
    root: &Path,
    context: &str,
    inline_budget: u64,
) -> Result<Vec<Entry>, FileError> {
    let shown = root.display().to_string();
    let err = |e: std::io::Error, path: &str| {
        FileError::new(FileError::kind_of(&e), context, path, e.to_string())
    };
    let meta = std::fs::symlink_metadata(root).map_err(|e| err(e, &shown))?;
    let mut out = Vec::new();
    let mut budget = inline_budget;
    let mut todo = vec![(Vec::new(), root.to_path_buf(), meta)];
    while let Some((rel, path, meta)) = todo.pop() {
        let shown = path.display().to_string();
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            let mut children = Vec::new();
            for item in std::fs::read_dir(&path).map_err(|e| err(e, &shown))? {
                let item = item.map_err(|e| err(e, &shown))?;
                let child = item.path();
                // Gone since the listing: a tree that changes while copied
                // copies what is there.
                let Ok(m) = std::fs::symlink_metadata(&child) else {
                    continue;
                };
                let mut r = rel.clone();
                if !r.is_empty() {
                    r.push(b'/');
                }
                r.extend_from_slice(item.file_name().as_bytes());
                children.push((r, child, m));
            }
            // Sorted, then reversed onto the stack: siblings come out in name
            // order, each directory before its contents.
            children.sort_by(|a, b| b.0.cmp(&a.0));
            todo.extend(children);
            Kind::Dir
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&path).map_err(|e| err(e, &shown))?;
            Kind::Link {
                target: target.as_os_str().as_bytes().to_vec(),
            }
        } else if ft.is_file() {
            let size = meta.len();
            let inline = if size <= SMALL && size <= budget {
                budget -= size;
                Some(read_small(&path, &meta, context)?)
            } else {
                None
            };
            Kind::File { size, inline }
        } else {
            tracing::debug!(path = %shown, "not a file, directory or link: left out");
            continue;
        };
        out.push(Entry {
            path: rel,
            kind,
            mode: meta.mode() & 0o7777,
            mtime: (meta.mtime(), meta.mtime_nsec() as u32),
            uid: meta.uid(),
            gid: meta.gid(),
        });
    }
    Ok(out)
}

/// Reads a small file whole and hashes it; a file whose size or time moved
/// since `meta` was taken is [`FileErrorKind::Changed`].
fn read_small(
    path: &Path,
    meta: &std::fs::Metadata,
    context: &str,
) -> Result<(Bytes, [u8; 32]), FileError> {
    let shown = path.display().to_string();
    let err =
        |e: std::io::Error| FileError::new(FileError::kind_of(&e), context, &shown, e.to_string());
    let mut f = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
        .map_err(err)?;
    let mut buf = Vec::with_capacity(meta.len() as usize + 1);
    f.read_to_end(&mut buf).map_err(err)?;
    let now = f.metadata().map_err(err)?;
    if buf.len() as u64 != meta.len() || !same_time(&now, meta) || !now.is_file() {
        return Err(FileError::new(
            FileErrorKind::Changed,
            context,
            &shown,
            format!("{} bytes when listed, {} read", meta.len(), buf.len()),
        ));
    }
    let hash = *blake3::hash(&buf).as_bytes();
    Ok((Bytes::from(buf), hash))
}

/// Same modification time, to the nanosecond.
pub(crate) fn same_time(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    a.mtime() == b.mtime() && a.mtime_nsec() == b.mtime_nsec()
}

/// The owner and group of every entry below `root`, by path.
pub(crate) fn owners(root: &Path) -> Result<super::fanout::Owners, FileError> {
    let me = super::remote::here();
    Ok(scan(root, &me, 0)?
        .into_iter()
        .map(|e| (e.path, (e.uid, e.gid)))
        .collect())
}
