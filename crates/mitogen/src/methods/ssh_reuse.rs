//! ssh connection reuse ([`SshReuse`]): ssh's own `ControlMaster`, so that a
//! second connection to a host within a while of the first rides the first's
//! login instead of making one of its own (key exchange and authentication:
//! 100 ms and more on loopback, several round trips over a slow link).
//!
//! Only the options are decided here; ssh does the rest. Whoever can connect
//! to a control socket gets a full login as its user, so a socket is only
//! ever made in a directory that is this user's alone, checked before every
//! use (owner, mode, not a link), and reuse is left off, with a debug log
//! saying why, whenever anything is doubtful.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bytes a Unix socket's path may have (`sun_path[108]` less its NUL).
const SUN_PATH_MAX: usize = 107;

/// What ssh adds to the directory for its sockets: `/`, `%C` (40 hex digits)
/// and, while the master sets up, `.` and 16 random characters (the name it
/// binds before renaming).
const SOCKET_NAME_LEN: usize = 1 + 40 + 1 + 16;

/// Time allowed for `ssh -G` (it reads configuration files, and may run a
/// `Match exec` command of the user's).
const CONFIG_QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connection reuse for an [`Ssh`](super::Ssh) hop: ssh's
/// `ControlMaster=auto`, `ControlPath=DIR/%C`, `ControlPersist=SECS`.
///
/// The first connection to a host (user, host, port) becomes a master that
/// stays in the background for `persist` after its last session ends; any
/// connection within that time, by this process or a later one, runs over
/// it without logging in again. Off unless asked for (the `mitogen` command
/// turns it on for the hops it starts itself).
///
/// ```no_run
/// # fn demo(router: mitogen::Router) -> mitogen::Result<()> {
/// use std::time::Duration;
/// use mitogen::{Ssh, SshReuse};
/// // A directory of this user's alone, mode 0700 (it is checked).
/// let reuse = SshReuse::new("/run/user/1000/mitogen/ssh", Duration::from_secs(60));
/// let web = router.ssh(Ssh::new("web1").reuse(reuse))?;
/// # Ok(()) }
/// ```
///
/// Left off (a debug log says why), the connection being made as without
/// it, when:
/// * the ssh options given ([`Ssh::ssh_args`](super::Ssh::ssh_args)) name
///   `ControlMaster`, `ControlPath` or `ControlPersist`: the caller's choice;
/// * the ssh configuration (`-F`, or `~/.ssh/config` and the system's) sets
///   any of them for this host, as `ssh -G` reports it: the user's own
///   multiplexing is used as configured, not overridden by a command-line
///   option (about 4 ms, once per connection);
/// * the directory is not a directory of this user's (a link, another
///   owner), or any group or other permission bit is set on it: another
///   account could otherwise place a socket there that ssh would talk to,
///   or connect to ours;
/// * the socket's path would be longer than a Unix socket's address holds
///   (the directory longer than 49 bytes), or the directory's name has
///   white space or quotes ssh's option parser would split on;
/// * `persist` is zero (to ssh, `ControlPersist=0` is "for ever").
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SshReuse {
    dir: PathBuf,
    persist: Duration,
}

impl SshReuse {
    /// Masters in `dir` (which must exist and be this user's alone), each
    /// kept for `persist` (whole seconds, rounded up) after its last session.
    pub fn new(dir: impl Into<PathBuf>, persist: Duration) -> SshReuse {
        SshReuse {
            dir: dir.into(),
            persist,
        }
    }

    /// The directory of the control sockets.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How long a master stays after its last session.
    pub fn persist(&self) -> Duration {
        self.persist
    }

    /// ssh's `ControlPersist` value: whole seconds, at least 1.
    fn persist_secs(&self) -> u64 {
        let s = self.persist.as_secs();
        if self.persist.subsec_nanos() > 0 {
            s + 1
        } else {
            s
        }
    }

    /// The `-o` options that turn reuse on, or why it stays off. `ssh_args`
    /// are the caller's own ssh arguments; `query` is the ssh command (every
    /// option of the connection, no remote command) that `-G` is given to.
    pub(crate) fn options(
        &self,
        ssh_args: &[String],
        query: Command,
    ) -> Result<Vec<String>, String> {
        if let Some(o) = ssh_args.iter().find(|a| names_control_option(a)) {
            return Err(format!("the ssh options given choose ({o})"));
        }
        if self.persist.is_zero() {
            return Err("a persist time of zero".into());
        }
        let dir = check_dir(&self.dir)?;
        if let Some(line) = configured_control(query)? {
            return Err(format!("the ssh configuration chooses ({line})"));
        }
        Ok([
            "ControlMaster=auto".to_owned(),
            format!("ControlPath={dir}/%C"),
            format!("ControlPersist={}s", self.persist_secs()),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_owned(), o])
        .collect())
    }
}

/// Whether an ssh argument is a `-o` value (or `-oVALUE`) setting one of
/// the options reuse sets. Option names are case-insensitive to ssh, and
/// end at `=` or white space.
fn names_control_option(arg: &str) -> bool {
    let value = arg.strip_prefix("-o").unwrap_or(arg).trim_start();
    let name = value
        .split(|c: char| c == '=' || c.is_whitespace())
        .next()
        .unwrap_or("");
    ["controlmaster", "controlpath", "controlpersist"]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
}

