//! The `ssh` method: a context on another host, through the system `ssh`.
//!
//! The system client is driven (not a library), so the user's
//! `~/.ssh/config`, agent, `ProxyJump`, `ControlMaster` and `known_hosts` work
//! unchanged. ssh runs the [first stage](crate::parent::first_stage), which
//! starts the cached program or takes an upload of it. With
//! [`Ssh::reuse`], connections to one host share a login
//! ([`super::ssh_reuse`]).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::core::context::Context;
use crate::core::error::{Result, TransportFailure};
use crate::core::message::ContextId;
use crate::core::router::RouterInner;
use crate::core::secret::Secret;
use crate::parent::first_stage::{self, Compression};
use crate::parent::prompt::PromptStyle;
use crate::parent::PromptSpec;

use super::ssh_reuse::{self, SshReuse};

/// What to do about the remote's host key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HostKeyPolicy {
    /// Whatever the user's ssh configuration says (ssh's default refuses
    /// unknown keys when it cannot ask).
    #[default]
    FromConfig,
    /// Refuse unknown and changed keys (`StrictHostKeyChecking=yes`).
    Enforce,
    /// Accept and remember unknown keys, refuse changed ones
    /// (`StrictHostKeyChecking=accept-new`).
    AcceptNew,
    /// Accept any key and remember none. Only for throw-away test hosts.
    Ignore,
}

/// Options of an ssh context (at least those of the Python original).
///
/// ```no_run
/// # fn demo(router: mitogen::Router) -> mitogen::Result<()> {
/// use mitogen::Ssh;
/// let web = router.ssh(Ssh::new("web1").user("deploy").port(2222))?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Ssh {
    host: String,
    user: Option<String>,
    port: Option<u16>,
    identity_file: Option<PathBuf>,
    ssh_path: PathBuf,
    ssh_args: Vec<String>,
    config_file: Option<PathBuf>,
    host_key: HostKeyPolicy,
    compression: bool,
    keepalive: Option<(u32, u32)>,
    connect_timeout: Duration,
    upload: Compression,
    name: Option<String>,
    password: Option<Secret>,
    reuse: Option<SshReuse>,
}

/// Default time allowed for ssh to connect and the program to start.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

impl Ssh {
    /// Default time allowed for ssh to connect and the program to start.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = DEFAULT_CONNECT_TIMEOUT;

    /// Connect to `host` (a name from `~/.ssh/config`, a host name or an
    /// address) with ssh's defaults for everything else.
    pub fn new(host: impl Into<String>) -> Ssh {
        Ssh {
            host: host.into(),
            user: None,
            port: None,
            identity_file: None,
            ssh_path: PathBuf::from("ssh"),
            ssh_args: Vec::new(),
            config_file: None,
            host_key: HostKeyPolicy::default(),
            compression: false,
            keepalive: Some((15, 3)),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            upload: Compression::Auto,
            name: None,
            password: None,
            reuse: None,
        }
    }

    /// Login user (default: ssh's choice).
    pub fn user(mut self, user: impl Into<String>) -> Ssh {
        self.user = Some(user.into());
        self
    }

    /// Port (default: ssh's choice).
    pub fn port(mut self, port: u16) -> Ssh {
        self.port = Some(port);
        self
    }

    /// Private key file (`-i`).
    pub fn identity_file(mut self, path: impl Into<PathBuf>) -> Ssh {
        self.identity_file = Some(path.into());
        self
    }

    /// The ssh program (default `ssh` from `PATH`).
    pub fn ssh_path(mut self, path: impl Into<PathBuf>) -> Ssh {
        self.ssh_path = path.into();
        self
    }

    /// Extra arguments placed before the host, e.g. `["-o", "Ciphers=aes128-ctr"]`.
    pub fn ssh_args<I, S>(mut self, args: I) -> Ssh
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.ssh_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Use this ssh configuration file (`-F`).
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Ssh {
        self.config_file = Some(path.into());
        self
    }

    /// Host key policy (default: the ssh configuration's).
    pub fn host_key_policy(mut self, policy: HostKeyPolicy) -> Ssh {
        self.host_key = policy;
        self
    }

