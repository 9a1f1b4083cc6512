//! Arguments of `mitogen copy` and `mitogen fetch`: what the user asked for.
//! Planning and moving the files live in [`super::copy`] and [`super::fetch`].

use std::path::PathBuf;

use clap::Args;
use mitogen::files::FileOptions;
use mitogen::Target;

use crate::args::parse_target;

/// What `mitogen copy --help` shows after the options.
pub const COPY_AFTER_HELP: &str = "\
Where each SRC goes (the same on every target, whatever is there already):
  one SRC, DEST not ending in '/'   DEST is the copy itself (a file, or a
                                    tree merged into a directory already there)
  one SRC, DEST ending in '/'       DEST/NAME, NAME being the last part of SRC
  several SRC                       DEST/NAME for each; DEST must exist
The directory the copy goes in must exist. Nothing at the destination is
deleted.

What is guaranteed (the library's push, docs/files.md):
  * each file appears complete or not at all: written to a temporary file
    beside it, verified with BLAKE3 at the target, then renamed into place
  * permission bits, modification times, symbolic links (as links), empty
    directories, holes; owner and group by number when the target's user
    is root
  * a file the target already has (same size, time and hash) is not sent
    again (-I sends it anyway)
  * targets behind one shared hop (bastion/web1 bastion/web2) get the bytes
    over the first link once: they are staged on that hop and sent on from
    there

Exit status:
  0  every file reached every target
  1  every target was reached, and at least one transfer failed (a missing
     source, a destination not writable, ...): the other sources and targets
     are still done
  2  usage error (bad option, bad target syntax, fewer than two paths, a
     hosts file that cannot be read or has a bad line)
  3  at least one target could not be connected, or its connection was
     lost during a transfer (takes precedence over 1)

Examples:
  mitogen copy web1 web2 -- site.conf /etc/nginx/conf.d/site.conf
  mitogen copy bastion/web1 bastion/web2 -- build/site /srv/site
  mitogen copy -F ./ssh_config web1/sudo -- app.tar app.env /opt/app/
  mitogen copy --json local -- notes.txt /tmp/
  mitogen copy -H web.hosts -j 20 -- site.conf /etc/nginx/conf.d/";

/// What `mitogen fetch --help` shows after the options.
pub const FETCH_AFTER_HELP: &str = "\
Where each REMOTE_PATH goes: LOCAL_DIR/TARGET/NAME, NAME being the last part
of REMOTE_PATH and TARGET the target as given, with '/' and '%' written %2F
and %25 (and a leading '.' as %2E), so that each target has a directory of
its own: web1/sudo -> LOCAL_DIR/web1%2Fsudo/. LOCAL_DIR is made if missing.
With --flat (one target only) it is LOCAL_DIR/NAME.

What a target sends is checked as coming from a less trusted side: nothing is
written outside its own directory (no '..', no absolute names, no symbolic
link followed, neither one sent now nor one left by an earlier fetch), no
set-user-ID or set-group-ID bit is kept, and every file must match its
announced size and BLAKE3 hash. Each file appears complete or not at all,
and a file already here with the same size, time and hash is not fetched
again (-I fetches it anyway).

Exit status:
  0  every path was fetched from every target
  1  every target was reached, and at least one fetch failed (a path missing
     on a target, LOCAL_DIR not writable, ...): the others are still done
  2  usage error (bad option, bad target syntax, fewer than two paths,
     --flat with more than one target, two REMOTE_PATH with the same NAME,
     a hosts file that cannot be read or has a bad line)
  3  at least one target could not be connected, or its connection was
     lost during a transfer (takes precedence over 1)

Examples:
  mitogen fetch web1 web2 -- /var/log/syslog /etc/nginx logs/
  mitogen fetch --flat web1/sudo -- /etc/shadow ./web1/
  mitogen fetch -H web.hosts -- /var/log/syslog logs/";

/// How files are written, shared by `copy` and `fetch` (the library's
/// `FileOptions`; it has no option to set a mode or an owner, only to keep
/// the source's or not; turning the mode off gives new directories 0700,
/// which no operator wants, so it is not offered).
#[derive(Clone, Debug, Default, Args)]
pub struct FileFlags {
    /// Send every file, even those the destination already has with the same
    /// size, modification time and content hash (as rsync's -I).
    #[arg(short = 'I', long)]
    pub ignore_times: bool,

    /// Do not give files the source's owner and group (by default they are
    /// kept when the receiving side runs as root).
    #[arg(long)]
    pub no_owner: bool,

    /// Do not give files the source's modification times (every later
    /// transfer then sends them again).
    #[arg(long)]
    pub no_times: bool,
}

impl FileFlags {
    /// The library's options for these flags.
    pub fn options(&self) -> FileOptions {
        let mut o = FileOptions::default();
        o.update = !self.ignore_times;
        o.preserve_owner = !self.no_owner;
        o.preserve_times = !self.no_times;
        o
    }
}

/// Arguments of `mitogen copy`.
#[derive(Debug, Args)]
#[command(override_usage = "mitogen copy [OPTIONS] [TARGET...] -- SRC... DEST")]
pub struct CopyArgs {
    /// Where to copy to (one or more, here or in a hosts file; up to -j at
    /// once).
    #[arg(required_unless_present = "hosts", value_name = "TARGET", value_parser = parse_target)]
    pub targets: Vec<Target>,

    /// After `--`: the local files or directories to send, then where they go
    /// on each target (see below).
    #[arg(last = true, required = true, num_args = 2.., value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// Output, files, fleet and ssh options, as `fetch`'s and `copy`'s.
    #[command(flatten)]
    pub common: TransferOptions,
}

/// Arguments of `mitogen fetch`.
#[derive(Debug, Args)]
#[command(override_usage = "mitogen fetch [OPTIONS] [TARGET...] -- REMOTE_PATH... LOCAL_DIR")]
pub struct FetchArgs {
    /// Where to fetch from (one or more, here or in a hosts file; up to -j
    /// at once).
    #[arg(required_unless_present = "hosts", value_name = "TARGET", value_parser = parse_target)]
    pub targets: Vec<Target>,

    /// After `--`: the files or directories to fetch from each target, then
    /// the local directory they go in (see below).
    #[arg(
        last = true,
        required = true,
        num_args = 2..,
        value_name = "PATH"
    )]
    pub paths: Vec<PathBuf>,

    /// Write straight into LOCAL_DIR, without a directory per target (one
    /// target only).
    #[arg(long)]
    pub flat: bool,

    /// Output, files, fleet and ssh options, as `fetch`'s and `copy`'s.
    #[command(flatten)]
    pub common: TransferOptions,
}

/// The options `copy` and `fetch` share.
#[derive(Debug, Args)]
pub struct TransferOptions {
    /// Print one JSON object per target per line instead of text.
    #[arg(long)]
    pub json: bool,

    /// How files are written.
    #[command(flatten)]
    pub files: FileFlags,

    /// Which targets, how they are reached, how many at once.
    #[command(flatten)]
    pub session: crate::args::SessionArgs,
}
