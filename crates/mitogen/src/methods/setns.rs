//! The `setns` method: a context inside a running container, entered by root
//! without the container engine's client (the seed's `setns` stream).
//!
//! The container is its *leader* process: given by pid, or looked up by name
//! through `docker`, `podman`, `lxc-info` or `machinectl`. The new process
//! enters the leader's namespaces (user if it differs, then cgroup, ipc,
//! uts, net, pid, mnt), takes its root and working directory, keeps no
//! capability outside the leader's bounding set, forks once more so that it
//! is inside the pid namespace, and runs a sealed copy of the program (see
//! [`enter`]): the container's root, mounts, network, host
//! name and pids, with nothing written inside it.
//!
//! ```no_run
//! # fn demo(router: mitogen::Router) -> mitogen::Result<()> {
//! use mitogen::Setns;
//! let web = router.start(None, Setns::docker("web"))?;   // docker inspect, then setns
//! let other = router.start(None, Setns::pid(4242))?;     // any process's namespaces
//! # Ok(()) }
//! ```
//!
//! As a target string: `setns:PID`, or `setns:KIND:NAME` with KIND one of
//! `docker`, `podman`, `lxc`, `machinectl` (`HOST/sudo/setns:docker:web`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::enter::{self, Enter};
use crate::core::context::Context;
use crate::core::error::{Error, Result};
use crate::core::message::ContextId;
use crate::core::router::RouterInner;
use crate::sys::Namespace;

/// Default time allowed to find the leader and start the program.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The process whose namespaces a [`Setns`] context enters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Leader {
    /// A process id, as this machine's pid namespace numbers it.
    Pid(u32),
    /// A docker container (`docker inspect -f '{{.State.Pid}}' NAME`).
    Docker(String),
    /// A podman container (`podman inspect -f '{{.State.Pid}}' NAME`).
    Podman(String),
    /// An LXC container (`lxc-info -H -p -n NAME`).
    Lxc(String),
    /// A systemd machine (`machinectl show -p Leader --value NAME`).
    Machinectl(String),
}

impl Leader {
    /// The kind as a target string writes it (`docker`, …; `None` for a pid).
    fn kind(&self) -> Option<&'static str> {
        match self {
            Leader::Pid(_) => None,
            Leader::Docker(_) => Some("docker"),
            Leader::Podman(_) => Some("podman"),
            Leader::Lxc(_) => Some("lxc"),
            Leader::Machinectl(_) => Some("machinectl"),
        }
    }

    /// The leader of `kind` named `name` (`kind` as in a target string).
    pub(crate) fn of_kind(kind: &str, name: &str) -> Option<Leader> {
        let name = name.to_owned();
        Some(match kind {
            "docker" => Leader::Docker(name),
            "podman" => Leader::Podman(name),
            "lxc" => Leader::Lxc(name),
            "machinectl" => Leader::Machinectl(name),
            _ => return None,
        })
    }

    /// The command that prints the leader's pid, with `tool` in place of the
    /// default client; `None` for a pid.
    pub(crate) fn lookup_command(&self, tool: Option<&Path>) -> Option<Vec<OsString>> {
        let (default, name) = match self {
            Leader::Pid(_) => return None,
            Leader::Docker(n) => ("docker", n),
            Leader::Podman(n) => ("podman", n),
            Leader::Lxc(n) => ("lxc-info", n),
            Leader::Machinectl(n) => ("machinectl", n),
        };
        let tool: OsString = tool.map_or_else(|| default.into(), |p| p.as_os_str().to_owned());
        let args: Vec<&str> = match self {
            Leader::Docker(_) | Leader::Podman(_) => vec!["inspect", "-f", "{{.State.Pid}}", name],
            Leader::Lxc(_) => vec!["-H", "-p", "-n", name],
            Leader::Machinectl(_) => vec!["show", "-p", "Leader", "--value", name],
            Leader::Pid(_) => return None,
        };
        let mut argv = vec![tool];
        argv.extend(args.into_iter().map(OsString::from));
        Some(argv)
    }
}

