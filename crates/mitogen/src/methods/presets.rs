//! Thin presets over the [exec hop](super::exec) for container tools with no
//! engine on the test machine: kubectl, lxc (`lxc-attach`), lxd and incus
//! (`lxc exec`, `incus exec`), buildah (`buildah run`) and machinectl
//! (`systemd-run --machine --pipe`). Each only builds an argv; the unit
//! tests below check the exact command, and nothing else of theirs is tested
//! against a live server (README, method table).

use std::path::PathBuf;
use std::time::Duration;

use super::exec::Exec;

/// A preset's client: its path if given, else `default` from `PATH`.
fn client(path: &Option<PathBuf>, default: &str) -> String {
    match path {
        Some(p) => p.to_string_lossy().into_owned(),
        None => default.to_owned(),
    }
}

/// Options every preset shares: client path, deadline, name.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Common {
    client_path: Option<PathBuf>,
    connect_timeout: Option<Duration>,
    name: Option<String>,
}

impl Common {
    fn exec(&self, argv: Vec<String>, default_name: String) -> Exec {
        let mut e = Exec::new(argv).name(self.name.clone().unwrap_or(default_name));
        if let Some(t) = self.connect_timeout {
            e = e.connect_timeout(t);
        }
        e
    }
}

/// The builder methods every preset shares.
macro_rules! preset_options {
    ($ty:ident, $tool:literal) => {
        impl $ty {
            #[doc = concat!("The client program (default `", $tool, "` from `PATH`).")]
            pub fn client_path(mut self, path: impl Into<PathBuf>) -> $ty {
                self.common.client_path = Some(path.into());
                self
            }

            /// Time allowed for the client to start the program (default 30 s).
            pub fn connect_timeout(mut self, t: Duration) -> $ty {
                self.common.connect_timeout = Some(t);
                self
            }

            /// Names the context (default: the hop as a target string).
            pub fn name(mut self, name: impl Into<String>) -> $ty {
                self.common.name = Some(name.into());
                self
            }
        }

        impl From<$ty> for crate::methods::Method {
            fn from(m: $ty) -> crate::methods::Method {
                crate::methods::Method::Exec(m.to_exec())
            }
        }
    };
}

/// A pod's container, through `kubectl exec -i`. Untested against a live
/// cluster. kubectl gets no terminal (`-i` without `-t`, no controlling
/// terminal), so one that would ask for credentials fails instead of waiting.
///
/// ```
/// use mitogen::Kubectl;
/// let k = Kubectl::new("web-0").container("app").namespace("prod");
/// assert_eq!(
///     k.to_exec().argv(),
///     ["kubectl", "--namespace=prod", "exec", "--stdin", "web-0", "--container=app", "--"]
/// );
/// ```
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Kubectl {
    pod: String,
    container: Option<String>,
    namespace: Option<String>,
    context: Option<String>,
    args: Vec<String>,
    common: Common,
}

impl Kubectl {
    /// Into `pod`'s default container.
    pub fn new(pod: impl Into<String>) -> Kubectl {
        Kubectl {
            pod: pod.into(),
            container: None,
            namespace: None,
            context: None,
            args: Vec::new(),
            common: Common::default(),
        }
    }

    /// The container in the pod (`--container`).
    pub fn container(mut self, c: impl Into<String>) -> Kubectl {
        self.container = Some(c.into());
        self
    }

    /// The pod's namespace (`--namespace`).
    pub fn namespace(mut self, ns: impl Into<String>) -> Kubectl {
        self.namespace = Some(ns.into());
        self
    }

    /// The kubeconfig context (`--context`).
    pub fn context(mut self, ctx: impl Into<String>) -> Kubectl {
        self.context = Some(ctx.into());
        self
    }

    /// More global kubectl arguments, before `exec` (e.g.
    /// `["--kubeconfig", "/etc/k.conf"]`).
    pub fn args<I, S>(mut self, args: I) -> Kubectl
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The exec hop this runs.
    pub fn to_exec(&self) -> Exec {
        let mut v = vec![client(&self.common.client_path, "kubectl")];
        if let Some(c) = &self.context {
            v.push(format!("--context={c}"));
        }
        if let Some(n) = &self.namespace {
            v.push(format!("--namespace={n}"));
        }
        v.extend(self.args.iter().cloned());
        v.extend(["exec".into(), "--stdin".into(), self.pod.clone()]);
        if let Some(c) = &self.container {
            v.push(format!("--container={c}"));
        }
        v.push("--".into());
        let mut name = format!("kubectl:{}", self.pod);
        if let Some(c) = &self.container {
            name = format!("kubectl:{c}@{}", self.pod);
        }
        if let Some(n) = &self.namespace {
            name.push_str(&format!(",namespace={n}"));
        }
        if let Some(c) = &self.context {
            name.push_str(&format!(",context={c}"));
        }
        // A cluster is usually across a network: compress the upload.
        self.common.exec(v, name)
    }
}

