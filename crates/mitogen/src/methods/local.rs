//! The `local` method: a new process of this program on this machine.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::core::context::Context;
use crate::core::error::{Error, Result};
use crate::core::message::ContextId;
use crate::core::router::RouterInner;

/// Default time allowed for a context to start and greet.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The path that runs this program again: its own, or, when that names
/// nothing here (a program started from a sealed in-memory copy inside a
/// container or a tree, or a file since removed), the kernel's link to the
/// running image.
fn own_program() -> Result<PathBuf> {
    let path =
        std::env::current_exe().map_err(|e| Error::io("finding the current executable", e))?;
    if path.is_file() {
        Ok(path)
    } else {
        Ok(PathBuf::from("/proc/self/exe"))
    }
}

/// Options of a local context (the seed's `fork`/`local` streams).
///
/// ```no_run
/// # fn demo(router: mitogen::Router) -> mitogen::Result<()> {
/// use mitogen::Local;
/// let ctx = router.local_with(Local::new().name("worker-1").env("RUST_BACKTRACE", "1"))?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Local {
    name: Option<String>,
    program: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
    connect_timeout: Option<Duration>,
}

impl Local {
    /// Default options: this executable, an automatic name.
    pub fn new() -> Local {
        Local::default()
    }

    /// Names the context (default `local.<pid>`).
    pub fn name(mut self, name: impl Into<String>) -> Local {
        self.name = Some(name.into());
        self
    }

    /// Runs another build of this program instead of the current executable.
    pub fn program(mut self, path: impl Into<PathBuf>) -> Local {
        self.program = Some(path.into());
        self
    }

    /// Sets an environment variable in the child.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Local {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Time allowed to start (default 30 s).
    pub fn connect_timeout(mut self, t: Duration) -> Local {
        self.connect_timeout = Some(t);
        self
    }

    pub(crate) fn name_ref(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT)
    }

    pub(crate) fn connect(
        self,
        router: &Arc<RouterInner>,
        id: Option<ContextId>,
    ) -> Result<Context> {
        static SEQ: AtomicU32 = AtomicU32::new(1);
        let program = match self.program {
            Some(p) => p,
            None => own_program()?,
        };
        let name = self
            .name
            .unwrap_or_else(|| format!("local.{}", SEQ.fetch_add(1, Ordering::Relaxed)));
        let build = |_force: bool| {
            let mut cmd = Command::new(&program);
            // Show what the process is in `ps` output.
            std::os::unix::process::CommandExt::arg0(&mut cmd, format!("mitogen:{name}"));
            cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
            cmd
        };
        crate::parent::connect(
            router,
            &crate::parent::Launch {
                command: &build,
                name: &name,
                timeout: self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
                stage: None,
                id,
                classify: &|_| crate::TransportFailure::Other,
                prompt: None,
                local_peer: true,
                direct: false,
            },
        )
    }
}
