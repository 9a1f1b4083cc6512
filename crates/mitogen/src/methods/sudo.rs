//! The `sudo` method: a context as another user on the same machine.
//!
//! sudo runs the [first stage](crate::parent::first_stage) as the target user,
//! exactly as ssh does on a remote host, so the new context runs its own copy
//! of the program from the *target user's* private cache: it never executes a
//! file that a less privileged user could have written.
//!
//! sudo asks for a password on its controlling terminal, which is a pty used
//! only for that conversation; the data stream runs over a socketpair (the
//! seed's `hybrid_tty_create_child`). The prompt is one we set (`SUDO_PROMPT`,
//! different for every connection), so it is recognised whatever the system's
//! locale, only that exact prompt is answered, and a second prompt (a wrong
//! password) fails the connection at once instead of waiting for a time-out.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use super::switch::{self, switch_name};
use crate::core::context::Context;
use crate::core::error::{Error, Result, TransportFailure};
use crate::core::message::ContextId;
use crate::core::router::RouterInner;
use crate::core::secret::Secret;
use crate::parent::first_stage::{self, Compression};
use crate::parent::prompt::PromptStyle;
use crate::parent::PromptSpec;

/// Default time allowed for sudo to authenticate and the program to start.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The start of the prompt sudo is told to print; a random word and
/// `] password:` follow, different for every connection, and only that exact
/// prompt is answered. It contains no `%` escape.
///
/// It is given in sudo's environment (`SUDO_PROMPT`), not with `-p`: sudo's
/// arguments are visible to every user in `ps`, while the environment of a
/// setuid process is readable by root alone, and sudo does not pass the
/// variable on to the command (unless `-E` keeps the caller's environment).
pub const PROMPT: &str = "[mitogen-sudo ";

/// The prompt for one connection: [`PROMPT`], 16 random hex digits, and
/// `] password:`.
fn one_time_prompt() -> Result<String> {
    use std::io::Read;
    let mut nonce = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut nonce))
        .map_err(|e| Error::io("reading /dev/urandom for sudo's prompt", e))?;
    let hex: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{PROMPT}{hex}] password:"))
}

/// Options of a sudo context (at least those of the Python original).
///
/// ```no_run
/// # fn demo(router: mitogen::Router) -> mitogen::Result<()> {
/// use mitogen::Sudo;
/// let app = router.sudo(Sudo::new().user("app").password("s3cret").set_home(true))?;
/// # Ok(()) }
/// ```
///
/// The options are plain data (serde), so a context can be asked to run sudo
/// on its own machine; the password then travels only to that context.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Sudo {
    user: String,
    password: Option<Secret>,
    preserve_env: bool,
    set_home: bool,
    login: bool,
    selinux_role: Option<String>,
    selinux_type: Option<String>,
    sudo_args: Vec<String>,
    sudo_path: PathBuf,
    connect_timeout: Duration,
    upload: Compression,
    name: Option<String>,
}

impl Default for Sudo {
    fn default() -> Sudo {
        Sudo::new()
    }
}

impl Sudo {
    /// sudo to root, without a password (sudo must not ask for one).
    pub fn new() -> Sudo {
        Sudo {
            user: "root".to_owned(),
            password: None,
            preserve_env: false,
            set_home: false,
            login: false,
            selinux_role: None,
            selinux_type: None,
            sudo_args: Vec::new(),
            sudo_path: PathBuf::from("sudo"),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            upload: Compression::Never,
            name: None,
        }
    }

    /// The user to become (`-u`, default root).
    pub fn user(mut self, user: impl Into<String>) -> Sudo {
        self.user = user.into();
        self
    }

    /// Keep the caller's environment (`-E`), as far as sudo's policy allows.
    pub fn preserve_env(mut self, on: bool) -> Sudo {
        self.preserve_env = on;
        self
    }

    /// Set `HOME` to the target user's home (`-H`).
    pub fn set_home(mut self, on: bool) -> Sudo {
        self.set_home = on;
        self
    }

    /// Run through the target user's login shell (`-i`), so its profile is read.
    pub fn login(mut self, on: bool) -> Sudo {
        self.login = on;
        self
    }

    /// SELinux role of the new context (`-r`).
    pub fn selinux_role(mut self, role: impl Into<String>) -> Sudo {
        self.selinux_role = Some(role.into());
        self
    }

    /// SELinux type of the new context (`-t`).
    pub fn selinux_type(mut self, kind: impl Into<String>) -> Sudo {
        self.selinux_type = Some(kind.into());
        self
    }

