//! The `su` method: a context as another user on the same machine, through
//! `su USER -c 'sh -c STAGE'`.
//!
//! su reads its password from stdin and insists that stdin is a terminal, so
//! the child gets a full pty (the seed's `tty_create_child`): stdin, stdout and
//! stderr are the pty, which is in raw mode so that the program's upload and
//! its frames pass unchanged, and the pty's master is the stream. As with sudo,
//! the [first stage](crate::parent::first_stage) runs as the target user and
//! the context runs its own copy of the program from that user's cache.
//!
//! root switches to any user without a password.

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

/// Default time allowed for su to authenticate and the program to start.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of an su context (at least those of the Python original).
///
/// ```no_run
/// # fn demo(router: mitogen::Router) -> mitogen::Result<()> {
/// use mitogen::Su;
/// let app = router.su(Su::user("app").password("app's password"))?;
/// # Ok(()) }
/// ```
///
/// The options are plain data (serde), so a context can be asked to run su on
/// its own machine; the password then travels only to that context.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Su {
    user: String,
    password: Option<Secret>,
    su_path: PathBuf,
    prompts: Vec<String>,
    failures: Vec<(String, TransportFailure)>,
    connect_timeout: Duration,
    upload: Compression,
    name: Option<String>,
}

impl Default for Su {
    fn default() -> Su {
        Su::root()
    }
}

impl Su {
    /// su to `user`.
    pub fn user(user: impl Into<String>) -> Su {
        Su {
            user: user.into(),
            password: None,
            su_path: PathBuf::from("su"),
            prompts: Vec::new(),
            failures: Vec::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            upload: Compression::Never,
            name: None,
        }
    }

    /// su to root.
    pub fn root() -> Su {
        Su::user("root")
    }

    /// The su program (default `su` from `PATH`).
    pub fn su_path(mut self, path: impl Into<PathBuf>) -> Su {
        self.su_path = path.into();
        self
    }

    /// Another ending of su's password prompt to recognise, e.g. a localised
    /// `Passwort:` (case does not matter; `password:` is always recognised).
    pub fn password_prompt(mut self, prompt: impl Into<String>) -> Su {
        self.prompts.push(prompt.into());
        self
    }

    /// Another phrase su prints when it refuses, and what it means (case does
    /// not matter); checked before the built-in ones, such as
    /// `authentication failure`.
    pub fn failure(mut self, phrase: impl Into<String>, kind: TransportFailure) -> Su {
        self.failures.push((phrase.into(), kind));
        self
    }

    pub(crate) fn default_name(&self) -> String {
        switch_name("su", &self.user)
    }

    pub(crate) fn connect(
        self,
        router: &Arc<RouterInner>,
        id: Option<ContextId>,
    ) -> Result<Context> {
        let name = self.name.clone().unwrap_or_else(|| self.default_name());
        let build = |hash: &str, force: bool| {
            let mut cmd = Command::new(&self.su_path);
            // su hands the caller's environment to the target's shell, which
            // would run `BASH_ENV` or `ENV` and search the caller's `PATH`
            // as the target user: it gets none of it, and `/bin/sh` rather
            // than its login shell (su ignores `-s` for an account whose
            // shell is not in /etc/shells, unless root asks: the command is
            // then still `sh -c '…'`, which any shell runs alike).
            cmd.env_clear()
                .env("PATH", SAFE_PATH)
                .arg("-s")
                .arg("/bin/sh")
                .arg("-c")
                .arg(first_stage::command_line(hash, force))
                // The user after `--`, so that no name can pass for an option.
                .arg("--")
                .arg(&self.user);
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
                    extra_prompts: self.prompts.clone(),
                    extra_failures: self.failures.clone(),
                    exact_prompt: None,
                    full_pty: true,
                },
            },
            &build,
        )
    }
}

/// The only `PATH` su's target gets.
const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// su's prompt and refusals (util-linux, shadow, busybox, BSD).
const PROMPTS: PromptStyle = PromptStyle {
    prompts: &["password:"],
    failures: FAILURES,
};

const FAILURES: &[(&str, TransportFailure)] = &[
    (
        "authentication failure",
        TransportFailure::AuthenticationFailed,
    ),
    ("incorrect password", TransportFailure::AuthenticationFailed),
    ("su: sorry", TransportFailure::AuthenticationFailed),
    ("does not exist", TransportFailure::NoSuchUser),
    ("unknown login", TransportFailure::NoSuchUser),
    ("unknown user", TransportFailure::NoSuchUser),
    ("permission denied", TransportFailure::PolicyRefused),
    ("not available", TransportFailure::NoShell),
];

/// Reads su's error messages.
pub fn classify(text: &str) -> TransportFailure {
    switch::classify_with(text, FAILURES)
}

transport_options!(Su, Su, "su");
