//! The `doas` method: a context as another user on the same machine, through
//! OpenBSD's doas (Debian's `opendoas`; rules in `/etc/doas.conf`).
//!
//! doas prompts on its controlling terminal (`doas (user@host) password:`),
//! which is a pty used only for that conversation; the data stream runs over a
//! socketpair. As with sudo, the [first stage](crate::parent::first_stage)
//! runs as the target user and the context runs its own copy of the program
//! from that user's cache.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use super::switch::{self, switch_name};
use crate::core::context::Context;
use crate::core::error::{Result, TransportFailure};
use crate::core::message::ContextId;
use crate::core::router::RouterInner;
use crate::core::secret::Secret;
use crate::parent::first_stage::{self, Compression};
use crate::parent::prompt::PromptStyle;
use crate::parent::PromptSpec;

/// Default time allowed for doas to authenticate and the program to start.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of a doas context.
///
/// ```no_run
/// # fn demo(router: mitogen::Router) -> mitogen::Result<()> {
/// use mitogen::Doas;
/// let app = router.doas(Doas::new().user("app").password("my password"))?;
/// # Ok(()) }
/// ```
///
/// The options are plain data (serde), so a context can be asked to run doas
/// on its own machine; the password then travels only to that context.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Doas {
    user: String,
    password: Option<Secret>,
    doas_path: PathBuf,
    connect_timeout: Duration,
    upload: Compression,
    name: Option<String>,
}

impl Default for Doas {
    fn default() -> Doas {
        Doas::new()
    }
}

impl Doas {
    /// doas to root, without a password (the rule must say `nopass`).
    pub fn new() -> Doas {
        Doas {
            user: "root".to_owned(),
            password: None,
            doas_path: PathBuf::from("doas"),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            upload: Compression::Never,
            name: None,
        }
    }

    /// The user to become (`-u`, default root).
    pub fn user(mut self, user: impl Into<String>) -> Doas {
        self.user = user.into();
        self
    }

    /// The doas program (default `doas` from `PATH`).
    pub fn doas_path(mut self, path: impl Into<PathBuf>) -> Doas {
        self.doas_path = path.into();
        self
    }

    pub(crate) fn default_name(&self) -> String {
        switch_name("doas", &self.user)
    }

    pub(crate) fn connect(
        self,
        router: &Arc<RouterInner>,
        id: Option<ContextId>,
    ) -> Result<Context> {
        let name = self.name.clone().unwrap_or_else(|| self.default_name());
        let build = |hash: &str, force: bool| {
            let mut cmd = Command::new(&self.doas_path);
            if self.password.is_none() {
                // Nobody could answer a prompt: doas must fail instead of asking.
                cmd.arg("-n");
            }
            cmd.arg("-u")
                .arg(&self.user)
                .arg("--")
                .arg("sh")
                .arg("-c")
                .arg(first_stage::script(hash, force));
            cmd
        };
        switch::connect(
            router,
            switch::Switch {
                id,
                name: &name,
                timeout: self.connect_timeout,
                upload: self.upload,
                classify: &classify,
                prompt: PromptSpec {
                    password: self.password.clone(),
                    style: PROMPTS,
                    ..Default::default()
                },
            },
            &build,
        )
    }
}

/// doas's prompt and refusals (opendoas).
const PROMPTS: PromptStyle = PromptStyle {
    prompts: &["password:"],
    failures: FAILURES,
};

const FAILURES: &[(&str, TransportFailure)] = &[
    (
        "authentication failed",
        TransportFailure::AuthenticationFailed,
    ),
    (
        "authentication required",
        TransportFailure::PasswordRequired,
    ),
    ("a password is required", TransportFailure::PasswordRequired),
    ("operation not permitted", TransportFailure::PolicyRefused),
    ("not enabled", TransportFailure::PolicyRefused),
    ("unknown user", TransportFailure::NoSuchUser),
    ("no such user", TransportFailure::NoSuchUser),
];

/// Reads doas's error messages.
pub fn classify(text: &str) -> TransportFailure {
    switch::classify_with(text, FAILURES)
}

transport_options!(Doas, Doas, "doas");
