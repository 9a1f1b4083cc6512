//! The setns and chroot methods against namespaces and trees the tests make
//! themselves: a busybox-only root (Debian's `busybox-static`), and a leader
//! process that `unshare --mount --pid --net --uts --ipc --fork --root`
//! starts in it with a host name, a `/proc` and a tmpfs of its own. Needs
//! root (unshare, mount, mknod) and `setpriv` (util-linux).
//!
//! Each fixture removes what it made on drop, and the tests check that
//! nothing is left: no process of the namespace, no mount in the host's
//! table, no directory.
//!
//! The parts: `setns` (entering the leader, chains through it, errors) and
//! `chroot` (a tree with and without `/proc` and `/dev`, errors).

pub mod chroot;
pub mod setns;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use serde::{Deserialize, Serialize};

/// What a context sees of the system it runs in.
#[derive(Debug, Serialize, Deserialize)]
pub struct Inside {
    pub pid: u32,
    pub uid: u32,
    pub hostname: String,
    /// Network interfaces (`/proc/net/dev`), empty if unreadable.
    pub interfaces: Vec<String>,
    /// Mount points (`/proc/self/mounts`), `None` if unreadable (no /proc).
    pub mounts: Option<Vec<String>>,
    /// Whether `/MARKER` (a file only the test root has) exists.
    pub marker: bool,
    /// Whether this test program's source directory is visible.
    pub host_visible: bool,
    /// `CapBnd` of `/proc/self/status`.
    pub cap_bnd: Option<u64>,
    /// Whether `/dev/pts` is a directory (the host's `/dev` bound).
    pub dev_pts: bool,
    /// The process's environment variable names.
    pub env: Vec<String>,
    /// `/proc/self/uid_map`, whitespace collapsed.
    pub uid_map: String,
}

/// The file only the test roots have.
pub const MARKER: &str = "mitogen-ns-marker";

