//! A real `sshd` on a random port, and the local users tests log in as.
//!
//! [`Sshd::start`] makes a fresh temp dir with a host key and client keys
//! (`ssh-keygen`), writes a config (`AuthorizedKeysFile DIR/keys/%u.keys`,
//! `StrictModes no`, `UsePAM no`, no passwords, root allowed), starts
//! `/usr/sbin/sshd -D -e -f CONFIG` and waits until the port accepts. Dropping
//! it kills sshd and removes the dir. sshd gets a parent-death signal, so a
//! test run that dies leaves no daemon behind. [`Sshd::start_with`] adds
//! config lines that override those (e.g. to allow passwords);
//! [`Sshd::start_in_netns`] runs it in a network namespace, on a given address;
//! [`Sshd::restart`] kills it and its sessions and starts it again on the same
//! port.
//!
//! This needs root (sshd, `useradd`, `mount`) and openssh-server; without them
//! the tests fail with a message saying so, or are skipped where
//! [`skip_allowed`](crate::skip::skip_allowed): they never pass silently.

use std::io::{BufRead, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};

/// Where the ssh server binary is (Debian's openssh-server).
pub const SSHD: &str = "/usr/sbin/sshd";

/// A running sshd and the keys to reach it.
pub struct Sshd {
    /// Temp dir holding keys, config, logs.
    pub dir: PathBuf,
    /// Port it listens on, on [`address`](Self::address).
    pub port: u16,
    /// Address it listens on: 127.0.0.1, or the one given to
    /// [`start_in_netns`](Self::start_in_netns).
    pub address: String,
    /// The client key every test user accepts.
    pub client_key: PathBuf,
    /// A second client key that no user accepts.
    pub wrong_key: PathBuf,
    /// The server's host public key (`ssh-ed25519 AAAA…`).
    pub host_pub: String,
    /// Some other ed25519 public key, for a host key that does not match.
    pub other_pub: String,
    /// The network namespace sshd runs in, if not this one (for a restart).
    netns: Option<String>,
    child: Child,
}

/// [`run`](crate::command::run) with nothing on stdin.
fn run(cmd: &mut Command) -> Result<String> {
    crate::command::run(cmd, None)
}

/// Fails unless this process can run the ssh tests (root, sshd installed).
pub fn require_root_and_sshd() -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        return Err(crate::skip::cannot_run(
            "the ssh tests need root (they start sshd and create users); \
             CI runs them as root on a fresh Debian machine",
        ));
    }
    if !Path::new(SSHD).exists() {
        return Err(crate::skip::cannot_run(format!(
            "{SSHD} is missing: install openssh-server (.ci/run does)"
        )));
    }
    for tool in ["ssh", "ssh-keygen", "useradd"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
            .unwrap_or(false)
            || Path::new("/usr/sbin").join(tool).exists();
        if !found {
            return Err(crate::skip::cannot_run(format!(
                "{tool} is missing: the ssh tests need openssh and passwd"
            )));
        }
    }
    Ok(())
}

fn keygen(path: &Path) -> Result<String> {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "mitogen-test", "-f"])
        .arg(path))?;
    let public = std::fs::read_to_string(path.with_extension("pub"))?;
    // "ssh-ed25519 AAAA… comment" -> type and key only.
    Ok(public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" "))
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
pub fn closed_port() -> Result<u16> {
    free_port()
}

