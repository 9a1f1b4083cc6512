//! What travels between the two ends of a transfer: the entries of a tree,
//! the options the far side needs, and what it did.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::core::file_error::FileError;

/// A BLAKE3 hash.
pub(crate) type Hash = [u8; 32];

/// One file, directory or symbolic link of a tree being copied.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// The path below the root, components joined by `/`; empty for the root
    /// itself. The receiver checks every component (see `dest::check_name`).
    pub path: Vec<u8>,
    /// What it is.
    pub kind: Kind,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Modification time: seconds and nanoseconds since the epoch.
    pub mtime: (i64, u32),
    /// Owner and group, numeric.
    pub uid: u32,
    pub gid: u32,
}

/// The kinds of entry a transfer copies. Devices, FIFOs and sockets are left
/// out by the sender and never made by a receiver.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Kind {
    Dir,
    File {
        size: u64,
        /// Content and hash of a small file, carried in the call itself.
        inline: Option<(Bytes, Hash)>,
    },
    Link {
        target: Vec<u8>,
    },
}

impl Entry {
    /// The size of a regular file, 0 for the rest.
    pub(crate) fn size(&self) -> u64 {
        match self.kind {
            Kind::File { size, .. } => size,
            _ => 0,
        }
    }

    /// The path for messages: the root's own name for the root.
    pub(crate) fn shown(&self, root: &str) -> String {
        if self.path.is_empty() {
            root.to_owned()
        } else {
            format!(
                "{}/{}",
                root.trim_end_matches('/'),
                String::from_utf8_lossy(&self.path)
            )
        }
    }
}

/// The options the receiving side applies.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) struct WireOpts {
    pub update: bool,
    pub owner: bool,
    pub mode: bool,
    pub times: bool,
    /// Drop set-user-ID and set-group-ID bits (a fetch: the sender is a
    /// context below us, which must not be able to plant such files here).
    pub strip_setid: bool,
    pub chunk: u32,
    pub window: u32,
    pub idle_ms: u64,
}

/// What one side did, added up into a [`Transfer`](super::Transfer).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Done {
    pub files: u64,
    pub bytes: u64,
    pub skipped: u64,
    pub dirs: u64,
    pub links: u64,
    /// Large files the receiver still needs, by index in the batch, with the
    /// hash of what it has at that path when the size and time match (the
    /// sender then compares and skips an unchanged file).
    pub need: Vec<(u32, Option<Hash>)>,
}

impl Done {
    pub(crate) fn add(&mut self, other: &Done) {
        self.files += other.files;
        self.bytes += other.bytes;
        self.skipped += other.skipped;
        self.dirs += other.dirs;
        self.links += other.links;
    }
}

/// A remote function's answer: the typed file error travels as it is
/// (a function returning `Result` would turn it into a message).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Reply<T>(pub Result<T, FileError>);
