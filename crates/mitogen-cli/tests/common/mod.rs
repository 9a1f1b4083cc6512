//! What the CLI tests that need a real sshd share: the throw-away server
//! with a directory of the test's own, and running the built `mitogen`
//! under a deadline. Each test file that uses it says `#[macro_use] mod
//! common;` (not every file uses every item).
#![allow(dead_code)]

pub mod pty;
pub mod scratch;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mitogen_testkit::sshd::Sshd as Server;

/// Every `mitogen` the tests start is killed after this long: a wedged ssh
/// fails the test instead of hanging it.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(180);

/// A throw-away sshd (the fixture the library's tests use too) and a
/// directory of this test's own: the sessions get their cache and temporary
/// directories there, so the benchmark's emptying of the cache touches
/// nothing outside this test. Both go when dropped.
pub struct Sshd {
    pub server: Server,
    pub dir: PathBuf,
    pub key: PathBuf,
    pub port: u16,
}

/// Starts sshd for the calling test; when sshd cannot be run here, fails the
/// test saying what is missing, or returns from it where skipping is allowed
/// (the rule of docs/testing.md; libtest has no "skipped", so such a test
/// prints `skipped: WHY` and shows as ok).
macro_rules! sshd_or_skip {
    () => {
        match $crate::common::Sshd::start() {
            Ok(sshd) => sshd,
            Err(e) => match e.downcast_ref::<mitogen_testkit::skip::Skipped>() {
                Some(skipped) => {
                    eprintln!("{skipped}");
                    return;
                }
                None => panic!("{e:#}"),
            },
        }
    };
}

impl Sshd {
    pub fn start() -> anyhow::Result<Sshd> {
        static N: AtomicU32 = AtomicU32::new(0);
        mitogen_testkit::sshd::require_root_and_sshd()?;
        let dir = std::env::temp_dir().join(format!(
            "mitogen-cli-sshd-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("cache"))?;
        std::fs::create_dir_all(dir.join("tmp"))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        let d = dir.display();
        let server =
            Server::start_with(&[&format!("SetEnv XDG_CACHE_HOME={d}/cache TMPDIR={d}/tmp")]);
        let server = match server {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        server.authorize("root")?;
        Ok(Sshd {
            key: server.client_key.clone(),
            port: server.port,
            server,
            dir,
        })
    }

    pub fn log(&self) -> String {
        self.server.log_tail()
    }

    pub fn target(&self) -> String {
        format!("root@{}:{}", self.server.address, self.port)
    }

    /// `-o` flags that reach this server with its key.
    pub fn options(&self) -> Vec<String> {
        [
            "StrictHostKeyChecking=no".to_owned(),
            "UserKnownHostsFile=/dev/null".to_owned(),
            format!("IdentityFile={}", self.key.display()),
            "IdentitiesOnly=yes".to_owned(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_owned(), o])
        .collect()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the built `mitogen` with `args`, killing it at [`COMMAND_DEADLINE`].
/// ssh connection reuse is off (`MITOGEN_REUSE=no`): each command logs in
/// afresh and leaves nothing behind, as the tests' login counts expect; the
/// reuse tests turn it on with `--reuse`.
pub fn mitogen(dir: &Path, args: &[String]) -> Output {
    mitogen_with(dir, args, &[])
}

/// [`mitogen`] with more environment variables (after `MITOGEN_REUSE=no`,
/// which they may replace).
pub fn mitogen_with(dir: &Path, args: &[String], env: &[(&str, &std::ffi::OsStr)]) -> Output {
    mitogen_written_with(dir, args, env).0
}

/// [`mitogen`], and the bytes the process wrote through system calls in all
/// (`wchar` of `/proc/PID/io`, read once it has exited and before it is
/// reaped; `None` if that could not be read): in a copy through one ssh hop,
/// what it sent over that first link, the ssh client's stdin.
pub fn mitogen_written(dir: &Path, args: &[String]) -> (Output, Option<u64>) {
    mitogen_written_with(dir, args, &[])
}

/// [`mitogen_written`] with more environment variables, as [`mitogen_with`].
pub fn mitogen_written_with(
    dir: &Path,
    args: &[String],
    env: &[(&str, &std::ffi::OsStr)],
) -> (Output, Option<u64>) {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let (out_path, err_path) = (dir.join(format!("out.{n}")), dir.join(format!("err.{n}")));
    let mut child = Command::new(env!("CARGO_BIN_EXE_mitogen"))
        .args(args)
        .env_remove("MITOGEN_LOG")
        .env_remove("RUST_LOG")
        .env("MITOGEN_REUSE", "no")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("starting mitogen");
    let deadline = Instant::now() + COMMAND_DEADLINE;
    let written = loop {
        // An exited child stays a zombie, its counts readable, until reaped.
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id()));
        let zombie = stat.map_or(true, |s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        });
        if zombie {
            break std::fs::read_to_string(format!("/proc/{}/io", child.id()))
                .ok()
                .and_then(|io| {
                    io.lines()
                        .find_map(|l| l.strip_prefix("wchar: "))
                        .and_then(|n| n.trim().parse::<u64>().ok())
                });
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "mitogen {args:?} did not finish in {COMMAND_DEADLINE:?}; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let status = child.wait().unwrap();
    let out = Output {
        code: status.code(),
        stdout: std::fs::read_to_string(out_path).unwrap(),
        stderr: std::fs::read_to_string(err_path).unwrap(),
    };
    (out, written)
}

impl Sshd {
    /// Logins this sshd has accepted so far.
    pub fn logins(&self) -> usize {
        std::fs::read_to_string(self.server.dir.join("sshd.log"))
            .unwrap_or_default()
            .matches("Accepted publickey")
            .count()
    }
}
