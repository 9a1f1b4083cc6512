//! The container hops of a [target string](crate::Target): their syntax, and
//! the method each one starts.
//!
//! The syntax is on [`ContainerHop`].

use std::fmt;
use std::time::Duration;

use super::docker::{Docker, Engine};
use super::exec::{decode_argv, encode_argv, Exec};
use super::presets::{Buildah, Kubectl, Lxc, Lxd, LxdClient, Machinectl};
use super::Method;

/// A container hop of a target string:
///
/// | hop | command run |
/// |---|---|
/// | `exec:PROG,ARG,…` | `PROG ARG … sh -c STAGE` |
/// | `docker:[USER@]CONTAINER[,direct=off]`, `podman:…` | `docker exec --interactive [--user=USER] -- CONTAINER` |
/// | `docker-run:[USER@]IMAGE[,direct=off]`, `podman-run:…` | `docker run --rm --interactive --pull=never [--user=USER] -- IMAGE` |
/// | `kubectl:[CONTAINER@]POD[,namespace=NS][,context=CTX]` | `kubectl [--context=CTX] [--namespace=NS] exec --stdin POD [--container=CONTAINER] --` |
/// | `lxc:NAME` | `lxc-attach --clear-env --name=NAME --` |
/// | `lxd:[UID@]NAME`, `incus:[UID@]NAME` | `lxc exec` / `incus exec --mode=non-interactive [--user=UID] NAME --` |
/// | `buildah:[USER@]CONTAINER` | `buildah run [--user=USER] CONTAINER --` |
/// | `machinectl:[USER@]MACHINE` | `systemd-run --machine=[USER@]MACHINE --pipe … --` |
///
/// The docker and podman hops take a direct socket to the process in the
/// container when they can ([`Docker::direct`]); `,direct=off` keeps the
/// stream on the client's pipe.
///
/// Every value is written as it is when it holds only letters, digits and
/// `-_.:~+`; any other byte is `%XX` (a `/` in an image name is `%2F`), so no
/// common case needs quoting, in a shell or in the target's own `/`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ContainerHop {
    /// `exec:PROG,ARG,…`: any command that runs a program in another
    /// environment.
    Exec {
        /// The command, program first.
        argv: Vec<String>,
    },
    /// `docker:[USER@]CONTAINER` or `podman:…`: a running container.
    Container {
        /// docker or podman.
        engine: Engine,
        /// The user inside the container.
        user: Option<String>,
        /// Container name or id.
        container: String,
        /// Whether a direct socket may replace the client's pipe
        /// ([`Docker::direct`]; `,direct=off` when not).
        direct: bool,
    },
    /// `docker-run:[USER@]IMAGE` or `podman-run:…`: a fresh container of an
    /// image, removed when the context ends.
    Run {
        /// docker or podman.
        engine: Engine,
        /// The user inside the container.
        user: Option<String>,
        /// The image.
        image: String,
        /// As for [`ContainerHop::Container`].
        direct: bool,
    },
    /// `kubectl:[CONTAINER@]POD[,namespace=NS][,context=CTX]`.
    Kubectl {
        /// The pod.
        pod: String,
        /// The container in the pod.
        container: Option<String>,
        /// The pod's namespace.
        namespace: Option<String>,
        /// The kubeconfig context.
        context: Option<String>,
    },
    /// `lxc:NAME`: classic LXC, `lxc-attach`.
    Lxc {
        /// The container.
        name: String,
    },
    /// `lxd:[UID@]NAME` or `incus:[UID@]NAME`.
    Lxd {
        /// lxd's `lxc` or `incus`.
        client: LxdClient,
        /// The user id inside the instance.
        user: Option<u32>,
        /// The instance.
        name: String,
    },
    /// `buildah:[USER@]CONTAINER`.
    Buildah {
        /// The user inside the container.
        user: Option<String>,
        /// The working container.
        container: String,
    },
    /// `machinectl:[USER@]MACHINE`.
    Machinectl {
        /// The user inside the machine.
        user: Option<String>,
        /// The machine.
        machine: String,
    },
}

/// One value of a hop: `%XX` decoded, non-empty, not an option.
fn value(text: &str) -> Result<String, String> {
    let v = decode_argv(text)
        .ok()
        .filter(|v| v.len() == 1)
        .and_then(|mut v| v.pop())
        .ok_or_else(|| format!("{text:?} is not a valid name"))?;
    if v.starts_with('-') || v.chars().any(char::is_control) {
        return Err(format!("{v:?} is not a valid name"));
    }
    Ok(v)
}

/// `[USER@]NAME`.
fn user_at(text: &str) -> Result<(Option<String>, String), String> {
    match text.split_once('@') {
        Some((u, n)) => Ok((Some(value(u)?), value(n)?)),
        None => Ok((None, value(text)?)),
    }
}