    /// More sudo arguments, as on sudo's command line. Only options that
    /// cannot break the connection are accepted: `-u`/`--user`,
    /// `-g`/`--group`, `-H`/`--set-home`, `-E`/`--preserve-env[=LIST]`,
    /// `-i`/`--login`, `-k`/`--reset-timestamp`, `-P`/`--preserve-groups`,
    /// `-n`/`--non-interactive`, `-r`/`--role`, `-t`/`--type`,
    /// `-D`/`--chdir`, `-C`/`--close-from`. Anything else (e.g. `-S`, which
    /// would read the password from the data stream, or `-b`) is refused
    /// with [`Error::Connect`] when connecting.
    pub fn sudo_args<I, S>(mut self, args: I) -> Sudo
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.sudo_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The sudo program (default `sudo` from `PATH`).
    pub fn sudo_path(mut self, path: impl Into<PathBuf>) -> Sudo {
        self.sudo_path = path.into();
        self
    }

    pub(crate) fn default_name(&self) -> String {
        switch_name("sudo", &self.user)
    }

    /// The sudo arguments between the program and `--`, or why they cannot be
    /// used.
    pub(crate) fn arguments(&self) -> std::result::Result<Vec<String>, String> {
        let mut user = self.user.clone();
        let (mut home, mut env, mut login) = (self.set_home, self.preserve_env, self.login);
        let mut env_list = None;
        let mut role = self.selinux_role.clone();
        let mut kind = self.selinux_type.clone();
        let mut pass: Vec<String> = Vec::new();
        let mut non_interactive = false;
        let expanded = expand_clusters(&self.sudo_args);
        let mut args = expanded.iter();
        while let Some(arg) = args.next() {
            // `--name=value` or `--name value`; `-xVALUE` or `-x VALUE`.
            // Split after the second *character*: an argument from outside
            // may start with any text (`-é` is two characters, three bytes).
            let short = arg
                .char_indices()
                .nth(2)
                .map(|(i, _)| arg.split_at(i))
                .filter(|_| !arg.starts_with("--"));
            let (flag, inline) = match (arg.split_once('='), short) {
                (Some((f, v)), _) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
                (_, Some((f, v))) => (f.to_owned(), Some(v.to_owned())),
                _ => (arg.clone(), None),
            };
            let mut value = |name: &str| -> std::result::Result<String, String> {
                inline
                    .clone()
                    .or_else(|| args.next().cloned())
                    .ok_or_else(|| format!("sudo argument {name} needs a value"))
            };
            match flag.as_str() {
                "-u" | "--user" => user = value(&flag)?,
                "-H" | "--set-home" => home = true,
                "-E" | "--preserve-env" => match inline {
                    Some(list) => env_list = Some(list),
                    None => env = true,
                },
                "-i" | "--login" => login = true,
                "-r" | "--role" => role = Some(value(&flag)?),
                "-t" | "--type" => kind = Some(value(&flag)?),
                "-n" | "--non-interactive" => non_interactive = true,
                "-k" | "--reset-timestamp" | "-P" | "--preserve-groups" => pass.push(flag),
                "-g" | "--group" | "-D" | "--chdir" | "-C" | "--close-from" => {
                    let v = value(&flag)?;
                    if flag.starts_with("--") {
                        pass.push(format!("{flag}={v}"));
                    } else {
                        pass.extend([flag.clone(), v]);
                    }
                }
                other => {
                    return Err(format!(
                        "sudo argument {other:?} is not supported (allowed: -u -g -H -E -i -k -P \
                         -n -r -t -D -C and their long forms)"
                    ))
                }
            }
        }
        let mut out = Vec::new();
        if self.password.is_none() || non_interactive {
            // Nobody could answer a prompt: sudo must fail instead of asking.
            out.push("-n".into());
        }
        out.push("-u".into());
        out.push(user);
        if home {
            out.push("-H".into());
        }
        if env {
            out.push("-E".into());
        }
        if let Some(list) = env_list {
            out.push(format!("--preserve-env={list}"));
        }
        if login {
            out.push("-i".into());
        }
        if let Some(r) = role {
            out.push("-r".into());
            out.push(r);
        }
        if let Some(t) = kind {
            out.push("-t".into());
            out.push(t);
        }
        out.extend(pass);
        Ok(out)
    }

    pub(crate) fn connect(
        self,
        router: &Arc<RouterInner>,
        id: Option<ContextId>,
    ) -> Result<Context> {
        let name = self.name.clone().unwrap_or_else(|| self.default_name());
        let prompt = one_time_prompt()?;
        let args = self.arguments().map_err(|reason| Error::Connect {
            context: name.clone(),
            reason,
        })?;
        let build = |hash: &str, force: bool| {
            let mut cmd = Command::new(&self.sudo_path);
            cmd.env("SUDO_PROMPT", &prompt)
                .args(&args)
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
                // Always a terminal, even without a password: a policy with
                // `requiretty` refuses to run without one.
                prompt: PromptSpec {
                    password: self.password.clone(),
                    style: PROMPTS,
                    exact_prompt: Some(prompt.clone()),
                    ..Default::default()
                },
            },
            &build,
        )
    }
}

/// Short options that take a value.
const WITH_VALUE: &str = "ugrtDC";

