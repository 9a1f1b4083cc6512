//! Target strings: one syntax for a context anywhere in the tree.
//!
//! A target is a chain of hops separated by `/`, each hop started from the
//! previous one:
//!
//! | hop | meaning |
//! |---|---|
//! | `local` | a new process of the program on the previous hop's machine |
//! | `[user@]host[:port]` | ssh to `host` with the system `ssh` |
//! | `sudo[:user]`, `su[:user]`, `doas[:user]` | switch user (default root) |
//! | `exec:PROG,ARG,…`, `docker:[user@]C`, `docker-run:IMAGE`, `podman:…`, `kubectl:POD`, `lxc:`, `lxd:`, `incus:`, `buildah:`, `machinectl:` | a [container hop](crate::ContainerHop) |
//! | `setns:PID`, `setns:KIND:NAME` | as root, into the namespaces of a process or of a container's leader (KIND `docker`, `podman`, `lxc`, `machinectl`) |
//! | `chroot:/PATH`, `chroot:[/PATH]` | as root, into a directory tree; the path runs to the end of the target, or to the `]` when more hops follow |
//!
//! ```
//! use mitogen::{Hop, Target};
//! let t: Target = "deploy@web1:2222/sudo:app".parse().unwrap();
//! assert_eq!(t.hops()[0], Hop::Ssh { user: Some("deploy".into()), host: "web1".into(), port: Some(2222) });
//! assert_eq!(t.hops()[1], Hop::Sudo { user: Some("app".into()) });
//! assert_eq!(t.to_string(), "deploy@web1:2222/sudo:app");
//! ```

use std::fmt;
use std::str::FromStr;

use crate::core::error::Error;

/// One hop of a [`Target`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Hop {
    /// A new process of the program.
    Local,
    /// ssh to a host.
    Ssh {
        /// Login user (default: ssh's own choice, e.g. from `~/.ssh/config`).
        user: Option<String>,
        /// Host name or address, as ssh understands it.
        host: String,
        /// Port (default: ssh's own choice).
        port: Option<u16>,
    },
    /// `sudo` to a user (default root).
    Sudo {
        /// Target user.
        user: Option<String>,
    },
    /// `su` to a user (default root).
    Su {
        /// Target user.
        user: Option<String>,
    },
    /// `doas` to a user (default root).
    Doas {
        /// Target user.
        user: Option<String>,
    },
    /// An exec hop or a container (`exec:…`, `docker:…`, `kubectl:…`, …).
    Container(crate::methods::ContainerHop),
    /// Into the namespaces of a process or a container (`setns:PID`,
    /// `setns:docker:NAME`).
    Setns {
        /// Whose namespaces.
        leader: crate::methods::Leader,
    },
    /// Into a directory tree (`chroot:/PATH`).
    Chroot {
        /// The tree's absolute path.
        path: String,
    },
}

impl Hop {
    /// The connection method's name (`local`, `ssh`, `sudo`, ...).
    pub fn method(&self) -> &'static str {
        match self {
            Hop::Local => "local",
            Hop::Ssh { .. } => "ssh",
            Hop::Sudo { .. } => "sudo",
            Hop::Su { .. } => "su",
            Hop::Doas { .. } => "doas",
            Hop::Container(c) => c.method(),
            Hop::Setns { .. } => "setns",
            Hop::Chroot { .. } => "chroot",
        }
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '$'))
        && !s.starts_with('-')
}

fn parse_hop(text: &str, whole: &str) -> Result<Hop, Error> {
    let bad = |reason: String| Error::BadTarget {
        target: whole.to_owned(),
        reason,
    };
    let (method, arg) = match text.split_once(':') {
        Some((m, a)) => (m, Some(a)),
        None => (text, None),
    };
    let user = |arg: Option<&str>| -> Result<Option<String>, Error> {
        match arg {
            None => Ok(None),
            Some(u) if valid_name(u) => Ok(Some(u.to_owned())),
            Some(u) => Err(bad(format!("{u:?} is not a valid user name"))),
        }
    };
    match method {
        "local" if arg.is_none() => return Ok(Hop::Local),
        "sudo" => return Ok(Hop::Sudo { user: user(arg)? }),
        "su" => return Ok(Hop::Su { user: user(arg)? }),
        "doas" => return Ok(Hop::Doas { user: user(arg)? }),
        "setns" => return parse_setns(arg).map_err(bad),
        "chroot" => {
            let path = arg.unwrap_or_default();
            let path = path
                .strip_prefix('[')
                .and_then(|p| p.strip_suffix(']'))
                .unwrap_or(path);
            if !path.starts_with('/') || path.contains('\0') {
                return Err(bad(format!("{path:?} is not an absolute path")));
            }
            return Ok(Hop::Chroot {
                path: path.to_owned(),
            });
        }
        _ => {}
    }
    if let Some(c) = crate::methods::ContainerHop::parse(method, arg) {
        return c.map(Hop::Container).map_err(bad);
    }
    // [user@]host[:port]
    let (user_part, host_port) = match text.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, text),
    };
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) => {
            let port = p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad(format!("{p:?} is not a port number")))?;
            (h, Some(port))
        }
        None => (host_port, None),
    };
    if !valid_name(host) {
        return Err(bad(format!("{host:?} is not a host name")));
    }
    Ok(Hop::Ssh {
        user: user(user_part)?,
        host: host.to_owned(),
        port,
    })
}

