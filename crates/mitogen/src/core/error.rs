//! Errors: what went wrong, and in which context.

use serde::{Deserialize, Serialize};
use std::fmt;

use super::message::FrameError;

/// Everything that can go wrong talking to a context.
///
/// Each variant that concerns a context names it, so that an error from deep in a
/// chain of hops says which hop failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The remote function ran and failed, panicked, or could not be found.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The connection to a context (or a hop on the way to it) is gone.
    #[error("context {context:?} disconnected: {reason}")]
    Disconnected {
        /// Name of the context that went away.
        context: String,
        /// What was observed.
        reason: String,
    },
    /// A blocking wait reached its deadline.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The other end closed a channel; no more values will arrive.
    #[error("channel closed: {0}")]
    ChannelClosed(String),
    /// A value could not be encoded or decoded.
    #[error("could not {op} {what}: {detail}")]
    Codec {
        /// "encode" or "decode".
        op: &'static str,
        /// What was being converted.
        what: String,
        /// The codec's message.
        detail: String,
    },
    /// A message is larger than the configured maximum.
    #[error(
        "message of {len} bytes exceeds the limit of {max} bytes; stream large data in chunks"
    )]
    TooLarge {
        /// Body length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// A stream carried something that is not our protocol.
    #[error("protocol error on {stream}: {source}")]
    Protocol {
        /// Name of the stream.
        stream: String,
        /// What was wrong with the frame.
        source: FrameError,
    },
    /// Starting or bootstrapping a context failed.
    #[error("connecting {context:?} failed: {reason}")]
    Connect {
        /// Name of the context being started.
        context: String,
        /// Why, including the tail of anything the transport printed.
        reason: String,
    },
    /// A transport (ssh, sudo, …) failed to reach the far side; `kind` says how,
    /// `stderr` is the tail of what the transport printed.
    #[error(
        "connecting {context:?} failed: {kind}: {detail}; {}",
        stderr_line(stderr)
    )]
    Transport {
        /// Name of the context being started (the hop that failed).
        context: String,
        /// What kind of failure the transport's messages show.
        kind: TransportFailure,
        /// What was observed on our side.
        detail: String,
        /// The tail of the transport's stderr.
        stderr: String,
    },
    /// A target string could not be parsed.
    #[error("bad target {target:?}: {reason}")]
    BadTarget {
        /// The text given.
        target: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The router has been shut down.
    #[error("the router is shut down")]
    RouterShutdown,
    /// An operating-system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being attempted.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A context did not exit within the grace period of its shutdown: a
    /// local process was killed (`killed`), a remote one is left to its
    /// parent hop, which ends it when it goes itself.
    #[error(
        "context {context:?} did not exit within {grace:?} of being asked to{}",
        if *killed { " and was killed" } else { "" }
    )]
    ShutdownTimedOut {
        /// Name of the context.
        context: String,
        /// The grace period it was given.
        grace: std::time::Duration,
        /// True when its process was killed.
        killed: bool,
    },
    /// This program cannot start contexts: its `main` does not go through
    /// `#[mitogen::main]` or `mitogen::run`, so a copy of it started as a
    /// child would run the program's `main` again instead of serving calls.
    #[error(
        "cannot start {context:?}: the program's main must go through #[mitogen::main] or \
         mitogen::run, so that a copy of it started as a child becomes a context"
    )]
    NoEntryPoint {
        /// Name of the context that was to be started.
        context: String,
    },
    /// Pushing or fetching a file failed (see [`crate::files`]): the kind,
    /// the context and the path.
    #[error(transparent)]
    File(#[from] super::file_error::FileError),
}

fn stderr_line(s: &str) -> String {
    if s.is_empty() {
        "it printed nothing".to_owned()
    } else {
        format!("it said: {}", s.trim().replace('\n', " | "))
    }
}