preset_options!(Kubectl, "kubectl");

/// An LXC container through `lxc-attach` (classic LXC). Untested against a
/// live container.
///
/// ```
/// use mitogen::Lxc;
/// assert_eq!(
///     Lxc::new("c1").to_exec().argv(),
///     ["lxc-attach", "--clear-env", "--name=c1", "--"]
/// );
/// ```
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Lxc {
    container: String,
    common: Common,
}

impl Lxc {
    /// Into the running container `container`.
    pub fn new(container: impl Into<String>) -> Lxc {
        Lxc {
            container: container.into(),
            common: Common::default(),
        }
    }

    /// The exec hop this runs.
    pub fn to_exec(&self) -> Exec {
        let v = vec![
            client(&self.common.client_path, "lxc-attach"),
            "--clear-env".into(),
            format!("--name={}", self.container),
            "--".into(),
        ];
        self.common.exec(v, format!("lxc:{}", self.container))
    }
}

preset_options!(Lxc, "lxc-attach");

/// Which client an [`Lxd`] hop uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum LxdClient {
    /// LXD's `lxc`.
    Lxd,
    /// Incus's `incus`.
    Incus,
}

/// An LXD or Incus instance through `lxc exec` / `incus exec`. Untested
/// against a live server.
///
/// ```
/// use mitogen::Lxd;
/// assert_eq!(
///     Lxd::incus("c1").user(1000).to_exec().argv(),
///     ["incus", "exec", "--mode=non-interactive", "--user=1000", "c1", "--"]
/// );
/// ```
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Lxd {
    client: LxdClient,
    instance: String,
    user: Option<u32>,
    common: Common,
}

impl Lxd {
    /// Into LXD's instance `instance` (`lxc exec`).
    pub fn new(instance: impl Into<String>) -> Lxd {
        Lxd {
            client: LxdClient::Lxd,
            instance: instance.into(),
            user: None,
            common: Common::default(),
        }
    }

    /// Into Incus's instance `instance` (`incus exec`).
    pub fn incus(instance: impl Into<String>) -> Lxd {
        Lxd {
            client: LxdClient::Incus,
            ..Lxd::new(instance)
        }
    }

    /// The user id inside the instance (`--user`; both clients take a
    /// number only).
    pub fn user(mut self, uid: u32) -> Lxd {
        self.user = Some(uid);
        self
    }

    /// The exec hop this runs.
    pub fn to_exec(&self) -> Exec {
        let (tool, method) = match self.client {
            LxdClient::Lxd => ("lxc", "lxd"),
            LxdClient::Incus => ("incus", "incus"),
        };
        let mut v = vec![
            client(&self.common.client_path, tool),
            "exec".into(),
            "--mode=non-interactive".into(),
        ];
        if let Some(u) = self.user {
            v.push(format!("--user={u}"));
        }
        v.extend([self.instance.clone(), "--".into()]);
        let name = match self.user {
            Some(u) => format!("{method}:{u}@{}", self.instance),
            None => format!("{method}:{}", self.instance),
        };
        self.common.exec(v, name)
    }
}

preset_options!(Lxd, "lxc` or `incus");

/// A buildah working container through `buildah run`. Untested here.
///
/// ```
/// use mitogen::Buildah;
/// assert_eq!(
///     Buildah::new("w1").user("app").to_exec().argv(),
///     ["buildah", "run", "--user=app", "w1", "--"]
/// );
/// ```
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Buildah {
    container: String,
    user: Option<String>,
    common: Common,
}

impl Buildah {
    /// Into the working container `container`.
    pub fn new(container: impl Into<String>) -> Buildah {
        Buildah {
            container: container.into(),
            user: None,
            common: Common::default(),
        }
    }

    /// The user inside the container (`--user`).
    pub fn user(mut self, user: impl Into<String>) -> Buildah {
        self.user = Some(user.into());
        self
    }

