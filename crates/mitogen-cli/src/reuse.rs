//! ssh connection reuse between commands (`--reuse SECS`, `--no-reuse`,
//! `MITOGEN_REUSE`): the ssh hops this process starts itself (the first hop
//! of each target) log in once, and the login stays in the background for a
//! while after the command ends, for the next command to the same host
//! (ssh's `ControlMaster`/`ControlPersist`, as ansible sets by default).
//!
//! The control sockets go in a directory of this user's alone:
//! `$XDG_RUNTIME_DIR/mitogen/ssh`, else `${XDG_CACHE_HOME:-~/.cache}/mitogen/ssh`,
//! made mode 0700. A socket is a full login for whoever can connect to it,
//! so the library checks the directory before every use and leaves reuse
//! off when it is not private ([`mitogen::SshReuse`]); so is `mitogen`
//! above it, checked here.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use mitogen::SshReuse;

use crate::args::parse_secs_or_zero;

/// How long a login stays after its last use when nothing says otherwise.
pub const DEFAULT_PERSIST: Duration = Duration::from_secs(60);

/// The environment variable that sets the default: seconds, or `no`.
pub const ENV: &str = "MITOGEN_REUSE";

/// Options of ssh connection reuse, shared by `run`, `copy` and `fetch` (not
/// `bench`, whose figures are cold connections).
#[derive(Clone, Debug, Default, Args)]
pub struct ReuseArgs {
    /// Keep each ssh login this command makes (the first hop of a target)
    /// for SECS seconds after its last use, so that the next command to the
    /// same host does not log in again (default 60, or MITOGEN_REUSE=SECS;
    /// 0 is --no-reuse). A login set up in ~/.ssh/config or with
    /// -o ControlMaster/ControlPath/ControlPersist is used as it is set.
    #[arg(long, value_name = "SECS", value_parser = parse_secs_or_zero)]
    pub reuse: Option<Duration>,

    /// Log in afresh for every command, and leave no login behind (as
    /// MITOGEN_REUSE=no).
    #[arg(long, conflicts_with = "reuse")]
    pub no_reuse: bool,
}

impl ReuseArgs {
    /// How long a login stays, or `None` for no reuse: the options first,
    /// then `MITOGEN_REUSE`, then the default. A bad `MITOGEN_REUSE` is an
    /// error naming it.
    pub fn persist(&self) -> Result<Option<Duration>, String> {
        if self.no_reuse {
            return Ok(None);
        }
        let persist = match self.reuse {
            Some(d) => d,
            None => match std::env::var(ENV) {
                Err(std::env::VarError::NotPresent) => DEFAULT_PERSIST,
                Err(e) => return Err(format!("{ENV}: {e}")),
                Ok(v) if ["no", "off", "false"].contains(&v.trim()) => return Ok(None),
                Ok(v) => parse_secs_or_zero(v.trim()).map_err(|e| format!("{ENV}={v:?}: {e}"))?,
            },
        };
        Ok((!persist.is_zero()).then_some(persist))
    }

    /// The library's reuse option for these flags, with its directory made;
    /// `None` (with a debug log) when reuse is off or no private directory
    /// can be had.
    pub fn ssh_reuse(&self) -> Result<Option<SshReuse>, String> {
        let Some(persist) = self.persist()? else {
            return Ok(None);
        };
        let Some(base) = base_dir() else {
            tracing::debug!("ssh connection reuse off: no XDG_RUNTIME_DIR, XDG_CACHE_HOME or HOME");
            return Ok(None);
        };
        match make_private_dir(&base) {
            Ok(dir) => Ok(Some(SshReuse::new(dir, persist))),
            Err(why) => {
                tracing::debug!("ssh connection reuse off: {why}");
                Ok(None)
            }
        }
    }
}

/// Where `mitogen/ssh` goes: `$XDG_RUNTIME_DIR` (a private tmpfs the login
/// manager makes, emptied at logout), else the cache directory. Relative
/// values are ignored, as the XDG specification says.
fn base_dir() -> Option<PathBuf> {
    let absolute = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    absolute("XDG_RUNTIME_DIR")
        .or_else(|| absolute("XDG_CACHE_HOME"))
        .or_else(|| absolute("HOME").map(|h| h.join(".cache")))
}

/// Makes `BASE/mitogen/ssh` (each new directory 0700) and checks that
/// `BASE/mitogen` is this user's and writable by no one else: whoever could
/// write there could swap `ssh` for a directory of their own. The library
/// checks `ssh` itself before each use.
fn make_private_dir(base: &Path) -> Result<PathBuf, String> {
    let parent = base.join("mitogen");
    let dir = parent.join("ssh");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
    let meta =
        std::fs::symlink_metadata(&parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let me = rustix::process::geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{} is not a directory of this user's that only it can write to \
             (uid {}, mode {:o})",
            parent.display(),
            meta.uid(),
            meta.mode() & 0o7777
        ));
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_win_over_the_environment_and_zero_is_off() {
        let args = |reuse: Option<u64>, no_reuse| ReuseArgs {
            reuse: reuse.map(Duration::from_secs),
            no_reuse,
        };
        assert_eq!(
            args(Some(5), false).persist(),
            Ok(Some(Duration::from_secs(5)))
        );
        assert_eq!(args(Some(0), false).persist(), Ok(None));
        assert_eq!(args(None, true).persist(), Ok(None));
        assert!(parse_secs_or_zero("-1").is_err());
        assert!(parse_secs_or_zero("x").is_err());
        assert_eq!(parse_secs_or_zero("1.5"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn a_parent_others_can_write_to_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("mitogen-reuse-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = make_private_dir(&base).unwrap();
        assert_eq!(dir, base.join("mitogen/ssh"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&base.join("mitogen")), 0o700);
        std::fs::set_permissions(base.join("mitogen"), std::fs::Permissions::from_mode(0o777))
            .unwrap();
        assert!(make_private_dir(&base)
            .unwrap_err()
            .contains("only it can write"));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