impl std::fmt::Display for Leader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Leader::Pid(p) => write!(f, "{p}"),
            Leader::Docker(n) | Leader::Podman(n) | Leader::Lxc(n) | Leader::Machinectl(n) => {
                write!(f, "{}:{n}", self.kind().unwrap_or_default())
            }
        }
    }
}

/// Options of a setns context.
///
/// ```no_run
/// # fn demo(router: mitogen::Router) -> mitogen::Result<()> {
/// use mitogen::Setns;
/// let app = router.start(None, Setns::podman("app").tool_path("/usr/local/bin/podman"))?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Setns {
    leader: Leader,
    tool: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
    connect_timeout: Duration,
    name: Option<String>,
}

impl Setns {
    fn of(leader: Leader) -> Setns {
        Setns {
            leader,
            tool: None,
            env: Vec::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            name: None,
        }
    }

    /// Enters the namespaces of any process (`setns:PID`).
    pub fn pid(pid: u32) -> Setns {
        Setns::of(Leader::Pid(pid))
    }

    /// Enters a docker container, found by name or id (`setns:docker:NAME`).
    pub fn docker(name: impl Into<String>) -> Setns {
        Setns::of(Leader::Docker(name.into()))
    }

    /// Enters a podman container (`setns:podman:NAME`).
    pub fn podman(name: impl Into<String>) -> Setns {
        Setns::of(Leader::Podman(name.into()))
    }

    /// Enters an LXC container (`setns:lxc:NAME`).
    pub fn lxc(name: impl Into<String>) -> Setns {
        Setns::of(Leader::Lxc(name.into()))
    }

    /// Enters a systemd-nspawn machine (`setns:machinectl:NAME`).
    pub fn machinectl(name: impl Into<String>) -> Setns {
        Setns::of(Leader::Machinectl(name.into()))
    }

    /// Enters the namespaces of `leader`.
    pub fn leader(leader: Leader) -> Setns {
        Setns::of(leader)
    }

    /// The client that finds the leader (default `docker`, `podman`,
    /// `lxc-info` or `machinectl` from `PATH`).
    pub fn tool_path(mut self, path: impl Into<PathBuf>) -> Setns {
        self.tool = Some(path.into());
        self
    }

    /// Sets an environment variable in the context. It starts with a fixed
    /// environment (`PATH`, `HOME=/root`, `USER`, `LOGNAME`), none of the
    /// caller's: a process in the container can read it.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Setns {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Time allowed to find the leader and start (default 30 s).
    pub fn connect_timeout(mut self, t: Duration) -> Setns {
        self.connect_timeout = t;
        self
    }

    /// Names the context (default: the hop as a target string, `setns:4242`
    /// or `setns:docker:web`).
    pub fn name(mut self, name: impl Into<String>) -> Setns {
        self.name = Some(name.into());
        self
    }

    pub(crate) fn name_ref(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.connect_timeout
    }

    pub(crate) fn default_name(&self) -> String {
        format!("setns:{}", self.leader)
    }