/// Checks that `dir` is a directory of this user's alone, and returns it as
/// ssh's `ControlPath` takes it (`%` doubled).
pub(crate) fn check_dir(dir: &Path) -> Result<String, String> {
    let shown = dir.display();
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{shown}: {e}"))?;
    if !meta.file_type().is_dir() {
        return Err(format!("{shown} is not a directory (a link is refused)"));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!(
            "{shown} belongs to uid {}, not to this user ({me})",
            meta.uid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{shown} has mode {:o}: group or others have access (0700 wanted)",
            meta.mode() & 0o7777
        ));
    }
    let text = dir
        .to_str()
        .ok_or_else(|| format!("{shown} is not UTF-8"))?;
    if text.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '\\') {
        return Err(format!("{shown} has white space or quotes in its name"));
    }
    if text.len() + SOCKET_NAME_LEN > SUN_PATH_MAX {
        return Err(format!(
            "{shown} is too long for a socket in it ({} bytes, at most {})",
            text.len(),
            SUN_PATH_MAX - SOCKET_NAME_LEN
        ));
    }
    Ok(text.replace('%', "%%"))
}

/// What `ssh -G` says the configuration sets of the three options (the first
/// line found), if anything; an error if ssh cannot tell in time.
fn configured_control(mut query: Command) -> Result<Option<String>, String> {
    let text = run_with_deadline(&mut query, CONFIG_QUERY_TIMEOUT)?;
    Ok(text
        .lines()
        .find(|l| {
            let mut words = l.split_whitespace();
            let (key, value) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            match key {
                "controlmaster" => value != "false",
                "controlpath" => value != "none",
                "controlpersist" => value != "no",
                _ => false,
            }
        })
        .map(str::to_owned))
}

/// Runs `cmd` (stdin and stderr `/dev/null`) and returns its standard output,
/// killing it if it is not done within `timeout`.
fn run_with_deadline(cmd: &mut Command, timeout: Duration) -> Result<String, String> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    use std::io::Read;

    let deadline = Instant::now() + timeout;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run ssh -G: {e}"))?;
    let mut out = Vec::new();
    let mut failed = None;
    if let Some(mut stdout) = child.stdout.take() {
        let mut buf = [0u8; 8192];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ts = Timespec::try_from(left).unwrap_or(Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            });
            let mut fds = [PollFd::new(&stdout, PollFlags::IN)];
            match poll(&mut fds, Some(&ts)) {
                Ok(0) => {
                    failed = Some(format!("ssh -G took more than {timeout:?}"));
                    break;
                }
                Ok(_) => match stdout.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) if out.len() < 1 << 20 => out.extend_from_slice(&buf[..n]),
                    Ok(_) => {
                        failed = Some("ssh -G printed too much".into());
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        failed = Some(format!("reading ssh -G: {e}"));
                        break;
                    }
                },
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    failed = Some(format!("waiting for ssh -G: {e}"));
                    break;
                }
            }
        }
    }
    if failed.is_some() {
        let _ = child.kill();
    }
    // At its output's end ssh has exited (or was just killed): no wait.
    let status = child.wait().map_err(|e| format!("ssh -G: {e}"))?;
    if let Some(f) = failed {
        return Err(f);
    }
    if !status.success() {
        return Err(format!("ssh -G failed ({status})"));
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The `-G` query for a command built as [`Ssh::command`](super::Ssh) builds
/// it (same program, same options, same host), without its remote command.
pub(crate) fn config_query(program: &std::ffi::OsStr, args: &[OsString]) -> Command {
    let mut cmd = Command::new(program);
    cmd.arg("-G").args(args);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn control_options_are_recognised_in_any_spelling() {
        for a in [
            "ControlPath=/x/%C",
            "controlmaster=no",
            "-oControlPersist=5",
            "CONTROLPATH /x",
            " ControlMaster no",
        ] {
            assert!(names_control_option(a), "{a}");
        }
        for a in ["IdentityFile=/k", "ControlPathX=1", "Port=22", "-o"] {
            assert!(!names_control_option(a), "{a}");
        }
    }

    #[test]
    fn only_a_private_directory_of_this_users_is_taken() {
        let base = std::env::temp_dir().join(format!("mr-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir(&base).unwrap();
        let mode = |m| std::fs::set_permissions(&base, std::fs::Permissions::from_mode(m));
        mode(0o700).unwrap();
        assert_eq!(check_dir(&base).unwrap(), base.to_str().unwrap());
        for m in [0o777, 0o750, 0o701, 0o720] {
            mode(m).unwrap();
            assert!(check_dir(&base).unwrap_err().contains("mode"), "{m:o}");
        }
        mode(0o700).unwrap();
        let link = base.with_extension("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&base, &link).unwrap();
        assert!(check_dir(&link).unwrap_err().contains("not a directory"));
        let long = base.join("a".repeat(60));
        std::fs::create_dir(&long).unwrap();
        mode(0o700).unwrap();
        std::fs::set_permissions(&long, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(check_dir(&long).unwrap_err().contains("too long"));
        assert!(check_dir(&base.join("missing")).is_err());
        std::fs::remove_file(&link).unwrap();
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_percent_is_doubled_and_persist_rounded_up() {
        let dir = std::env::temp_dir().join(format!("mr-{}-50%", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let checked = check_dir(&dir);
        std::fs::remove_dir(&dir).unwrap();
        assert!(checked.unwrap().ends_with("-50%%"));
        let r = SshReuse::new("/x", Duration::from_millis(1500));
        assert_eq!(r.persist_secs(), 2);
        assert_eq!(
            SshReuse::new("/x", Duration::from_secs(60)).persist_secs(),
            60
        );
    }
}