    /// ssh's own stream compression (default off: it slows fast links).
    pub fn compression(mut self, on: bool) -> Ssh {
        self.compression = on;
        self
    }

    /// Keepalive probes every `interval` seconds, giving up after `count`
    /// unanswered ones (default 15 s × 3); `None` leaves ssh's setting.
    pub fn keepalive(mut self, keepalive: Option<(u32, u32)>) -> Ssh {
        self.keepalive = keepalive;
        self
    }

    /// Reuse connections to this host through ssh's `ControlMaster` (see
    /// [`SshReuse`] for when it stays off); default: no reuse.
    pub fn reuse(mut self, reuse: SshReuse) -> Ssh {
        self.reuse = Some(reuse);
        self
    }

    pub(crate) fn default_name(&self) -> String {
        let mut n = String::new();
        if let Some(u) = &self.user {
            n.push_str(u);
            n.push('@');
        }
        n.push_str(&self.host);
        if let Some(p) = self.port {
            n.push_str(&format!(":{p}"));
        }
        n
    }

    /// The ssh command running `remote_command`, with `extra` options after
    /// the caller's own (ssh keeps the first value it sees of an option, so
    /// the caller's win).
    pub(crate) fn command(&self, remote_command: &str, extra: &[String]) -> Command {
        let mut cmd = Command::new(&self.ssh_path);
        cmd.args(self.options());
        cmd.args(extra);
        cmd.arg("--").arg(&self.host).arg(remote_command);
        cmd
    }

    /// The options reuse adds to this connection, or none (with a debug log
    /// saying why).
    fn reuse_options(&self) -> Vec<String> {
        let Some(reuse) = &self.reuse else {
            return Vec::new();
        };
        let mut query = ssh_reuse::config_query(self.ssh_path.as_os_str(), &self.options());
        query.arg("--").arg(&self.host);
        match reuse.options(&self.ssh_args, query) {
            Ok(options) => options,
            Err(why) => {
                tracing::debug!(host = %self.host, "ssh connection reuse off: {why}");
                Vec::new()
            }
        }
    }

    /// Every argument before the host: ours, then the caller's.
    fn options(&self) -> Vec<OsString> {
        let mut cmd: Vec<OsString> = Vec::new();
        let o = |cmd: &mut Vec<OsString>, opt: String| {
            cmd.push("-o".into());
            cmd.push(opt.into());
        };
        if self.password.is_some() {
            // One try: a wrong password fails at once instead of re-prompting.
            o(&mut cmd, "NumberOfPasswordPrompts=1".into());
        } else {
            // Nobody could answer a prompt: ssh must fail instead of waiting.
            o(&mut cmd, "BatchMode=yes".into());
        }
        o(&mut cmd, "LogLevel=ERROR".into());
        o(
            &mut cmd,
            format!(
                "Compression={}",
                if self.compression { "yes" } else { "no" }
            ),
        );
        o(
            &mut cmd,
            format!("ConnectTimeout={}", self.connect_timeout.as_secs().max(1)),
        );
        if let Some((interval, count)) = self.keepalive {
            o(&mut cmd, format!("ServerAliveInterval={interval}"));
            o(&mut cmd, format!("ServerAliveCountMax={count}"));
        }
        match self.host_key {
            HostKeyPolicy::FromConfig => {}
            HostKeyPolicy::Enforce => o(&mut cmd, "StrictHostKeyChecking=yes".into()),
            HostKeyPolicy::AcceptNew => o(&mut cmd, "StrictHostKeyChecking=accept-new".into()),
            HostKeyPolicy::Ignore => {
                o(&mut cmd, "StrictHostKeyChecking=no".into());
                o(&mut cmd, "UserKnownHostsFile=/dev/null".into());
            }
        }
        if let Some(f) = &self.config_file {
            cmd.push("-F".into());
            cmd.push(f.into());
        }
        if let Some(i) = &self.identity_file {
            cmd.push("-i".into());
            cmd.push(i.into());
            o(&mut cmd, "IdentitiesOnly=yes".into());
        }
        if let Some(u) = &self.user {
            cmd.push("-l".into());
            cmd.push(u.into());
        }
        if let Some(p) = self.port {
            cmd.push("-p".into());
            cmd.push(p.to_string().into());
        }
        cmd.extend(self.ssh_args.iter().map(OsString::from));
        cmd
    }

