//! `mitogen run` and `mitogen bench` against a real sshd that each test starts
//! on a random 127.0.0.1 port, with keys made for it in a temporary directory.
//!
//! They need root (sshd must switch to the login user) and openssh-server;
//! where either is missing they fail saying so, or print why and return where
//! `MITOGEN_TEST_ALLOW_SKIP=1` (never under `CI=true`; see docs/testing.md).

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";

/// Every `mitogen` the tests start is killed after this long: a wedged ssh
/// fails the test instead of hanging it.
const COMMAND_DEADLINE: Duration = Duration::from_secs(180);

/// A throw-away sshd; killed and its directory removed when dropped.
struct Sshd {
    dir: PathBuf,
    child: Child,
    port: u16,
    key: PathBuf,
}

fn is_root() -> bool {
    // The uid of /proc/self is this process's effective uid.
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
}

/// Why these tests cannot run here, if they cannot.
fn unavailable() -> Option<&'static str> {
    if !is_root() {
        Some("not root")
    } else if !Path::new(SSHD).exists() {
        Some("no /usr/sbin/sshd (openssh-server)")
    } else if !have("ssh") || !have("ssh-keygen") {
        Some("no ssh or ssh-keygen")
    } else {
        None
    }
}

/// Whether a test that cannot run here may return early instead of failing:
/// only where `MITOGEN_TEST_ALLOW_SKIP=1`, never when `CI=true` (the policy
/// of docs/testing.md). libtest has no "skipped", so such a test prints
/// `skipped: WHY` and shows as ok.
fn skip_allowed() -> bool {
    std::env::var("MITOGEN_TEST_ALLOW_SKIP").is_ok_and(|v| v == "1")
        && !std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Starts sshd for the calling test; when sshd cannot be run here, fails the
/// test saying what is missing, or returns from it where skipping is allowed.
macro_rules! sshd_or_skip {
    () => {
        match unavailable() {
            Some(why) if skip_allowed() => {
                eprintln!("skipped: {why}");
                return;
            }
            Some(why) => {
                panic!("cannot run here: {why} (set MITOGEN_TEST_ALLOW_SKIP=1 to skip instead)")
            }
            None => Sshd::start(),
        }
    };
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().expect("starting a helper");
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

extern "C" {
    fn prctl(option: i32, arg2: u64, arg3: u64, arg4: u64, arg5: u64) -> i32;
}

impl Sshd {
    fn start() -> Sshd {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mitogen-cli-sshd-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("cache")).unwrap();
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let key = dir.join("client_ed25519");
        for k in [dir.join("host_ed25519"), key.clone()] {
            run_ok(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                    .arg(k),
            );
        }
        std::fs::copy(key.with_extension("pub"), dir.join("authorized_keys")).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.display();
        // The sessions get their own cache and temporary directories, so the
        // benchmark's emptying of the cache touches nothing outside this test.
        std::fs::write(
            dir.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\n\
                 PidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\n\
                 StrictModes no\nUsePAM no\nPermitRootLogin yes\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 SetEnv XDG_CACHE_HOME={d}/cache TMPDIR={d}/tmp\n"
            ),
        )
        .unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let log = std::fs::File::create(dir.join("sshd.log")).unwrap();
        let mut cmd = Command::new(SSHD);
        cmd.arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; it makes the kernel stop sshd
        // if this test process dies without dropping the guard.
        unsafe {
            cmd.pre_exec(|| {
                const PR_SET_PDEATHSIG: i32 = 1;
                const SIGTERM: u64 = 15;
                prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("starting sshd");
        let mut sshd = Sshd {
            dir,
            child,
            port,
            key,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = sshd.child.try_wait().unwrap() {
                panic!("sshd exited ({status}): {}", sshd.log());
            }
            assert!(Instant::now() < deadline, "sshd is not listening on {port}");
            std::thread::sleep(Duration::from_millis(10));
        }
        sshd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    fn target(&self) -> String {
        format!("root@127.0.0.1:{}", self.port)
    }

    /// `-o` flags that reach this server with its key.
    fn options(&self) -> Vec<String> {
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
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the built `mitogen` with `args`, killing it at [`COMMAND_DEADLINE`].
fn mitogen(dir: &Path, args: &[String]) -> Output {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let (out_path, err_path) = (dir.join(format!("out.{n}")), dir.join(format!("err.{n}")));
    let mut child = Command::new(env!("CARGO_BIN_EXE_mitogen"))
        .args(args)
        .env_remove("MITOGEN_LOG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("starting mitogen");
    let deadline = Instant::now() + COMMAND_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
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
    Output {
        code: status.code(),
        stdout: std::fs::read_to_string(out_path).unwrap(),
        stderr: std::fs::read_to_string(err_path).unwrap(),
    }
}

fn args(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

#[test]
fn run_reaches_an_ssh_target_with_o_options() {
    let sshd = sshd_or_skip!();
    let target = sshd.target();
    let mut a = args(&["run", "--timeout", "120", "--connect-timeout", "60"]);
    a.extend(sshd.options());
    a.extend(args(&[&target, "--", "sh", "-c", "echo hi; id -u"]));
    let out = mitogen(&sshd.dir, &a);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .starts_with(&format!("{target}: hi\n{target}: 0\n")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!("[{target}] exit 0 in ")),
        "{}",
        out.stdout
    );
}

#[test]
fn run_uses_the_ssh_config_file_given_with_f() {
    let sshd = sshd_or_skip!();
    let config = sshd.dir.join("ssh_config");
    std::fs::write(
        &config,
        format!(
            "Host benchhost\n  HostName 127.0.0.1\n  Port {}\n  User root\n  IdentityFile {}\n  \
             IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n",
            sshd.port,
            sshd.key.display()
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let a = args(&[
        "run",
        "--timeout",
        "120",
        "-F",
        &config,
        "benchhost",
        "--",
        "echo",
        "ok",
    ]);
    let out = mitogen(&sshd.dir, &a);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.starts_with("benchhost: ok\n"), "{}", out.stdout);
}

#[test]
fn an_o_option_reaches_ssh_and_can_make_it_fail() {
    let sshd = sshd_or_skip!();
    let target = sshd.target();
    // The same options, but a key the server does not know: refused login.
    let mut a = args(&["run", "--timeout", "120"]);
    a.extend(args(&[
        "-o",
        "IdentityFile=/nonexistent/key",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
    ]));
    a.extend(args(&[&target, "--", "true"]));
    let out = mitogen(&sshd.dir, &a);
    assert_eq!(out.code, Some(3), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(&format!("[{target}] failed: ")),
        "{}",
        out.stderr
    );
}

#[test]
fn bench_over_ssh_adds_the_floors() {
    let sshd = sshd_or_skip!();
    let target = sshd.target();
    let mut a = args(&[
        "bench", "--json", "--quick", "--mib", "4", "--target", &target,
    ]);
    a.extend(sshd.options());
    let out = mitogen(&sshd.dir, &a);
    assert_eq!(
        out.code,
        Some(0),
        "{}\n{}\n{}",
        out.stdout,
        out.stderr,
        sshd.log()
    );
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    for key in [
        "connect_ms",
        "connect_cold_ms",
        "ssh_floor_ms",
        "rtt_us",
        "pipelined_calls_per_s",
        "throughput_mib_s",
        "cat_mib_s",
        "pull_mib_s",
    ] {
        let x = v[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing: {v}"));
        assert!(x > 0.0, "{key}: {v}");
    }
    assert!(v["child_rss_kib"].as_u64().unwrap() > 0, "{v}");
    // The cold samples emptied the session's own cache, then filled it.
    let cached = std::fs::read_dir(sshd.dir.join("cache/mitogen"))
        .unwrap()
        .count();
    assert!(cached > 0);
}

#[test]
fn bench_over_an_ssh_chain_adds_the_summed_floor() {
    let sshd = sshd_or_skip!();
    // ssh to the server, then from that hop to the same server again.
    let target = format!("{0}/{0}", sshd.target());
    let mut a = args(&[
        "bench", "--json", "--quick", "--mib", "4", "--target", &target,
    ]);
    a.extend(sshd.options());
    let out = mitogen(&sshd.dir, &a);
    assert_eq!(
        out.code,
        Some(0),
        "{}\n{}\n{}",
        out.stdout,
        out.stderr,
        sshd.log()
    );
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    for key in [
        "connect_ms",
        "floor_ms",
        "rtt_us",
        "pipelined_calls_per_s",
        "throughput_mib_s",
    ] {
        let x = v[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing: {v}"));
        assert!(x > 0.0, "{key}: {v}");
    }
    // The single-hop keys stay with single hops.
    for key in ["connect_cold_ms", "ssh_floor_ms", "cat_mib_s", "pull_mib_s"] {
        assert!(v.get(key).is_none(), "{key} present: {v}");
    }
}