/// `setns:PID` or `setns:KIND:NAME`.
fn parse_setns(arg: Option<&str>) -> Result<Hop, String> {
    let arg = arg.unwrap_or_default();
    let leader = match arg.split_once(':') {
        None => {
            crate::methods::Leader::Pid(arg.parse::<u32>().ok().filter(|p| *p != 0).ok_or_else(
                || format!("{arg:?} is not a process id (setns:PID or setns:KIND:NAME)"),
            )?)
        }
        Some((kind, name)) => {
            if !valid_name(name) {
                return Err(format!("{name:?} is not a container name"));
            }
            crate::methods::Leader::of_kind(kind, name).ok_or_else(|| {
                format!("{kind:?} is not a container kind (docker, podman, lxc, machinectl)")
            })?
        }
    };
    Ok(Hop::Setns { leader })
}

/// Splits a target into hop texts at `/`, except inside a chroot hop's
/// path: `chroot:[/PATH]` runs to its `]`, `chroot:/PATH` to the end.
fn split_hops(s: &str) -> Vec<&str> {
    let mut hops = Vec::new();
    let mut rest = s;
    loop {
        if rest.starts_with("chroot:[") {
            if let Some(end) = rest.find(']') {
                let (hop, after) = rest.split_at(end + 1);
                hops.push(hop);
                match after.strip_prefix('/') {
                    Some(next) => rest = next,
                    None if after.is_empty() => return hops,
                    // Text after the `]` that is not a new hop: a bad path.
                    None => {
                        hops.pop();
                        hops.push(rest);
                        return hops;
                    }
                }
                continue;
            }
        }
        if rest.starts_with("chroot:/") {
            hops.push(rest);
            return hops;
        }
        match rest.split_once('/') {
            Some((hop, next)) => {
                hops.push(hop);
                rest = next;
            }
            None => {
                hops.push(rest);
                return hops;
            }
        }
    }
}

/// A chain of hops, parsed from text such as `bastion/web1/sudo:app`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    hops: Vec<Hop>,
}

impl Target {
    /// The hops, first (nearest the master) first.
    pub fn hops(&self) -> &[Hop] {
        &self.hops
    }

    /// The target up to and including its `n`th hop, as text
    /// (`web1/sudo:app`): the name of that hop's context, and the key of its
    /// password. A chroot hop with hops after it is written bracketed
    /// (`chroot:[/srv]/local`).
    pub fn prefix(&self, n: usize) -> String {
        Target {
            hops: self.hops[..n.min(self.hops.len())].to_vec(),
        }
        .to_string()
    }

    /// This target with `hop` after its last hop (`web1` and `sudo` make
    /// `web1/sudo`).
    ///
    /// ```
    /// let t: mitogen::Target = "web1".parse().unwrap();
    /// let t = t.join(mitogen::Hop::Sudo { user: Some("app".into()) });
    /// assert_eq!(t.to_string(), "web1/sudo:app");
    /// ```
    pub fn join(&self, hop: Hop) -> Target {
        let mut hops = self.hops.clone();
        hops.push(hop);
        Target { hops }
    }
}