    /// The leader's pid: given, or asked of the container's client.
    fn find_leader(&self, name: &str, deadline: Instant) -> Result<u32> {
        let fail = |reason: String| Error::Connect {
            context: name.to_owned(),
            reason,
        };
        let argv = match self.leader {
            Leader::Pid(pid) => return Ok(pid),
            _ => self.leader.lookup_command(self.tool.as_deref()),
        };
        let Some((tool, args)) = argv.as_ref().and_then(|a| a.split_first()) else {
            return Err(fail("no way to find the leader".into()));
        };
        if let Leader::Docker(n) | Leader::Podman(n) | Leader::Lxc(n) | Leader::Machinectl(n) =
            &self.leader
        {
            if n.is_empty() || n.starts_with('-') {
                return Err(fail(format!("{n:?} is not a container name")));
            }
        }
        let shown = argv
            .iter()
            .flatten()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let out = run_with_deadline(Command::new(tool).args(args), deadline)
            .map_err(|e| fail(format!("running `{shown}`: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(fail(format!(
                "`{shown}` failed ({}): {}",
                out.status,
                stderr.trim()
            )));
        }
        match parse_pid(&stdout) {
            Some(0) => Err(fail(format!(
                "the container is not running (`{shown}` gives leader pid 0)"
            ))),
            Some(pid) => Ok(pid),
            None => Err(fail(format!(
                "`{shown}` printed no leader pid: {:?}",
                stdout.trim()
            ))),
        }
    }

    pub(crate) fn connect(
        self,
        router: &Arc<RouterInner>,
        id: Option<ContextId>,
    ) -> Result<Context> {
        let name = self.name.clone().unwrap_or_else(|| self.default_name());
        let deadline = Instant::now() + self.connect_timeout;
        enter::require_root(&name, "setns")?;
        let pid = self.find_leader(&name, deadline)?;
        let leader = crate::sys::open_leader(pid).map_err(|reason| Error::Connect {
            context: name.clone(),
            reason,
        })?;
        let timeout = deadline.saturating_duration_since(Instant::now());
        let how = Enter {
            name: &name,
            timeout,
            id,
            env: &self.env,
        };
        let (report_r, report_w) = enter::report_pipe()?;
        let mut entry = enter::entry(&how, leader.root, report_w)?;
        for (ns, fd) in leader.namespaces {
            match ns {
                Namespace::User => entry.user_ns = Some(fd),
                Namespace::Pid => {
                    entry.fork = true;
                    entry.namespaces.push((ns, fd));
                }
                _ => entry.namespaces.push((ns, fd)),
            }
        }
        entry.cwd = leader.cwd;
        entry.bounding = leader.bounding;
        enter::connect(router, &how, entry, report_r)
    }
}

/// The first whole number in `text` (a bare pid, or `PID: 1234`).
fn parse_pid(text: &str) -> Option<u32> {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|w| !w.is_empty())
        .and_then(|w| w.parse().ok())
}