    /// The exec hop this runs.
    pub fn to_exec(&self) -> Exec {
        let mut v = vec![client(&self.common.client_path, "buildah"), "run".into()];
        if let Some(u) = &self.user {
            v.push(format!("--user={u}"));
        }
        v.extend([self.container.clone(), "--".into()]);
        let name = match &self.user {
            Some(u) => format!("buildah:{u}@{}", self.container),
            None => format!("buildah:{}", self.container),
        };
        self.common.exec(v, name)
    }
}

preset_options!(Buildah, "buildah");

/// A systemd machine (nspawn container, VM registered with machined) through
/// `systemd-run --machine=M --pipe`: machinectl's own `shell` always makes a
/// terminal, which would mangle the stream, while `--pipe` connects the
/// command's stdin and stdout as they are. Untested against a live machine.
///
/// ```
/// use mitogen::Machinectl;
/// assert_eq!(
///     Machinectl::new("m1").user("app").to_exec().argv(),
///     ["systemd-run", "--machine=app@m1", "--pipe", "--quiet", "--wait", "--collect",
///      "--service-type=exec", "--"]
/// );
/// ```
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Machinectl {
    machine: String,
    user: Option<String>,
    common: Common,
}

impl Machinectl {
    /// Into the running machine `machine`.
    pub fn new(machine: impl Into<String>) -> Machinectl {
        Machinectl {
            machine: machine.into(),
            user: None,
            common: Common::default(),
        }
    }

    /// The user inside the machine (`--machine=USER@M`).
    pub fn user(mut self, user: impl Into<String>) -> Machinectl {
        self.user = Some(user.into());
        self
    }

    /// The exec hop this runs.
    pub fn to_exec(&self) -> Exec {
        let at = match &self.user {
            Some(u) => format!("{u}@{}", self.machine),
            None => self.machine.clone(),
        };
        let v = vec![
            client(&self.common.client_path, "systemd-run"),
            format!("--machine={at}"),
            "--pipe".into(),
            "--quiet".into(),
            "--wait".into(),
            "--collect".into(),
            "--service-type=exec".into(),
            "--".into(),
        ];
        self.common.exec(v, format!("machinectl:{at}"))
    }
}

preset_options!(Machinectl, "systemd-run");

#[cfg(test)]
mod tests {
    use super::*;

    fn full(e: Exec) -> Vec<String> {
        e.command_argv("00ff", &[], false)
    }

    #[test]
    fn every_preset_runs_the_stage_after_its_command() {
        let k = full(
            Kubectl::new("web-0")
                .container("app")
                .namespace("prod")
                .context("c")
                .args(["--kubeconfig", "/k"])
                .client_path("/opt/kubectl")
                .to_exec(),
        );
        assert_eq!(
            &k[..k.len() - 1],
            [
                "/opt/kubectl",
                "--context=c",
                "--namespace=prod",
                "--kubeconfig",
                "/k",
                "exec",
                "--stdin",
                "web-0",
                "--container=app",
                "--",
                "sh",
                "-c"
            ]
        );
        let l = full(Lxc::new("c1").to_exec());
        assert_eq!(
            &l[..l.len() - 1],
            ["lxc-attach", "--clear-env", "--name=c1", "--", "sh", "-c"]
        );
        let x = full(Lxd::new("c1").to_exec());
        assert_eq!(
            &x[..x.len() - 1],
            [
                "lxc",
                "exec",
                "--mode=non-interactive",
                "c1",
                "--",
                "sh",
                "-c"
            ]
        );
        let b = full(Buildah::new("w").to_exec());
        assert_eq!(&b[..b.len() - 1], ["buildah", "run", "w", "--", "sh", "-c"]);
        let m = full(Machinectl::new("m").to_exec());
        assert_eq!(m[1], "--machine=m");
        assert_eq!(&m[m.len() - 3..m.len() - 1], ["sh", "-c"]);
    }

    #[test]
    fn names_read_as_target_strings() {
        let n = |e: Exec| e.name_ref().unwrap_or_default().to_owned();
        assert_eq!(
            n(Kubectl::new("p").container("c").namespace("n").to_exec()),
            "kubectl:c@p,namespace=n"
        );
        assert_eq!(n(Lxd::incus("i").user(5).to_exec()), "incus:5@i");
        assert_eq!(n(Lxc::new("c").to_exec()), "lxc:c");
        assert_eq!(n(Buildah::new("w").to_exec()), "buildah:w");
        assert_eq!(n(Machinectl::new("m").to_exec()), "machinectl:m");
    }
}
