//! The `exec` method: a context started through any command that runs a
//! program with its stdin and stdout connected to the caller in another
//! environment (`docker exec -i C`, `kubectl exec -i POD --`, `vagrant ssh
//! --`, `systemd-run -M M --pipe`). The container methods are presets over it.
//!
//! The command is run as an argv list, with no shell in between, and the
//! [first stage](crate::parent::first_stage) is appended as three more
//! arguments (`sh`, `-c`, the script): the command must run them as they are.
//! Tools that join their arguments into one line for a shell on the far side
//! (ssh-like ones: `vagrant ssh --`, `gcloud compute ssh --command`) take the
//! stage as one word instead ([`Exec::remote_shell`]).
//!
//! The tool never gets a terminal: it runs in a session of its own with no
//! controlling terminal, its stdin a socket, so a tool that would ask for
//! credentials (kubectl with an exec plugin, a cloud CLI) cannot prompt and
//! fails; and the connect deadline bounds it in any case.

use std::sync::Arc;
use std::time::Duration;

use crate::core::context::Context;
use crate::core::error::{Error, Result, TransportFailure};
use crate::core::message::ContextId;
use crate::core::router::RouterInner;
use crate::parent::first_stage::{self, Compression};

/// Default time allowed for the command to start the program.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of an exec context: the command, as an argv list.
///
/// ```no_run
/// # fn demo(router: mitogen::Router) -> mitogen::Result<()> {
/// use mitogen::Exec;
/// // The same hop as the target string `exec:docker,exec,-i,c1`.
/// let c1 = router.start(None, Exec::new(["docker", "exec", "-i", "c1"]))?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Exec {
    argv: Vec<String>,
    remote_shell: bool,
    connect_timeout: Duration,
    upload: Compression,
    name: Option<String>,
    pub(crate) local_peer: bool,
    pub(crate) direct: bool,
}

impl Exec {
    /// Runs `argv` (program first; found on `PATH` when it holds no `/`),
    /// followed by `sh -c STAGE` as three arguments.
    pub fn new<I, S>(argv: I) -> Exec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Exec {
            argv: argv.into_iter().map(Into::into).collect(),
            remote_shell: false,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            upload: Compression::Auto,
            name: None,
            local_peer: false,
            direct: false,
        }
    }

    /// The command hands its arguments to a shell on the far side as one line
    /// (as ssh does), so the stage is appended as one word, `sh -c '…'`,
    /// quoted for any login shell (default off).
    pub fn remote_shell(mut self, on: bool) -> Exec {
        self.remote_shell = on;
        self
    }

    /// Time allowed for the command to start and the program to greet
    /// (default 30 s). A tool still waiting for anything (credentials, a
    /// slow pull) when it runs out is killed and the connection fails.
    pub fn connect_timeout(mut self, t: Duration) -> Exec {
        self.connect_timeout = t;
        self
    }

    /// Whether the program's upload may be gzip-compressed (default
    /// [`Compression::Auto`]: when the far side has `gzip`).
    pub fn upload_compression(mut self, c: Compression) -> Exec {
        self.upload = c;
        self
    }

    /// Names the context (default: the hop as a target string,
    /// `exec:docker,exec,-i,c1`).
    pub fn name(mut self, name: impl Into<String>) -> Exec {
        self.name = Some(name.into());
        self
    }

    /// The command, without the stage.
    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    pub(crate) fn name_ref(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.connect_timeout
    }

    pub(crate) fn default_name(&self) -> String {
        format!("exec:{}", encode_argv(&self.argv))
    }

    /// The full argv run for the program with `hash` (and `others`).
    pub(crate) fn command_argv(
        &self,
        hash: &str,
        others: &[(String, String)],
        force: bool,
    ) -> Vec<String> {
        let mut v = self.argv.clone();
        if self.remote_shell {
            v.push(first_stage::command_line_with(hash, others, force));
        } else {
            v.extend([
                "sh".to_owned(),
                "-c".to_owned(),
                first_stage::script_with(hash, others, force),
            ]);
        }
        v
    }

    pub(crate) fn connect(
        self,
        router: &Arc<RouterInner>,
        id: Option<ContextId>,
    ) -> Result<Context> {
        let name = self.name.clone().unwrap_or_else(|| self.default_name());
        if self.argv.first().is_none_or(|p| p.is_empty()) {
            return Err(Error::Connect {
                context: name,
                reason: "the exec hop has no command".into(),
            });
        }
        let own = router.binaries.own()?;
        if self.upload != Compression::Never {
            // Compress while the tool starts: should the far side need an
            // upload, the bytes are ready by then.
            own.prepare_gzipped();
        }
        let hash = own.hash.clone();
        let others = router.binaries.others();
        let build = |force: bool| {
            let argv = self.command_argv(&hash, &others, force);
            let mut cmd = std::process::Command::new(&argv[0]);
            cmd.args(&argv[1..]);
            super::switch::scrub_env(&mut cmd);
            detach(&mut cmd);
            cmd
        };
        crate::parent::connect(
            router,
            &crate::parent::Launch {
                command: &build,
                name: &name,
                timeout: self.connect_timeout,
                stage: Some(self.upload),
                id,
                classify: &classify,
                prompt: None,
                local_peer: self.local_peer,
                direct: self.direct,
            },
        )
        .map_err(|e| match e {
            // Say it the way it is: the environment has no shell at all.
            Error::Transport {
                context,
                kind: TransportFailure::NoShell,
                detail,
                stderr,
            } => Error::Transport {
                detail: format!("{context} has no sh on its PATH ({detail})"),
                context,
                kind: TransportFailure::NoShell,
                stderr,
            },
            e => e,
        })
    }
}