/// Runs `cmd` (stdin closed, output captured) and waits for it until
/// `deadline`, killing it then.
fn run_with_deadline(
    cmd: &mut Command,
    deadline: Instant,
) -> std::io::Result<std::process::Output> {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Read both pipes on threads so a chatty client never blocks on a full
    // pipe while we wait for it.
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut o = Vec::new();
        if let Some(out) = out.as_mut() {
            let _ = out.take(1 << 20).read_to_end(&mut o);
        }
        o
    });
    let err_reader = std::thread::spawn(move || {
        let mut e = Vec::new();
        if let Some(err) = err.as_mut() {
            let _ = err.take(1 << 20).read_to_end(&mut e);
        }
        e
    });
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "it did not finish in time",
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok(std::process::Output {
        status,
        stdout: reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

impl From<Setns> for crate::methods::Method {
    fn from(s: Setns) -> crate::methods::Method {
        crate::methods::Method::Setns(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(l: &Leader, tool: Option<&str>) -> Vec<String> {
        l.lookup_command(tool.map(Path::new))
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn each_client_is_asked_with_its_own_command() {
        assert_eq!(
            argv(&Leader::Docker("c1".into()), None),
            ["docker", "inspect", "-f", "{{.State.Pid}}", "c1"]
        );
        assert_eq!(
            argv(&Leader::Podman("c1".into()), Some("/opt/podman")),
            ["/opt/podman", "inspect", "-f", "{{.State.Pid}}", "c1"]
        );
        assert_eq!(
            argv(&Leader::Lxc("web".into()), None),
            ["lxc-info", "-H", "-p", "-n", "web"]
        );
        assert_eq!(
            argv(&Leader::Machinectl("m".into()), None),
            ["machinectl", "show", "-p", "Leader", "--value", "m"]
        );
        assert!(Leader::Pid(1).lookup_command(None).is_none());
    }

    /// A container that stops after its namespaces were opened (here: its
    /// init killed before the start) fails the start at the last fork,
    /// named as such: the pid namespace takes no new process.
    #[test]
    fn a_namespace_whose_init_exited_is_named() {
        if !rustix::process::geteuid().is_root() {
            if mitogen_testkit::skip::skip_allowed() {
                println!("skipped: needs root (unshare)");
                return;
            }
            panic!("cannot run here: needs root (unshare)");
        }
        let mut unshare = Command::new("unshare")
            .args(["--pid", "--fork", "sleep", "60"])
            .spawn()
            .unwrap();
        let me = unshare.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        let init = loop {
            let kids = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"))
                .unwrap_or_default();
            let first = kids
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            let comm = std::fs::read_to_string(format!("/proc/{first}/comm")).unwrap_or_default();
            if comm.trim() == "sleep" {
                break first.parse::<u32>().unwrap();
            }
            assert!(Instant::now() < deadline, "the namespace did not start");
            std::thread::sleep(Duration::from_millis(10));
        };
        let leader = crate::sys::open_leader(init).unwrap();
        let _ = Command::new("kill")
            .args(["-KILL", &init.to_string()])
            .status();
        unshare.wait().unwrap();

        let (report_r, report_w) = enter::report_pipe().unwrap();
        let how = Enter {
            name: "t",
            timeout: Duration::from_secs(5),
            id: None,
            env: &[],
        };
        let mut entry = enter::entry(&how, leader.root, report_w).unwrap();
        for (ns, fd) in leader.namespaces {
            if ns == Namespace::Pid {
                entry.fork = true;
            }
            entry.namespaces.push((ns, fd));
        }
        let mut cmd = Command::new("/proc/self/exe");
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        // SAFETY: `Entry::enter` makes system calls only.
        unsafe { std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || entry.enter()) };
        let err = cmd.spawn().expect_err("started in a dead pid namespace");
        drop(cmd);
        assert_eq!(err.raw_os_error(), Some(libc::ENOMEM), "{err}");
        let mut said = String::new();
        use std::io::Read;
        let _ = std::fs::File::from(report_r).read_to_string(&mut said);
        assert!(
            said.contains("starting a process in the pid namespace (its init process has exited)"),
            "{said}"
        );
    }

    #[test]
    fn pids_are_read_from_each_clients_output() {
        assert_eq!(parse_pid("4242\n"), Some(4242));
        assert_eq!(parse_pid("PID:          4242\n"), Some(4242));
        assert_eq!(parse_pid("0\n"), Some(0));
        assert_eq!(parse_pid("<no value>\n"), None);
        assert_eq!(parse_pid(""), None);
    }

    #[test]
    fn names_read_as_target_strings() {
        assert_eq!(Setns::pid(7).default_name(), "setns:7");
        assert_eq!(Setns::docker("web").default_name(), "setns:docker:web");
        assert_eq!(Setns::machinectl("m").default_name(), "setns:machinectl:m");
    }

    #[test]
    fn a_client_that_fails_or_hangs_is_a_clear_error() {
        let s = Setns::docker("c1").tool_path("/bin/false");
        let e = s
            .find_leader("x", Instant::now() + Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`/bin/false inspect -f {{.State.Pid}} c1` failed"),
            "{e}"
        );
        let s = Setns::docker("c1").tool_path("/nonexistent/docker");
        let e = s
            .find_leader("x", Instant::now() + Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(e.contains("running `/nonexistent/docker"), "{e}");
        // `sleep` ignores the arguments it cannot parse? No: give it a script.
        let dir = std::env::temp_dir().join(format!("mitogen-setns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let slow = dir.join("slow");
        std::fs::write(&slow, "#!/bin/sh\nexec sleep 30\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).unwrap();
        let started = Instant::now();
        let e = Setns::docker("c1")
            .tool_path(&slow)
            .find_leader("x", Instant::now() + Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(e.contains("did not finish in time"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let e = Setns::docker("-x")
            .find_leader("x", Instant::now() + Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a container name"), "{e}");
    }
}
