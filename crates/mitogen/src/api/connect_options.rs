//! [`ConnectOptions`] and how a [`Target`]'s hops become the [`Method`]s that
//! start them, each with its own options and password; [`IntoTarget`], what
//! [`Router::connect`](super::Router::connect) accepts.

use std::time::Duration;

use crate::core::error::{Error, Result};
use crate::methods::local::Local;
use crate::methods::ssh::Ssh;
use crate::methods::ssh_reuse::SshReuse;
use crate::methods::Method;
use crate::target::{Hop, Target};

/// Options for [`Router::connect_with`](super::Router::connect_with) that apply to the hops of a target.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// ssh configuration file (`ssh -F`).
    pub ssh_config: Option<std::path::PathBuf>,
    /// ssh options (`ssh -o OPTION`), e.g. `StrictHostKeyChecking=accept-new`.
    pub ssh_options: Vec<String>,
    /// Time allowed for each hop to start.
    pub connect_timeout: Option<Duration>,
    /// Password for the target's one `sudo`, `su` or `doas` hop (one without
    /// an entry in [`hop_passwords`](Self::hop_passwords)). It travels only to
    /// the context that runs that hop's tool. A target with more than one such
    /// hop is refused with [`Error::BadTarget`]: a password meant for one hop
    /// is never typed into another hop's prompt.
    pub password: Option<crate::core::secret::Secret>,
    /// Passwords of particular hops, each keyed by the hop's path: the
    /// target up to and including that hop, as [`Target`] writes it (e.g.
    /// `web1/sudo:app`, which is also that context's name). A password is
    /// typed only into its own hop's prompt (an ssh hop's login, a sudo or
    /// doas hop's caller, an su hop's target user). Keys naming no hop of a
    /// target are ignored, so one set of options can serve several targets.
    pub hop_passwords: std::collections::BTreeMap<String, crate::core::secret::Secret>,
    /// Connection reuse ([`SshReuse`]) for the target's first hop when it is
    /// an ssh hop: the one this process starts itself. Hops further down are
    /// started by another context, on another host, and never get it: a
    /// socket left there would be a login for that host's user, beyond this
    /// process's sight. Default: none.
    pub ssh_reuse: Option<SshReuse>,
}

impl ConnectOptions {
    /// Adds the password of the hop whose path is `hop` (see
    /// [`hop_passwords`](Self::hop_passwords)).
    pub fn hop_password(
        mut self,
        hop: impl Into<String>,
        password: impl Into<crate::core::secret::Secret>,
    ) -> ConnectOptions {
        self.hop_passwords.insert(hop.into(), password.into());
        self
    }

    /// The password for each hop of `target`, or why they cannot be given.
    fn passwords_for(&self, target: &Target) -> std::result::Result<Passwords, String> {
        let mut out = Vec::new();
        let mut shared = Vec::new();
        for (i, hop) in target.hops().iter().enumerate() {
            let path = target.prefix(i + 1);
            let switch = matches!(hop, Hop::Sudo { .. } | Hop::Su { .. } | Hop::Doas { .. });
            match self.hop_passwords.get(&path) {
                Some(_) if matches!(hop, Hop::Local) => {
                    return Err(format!("hop {path:?} is local and takes no password"))
                }
                Some(_) if matches!(hop, Hop::Setns { .. } | Hop::Chroot { .. }) => {
                    return Err(format!("hop {path:?} takes no password"))
                }
                Some(p) => out.push(Some(p.clone())),
                None if switch && self.password.is_some() => {
                    shared.push(path.clone());
                    out.push(self.password.clone());
                }
                None => out.push(None),
            }
        }
        if shared.len() > 1 {
            return Err(format!(
                "one password would go to {} hops ({}); give each its own \
                 (ConnectOptions::hop_passwords, or `--password-file HOP=FILE`)",
                shared.len(),
                shared.join(", ")
            ));
        }
        Ok(out)
    }
}