impl From<Exec> for crate::methods::Method {
    fn from(m: Exec) -> crate::methods::Method {
        crate::methods::Method::Exec(m)
    }
}

/// Starts `cmd` in a session of its own, with no controlling terminal: a
/// tool that would prompt on `/dev/tty` fails instead of waiting there.
fn detach(cmd: &mut std::process::Command) {
    // SAFETY: runs between fork and exec and makes one async-signal-safe
    // system call.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, || {
            rustix::process::setsid()?;
            Ok(())
        });
    }
}

/// Bytes written as they are in an `exec:` hop; anything else is `%XX`.
fn plain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.=+@:~".contains(&b)
}

/// An argv as the argument of an `exec:` hop: arguments joined by `,`, every
/// byte outside `[A-Za-z0-9-_.=+@:~]` written `%XX` (so `/` is `%2F`, `,` is
/// `%2C`, a space `%20`).
pub fn encode_argv(argv: &[String]) -> String {
    let mut out = String::new();
    for (i, a) in argv.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for b in a.bytes() {
            if plain_byte(b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// The argv an `exec:` hop's argument names, or why it names none.
pub fn decode_argv(text: &str) -> std::result::Result<Vec<String>, String> {
    if text.is_empty() {
        return Err("an exec hop needs a command (exec:PROGRAM,ARG,…)".into());
    }
    let mut argv = Vec::new();
    for word in text.split(',') {
        let mut bytes = Vec::with_capacity(word.len());
        let mut it = word.bytes();
        while let Some(b) = it.next() {
            if b == b'%' {
                let hex: Vec<u8> = it.by_ref().take(2).collect();
                let v = std::str::from_utf8(&hex)
                    .ok()
                    .filter(|h| h.len() == 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("{word:?}: '%' must be followed by two hex digits"))?;
                bytes.push(v);
            } else {
                bytes.push(b);
            }
        }
        let arg = String::from_utf8(bytes).map_err(|_| format!("{word:?} is not UTF-8"))?;
        argv.push(arg);
    }
    if argv[0].is_empty() {
        return Err("an exec hop's program is empty".into());
    }
    Ok(argv)
}

/// Lower-case phrases of container tools (docker, podman, kubectl, lxc,
/// incus, buildah, systemd-run), and what they mean.
const FAILURES: &[(&str, TransportFailure)] = &[
    ("no such container", TransportFailure::NoSuchContainer),
    (
        "no container with name or id",
        TransportFailure::NoSuchContainer,
    ),
    ("instance not found", TransportFailure::NoSuchContainer),
    ("not found in namespace", TransportFailure::NoSuchContainer),
    ("\" not found", TransportFailure::NoSuchContainer),
    ("failed to get init pid", TransportFailure::NoSuchContainer),
    ("no such machine", TransportFailure::NoSuchContainer),
    ("is not running", TransportFailure::ContainerNotRunning),
    (
        "container state improper",
        TransportFailure::ContainerNotRunning,
    ),
    ("is paused", TransportFailure::ContainerNotRunning),
    (
        "can only create exec sessions on running containers",
        TransportFailure::ContainerNotRunning,
    ),
    (
        "cannot exec into a container in a completed pod",
        TransportFailure::ContainerNotRunning,
    ),
    ("unable to find image", TransportFailure::NoSuchImage),
    ("no such image", TransportFailure::NoSuchImage),
    ("pull access denied", TransportFailure::NoSuchImage),
    ("repository does not exist", TransportFailure::NoSuchImage),
    ("manifest unknown", TransportFailure::NoSuchImage),
    ("image not known", TransportFailure::NoSuchImage),
    (
        "permission denied while trying to connect to the docker daemon",
        TransportFailure::EngineUnavailable,
    ),
    (
        "cannot connect to the docker daemon",
        TransportFailure::EngineUnavailable,
    ),
    (
        "cannot connect to podman",
        TransportFailure::EngineUnavailable,
    ),
    (
        "the connection to the server",
        TransportFailure::EngineUnavailable,
    ),
    (
        "you must be logged in to the server",
        TransportFailure::AuthenticationFailed,
    ),
    ("unauthorized", TransportFailure::AuthenticationFailed),
    ("please enter username", TransportFailure::PasswordRequired),
    (
        "\"sh\": executable file not found",
        TransportFailure::NoShell,
    ),
    ("exec: \"sh\"", TransportFailure::NoShell),
    ("sh: no such file or directory", TransportFailure::NoShell),
    ("failed to exec \"sh\"", TransportFailure::NoShell),
];

/// Reads a container tool's error messages.
pub fn classify(stderr: &str) -> TransportFailure {
    super::switch::classify_with(stderr, FAILURES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_round_trips_through_the_hop_text() {
        for argv in [
            vec!["docker", "exec", "-i", "c1"],
            vec!["/usr/bin/kubectl", "exec", "-i", "pod,1", "--", "a b%"],
            vec!["env", "X=1", "user@host:2"],
            vec!["vagrant", "ssh", "--", "\u{e9}"],
        ] {
            let argv: Vec<String> = argv.into_iter().map(Into::into).collect();
            let text = encode_argv(&argv);
            assert!(!text.contains('/') && !text.contains(' '), "{text}");
            assert_eq!(decode_argv(&text).unwrap(), argv, "{text}");
        }
        assert_eq!(
            encode_argv(&["docker".into(), "exec".into(), "-i".into(), "c1".into()]),
            "docker,exec,-i,c1"
        );
        for bad in ["", ",x", "a%2", "a%zz", "%ff%fe"] {
            assert!(decode_argv(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stage_follows_the_command() {
        let e = Exec::new(["docker", "exec", "-i", "c1"]);
        let v = e.command_argv("00ff", &[], false);
        assert_eq!(&v[..6], ["docker", "exec", "-i", "c1", "sh", "-c"]);
        assert!(v[6].contains("H=00ff"));
        let v = e.remote_shell(true).command_argv("00ff", &[], false);
        assert_eq!(v.len(), 5);
        assert!(v[4].starts_with("sh -c '"));
    }

    #[test]
    fn container_tools_messages_are_classified() {
        for (text, kind) in [
            (
                "Error: No such container: nosuch",
                TransportFailure::NoSuchContainer,
            ),
            (
                "Error response from daemon: Container 775c3bf is not running",
                TransportFailure::ContainerNotRunning,
            ),
            (
                "Got permission denied while trying to connect to the Docker daemon socket at \
                 unix:///var/run/docker.sock",
                TransportFailure::EngineUnavailable,
            ),
            (
                "Unable to find image 'nosuch:1' locally\ndocker: Error response from daemon: \
                 pull access denied for nosuch",
                TransportFailure::NoSuchImage,
            ),
            (
                "OCI runtime exec failed: exec failed: unable to start container process: exec: \
                 \"sh\": executable file not found in $PATH: unknown",
                TransportFailure::NoShell,
            ),
            (
                "Error from server (NotFound): pods \"web-0\" not found",
                TransportFailure::NoSuchContainer,
            ),
            (
                "error: You must be logged in to the server (Unauthorized)",
                TransportFailure::AuthenticationFailed,
            ),
            (
                "Error: Instance not found",
                TransportFailure::NoSuchContainer,
            ),
        ] {
            assert_eq!(classify(text), kind, "{text}");
        }
    }
}