/// `[USER@]NAME[,direct=on|off]`: the user, the name, and whether a direct
/// socket is allowed.
fn engine_hop(text: &str) -> Result<(Option<String>, String, bool), String> {
    let mut parts = text.split(',');
    let (user, name) = user_at(parts.next().unwrap_or_default())?;
    let mut direct = true;
    for opt in parts {
        direct = match opt {
            "direct=on" => true,
            "direct=off" => false,
            _ => {
                return Err(format!(
                    "{opt:?}: a container hop takes direct=on or direct=off"
                ))
            }
        };
    }
    Ok((user, name, direct))
}

/// A value as written in a hop (the inverse of [`value`]).
fn enc(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.:~+".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl ContainerHop {
    /// Parses the hop `METHOD:ARG`; `None` when `method` is not a container
    /// method or there is no `:ARG`.
    pub(crate) fn parse(method: &str, arg: Option<&str>) -> Option<Result<ContainerHop, String>> {
        let engine = |m: &str| match m {
            "docker" | "docker-run" => Engine::Docker,
            _ => Engine::Podman,
        };
        let known = [
            "exec",
            "docker",
            "podman",
            "docker-run",
            "podman-run",
            "kubectl",
            "lxc",
            "lxd",
            "incus",
            "buildah",
            "machinectl",
        ];
        // Without a `:`, the word is a host name (a host called `docker`
        // is still reached over ssh).
        let arg = arg?;
        if !known.contains(&method) {
            return None;
        }
        let Some(arg) = Some(arg).filter(|a| !a.is_empty()) else {
            return Some(Err(format!("a {method} hop needs a value ({method}:…)")));
        };
        Some((|| {
            Ok(match method {
                "exec" => ContainerHop::Exec {
                    argv: decode_argv(arg)?,
                },
                "docker" | "podman" => {
                    let (user, container, direct) = engine_hop(arg)?;
                    ContainerHop::Container {
                        engine: engine(method),
                        user,
                        container,
                        direct,
                    }
                }
                "docker-run" | "podman-run" => {
                    let (user, image, direct) = engine_hop(arg)?;
                    ContainerHop::Run {
                        engine: engine(method),
                        user,
                        image,
                        direct,
                    }
                }
                "kubectl" => {
                    let mut parts = arg.split(',');
                    let (container, pod) = user_at(parts.next().unwrap_or_default())?;
                    let (mut namespace, mut context) = (None, None);
                    for opt in parts {
                        match opt.split_once('=') {
                            Some(("namespace", v)) => namespace = Some(value(v)?),
                            Some(("context", v)) => context = Some(value(v)?),
                            _ => {
                                return Err(format!(
                                    "{opt:?}: a kubectl hop takes namespace=NS and context=CTX"
                                ))
                            }
                        }
                    }
                    ContainerHop::Kubectl {
                        pod,
                        container,
                        namespace,
                        context,
                    }
                }
                "lxc" => ContainerHop::Lxc { name: value(arg)? },
                "lxd" | "incus" => {
                    let (user, name) = user_at(arg)?;
                    let user = user
                        .map(|u| {
                            u.parse::<u32>()
                                .map_err(|_| format!("{u:?}: {method} takes a numeric user id"))
                        })
                        .transpose()?;
                    ContainerHop::Lxd {
                        client: if method == "lxd" {
                            LxdClient::Lxd
                        } else {
                            LxdClient::Incus
                        },
                        user,
                        name,
                    }
                }
                "buildah" => {
                    let (user, container) = user_at(arg)?;
                    ContainerHop::Buildah { user, container }
                }
                _ => {
                    let (user, machine) = user_at(arg)?;
                    ContainerHop::Machinectl { user, machine }
                }
            })
        })())
    }

    /// The method's name (`exec`, `docker`, `docker-run`, `kubectl`, …).
    pub fn method(&self) -> &'static str {
        match self {
            ContainerHop::Exec { .. } => "exec",
            ContainerHop::Container { engine, .. } => engine.as_str(),
            ContainerHop::Run {
                engine: Engine::Docker,
                ..
            } => "docker-run",
            ContainerHop::Run { .. } => "podman-run",
            ContainerHop::Kubectl { .. } => "kubectl",
            ContainerHop::Lxc { .. } => "lxc",
            ContainerHop::Lxd {
                client: LxdClient::Lxd,
                ..
            } => "lxd",
            ContainerHop::Lxd { .. } => "incus",
            ContainerHop::Buildah { .. } => "buildah",
            ContainerHop::Machinectl { .. } => "machinectl",
        }
    }

    /// The command this hop runs, without the first stage that follows it
    /// (`["docker", "exec", "--interactive", "--", "c1"]`): with `true`
    /// appended, the tool's own cost, as `mitogen bench` times it.
    pub fn argv(&self) -> Vec<String> {
        match self.to_method(None) {
            Method::Docker(d) => d.argv(),
            Method::Exec(e) => e.argv().to_vec(),
            _ => Vec::new(),
        }
    }

    /// The method that starts this hop, with `timeout` if given.
    pub(crate) fn to_method(&self, timeout: Option<Duration>) -> Method {
        let exec = |e: Exec| match timeout {
            Some(t) => e.connect_timeout(t),
            None => e,
        };
        let with_user = |d: Docker, u: &Option<String>| match u {
            Some(u) => d.user(u.clone()),
            None => d,
        };
        let docker = |d: Docker, direct: bool| match timeout {
            Some(t) => Method::Docker(d.connect_timeout(t).direct(direct)),
            None => Method::Docker(d.direct(direct)),
        };
        match self {
            ContainerHop::Exec { argv } => Method::Exec(exec(Exec::new(argv.clone()))),
            ContainerHop::Container {
                engine,
                user,
                container,
                direct,
            } => docker(
                with_user(
                    match engine {
                        Engine::Docker => Docker::exec(container.clone()),
                        Engine::Podman => Docker::podman_exec(container.clone()),
                    },
                    user,
                ),
                *direct,
            ),
            ContainerHop::Run {
                engine,
                user,
                image,
                direct,
            } => docker(
                with_user(
                    match engine {
                        Engine::Docker => Docker::run(image.clone()),
                        Engine::Podman => Docker::podman_run(image.clone()),
                    },
                    user,
                ),
                *direct,
            ),
            ContainerHop::Kubectl {
                pod,
                container,
                namespace,
                context,
            } => {
                let mut k = Kubectl::new(pod.clone());
                if let Some(c) = container {
                    k = k.container(c.clone());
                }
                if let Some(n) = namespace {
                    k = k.namespace(n.clone());
                }
                if let Some(c) = context {
                    k = k.context(c.clone());
                }
                Method::Exec(exec(k.to_exec()))
            }
            ContainerHop::Lxc { name } => Method::Exec(exec(Lxc::new(name.clone()).to_exec())),
            ContainerHop::Lxd { client, user, name } => {
                let mut l = match client {
                    LxdClient::Lxd => Lxd::new(name.clone()),
                    LxdClient::Incus => Lxd::incus(name.clone()),
                };
                if let Some(u) = user {
                    l = l.user(*u);
                }
                Method::Exec(exec(l.to_exec()))
            }
            ContainerHop::Buildah { user, container } => {
                let mut b = Buildah::new(container.clone());
                if let Some(u) = user {
                    b = b.user(u.clone());
                }
                Method::Exec(exec(b.to_exec()))
            }
            ContainerHop::Machinectl { user, machine } => {
                let mut m = Machinectl::new(machine.clone());
                if let Some(u) = user {
                    m = m.user(u.clone());
                }
                Method::Exec(exec(m.to_exec()))
            }
        }
    }
}