    pub(crate) fn connect(
        self,
        router: &Arc<RouterInner>,
        id: Option<ContextId>,
    ) -> Result<Context> {
        let own = router.binaries.own()?;
        // Auto compresses whenever the remote has gzip, loopback included:
        // the build crosses sshd's channel buffer, whose cost grows with the
        // bytes, and on a slow link a build larger than the 2 MiB channel
        // window costs a round trip more (core/packed.rs).
        let upload = self.upload;
        if upload != Compression::Never {
            // Read the stored compressed build (or make it) while ssh is
            // still logging in (hundreds of ms): should the remote need an
            // upload, the bytes are ready by then.
            own.prepare_gzipped();
        }
        let hash = own.hash.clone();
        let name = self.name.clone().unwrap_or_else(|| self.default_name());
        let others = router.binaries.others();
        // Decided once (it may ask `ssh -G`), in the process that runs ssh:
        // the control directory is checked where the socket will be.
        let reuse = self.reuse_options();
        let build = |force: bool| {
            self.command(
                &first_stage::command_line_with(&hash, &others, force),
                &reuse,
            )
        };
        crate::parent::connect(
            router,
            &crate::parent::Launch {
                command: &build,
                name: &name,
                timeout: self.connect_timeout,
                stage: Some(upload),
                id,
                classify: &|stderr: &str| match classify(stderr) {
                    TransportFailure::AuthenticationFailed
                        if self.password.is_none() && stderr.contains("password") =>
                    {
                        TransportFailure::PasswordRequired
                    }
                    kind => kind,
                },
                prompt: self.password.as_ref().map(|p| PromptSpec {
                    password: Some(p.clone()),
                    style: PROMPTS,
                    ..Default::default()
                }),
                local_peer: false,
                direct: false,
            },
        )
    }
}

/// ssh's password and keyboard-interactive prompts.
///
/// With a password ssh is not in batch mode, so under a host key policy of
/// `ask` (ssh's default, kept by [`HostKeyPolicy::FromConfig`]) an unknown
/// host key makes it ask for confirmation on the terminal. Nobody can answer
/// that, and it would otherwise wait there until the connect timeout: the
/// question is refused at once as an unknown host key, which is what ssh
/// reports in batch mode.
const PROMPTS: PromptStyle = PromptStyle {
    prompts: &["password:"],
    failures: &[
        ("permission denied", TransportFailure::AuthenticationFailed),
        (
            "are you sure you want to continue connecting",
            TransportFailure::HostKeyUnknown,
        ),
        // A key with a passphrase and no agent holding it: the password given
        // is for the login, not the key, so say so instead of waiting.
        ("enter passphrase for", TransportFailure::PasswordRequired),
    ],
};

/// Reads ssh's error messages.
pub fn classify(stderr: &str) -> TransportFailure {
    let s = stderr;
    if s.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || s.contains("Host key for") && s.contains("has changed")
    {
        TransportFailure::HostKeyMismatch
    } else if s.contains("Host key verification failed") || s.contains("host key is known") {
        TransportFailure::HostKeyUnknown
    } else if s.contains("Could not resolve hostname") || s.contains("Name or service not known") {
        TransportFailure::UnknownHost
    } else if s.contains("Connection refused") {
        TransportFailure::ConnectionRefused
    } else if s.contains("No route to host")
        || s.contains("Network is unreachable")
        || s.contains("timed out")
    {
        TransportFailure::Unreachable
    } else if s.contains("Permission denied") || s.contains("Too many authentication failures") {
        TransportFailure::AuthenticationFailed
    } else if s.contains("account is currently not available")
        || s.contains("sh: not found")
        || s.contains("sh: command not found")
        || s.contains("exec: sh")
        || s.contains("sh: No such file")
    {
        TransportFailure::NoShell
    } else {
        TransportFailure::Other
    }
}

transport_options!(Ssh, Ssh, "ssh");