/// Splits clusters of short flags (`-HE`) into single ones; `-ubob` stays.
fn expand_clusters(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for a in args {
        let first = a.strip_prefix('-').and_then(|r| r.chars().next());
        let is_cluster = a.chars().count() > 2
            && !a.starts_with("--")
            && first.is_some_and(|c| !WITH_VALUE.contains(c));
        if is_cluster {
            out.extend(a[1..].chars().map(|c| format!("-{c}")));
        } else {
            out.push(a.clone());
        }
    }
    out
}

/// What sudo prints when it refuses. Only the prompt given to sudo is
/// answered (alone, or in sudo-rs's brackets before PAM's on the same line);
/// any other that ends in `password:` (a PAM module's that sudo did not
/// replace, or text someone else put on the terminal) is refused unanswered.
const PROMPTS: PromptStyle = PromptStyle {
    prompts: &["password:"],
    failures: FAILURES,
};

/// Lower-case phrases of sudo and sudo-rs, and what they mean.
const FAILURES: &[(&str, TransportFailure)] = &[
    ("sorry, try again", TransportFailure::AuthenticationFailed),
    (
        "incorrect password attempt",
        TransportFailure::AuthenticationFailed,
    ),
    (
        "incorrect authentication attempt",
        TransportFailure::AuthenticationFailed,
    ),
    (
        "authentication failed",
        TransportFailure::AuthenticationFailed,
    ),
    ("a password is required", TransportFailure::PasswordRequired),
    ("a terminal is required", TransportFailure::PasswordRequired),
    (
        "is not in the sudoers file",
        TransportFailure::PolicyRefused,
    ),
    ("not allowed to", TransportFailure::PolicyRefused),
    ("may not run sudo", TransportFailure::PolicyRefused),
    ("you must have a tty", TransportFailure::PolicyRefused),
    ("unknown user", TransportFailure::NoSuchUser),
    ("user not found", TransportFailure::NoSuchUser),
];

/// Reads sudo's (or sudo-rs's) error messages.
pub fn classify(stderr: &str) -> TransportFailure {
    switch::classify_with(stderr, FAILURES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_differ_and_are_exact() {
        let (a, b) = (one_time_prompt().unwrap(), one_time_prompt().unwrap());
        assert_ne!(a, b);
        assert!(a.starts_with(PROMPT) && a.ends_with("] password:"), "{a}");
        assert!(!a.contains('%'));
    }

    #[test]
    fn arguments_of_any_text_never_panic() {
        for bad in [
            "-\u{e9}",
            "-\u{e9}x",
            "\u{e9}\u{e9}\u{e9}",
            "-H\u{e9}",
            "--\u{e9}=x",
            "-",
            "\u{1f600}",
        ] {
            let r = Sudo::new().sudo_args([bad]).arguments();
            assert!(r.is_err(), "{bad:?}: {r:?}");
        }
        // A value may be any text.
        let a = Sudo::new()
            .sudo_args(["-u\u{e9}t\u{e9}"])
            .arguments()
            .unwrap();
        assert!(a.contains(&"\u{e9}t\u{e9}".to_owned()), "{a:?}");
        let a = Sudo::new()
            .sudo_args(["-D", "/tmp/\u{e9}"])
            .arguments()
            .unwrap();
        assert!(a.contains(&"/tmp/\u{e9}".to_owned()), "{a:?}");
    }

    #[test]
    fn builder_options_become_sudo_arguments() {
        let s = Sudo::new()
            .user("app")
            .set_home(true)
            .preserve_env(true)
            .selinux_role("r")
            .selinux_type("t");
        let a = s.arguments().unwrap();
        assert_eq!(a, ["-n", "-u", "app", "-H", "-E", "-r", "r", "-t", "t"]);
        let a = Sudo::new().password("x").arguments().unwrap();
        assert_eq!(a, ["-u", "root"]);
    }

    #[test]
    fn extra_arguments_are_parsed_or_refused() {
        let a = Sudo::new()
            .password("x")
            .sudo_args(["-HE", "-ubob", "--role=r", "-g", "wheel", "-k"])
            .arguments()
            .unwrap();
        assert_eq!(a, ["-u", "bob", "-H", "-E", "-r", "r", "-g", "wheel", "-k"]);
        for bad in ["-S", "-b", "-A", "-s", "--askpass", "-p", "-h", "-HS"] {
            let e = Sudo::new().sudo_args([bad]).arguments().unwrap_err();
            assert!(e.contains("not supported"), "{bad}: {e}");
        }
        assert!(Sudo::new().sudo_args(["-u"]).arguments().is_err());
    }

    #[test]
    fn messages_are_classified() {
        assert_eq!(
            classify("sudo: unknown user nosuch\nsudo: error initializing audit plugin"),
            TransportFailure::NoSuchUser
        );
        assert_eq!(
            classify("bob is not in the sudoers file."),
            TransportFailure::PolicyRefused
        );
        assert_eq!(
            classify("sudo: a password is required"),
            TransportFailure::PasswordRequired
        );
        assert_eq!(
            classify("sudo: 3 incorrect password attempts"),
            TransportFailure::AuthenticationFailed
        );
    }
}

transport_options!(Sudo, Sudo, "sudo");
