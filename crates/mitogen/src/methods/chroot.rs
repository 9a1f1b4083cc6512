//! The `chroot` method: a context whose root is a directory tree (an image
//! being built, a rescue system, a mounted disk), started by root.
//!
//! `/proc` and `/dev` inside the tree are left as they are unless asked
//! otherwise ([`Chroot::proc`], [`Chroot::dev`]). When something is to be
//! mounted, the new process first takes a mount namespace of its own whose
//! mounts are all private, so the mounts never appear in the host's mount
//! table and go away with the context (with its last process). The mount
//! points are opened without following links: a tree whose `proc` is a link
//! (`proc -> /etc`) is refused, never mounted over the host's directory.
//!
//! The program runs from a sealed in-memory copy, as for setns (see
//! [`enter`]): nothing is written into the tree. The tree
//! needs a `/dev/null` (the program opens it at start): keep the host's
//! `/dev` ([`TreeDev::Host`]) if it has none.
//!
//! ```no_run
//! # fn demo(router: mitogen::Router) -> mitogen::Result<()> {
//! use mitogen::{Chroot, TreeDev, TreeProc};
//! let img = router.start(None, Chroot::new("/srv/image").proc(TreeProc::Fresh).dev(TreeDev::Host))?;
//! # Ok(()) }
//! ```
//!
//! As a target string: `chroot:/PATH` (the path runs to the end of the
//! target), or `chroot:[/PATH]` when more hops follow
//! (`chroot:[/srv/image]/sudo:app`); both leave `/proc` and `/dev` as they
//! are.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::enter::{self, Enter};
use crate::core::context::Context;
use crate::core::error::{Error, Result};
use crate::core::message::ContextId;
use crate::core::router::RouterInner;
use crate::sys::{Mount, MountKind};

/// Default time allowed to start.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// What a [`Chroot`] context gets as `/proc`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TreeProc {
    /// Whatever the tree has (often an empty directory).
    #[default]
    AsIs,
    /// The host's `/proc`, bind-mounted (with what is mounted below it).
    Host,
    /// A new proc file system (`nosuid,nodev,noexec`).
    Fresh,
}

/// What a [`Chroot`] context gets as `/dev`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TreeDev {
    /// Whatever the tree has.
    #[default]
    AsIs,
    /// The host's `/dev`, bind-mounted with everything below it (`pts`,
    /// `shm`, …).
    Host,
}

/// Options of a chroot context.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Chroot {
    path: PathBuf,
    proc: TreeProc,
    dev: TreeDev,
    env: Vec<(OsString, OsString)>,
    connect_timeout: Duration,
    name: Option<String>,
}

impl Chroot {
    /// A context whose root is the directory `path`, `/proc` and `/dev` left
    /// as they are.
    pub fn new(path: impl Into<PathBuf>) -> Chroot {
        Chroot {
            path: path.into(),
            proc: TreeProc::AsIs,
            dev: TreeDev::AsIs,
            env: Vec::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            name: None,
        }
    }

    /// What `/proc` is inside.
    pub fn proc(mut self, proc: TreeProc) -> Chroot {
        self.proc = proc;
        self
    }

    /// What `/dev` is inside.
    pub fn dev(mut self, dev: TreeDev) -> Chroot {
        self.dev = dev;
        self
    }

    /// Sets an environment variable in the context. It starts with a fixed
    /// environment (`PATH`, `HOME=/root`, `USER`, `LOGNAME`), none of the
    /// caller's.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Chroot {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Time allowed to start (default 30 s).
    pub fn connect_timeout(mut self, t: Duration) -> Chroot {
        self.connect_timeout = t;
        self
    }

    /// Names the context (default `chroot:PATH`).
    pub fn name(mut self, name: impl Into<String>) -> Chroot {
        self.name = Some(name.into());
        self
    }

    pub(crate) fn name_ref(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.connect_timeout
    }

    pub(crate) fn default_name(&self) -> String {
        format!("chroot:{}", self.path.display())
    }

    pub(crate) fn connect(
        self,
        router: &Arc<RouterInner>,
        id: Option<ContextId>,
    ) -> Result<Context> {
        let name = self.name.clone().unwrap_or_else(|| self.default_name());
        enter::require_root(&name, "chroot")?;
        let fail = |reason: String| Error::Connect {
            context: name.clone(),
            reason,
        };
        if !self.path.is_absolute() {
            return Err(fail(format!(
                "{} is not an absolute path",
                self.path.display()
            )));
        }
        let tree = crate::sys::open_tree(&self.path).map_err(fail)?;
        let mut mounts = Vec::new();
        match self.proc {
            TreeProc::AsIs => {}
            TreeProc::Host => mounts.push(
                Mount::new(
                    &tree,
                    c"proc",
                    MountKind::Bind(c"/proc"),
                    "bind-mounting the host's /proc",
                )
                .map_err(fail)?,
            ),
            TreeProc::Fresh => mounts.push(
                Mount::new(&tree, c"proc", MountKind::FreshProc, "mounting a new /proc")
                    .map_err(fail)?,
            ),
        }
        if self.dev == TreeDev::Host {
            mounts.push(
                Mount::new(
                    &tree,
                    c"dev",
                    MountKind::Bind(c"/dev"),
                    "bind-mounting the host's /dev",
                )
                .map_err(fail)?,
            );
        }
        let how = Enter {
            name: &name,
            timeout: self.connect_timeout,
            id,
            env: &self.env,
        };
        let (report_r, report_w) = enter::report_pipe()?;
        let mut entry = enter::entry(&how, tree, report_w)?;
        entry.mounts = mounts;
        enter::connect(router, &how, entry, report_r)
    }
}

impl From<Chroot> for crate::methods::Method {
    fn from(c: Chroot) -> crate::methods::Method {
        crate::methods::Method::Chroot(c)
    }
}
