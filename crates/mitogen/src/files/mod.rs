//! Pushing and fetching files and trees between contexts.
//!
//! [`Context::push`] copies a local file or directory tree into a context,
//! [`Context::fetch`] copies one from a context here, and [`push_all`] pushes
//! to many contexts at once. What is kept: content, permission bits,
//! modification times, owner and group when the receiver runs as root,
//! symbolic links as links, holes of sparse files, empty directories.
//!
//! ```no_run
//! # fn demo(router: mitogen::Router) -> mitogen::Result<()> {
//! use mitogen::files::FileOptions;
//! let web = router.connect("deploy@web1/sudo")?;
//! let t = web.push("build/site", "/srv/site")?;      // a tree: dst is the copy itself
//! println!("{} files, {} bytes, {} unchanged", t.files, t.bytes, t.skipped);
//! web.fetch("/var/log/syslog", "logs/web1.syslog")?; // a file
//! let mut opts = FileOptions::default();
//! opts.update = false;                                // send even unchanged files
//! web.push_with("build/site", "/srv/site", &opts)?;
//! # Ok(()) }
//! ```
//!
//! Guarantees (see `docs/files.md`): a file appears at its destination only
//! complete and verified (BLAKE3 of its content, checked by the receiver),
//! renamed into place from a temporary file in the same directory; a failed
//! or interrupted transfer leaves neither a partial file nor a temporary
//! one. Failures are [`Error::File`](crate::Error::File) ([`FileError`]:
//! kind, context, path) or, for the transport itself, the usual [`Error`](crate::Error).

mod claim;
mod dest;
mod fanout;
mod fine_times;
mod pump;
mod remote;
mod resend;
mod scan;
mod stamp;
mod temp;
pub(crate) mod transfer;
mod wire;

use std::path::Path;
use std::time::Duration;

use crate::core::context::Context;
use crate::core::error::Result;
pub use crate::core::file_error::{FileError, FileErrorKind};
use wire::{Done, WireOpts};

/// What a push or fetch did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Transfer {
    /// Regular files written at the destination.
    pub files: u64,
    /// Content bytes written (holes not counted).
    pub bytes: u64,
    /// Files and links left alone because the destination already had them
    /// (same size, modification time and content hash).
    pub skipped: u64,
    /// Directories made or found.
    pub dirs: u64,
    /// Symbolic links made.
    pub links: u64,
    /// Time the whole transfer took.
    pub elapsed: Duration,
}

impl Transfer {
    fn from_done(d: &Done, elapsed: Duration) -> Transfer {
        Transfer {
            files: d.files,
            bytes: d.bytes,
            skipped: d.skipped,
            dirs: d.dirs,
            links: d.links,
            elapsed,
        }
    }
}

/// How a push or fetch behaves. `FileOptions::default()` is what
/// [`Context::push`] and [`Context::fetch`] use.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct FileOptions {
    /// Leave a destination file alone when it has the same size, modification
    /// time and BLAKE3 hash as the source (default: on).
    pub update: bool,
    /// Give files the source's owner and group, by number, when the receiver
    /// runs as root (default: on; a receiver that is not root keeps its own).
    pub preserve_owner: bool,
    /// Give files the source's permission bits (default: on; off: 0644).
    pub preserve_mode: bool,
    /// Give files and directories the source's modification time (default:
    /// on). Update-skipping compares times, so turning this off makes every
    /// repeated transfer send again.
    pub preserve_times: bool,
    /// Bytes per frame of a large file (default 256 KiB: the receiver writes
    /// each frame while the next arrives; frames of 512 KiB made a fetching
    /// master's writes into the page cache cost about three times as much
    /// on this project's machine, and frames of a few MiB were slower
    /// still, docs/performance.md "File transfer"). At least
    /// `CUT_THROUGH_MIN` (256 KiB), so that hops relay frames by `splice`.
    pub chunk_size: usize,
    /// The window of a large file's frames' channel (default 8 MiB): bytes
    /// sent that the receiver has not yet taken, and it takes a frame only
    /// once it has written the one before. What bounds every process's
    /// memory.
    pub window: usize,
    /// How long any wait for the peer may last before the transfer fails
    /// as [`FileErrorKind::Interrupted`] (default 60 s).
    pub idle_timeout: Duration,
    /// Small files' content sent with the listing, in all (default 64 MiB);
    /// past it they are streamed one by one.
    pub inline_budget: u64,
    /// [`push_all`]: pushes running at once from each context that serves
    /// several (the caller, and each hop the source is staged on), at least
    /// one (default 8). A slow or failing target then holds one of them,
    /// not the others; the memory a hop spends on large files is at most
    /// this many `window`s. Travels to the hops with the options.
    pub fan_out: usize,
}