/// The method that starts `hop`, with the options that apply to it and its
/// own password.
fn hop_method(
    hop: &Hop,
    first: bool,
    options: &ConnectOptions,
    password: Option<crate::core::secret::Secret>,
) -> std::result::Result<Method, String> {
    Ok(match hop {
        Hop::Local => {
            let mut local = Local::new();
            if let Some(t) = options.connect_timeout {
                local = local.connect_timeout(t);
            }
            Method::Local(local)
        }
        Hop::Ssh { user, host, port } => {
            let mut ssh = Ssh::new(host.clone());
            if let Some(u) = user {
                ssh = ssh.user(u.clone());
            }
            if let Some(p) = port {
                ssh = ssh.port(*p);
            }
            if let Some(f) = &options.ssh_config {
                ssh = ssh.config_file(f.clone());
            }
            for o in &options.ssh_options {
                ssh = ssh.ssh_args(["-o".to_owned(), o.clone()]);
            }
            if let Some(t) = options.connect_timeout {
                ssh = ssh.connect_timeout(t);
            }
            if let Some(p) = password {
                ssh = ssh.password(p);
            }
            if let (true, Some(reuse)) = (first, &options.ssh_reuse) {
                ssh = ssh.reuse(reuse.clone());
            }
            Method::Ssh(ssh)
        }
        Hop::Sudo { user } => {
            let mut sudo = crate::methods::sudo::Sudo::new();
            if let Some(u) = user {
                sudo = sudo.user(u.clone());
            }
            if let Some(p) = password {
                sudo = sudo.password(p);
            }
            if let Some(t) = options.connect_timeout {
                sudo = sudo.connect_timeout(t);
            }
            Method::Sudo(sudo)
        }
        Hop::Su { user } => {
            let mut su = crate::methods::su::Su::user(user.as_deref().unwrap_or("root"));
            if let Some(p) = password {
                su = su.password(p);
            }
            if let Some(t) = options.connect_timeout {
                su = su.connect_timeout(t);
            }
            Method::Su(su)
        }
        Hop::Doas { user } => {
            let mut doas = crate::methods::doas::Doas::new();
            if let Some(u) = user {
                doas = doas.user(u.clone());
            }
            if let Some(p) = password {
                doas = doas.password(p);
            }
            if let Some(t) = options.connect_timeout {
                doas = doas.connect_timeout(t);
            }
            Method::Doas(doas)
        }
        Hop::Container(c) => {
            if password.is_some() {
                return Err(format!("container hop {c} takes no password"));
            }
            c.to_method(options.connect_timeout)
        }
        Hop::Setns { leader } => {
            let mut setns = crate::methods::Setns::leader(leader.clone());
            if let Some(t) = options.connect_timeout {
                setns = setns.connect_timeout(t);
            }
            Method::Setns(setns)
        }
        Hop::Chroot { path } => {
            let mut chroot = crate::methods::Chroot::new(path);
            if let Some(t) = options.connect_timeout {
                chroot = chroot.connect_timeout(t);
            }
            Method::Chroot(chroot)
        }
    })
}

/// The method of every hop of `target`, each named by the target up to it
/// (`bastion/web1`) and given its own password, checked before anything
/// starts; with the passwords, hop by hop.
pub(super) fn hop_methods(
    target: &Target,
    options: &ConnectOptions,
) -> Result<(Vec<Method>, Passwords)> {
    let bad = |reason| Error::BadTarget {
        target: target.to_string(),
        reason,
    };
    let passwords = options.passwords_for(target).map_err(bad)?;
    let mut methods = Vec::new();
    for (i, (hop, password)) in target.hops().iter().zip(&passwords).enumerate() {
        let name = target.prefix(i + 1);
        let method = hop_method(hop, i == 0, options, password.clone()).map_err(bad)?;
        methods.push(method.named(name));
    }
    Ok((methods, passwords))
}

/// What [`Router::connect`](super::Router::connect) takes: a [`Target`], or a string parsed as one
/// (a string that does not parse fails with [`Error::BadTarget`]).
pub trait IntoTarget {
    /// The target, parsed if need be.
    fn into_target(self) -> Result<Target>;
}

impl IntoTarget for Target {
    fn into_target(self) -> Result<Target> {
        Ok(self)
    }
}

impl IntoTarget for &Target {
    fn into_target(self) -> Result<Target> {
        Ok(self.clone())
    }
}

impl IntoTarget for &str {
    fn into_target(self) -> Result<Target> {
        self.parse()
    }
}

impl IntoTarget for String {
    fn into_target(self) -> Result<Target> {
        self.parse()
    }
}

/// The password of each hop of a target, the first hop first.
pub(super) type Passwords = Vec<Option<crate::core::secret::Secret>>;
