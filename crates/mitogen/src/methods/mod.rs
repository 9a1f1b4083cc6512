//! Connection methods: how a child context is started.
//!
//! `local` starts the program itself; `ssh` runs the first stage through the
//! system ssh client; `sudo`, `su` and `doas` run the same first stage as
//! another user. `exec` runs it through any command that runs a program in
//! another environment, and the container methods (docker, podman, kubectl,
//! lxc, lxd, incus, buildah, machinectl) are presets over `exec`.
//! another user. `setns` and `chroot` start the program themselves, as root,
//! inside a container's namespaces or a directory tree ([`enter`]).
//!
//! Every method's options are a plain serializable value, so a context can be
//! asked to start a child of its own with them ([`Method`], used by
//! [`Router::start`](crate::Router::start)).

/// The options every method that runs the first stage through a transport
/// shares (password, time-out, upload compression, name), written once.
/// `$tool` names the transport in the docs; `$variant` is its [`Method`].
/// Invoked in each method's module, where the fields are visible.
macro_rules! transport_options {
    ($ty:ident, $variant:ident, $tool:literal) => {
        impl $ty {
            #[doc = concat!("Password for ", $tool, "'s prompt. It is typed into the prompt on a")]
            /// private pty, never passed in arguments or the environment, and
            /// wiped from memory when the last copy is dropped. Without one the
            /// transport is told never to prompt, and fails at once with
            /// [`TransportFailure::PasswordRequired`](crate::TransportFailure)
            /// (or `AuthenticationFailed`) when it would need one.
            pub fn password(mut self, password: impl Into<crate::Secret>) -> $ty {
                self.password = Some(password.into());
                self
            }

            #[doc = concat!("Time allowed for ", $tool, " to authenticate and the program to start")]
            /// (default 30 s).
            pub fn connect_timeout(mut self, t: std::time::Duration) -> $ty {
                self.connect_timeout = t;
                self
            }

            /// Whether the program's upload into the target user's cache may be
            /// gzip-compressed; see
            /// [`Compression`](crate::parent::first_stage::Compression).
            pub fn upload_compression(
                mut self,
                c: crate::parent::first_stage::Compression,
            ) -> $ty {
                self.upload = c;
                self
            }

            /// Names the context (default: the hop as a target string, such as
            /// `deploy@web1` or `sudo:app`).
            pub fn name(mut self, name: impl Into<String>) -> $ty {
                self.name = Some(name.into());
                self
            }

            pub(crate) fn name_ref(&self) -> Option<&str> {
                self.name.as_deref()
            }

            pub(crate) fn timeout(&self) -> std::time::Duration {
                self.connect_timeout
            }
        }

        impl From<$ty> for crate::methods::Method {
            fn from(m: $ty) -> crate::methods::Method {
                crate::methods::Method::$variant(m)
            }
        }
    };
}

pub(crate) mod chroot;
pub(crate) mod container_hop;
pub(crate) mod doas;
pub(crate) mod docker;
mod enter;
pub(crate) mod exec;
pub(crate) mod local;
pub(crate) mod presets;
pub(crate) mod setns;
pub(crate) mod ssh;
pub(crate) mod ssh_reuse;
pub(crate) mod su;
pub(crate) mod sudo;
mod switch;

pub use chroot::{Chroot, TreeDev, TreeProc};
pub use container_hop::ContainerHop;
pub use doas::Doas;
pub use docker::{Docker, Engine};
pub use exec::Exec;
pub use local::Local;
pub use presets::{Buildah, Kubectl, Lxc, Lxd, LxdClient, Machinectl};
pub use setns::{Leader, Setns};
pub use ssh::{HostKeyPolicy, Ssh};
pub use ssh_reuse::SshReuse;
pub use su::Su;
pub use sudo::Sudo;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::core::context::Context;
use crate::core::error::Result;
use crate::core::message::ContextId;
use crate::core::router::RouterInner;