impl Default for FileOptions {
    fn default() -> FileOptions {
        FileOptions {
            update: true,
            preserve_owner: true,
            preserve_mode: true,
            preserve_times: true,
            chunk_size: 256 * 1024,
            window: 8 * 1024 * 1024,
            idle_timeout: Duration::from_secs(60),
            inline_budget: 64 * 1024 * 1024,
            fan_out: 8,
        }
    }
}

impl FileOptions {
    fn wire(&self, strip_setid: bool) -> WireOpts {
        WireOpts {
            update: self.update,
            owner: self.preserve_owner,
            mode: self.preserve_mode,
            times: self.preserve_times,
            strip_setid,
            chunk: self.chunk_size.clamp(4096, 16 << 20) as u32,
            window: self.window.clamp(4096, 64 << 20) as u32,
            idle_ms: self.idle_timeout.as_millis().min(u64::MAX.into()) as u64,
        }
    }
}

impl Context {
    /// Copies the local file or directory tree `src` to `dst` in this
    /// context. `dst` names the copy itself (not a directory to put it in);
    /// a tree is merged into a directory already there.
    ///
    /// ```no_run
    /// # fn demo(ctx: mitogen::Context) -> mitogen::Result<()> {
    /// let t = ctx.push("/etc/hosts", "/tmp/hosts.copy")?;
    /// assert_eq!(t.files + t.skipped, 1);
    /// # Ok(()) }
    /// ```
    pub fn push(&self, src: impl AsRef<Path>, dst: impl AsRef<Path>) -> Result<Transfer> {
        self.push_with(src, dst, &FileOptions::default())
    }

    /// [`push`](Self::push) with options.
    pub fn push_with(
        &self,
        src: impl AsRef<Path>,
        dst: impl AsRef<Path>,
        opts: &FileOptions,
    ) -> Result<Transfer> {
        transfer::push(self, src.as_ref(), dst.as_ref(), opts, None)
    }

    /// Copies the file or tree `src` of this context to the local `dst`
    /// (which, as for [`push`](Self::push), names the copy itself).
    ///
    /// What the context sends is checked as coming from a less trusted
    /// side: names that would leave `dst` (`..`, absolute names, a path
    /// through a symbolic link) are refused, set-user-ID and set-group-ID
    /// bits are dropped, and content must match its announced size and hash.
    pub fn fetch(&self, src: impl AsRef<Path>, dst: impl AsRef<Path>) -> Result<Transfer> {
        self.fetch_with(src, dst, &FileOptions::default())
    }

    /// [`fetch`](Self::fetch) with options.
    pub fn fetch_with(
        &self,
        src: impl AsRef<Path>,
        dst: impl AsRef<Path>,
        opts: &FileOptions,
    ) -> Result<Transfer> {
        transfer::fetch(
            self,
            src.as_ref(),
            dst.as_ref(),
            opts,
            &transfer::Remotes::OWN,
        )
    }
}

/// Pushes `src` to `dst` in each of `targets`; the results are in the same
/// order. Contexts behind one shared intermediate get the bytes over the
/// first link once, and the pushes run in parallel, at most
/// [`FileOptions::fan_out`] at once here and at each such intermediate; a
/// target that fails fails alone.
pub fn push_all(
    targets: &[Context],
    src: impl AsRef<Path>,
    dst: impl AsRef<Path>,
    opts: &FileOptions,
) -> Vec<Result<Transfer>> {
    fanout::push_all(targets, src.as_ref(), dst.as_ref(), opts, None, &|_, _| {})
}

/// [`push_all`], telling `on_done` each target's index (in `targets`) and
/// result as soon as it is known, also for targets served through a hop
/// (the hop sends each as it finishes), so that a caller can report a
/// target without waiting for the slowest.
///
/// ```no_run
/// # fn demo(targets: &[mitogen::Context]) {
/// use mitogen::files::{push_all_each, FileOptions};
/// push_all_each(targets, "app.tar", "/opt/app.tar", &FileOptions::default(), |i, r| {
///     println!("{}: {}", targets[i].name(), if r.is_ok() { "ok" } else { "failed" });
/// });
/// # }
/// ```
pub fn push_all_each(
    targets: &[Context],
    src: impl AsRef<Path>,
    dst: impl AsRef<Path>,
    opts: &FileOptions,
    on_done: impl Fn(usize, &Result<Transfer>) + Sync,
) -> Vec<Result<Transfer>> {
    fanout::push_all(targets, src.as_ref(), dst.as_ref(), opts, None, &on_done)
}