#[mitogen::remote]
pub fn inside() -> Inside {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    Inside {
        pid: std::process::id(),
        uid: rustix::process::getuid().as_raw(),
        hostname: rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned(),
        interfaces: std::fs::read_to_string("/proc/net/dev")
            .unwrap_or_default()
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(|n| n.trim().to_owned())
            .collect(),
        mounts: std::fs::read_to_string("/proc/self/mounts").ok().map(|m| {
            m.lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .map(str::to_owned)
                .collect()
        }),
        marker: Path::new("/").join(MARKER).exists(),
        host_visible: Path::new(env!("CARGO_MANIFEST_DIR")).exists(),
        cap_bnd: status
            .lines()
            .find_map(|l| l.strip_prefix("CapBnd:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok()),
        dev_pts: Path::new("/dev/pts").is_dir(),
        env: std::env::vars_os()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect(),
        uid_map: std::fs::read_to_string("/proc/self/uid_map")
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// A busybox-only root under `/var/lib/mitogen-ns/`: `bin/` with busybox
/// and its links, `dev/` with only `null`, an empty `proc/`, `inside/`,
/// `tmp/`, and the marker file. Removed on drop.
pub struct BusyRoot {
    pub dir: PathBuf,
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

impl BusyRoot {
    pub fn new(name: &str) -> Result<BusyRoot> {
        if !rustix::process::geteuid().is_root() {
            return Err(crate::harness::cannot_run("root (unshare, mount, mknod)"));
        }
        let busybox = Path::new("/bin/busybox");
        if !busybox.exists() {
            return Err(crate::harness::cannot_run("/bin/busybox (busybox-static)"));
        }
        let base = Path::new("/var/lib/mitogen-ns");
        std::fs::create_dir_all(base)?;
        std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o755))?;
        let dir = base.join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = BusyRoot { dir: dir.clone() };
        for sub in ["bin", "proc", "dev", "tmp", "inside", "root"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
        std::fs::copy(busybox, dir.join("bin/busybox"))?;
        std::fs::write(dir.join(MARKER), b"")?;
        run(Command::new("mknod")
            .args(["-m", "666"])
            .arg(dir.join("dev/null"))
            .args(["c", "1", "3"]))?;
        run(Command::new("chroot")
            .arg(&dir)
            .args(["/bin/busybox", "--install", "-s", "/bin"]))?;
        Ok(root)
    }
}

impl Drop for BusyRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Mount points of the host's mount table under `dir`.
pub fn host_mounts_under(dir: &Path) -> Result<Vec<String>> {
    let table = std::fs::read_to_string("/proc/self/mounts")?;
    let prefix = dir.display().to_string();
    Ok(table
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_owned)
        .collect())
}

/// A process in namespaces of its own (mount, pid, net, uts, ipc), rooted in
/// a [`BusyRoot`], with `/proc` and a tmpfs on `/inside` mounted there and
/// the host name [`NsLeader::hostname`]; its bounding set lacks
/// `CAP_SYS_MODULE` (`setpriv`), as a container's does. Killed (and with it
/// its namespaces and mounts) on drop.
pub struct NsLeader {
    unshare: Child,
    /// The leader (pid 1 of its namespace) as the host numbers it.
    pub pid: u32,
    pub hostname: String,
    pub root: BusyRoot,
}

/// `CAP_SYS_MODULE`, which the leader's bounding set lacks.
pub const CAP_SYS_MODULE: u32 = 16;

impl NsLeader {
    pub fn start(name: &str) -> Result<NsLeader> {
        NsLeader::start_with(name, &[])
    }

    /// [`start`](Self::start) with more `unshare` options (`--user`, …).
    pub fn start_with(name: &str, more: &[&str]) -> Result<NsLeader> {
        let root = BusyRoot::new(name)?;
        let hostname = format!("ns-{name}-{}", std::process::id() % 100_000);
        let script = format!(
            "mount -t proc proc /proc && mount -t tmpfs inside /inside && \
             hostname {hostname} && echo ready && exec sleep 1000"
        );
        let mut unshare = Command::new("setpriv")
            .arg("--bounding-set=-sys_module")
            .args([
                "unshare", "--mount", "--pid", "--net", "--uts", "--ipc", "--fork",
            ])
            .args(more)
            .arg(format!("--root={}", root.dir.display()))
            .args(["/bin/busybox", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting setpriv unshare")?;
        let out = unshare.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let leader = |unshare: &mut Child| -> Result<u32> {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .context("the leader did not get ready in 20 s")?;
            if line.trim() != "ready" {
                let _ = unshare.kill();
                let mut err = String::new();
                if let Some(mut e) = unshare.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                bail!("the leader did not start: {line:?} {err}");
            }
            let me = unshare.id();
            let children = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"))?;
            children
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
                .context("unshare has no child")
        };
        match leader(&mut unshare) {
            Ok(pid) => Ok(NsLeader {
                unshare,
                pid,
                hostname,
                root,
            }),
            Err(e) => {
                let _ = unshare.kill();
                let _ = unshare.wait();
                Err(e)
            }
        }
    }

    /// Kills the namespace and checks that nothing of it is left: no
    /// process, no mount under its root, no root directory.
    pub fn stop_and_check(mut self) -> Result<()> {
        let pid = self.pid;
        let dir = self.root.dir.clone();
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() {
            ensure!(Instant::now() < deadline, "the leader {pid} is still there");
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(self);
        ensure!(
            host_mounts_under(&dir)?.is_empty(),
            "mounts left under {}: {:?}",
            dir.display(),
            host_mounts_under(&dir)?
        );
        ensure!(!dir.exists(), "{} is left", dir.display());
        Ok(())
    }

    fn kill(&mut self) {
        // Pid 1 of the namespace: every process in it dies with it.
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

impl Drop for NsLeader {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Processes (other than zombies) whose namespace is that of `pid`: every
/// process left in the leader's pid namespace.
pub fn processes_in_pid_ns_of(pid: u32) -> Result<Vec<u32>> {
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid"))?;
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc")? {
        let Ok(p) = e?.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if std::fs::read_link(format!("/proc/{p}/ns/pid"))
            .ok()
            .as_ref()
            == Some(&ns)
        {
            out.push(p);
        }
    }
    Ok(out)
}