/// Why a transport could not connect, as far as its messages tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TransportFailure {
    /// The host name does not resolve.
    UnknownHost,
    /// Nothing listens on the port.
    ConnectionRefused,
    /// The network or host is unreachable, or the connection timed out.
    Unreachable,
    /// Authentication failed (wrong key or password).
    AuthenticationFailed,
    /// A password is needed and none was given.
    PasswordRequired,
    /// The host key differs from the known one.
    HostKeyMismatch,
    /// The host key is not known and the policy refuses unknown keys.
    HostKeyUnknown,
    /// The remote has no usable POSIX shell.
    NoShell,
    /// The switch-user tool's policy refuses this user the switch (not in the
    /// sudoers file, no `permit` rule in `doas.conf`, or a policy that demands
    /// a terminal); a password would not help.
    PolicyRefused,
    /// The user to switch to does not exist.
    NoSuchUser,
    /// The transport's program (ssh, sudo, su, doas) is not installed or not
    /// at the path given.
    NotInstalled,
    /// The container (pod, instance, machine) named by a container hop does
    /// not exist.
    NoSuchContainer,
    /// The container exists but is not running.
    ContainerNotRunning,
    /// The image a container hop was to start does not exist and cannot be
    /// pulled.
    NoSuchImage,
    /// The container engine's client cannot reach its daemon or server (not
    /// running, or a socket this user may not open).
    EngineUnavailable,
    /// Something else; see the transport's messages.
    Other,
}

impl fmt::Display for TransportFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportFailure::UnknownHost => "unknown host",
            TransportFailure::ConnectionRefused => "connection refused",
            TransportFailure::Unreachable => "host unreachable",
            TransportFailure::AuthenticationFailed => "authentication failed",
            TransportFailure::PasswordRequired => "a password is required",
            TransportFailure::HostKeyMismatch => "host key mismatch",
            TransportFailure::HostKeyUnknown => "host key unknown",
            TransportFailure::NoShell => "no POSIX shell on the remote",
            TransportFailure::PolicyRefused => "refused by policy",
            TransportFailure::NoSuchUser => "no such user",
            TransportFailure::NotInstalled => "not installed",
            TransportFailure::NoSuchContainer => "no such container",
            TransportFailure::ContainerNotRunning => "container not running",
            TransportFailure::NoSuchImage => "no such image",
            TransportFailure::EngineUnavailable => "container engine unavailable",
            TransportFailure::Other => "transport failed",
        })
    }
}

impl Error {
    /// Wraps an OS error with a note of what was being attempted.
    pub fn io(what: impl Into<String>, source: impl Into<std::io::Error>) -> Error {
        Error::Io {
            what: what.into(),
            source: source.into(),
        }
    }

    pub(crate) fn decode(what: impl Into<String>, e: impl fmt::Display) -> Error {
        Error::Codec {
            op: "decode",
            what: what.into(),
            detail: e.to_string(),
        }
    }

    pub(crate) fn encode(what: impl Into<String>, e: impl fmt::Display) -> Error {
        Error::Codec {
            op: "encode",
            what: what.into(),
            detail: e.to_string(),
        }
    }
}

/// How a remote call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallErrorKind {
    /// The function returned an error.
    Returned,
    /// The function panicked.
    Panicked,
    /// The context has no `#[mitogen::remote]` function of that name.
    UnknownFunction,
    /// The arguments or result did not decode (caller and callee disagree on types).
    BadArguments,
    /// An earlier call of the same [`CallChain`](crate::CallChain) failed, so this one
    /// was not run.
    ChainFailed,
    /// A service refused the caller: the rule of the method called, or the
    /// service's start rule, does not admit it (the message names the
    /// service, the method and the rule).
    Refused,
    /// The program has no `#[mitogen::service]` of that name.
    UnknownService,
    /// The service exposes no method of that name.
    UnknownMethod,
}

/// A remote function failed: which context, which function, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct CallError {
    /// Name of the context the function ran in.
    pub context: String,
    /// Full name of the function (`crate::module::function`).
    pub function: String,
    /// How it failed.
    pub kind: CallErrorKind,
    /// The error's message, or the panic message.
    pub message: String,
    /// The error's `source()` chain, outermost first (not including `message`).
    pub chain: Vec<String>,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            CallErrorKind::Returned => "failed",
            CallErrorKind::Panicked => "panicked",
            CallErrorKind::UnknownFunction => "is not a remote function there",
            CallErrorKind::BadArguments => "could not decode its arguments",
            CallErrorKind::ChainFailed => "was skipped because its call chain failed",
            CallErrorKind::Refused => "refused the caller",
            CallErrorKind::UnknownService => "is not a service there",
            CallErrorKind::UnknownMethod => "is not an exposed method there",
        };
        write!(
            f,
            "{} in context {:?} {}: {}",
            self.function, self.context, what, self.message
        )?;
        for cause in &self.chain {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