impl fmt::Display for ContainerHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.method();
        let at = |f: &mut fmt::Formatter<'_>, u: Option<String>, n: &str| match u {
            Some(u) => write!(f, "{m}:{}@{}", enc(&u), enc(n)),
            None => write!(f, "{m}:{}", enc(n)),
        };
        let off = |f: &mut fmt::Formatter<'_>, direct: bool| {
            if direct {
                Ok(())
            } else {
                write!(f, ",direct=off")
            }
        };
        match self {
            ContainerHop::Exec { argv } => write!(f, "exec:{}", encode_argv(argv)),
            ContainerHop::Container {
                user,
                container,
                direct,
                ..
            } => {
                at(f, user.clone(), container)?;
                off(f, *direct)
            }
            ContainerHop::Run {
                user,
                image,
                direct,
                ..
            } => {
                at(f, user.clone(), image)?;
                off(f, *direct)
            }
            ContainerHop::Kubectl {
                pod,
                container,
                namespace,
                context,
            } => {
                at(f, container.clone(), pod)?;
                if let Some(n) = namespace {
                    write!(f, ",namespace={}", enc(n))?;
                }
                if let Some(c) = context {
                    write!(f, ",context={}", enc(c))?;
                }
                Ok(())
            }
            ContainerHop::Lxc { name } => at(f, None, name),
            ContainerHop::Lxd { user, name, .. } => at(f, user.map(|u| u.to_string()), name),
            ContainerHop::Buildah { user, container } => at(f, user.clone(), container),
            ContainerHop::Machinectl { user, machine } => at(f, user.clone(), machine),
        }
    }
}