/// Any connection method with its options.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Method {
    /// A new process of the program on the same machine.
    Local(local::Local),
    /// A process on another host, over ssh.
    Ssh(ssh::Ssh),
    /// Another user on the same machine, with sudo.
    Sudo(sudo::Sudo),
    /// Another user on the same machine, with su.
    Su(su::Su),
    /// Another user on the same machine, with doas.
    Doas(doas::Doas),
    /// Any command that runs a program in another environment (the
    /// kubectl, lxc, lxd, incus, buildah and machinectl presets too).
    Exec(exec::Exec),
    /// A docker or podman container.
    Docker(docker::Docker),
    /// Inside a running container's namespaces (as root).
    Setns(setns::Setns),
    /// Inside a directory tree (as root).
    Chroot(chroot::Chroot),
}

impl From<local::Local> for Method {
    fn from(l: local::Local) -> Method {
        Method::Local(l)
    }
}

impl Method {
    /// Names the context to be started.
    pub fn named(self, name: impl Into<String>) -> Method {
        match self {
            Method::Local(l) => Method::Local(l.name(name)),
            Method::Ssh(s) => Method::Ssh(s.name(name)),
            Method::Sudo(s) => Method::Sudo(s.name(name)),
            Method::Su(s) => Method::Su(s.name(name)),
            Method::Doas(d) => Method::Doas(d.name(name)),
            Method::Exec(e) => Method::Exec(e.name(name)),
            Method::Docker(d) => Method::Docker(d.name(name)),
            Method::Setns(s) => Method::Setns(s.name(name)),
            Method::Chroot(c) => Method::Chroot(c.name(name)),
        }
    }

    /// The name given with [`named`](Self::named) or the method's own builder.
    pub fn name(&self) -> Option<&str> {
        match self {
            Method::Local(l) => l.name_ref(),
            Method::Ssh(s) => s.name_ref(),
            Method::Sudo(s) => s.name_ref(),
            Method::Su(s) => s.name_ref(),
            Method::Doas(d) => d.name_ref(),
            Method::Exec(e) => e.name_ref(),
            Method::Docker(d) => d.name_ref(),
            Method::Setns(s) => s.name_ref(),
            Method::Chroot(c) => c.name_ref(),
        }
    }

    /// A name for the hop when none was given (`local`, the host name, …).
    pub fn default_name(&self) -> String {
        match self {
            Method::Local(_) => "local".to_owned(),
            Method::Ssh(s) => s.default_name(),
            Method::Sudo(s) => s.default_name(),
            Method::Su(s) => s.default_name(),
            Method::Doas(d) => d.default_name(),
            Method::Exec(e) => e.default_name(),
            Method::Docker(d) => d.default_name(),
            Method::Setns(s) => s.default_name(),
            Method::Chroot(c) => c.default_name(),
        }
    }

    /// Time allowed for the context to start.
    pub fn connect_timeout(&self) -> std::time::Duration {
        match self {
            Method::Local(l) => l.timeout(),
            Method::Ssh(s) => s.timeout(),
            Method::Sudo(s) => s.timeout(),
            Method::Su(s) => s.timeout(),
            Method::Doas(d) => d.timeout(),
            Method::Exec(e) => e.timeout(),
            Method::Docker(d) => d.timeout(),
            Method::Setns(s) => s.timeout(),
            Method::Chroot(c) => c.timeout(),
        }
    }

    /// Starts the context from this process, with the id the master chose
    /// (`None`: this router picks one).
    pub(crate) fn connect(
        self,
        router: &Arc<RouterInner>,
        id: Option<ContextId>,
    ) -> Result<Context> {
        match self {
            Method::Local(l) => l.connect(router, id),
            Method::Ssh(s) => s.connect(router, id),
            Method::Sudo(s) => s.connect(router, id),
            Method::Su(s) => s.connect(router, id),
            Method::Doas(d) => d.connect(router, id),
            Method::Exec(e) => e.connect(router, id),
            Method::Docker(d) => d.connect(router, id),
            Method::Setns(s) => s.connect(router, id),
            Method::Chroot(c) => c.connect(router, id),
        }
    }
}