fn temp_dir(prefix: &str) -> Result<PathBuf> {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}-{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Users other than root read their authorized keys from here.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

impl Sshd {
    /// Starts a fresh sshd; fails with a clear message when that is impossible.
    pub fn start() -> Result<Sshd> {
        Self::start_with(&[])
    }

    /// [`start`](Self::start) with more `sshd_config` lines, such as
    /// `PasswordAuthentication yes`. They come before the fixture's own, and
    /// sshd keeps the first value it reads for a keyword, so they override
    /// them.
    pub fn start_with(config: &[&str]) -> Result<Sshd> {
        Self::start_at(None, "127.0.0.1", config)
    }

    /// [`start_with`](Self::start_with), but sshd runs in the network
    /// namespace `netns` (`ip netns exec`) and listens on `address` there,
    /// which must be reachable from this namespace (e.g. over a veth pair).
    pub fn start_in_netns(netns: &str, address: &str, config: &[&str]) -> Result<Sshd> {
        Self::start_at(Some(netns), address, config)
    }

    fn start_at(netns: Option<&str>, address: &str, config: &[&str]) -> Result<Sshd> {
        require_root_and_sshd()?;
        std::fs::create_dir_all("/run/sshd").context("creating /run/sshd")?;
        let dir = temp_dir("mitogen-sshd")?;
        let cleanup = |e: anyhow::Error, dir: &Path| {
            let _ = std::fs::remove_dir_all(dir);
            e
        };
        let keys = (|| -> Result<_> {
            let host_pub = keygen(&dir.join("host_ed25519"))?;
            keygen(&dir.join("client"))?;
            let other_pub = keygen(&dir.join("wrong"))?;
            std::fs::create_dir(dir.join("keys"))?;
            Ok((host_pub, other_pub))
        })();
        let (host_pub, other_pub) = keys.map_err(|e| cleanup(e, &dir))?;
        let mut last = None;
        for _ in 0..5 {
            match Self::spawn(&dir, config, netns, address) {
                Ok((child, port)) => {
                    return Ok(Sshd {
                        client_key: dir.join("client"),
                        wrong_key: dir.join("wrong"),
                        dir,
                        port,
                        address: address.to_owned(),
                        host_pub,
                        other_pub,
                        netns: netns.map(str::to_owned),
                        child,
                    })
                }
                Err(e) => last = Some(e),
            }
        }
        let e = last.unwrap_or_else(|| anyhow!("sshd did not start"));
        Err(cleanup(e, &dir))
    }

    /// Writes `sshd_config` for a fresh free port and starts sshd on it; the
    /// caller retries on failure, as the port may be taken in between.
    fn spawn(
        dir: &Path,
        extra: &[&str],
        netns: Option<&str>,
        address: &str,
    ) -> Result<(Child, u16)> {
        let port = free_port()?;
        let config = dir.join("sshd_config");
        let d = dir.display();
        let mut text: String = extra.iter().map(|l| format!("{l}\n")).collect();
        text.push_str(&format!(
            "Port {port}\n\
                 ListenAddress {address}\n\
                 HostKey {d}/host_ed25519\n\
                 PidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/keys/%u.keys\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\n\
                 PermitRootLogin yes\n\
                 MaxStartups 50\n\
                 MaxSessions 50\n\
                 LogLevel INFO\n"
        ));
        std::fs::write(&config, text)?;
        Ok((Self::launch(dir, netns, address, port)?, port))
    }

    /// Starts sshd on the config already written in `dir` and waits until
    /// `port` accepts: the part of [`spawn`](Self::spawn) that
    /// [`restart`](Self::restart) repeats on the same port. The log is
    /// appended to, so a restart keeps what the first sshd wrote.
    fn launch(dir: &Path, netns: Option<&str>, address: &str, port: u16) -> Result<Child> {
        let config = dir.join("sshd_config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("sshd.log"))?;
        // `ip netns exec` enters the namespace and execs sshd (no fork in
        // between), so the child is sshd itself and keeps its death signal.
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, SSHD]);
                c
            }
            None => Command::new(SSHD),
        };
        cmd.arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: only an async-signal-safe prctl between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::TERM,
                ))?;
                Ok(())
            });
        }
        let mut child = cmd.spawn().with_context(|| format!("starting {SSHD}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let at = std::net::SocketAddr::new(address.parse()?, port);
            if TcpStream::connect_timeout(&at, Duration::from_secs(1)).is_ok() {
                return Ok(child);
            }
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default();
                bail!("sshd exited ({status}) before listening on {port}: {log}");
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("sshd did not listen on {port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Restarts sshd the way a service manager that kills the unit's whole
    /// control group does (systemd's `restart` with the default
    /// `KillMode=control-group`): SIGTERM to the listener and to every sshd
    /// process below it, the per-connection sessions, all at once; then,
    /// once they have exited (SIGKILL after 5 s, as systemd does after its
    /// stop timeout), sshd again on the same port with the same keys and
    /// config, waiting until it accepts. The users' own processes below the
    /// sessions are not sshd and are not signalled (with pam_systemd they are
    /// in a session scope, outside sshd's group): what happens to them is
    /// what the tests check. Returns the pids signalled, the listener first.
    ///
    /// Why: a hop whose sshd is restarted under a live connection is one of
    /// the ways a hop dies; killing only the ssh client or cutting the
    /// network does not show what the far side does when its sshd goes.
    pub fn restart(&mut self) -> Result<Vec<u32>> {
        let listener = self.child.id();
        let mut pids = vec![listener];
        pids.extend(
            crate::proc::descendants(listener)
                .into_iter()
                .filter(|&pid| {
                    std::fs::read_link(format!("/proc/{pid}/exe"))
                        .is_ok_and(|exe| exe == Path::new(SSHD))
                }),
        );
        for &pid in &pids {
            crate::proc::kill(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait()?.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        for &pid in &pids[1..] {
            if !crate::proc::wait_dead(pid, deadline.saturating_duration_since(Instant::now())) {
                crate::proc::kill(pid, rustix::process::Signal::KILL);
            }
        }
        if self.child.try_wait()?.is_none() {
            let _ = self.child.kill();
        }
        self.child.wait()?;
        self.child = Self::launch(&self.dir, self.netns.as_deref(), &self.address, self.port)
            .context("starting sshd again on the same port")?;
        Ok(pids)
    }

    /// Lets `user` log in with [`client_key`](Self::client_key).
    pub fn authorize(&self, user: &str) -> Result<()> {
        let public = std::fs::read_to_string(self.client_key.with_extension("pub"))?;
        let path = self.dir.join("keys").join(format!("{user}.keys"));
        std::fs::write(&path, public)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        Ok(())
    }

    /// A `known_hosts` file whose entry for this server has `key`.
    pub fn known_hosts(&self, name: &str, key: Option<&str>) -> Result<PathBuf> {
        let path = self.dir.join(name);
        let mut f = std::fs::File::create(&path)?;
        if let Some(key) = key {
            writeln!(f, "[{}]:{} {key}", self.address, self.port)?;
        }
        Ok(path)
    }

    /// The last lines sshd logged (for failure messages).
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Runs plain `ssh user@server COMMAND` and returns its stdout.
    pub fn plain_ssh(&self, user: &str, command: &str) -> Result<String> {
        self.authorize(user)?;
        let out = Command::new("ssh")
            .args(["-F", "/dev/null", "-o", "BatchMode=yes"])
            .args(["-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
            .arg("-i")
            .arg(&self.client_key)
            .args(["-p", &self.port.to_string(), "-l", user, &self.address])
            .arg(command)
            .stdin(Stdio::null())
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A local account for the tests.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub home: PathBuf,
}

impl User {
    /// The per-user cache directories the first stage tries, in order (the
    /// fallbacks are named by uid).
    pub fn cache_dirs(&self) -> [PathBuf; 3] {
        [
            self.home.join(".cache/mitogen"),
            PathBuf::from(format!("/tmp/mitogen-{}", self.uid)),
            PathBuf::from(format!("/dev/shm/mitogen-{}", self.uid)),
        ]
    }

    /// Empties every cache directory of this user.
    pub fn clear_cache(&self) -> Result<()> {
        for d in self.cache_dirs() {
            match std::fs::remove_dir_all(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", d.display())),
            }
        }
        Ok(())
    }

    /// Files in the user's home as the user owns them.
    pub fn chown(&self, path: &Path) -> Result<()> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.uid))?;
        Ok(())
    }
}

fn lookup(name: &str) -> Result<Option<User>> {
    let f = std::fs::File::open("/etc/passwd")?;
    for line in std::io::BufReader::new(f).lines() {
        let line = line?;
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 7 && fields[0] == name {
            return Ok(Some(User {
                name: name.to_owned(),
                uid: fields[2].parse()?,
                home: PathBuf::from(fields[5]),
            }));
        }
    }
    Ok(None)
}

/// The root account.
pub fn root() -> Result<User> {
    lookup("root")?.ok_or_else(|| anyhow!("no root in /etc/passwd"))
}

/// Makes sure the account `name` exists with login shell `shell` and a home
/// owned by it, mode 0755, and that sshd accepts it (an account that
/// `useradd` creates is "locked", which sshd refuses without PAM).
pub fn user(name: &str, shell: &str) -> Result<User> {
    require_root_and_sshd()?;
    if lookup(name)?.is_none() {
        let r = run(Command::new("useradd").args(["-m", "-s", shell, name]));
        // Another run may have created it meanwhile.
        if r.is_err() && lookup(name)?.is_none() {
            r?;
        }
    }
    run(Command::new("usermod").args(["-s", shell, "-p", "*", name]))?;
    let u = lookup(name)?.ok_or_else(|| anyhow!("useradd made no {name}"))?;
    std::fs::create_dir_all(&u.home)?;
    u.chown(&u.home)?;
    std::fs::set_permissions(&u.home, std::fs::Permissions::from_mode(0o755))?;
    Ok(u)
}

/// [`user`] with a real password (`chpasswd`, on stdin), for an sshd that
/// allows password logins: without PAM, sshd checks it against the hash in
/// `/etc/shadow`.
pub fn user_with_password(name: &str, shell: &str, password: &str) -> Result<User> {
    let u = user(name, shell)?;
    let mut child = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running chpasswd")?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin for chpasswd"))?
        .write_all(format!("{name}:{password}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "chpasswd for {name} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(u)
}