impl FromStr for Target {
    type Err = Error;
    fn from_str(s: &str) -> Result<Target, Error> {
        if s.is_empty() {
            return Err(Error::BadTarget {
                target: s.into(),
                reason: "empty target".into(),
            });
        }
        let hops = split_hops(s)
            .into_iter()
            .map(|h| {
                if h.is_empty() {
                    Err(Error::BadTarget {
                        target: s.into(),
                        reason: "empty hop (two '/' in a row, or a '/' at an end)".into(),
                    })
                } else {
                    parse_hop(h, s)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Target { hops })
    }
}

impl fmt::Display for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let switch = |f: &mut fmt::Formatter<'_>, m: &str, u: &Option<String>| match u {
            Some(u) => write!(f, "{m}:{u}"),
            None => write!(f, "{m}"),
        };
        match self {
            Hop::Local => write!(f, "local"),
            Hop::Ssh { user, host, port } => {
                if let Some(u) = user {
                    write!(f, "{u}@")?;
                }
                write!(f, "{host}")?;
                if let Some(p) = port {
                    write!(f, ":{p}")?;
                }
                Ok(())
            }
            Hop::Sudo { user } => switch(f, "sudo", user),
            Hop::Su { user } => switch(f, "su", user),
            Hop::Doas { user } => switch(f, "doas", user),
            Hop::Container(c) => write!(f, "{c}"),
            Hop::Setns { leader } => write!(f, "setns:{leader}"),
            Hop::Chroot { path } => write!(f, "chroot:{path}"),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, h) in self.hops.iter().enumerate() {
            if i > 0 {
                write!(f, "/")?;
            }
            match h {
                // Bracketed, so that the hops after it are not read as
                // part of its path.
                Hop::Chroot { path } if i + 1 < self.hops.len() => write!(f, "chroot:[{path}]")?,
                h => write!(f, "{h}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_examples() {
        for s in [
            "local",
            "web1",
            "deploy@web1:2222/sudo",
            "bastion/web1/sudo:app",
            "local/local/local",
            "10.0.0.1/su:bob/doas",
            "setns:4242",
            "web1/sudo/setns:docker:app/local",
            "chroot:/srv/image",
            "chroot:/srv/my image/x:y",
            "web1/chroot:[/srv/image]/sudo:app",
            "setns:machinectl:m/chroot:/",
        ] {
            let t: Target = s.parse().unwrap();
            assert_eq!(t.to_string(), s);
        }
        let t: Target = "local/local/local".parse().unwrap();
        assert_eq!(t.hops(), &[Hop::Local, Hop::Local, Hop::Local]);
    }

    #[test]
    fn chroot_paths_keep_their_slashes() {
        let t: Target = "chroot:[/srv/image]/local".parse().unwrap();
        assert_eq!(
            t.hops(),
            &[
                Hop::Chroot {
                    path: "/srv/image".into()
                },
                Hop::Local
            ]
        );
        let t: Target = "web1/chroot:/srv/image/local".parse().unwrap();
        assert_eq!(
            t.hops()[1],
            Hop::Chroot {
                path: "/srv/image/local".into()
            }
        );
        assert_eq!(
            "chroot:[/srv]/local/local"
                .parse::<Target>()
                .unwrap()
                .prefix(2),
            "chroot:[/srv]/local"
        );
        // A bracketed last hop reads as the bare one.
        let t: Target = "chroot:[/srv/image]".parse().unwrap();
        assert_eq!(t.to_string(), "chroot:/srv/image");
        let t: Target = "setns:docker:web/local".parse().unwrap();
        assert_eq!(
            t.hops()[0],
            Hop::Setns {
                leader: crate::methods::Leader::Docker("web".into())
            }
        );
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "/",
            "a//b",
            "web1:0",
            "web1:http",
            "-oProxyCommand=x",
            "a b",
            "sudo:ro ot",
            "local:x",
            "setns",
            "setns:0",
            "setns:x",
            "setns:k8s:pod",
            "setns:docker:-x",
            "setns:docker:",
            "chroot",
            "chroot:",
            "chroot:srv",
            "chroot:[/srv]x",
            "chroot:[srv]/local",
            "chroot:[/srv/local",
        ] {
            assert!(s.parse::<Target>().is_err(), "{s:?} should be refused");
        }
    }
}

#[cfg(test)]
mod container_tests {
    use super::*;
    use crate::methods::{ContainerHop, Engine};

    #[test]
    fn container_hops_parse_and_print_back() {
        for s in [
            "exec:docker,exec,-i,c1",
            "exec:%2Fusr%2Fbin%2Fvagrant,ssh,--",
            "docker:c1",
            "docker:app@c1",
            "podman:1000@c1",
            "docker-run:debian:12",
            "podman-run:registry.local%2Fteam%2Fimg:1",
            "kubectl:web-0",
            "kubectl:app@web-0,namespace=prod,context=east",
            "lxc:c1",
            "lxd:1000@c1",
            "incus:c1",
            "buildah:app@w1",
            "machinectl:app@m1",
            "bastion/web1/sudo/docker:app@c1",
            "docker:a/local",
            "docker:app@c1,direct=off",
            "podman-run:img,direct=off",
        ] {
            let t: Target = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(t.to_string(), s);
        }
        let t: Target = "local/docker:app@c1".parse().unwrap();
        assert_eq!(
            t.hops()[1],
            Hop::Container(ContainerHop::Container {
                engine: Engine::Docker,
                user: Some("app".into()),
                container: "c1".into(),
                direct: true,
            })
        );
        let t: Target = "exec:%2Fusr%2Fbin%2Fdocker,exec,-i,c%2C1".parse().unwrap();
        assert_eq!(
            t.hops()[0],
            Hop::Container(ContainerHop::Exec {
                argv: vec![
                    "/usr/bin/docker".into(),
                    "exec".into(),
                    "-i".into(),
                    "c,1".into()
                ]
            })
        );
    }

    #[test]
    fn bad_container_hops_are_refused() {
        let t: Target = "docker".parse().unwrap();
        assert_eq!(t.hops()[0].method(), "ssh", "a host called docker");
        for s in [
            "docker:",
            "exec:",
            "exec:,x",
            "docker:-it",
            "docker:a,b",
            "kubectl:p,ns=x",
            "lxd:bob@c1",
            "exec:a%zz",
        ] {
            assert!(s.parse::<Target>().is_err(), "{s:?} should be refused");
        }
    }
}
