//! [`FileError`]: what went wrong moving a file, where, and in which context.
//!
//! The file transfer itself lives above core (`files/`); the error is here so
//! that [`Error`](super::error::Error) can carry it as one of its kinds without
//! core importing anything above it. It is plain data, so it travels from the
//! context where it happened to the caller unchanged.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What kind of failure a [`FileError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum FileErrorKind {
    /// The source does not exist.
    NotFound,
    /// The operating system refused access (a source not readable, a
    /// destination not writable).
    PermissionDenied,
    /// The directory the destination goes in does not exist.
    NoDestinationDir,
    /// The destination's file system is full (or the user's quota spent).
    NoSpace,
    /// The source changed while it was read: its size, modification time or
    /// content differ from what was announced. Nothing was renamed into place.
    Changed,
    /// What arrived does not hash to what the sender read (BLAKE3).
    Corrupt,
    /// The peer sent something a transfer must never do: a name with `..`,
    /// an absolute name, a name through a symbolic link, more bytes than
    /// announced. Nothing is written for it.
    Unsafe,
    /// The destination exists as something a copy cannot replace (a
    /// directory where a file goes, or the other way round).
    Conflict,
    /// The peer, or a context between us and it, went away (or stopped
    /// answering) mid-transfer.
    Interrupted,
    /// Any other operating-system failure; see the detail.
    Io,
}

impl fmt::Display for FileErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileErrorKind::NotFound => "no such file or directory",
            FileErrorKind::PermissionDenied => "permission denied",
            FileErrorKind::NoDestinationDir => "the destination's directory does not exist",
            FileErrorKind::NoSpace => "no space left on the destination",
            FileErrorKind::Changed => "the source changed while it was read",
            FileErrorKind::Corrupt => "the content does not match its hash",
            FileErrorKind::Unsafe => "refused an unsafe request from the peer",
            FileErrorKind::Conflict => "the destination exists as another kind of file",
            FileErrorKind::Interrupted => "the transfer was interrupted",
            FileErrorKind::Io => "input/output error",
        })
    }
}

/// A file transfer failed: in which context, on which path, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct FileError {
    /// What kind of failure it is.
    pub kind: FileErrorKind,
    /// Name of the context the path is in (the master's own name for a local
    /// path).
    pub context: String,
    /// The path concerned, as that context sees it.
    pub path: String,
    /// What was observed (the OS error, the sizes that differ, ...).
    pub detail: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} in context {:?}: {}",
            self.path, self.context, self.kind
        )?;
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

impl FileError {
    /// A new error of `kind` about `path` in `context`.
    pub fn new(
        kind: FileErrorKind,
        context: impl Into<String>,
        path: impl Into<String>,
        detail: impl Into<String>,
    ) -> FileError {
        FileError {
            kind,
            context: context.into(),
            path: path.into(),
            detail: detail.into(),
        }
    }

    /// The kind an OS error maps to.
    pub fn kind_of(e: &std::io::Error) -> FileErrorKind {
        match e.raw_os_error() {
            Some(libc::ENOENT) => FileErrorKind::NotFound,
            Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => {
                FileErrorKind::PermissionDenied
            }
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => FileErrorKind::NoSpace,
            Some(libc::ELOOP) => FileErrorKind::Unsafe,
            Some(libc::EISDIR) | Some(libc::ENOTDIR) | Some(libc::ENOTEMPTY) => {
                FileErrorKind::Conflict
            }
            _ => FileErrorKind::Io,
        }
    }
}
