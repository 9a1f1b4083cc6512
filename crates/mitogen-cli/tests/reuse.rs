//! ssh connection reuse between commands (`--reuse`, `--no-reuse`) and
//! `--become`, against a real sshd on loopback, real ssh masters, and real
//! sudo and su.
//!
//! Each test gives `mitogen` a runtime directory of its own
//! (`XDG_RUNTIME_DIR`), so its control sockets are its own, and ends the
//! masters left in it when done.

#[macro_use]
mod common;

use std::ffi::OsStr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::scratch::{assert_code, strings, Scratch};
use common::{mitogen_with, Output, Sshd};

/// A private runtime directory (`XDG_RUNTIME_DIR`) for one test's commands;
/// the ssh masters in it are told to exit when it is dropped.
struct Runtime(PathBuf);

impl Runtime {
    fn new() -> Runtime {
        static N: AtomicU32 = AtomicU32::new(0);
        // Short: a socket's path must fit in 107 bytes.
        let dir = PathBuf::from(format!(
            "/tmp/mr-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        Runtime(dir)
    }

    /// Where `mitogen` keeps its control sockets under this runtime directory.
    fn control_dir(&self) -> PathBuf {
        self.0.join("mitogen/ssh")
    }

    /// The sockets in the control directory.
    fn sockets(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.control_dir()) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_socket()))
            .map(|e| e.path())
            .collect()
    }

    /// Runs `mitogen ARGS` in `dir` with this runtime directory.
    fn run(&self, dir: &Path, args: &[String]) -> Output {
        mitogen_with(dir, args, &[("XDG_RUNTIME_DIR", self.0.as_os_str())])
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        for s in self.sockets() {
            let _ = control(&s, "exit");
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `ssh -O COMMAND` on the master at `socket`: its exit status and stderr.
fn control(socket: &Path, command: &str) -> (bool, String) {
    let out = Command::new("ssh")
        .args(["-F", "/dev/null", "-O", command, "-o"])
        .arg(format!("ControlPath={}", socket.display()))
        .arg("unused")
        .output()
        .expect("running ssh -O");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The pid of the master listening at `socket`, if one is.
fn master_pid(socket: &Path) -> Option<u32> {
    let (ok, text) = control(socket, "check");
    let pid = text.split("pid=").nth(1)?.split(')').next()?;
    ok.then(|| pid.parse().ok()).flatten()
}

/// `mitogen run [EXTRA] TARGET -- CMD` against `sshd`, with its key.
fn run_args(sshd: &Sshd, extra: &[&str], cmd: &[&str]) -> Vec<String> {
    let mut a = strings(&["run", "--timeout", "60"]);
    a.extend(strings(extra));
    a.extend(sshd.options());
    a.push(sshd.target());
    a.push("--".into());
    a.extend(strings(cmd));
    a
}

/// Waits up to `limit` for `done`.
fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    done()
}

#[test]
fn a_second_run_rides_the_first_login_and_the_first_does_not_wait_for_it() {
    let sshd = sshd_or_skip!();
    let rt = Runtime::new();
    let before = sshd.logins();
    let args = run_args(&sshd, &["--reuse", "30"], &["echo", "hi"]);

    let t = Instant::now();
    let out = rt.run(&sshd.dir, &args);
    let cold = t.elapsed();
    assert_code(&out, 0);
    assert!(out.stdout.contains(": hi\n"), "{}", out.stdout);
    // The command is done, and the login it made is still there: it did not
    // wait for the master, which kept no pipe of ours open either.
    let sockets = rt.sockets();
    assert_eq!(sockets.len(), 1, "{sockets:?}");
    assert!(master_pid(&sockets[0]).is_some(), "no master after the run");
    assert_eq!(sshd.logins() - before, 1, "{}", sshd.log());

    let t = Instant::now();
    let out = rt.run(&sshd.dir, &args);
    let warm = t.elapsed();
    assert_code(&out, 0);
    assert!(out.stdout.contains(": hi\n"), "{}", out.stdout);
    assert_eq!(sshd.logins() - before, 1, "a second login: {}", sshd.log());
    eprintln!("mitogen run -- echo hi: first {cold:?}, second (reused) {warm:?}");

    // The directories are made private.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
    assert_eq!(mode(&rt.control_dir()), 0o700);
    assert_eq!(mode(&rt.0.join("mitogen")), 0o700);
}

#[test]
fn no_reuse_logs_in_each_time_and_leaves_nothing() {
    let sshd = sshd_or_skip!();
    let rt = Runtime::new();
    let before = sshd.logins();
    for flag in ["--no-reuse", "--no-reuse", "--reuse=0"] {
        let out = rt.run(&sshd.dir, &run_args(&sshd, &[flag], &["true"]));
        assert_code(&out, 0);
    }
    assert_eq!(sshd.logins() - before, 3, "{}", sshd.log());
    assert!(rt.sockets().is_empty(), "{:?}", rt.sockets());

    // MITOGEN_REUSE sets the default, an option wins over it.
    let env = |v: &str| {
        let a = run_args(&sshd, &[], &["true"]);
        mitogen_with(
            &sshd.dir,
            &a,
            &[
                ("XDG_RUNTIME_DIR", rt.0.as_os_str()),
                ("MITOGEN_REUSE", OsStr::new(v)),
            ],
        )
    };
    assert_code(&env("no"), 0);
    assert_eq!(sshd.logins() - before, 4, "{}", sshd.log());
    assert_code(&env("20"), 0);
    assert_code(&env("20"), 0);
    assert_eq!(sshd.logins() - before, 5, "{}", sshd.log());
    assert_eq!(rt.sockets().len(), 1);
    let bad = env("soon");
    assert_code(&bad, 2);
    assert!(bad.stderr.contains("MITOGEN_REUSE"), "{}", bad.stderr);
}

#[test]
fn a_control_directory_others_can_reach_turns_reuse_off() {
    let sshd = sshd_or_skip!();
    let nobody = mitogen_testkit::sshd::user("mitogen-reuse-other", "/bin/sh").unwrap();
    for hostile in ["mode 0777", "another owner"] {
        let rt = Runtime::new();
        let dir = rt.control_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(rt.0.join("mitogen"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        if hostile == "mode 0777" {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        } else {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
            nobody.chown(&dir).unwrap();
        }
        let before = sshd.logins();
        for _ in 0..2 {
            let out = rt.run(
                &sshd.dir,
                &run_args(&sshd, &["-vv", "--reuse", "30"], &["true"]),
            );
            assert_code(&out, 0);
            assert!(
                out.stderr.contains("ssh connection reuse off"),
                "{hostile}: {}",
                out.stderr
            );
        }
        assert_eq!(sshd.logins() - before, 2, "{hostile}: {}", sshd.log());
        assert!(rt.sockets().is_empty(), "{hostile}: {:?}", rt.sockets());
    }
}

#[test]
fn the_users_own_control_options_win() {
    let sshd = sshd_or_skip!();
    let rt = Runtime::new();
    let before = sshd.logins();
    for _ in 0..2 {
        let args = run_args(
            &sshd,
            &["--reuse", "30", "-o", "ControlMaster=no"],
            &["true"],
        );
        assert_code(&rt.run(&sshd.dir, &args), 0);
    }
    assert_eq!(sshd.logins() - before, 2, "{}", sshd.log());
    assert!(rt.sockets().is_empty(), "{:?}", rt.sockets());

    // A configuration file that sets ControlPath for the host: its master,
    // not one of ours.
    let own = rt.0.join("own");
    std::fs::create_dir(&own).unwrap();
    let config = sshd.dir.join("ssh_config");
    std::fs::write(
        &config,
        format!(
            "Host 127.0.0.1\n  ControlMaster auto\n  ControlPersist 30\n  ControlPath {}/%C\n",
            own.display()
        ),
    )
    .unwrap();
    let cfg = config.display().to_string();
    for _ in 0..2 {
        let args = run_args(&sshd, &["--reuse", "30", "-F", &cfg], &["true"]);
        assert_code(&rt.run(&sshd.dir, &args), 0);
    }
    assert_eq!(sshd.logins() - before, 3, "{}", sshd.log());
    assert!(rt.sockets().is_empty(), "{:?}", rt.sockets());
    let theirs: Vec<_> = std::fs::read_dir(&own).unwrap().flatten().collect();
    assert_eq!(theirs.len(), 1, "{theirs:?}");
    let _ = control(&theirs[0].path(), "exit");
}

#[test]
fn the_master_leaves_after_its_persist_time() {
    let sshd = sshd_or_skip!();
    let rt = Runtime::new();
    let out = rt.run(&sshd.dir, &run_args(&sshd, &["--reuse", "2"], &["true"]));
    assert_code(&out, 0);
    let sockets = rt.sockets();
    assert_eq!(sockets.len(), 1, "{sockets:?}");
    let pid = master_pid(&sockets[0]).expect("a master after the run");
    assert!(
        eventually(Duration::from_secs(20), || {
            !Path::new(&format!("/proc/{pid}")).exists() && rt.sockets().is_empty()
        }),
        "the master {pid} is still there 20 s after a 2 s persist time"
    );
}

#[test]
fn a_killed_master_means_a_clean_fresh_login() {
    let sshd = sshd_or_skip!();
    let rt = Runtime::new();
    let before = sshd.logins();
    let args = run_args(&sshd, &["--reuse", "30"], &["echo", "ok"]);
    assert_code(&rt.run(&sshd.dir, &args), 0);
    let socket = rt.sockets().pop().expect("a control socket");
    let pid = master_pid(&socket).expect("a master");
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || !Path::new(
        &format!("/proc/{pid}")
    )
    .exists()
        || std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.contains(") Z "))));
    // The socket is left behind, its master gone: the next command finds it
    // stale, logs in again and becomes the new master.
    let out = rt.run(&sshd.dir, &args);
    assert_code(&out, 0);
    assert!(out.stdout.contains(": ok\n"), "{}", out.stdout);
    assert_eq!(sshd.logins() - before, 2, "{}", sshd.log());
    let new = master_pid(&socket).expect("a new master");
    assert_ne!(new, pid);
}

#[test]
fn a_context_that_dies_is_seen_at_once_while_the_master_stays() {
    let sshd = sshd_or_skip!();
    let rt = Runtime::new();
    assert_code(
        &rt.run(&sshd.dir, &run_args(&sshd, &["--reuse", "30"], &["true"])),
        0,
    );
    // Over the reused login, the remote context is killed under its
    // command: the command's end must be reported as a lost connection at
    // once, not after the 60 s --timeout, though the master lives on.
    let t = Instant::now();
    let out = rt.run(
        &sshd.dir,
        &run_args(
            &sshd,
            &["--reuse", "30"],
            &["sh", "-c", "kill -9 $PPID; sleep 50"],
        ),
    );
    let took = t.elapsed();
    assert_code(&out, 3);
    assert!(!out.stderr.contains("timed out"), "{}", out.stderr);
    assert!(
        took < Duration::from_secs(30),
        "took {took:?}: {}",
        out.stderr
    );
    let socket = rt.sockets().pop().expect("a control socket");
    assert!(master_pid(&socket).is_some(), "the master went too");
    // And the next command runs over it again.
    assert_code(
        &rt.run(&sshd.dir, &run_args(&sshd, &["--reuse", "30"], &["true"])),
        0,
    );
}

#[test]
fn copy_and_fetch_reuse_the_login_of_run() {
    let sshd = sshd_or_skip!();
    let rt = Runtime::new();
    let d = Scratch::new("reuse-transfer");
    let before = sshd.logins();
    assert_code(
        &rt.run(&d.0, &run_args(&sshd, &["--reuse", "30"], &["true"])),
        0,
    );
    let src = d.file("f", "data");
    let dest = d.s("copied");
    for (verb, from, to) in [("copy", src, dest.clone()), ("fetch", dest, d.s("got"))] {
        let mut a = strings(&[verb, "--reuse", "30"]);
        a.extend(sshd.options());
        a.extend([sshd.target(), "--".into(), from, to]);
        assert_code(&rt.run(&d.0, &a), 0);
    }
    assert_eq!(sshd.logins() - before, 1, "{}", sshd.log());
    let got = d.path(&format!("got/{}/copied", sshd.target()));
    assert_eq!(std::fs::read_to_string(got).unwrap(), "data");
}

#[test]
fn a_password_login_is_reused_and_an_unknown_host_key_still_refused() {
    use mitogen_testkit::sshd::{user_with_password, Sshd as Server};
    const USER: &str = "mitogen-reuse-pw";
    const PASSWORD: &str = "reuse-Pw-Sekret-31";
    let server =
        match Server::start_with(&["PasswordAuthentication yes", "PubkeyAuthentication no"]) {
            Ok(s) => s,
            Err(e) => match e.downcast::<mitogen_testkit::skip::Skipped>() {
                Ok(skipped) => return eprintln!("{skipped}"),
                Err(e) => panic!("{e:#}"),
            },
        };
    user_with_password(USER, "/bin/sh", PASSWORD).unwrap();
    let rt = Runtime::new();
    let d = Scratch::new("reuse-pw");
    let pw = d.file("pw", &format!("{PASSWORD}\n"));
    let target = format!("{USER}@127.0.0.1:{}", server.port);
    let logins = || {
        std::fs::read_to_string(server.dir.join("sshd.log"))
            .unwrap_or_default()
            .matches("Accepted password")
            .count()
    };
    let args = |host_key: &[&str]| {
        let mut a = strings(&["run", "--timeout", "60", "--reuse", "30"]);
        a.extend(strings(host_key));
        a.extend(strings(&[
            "--password-file",
            &format!("{target}={pw}"),
            &target,
        ]));
        a.extend(strings(&["--", "id", "-un"]));
        a
    };
    // An unknown host key: ssh asks, nobody can answer, refused at once (and
    // no master is left).
    let known = d.file("known_hosts", "");
    let refused = rt.run(&d.0, &args(&["-o", &format!("UserKnownHostsFile={known}")]));
    assert_code(&refused, 3);
    assert!(refused.stderr.contains("host key"), "{}", refused.stderr);
    assert!(rt.sockets().is_empty(), "{:?}", rt.sockets());

    let trusting = [
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
    ];
    let before = logins();
    for _ in 0..2 {
        let out = rt.run(&d.0, &args(&trusting));
        assert_code(&out, 0);
        assert!(
            out.stdout.contains(&format!(": {USER}\n")),
            "{}",
            out.stdout
        );
    }
    assert_eq!(logins() - before, 1, "{}", server.log_tail());
}

#[test]
fn only_the_first_hop_of_a_chain_is_kept() {
    let sshd = sshd_or_skip!();
    let rt = Runtime::new();
    // ssh to the server, and from there ssh to it again: the second ssh is
    // started by the context on the first hop, and must log in each time,
    // leaving no socket on that host.
    let chain = format!("{0}/{0}", sshd.target());
    let mut args = strings(&["run", "--timeout", "60", "--reuse", "30"]);
    args.extend(sshd.options());
    args.extend(strings(&[&chain, "--", "true"]));
    let before = sshd.logins();
    assert_code(&rt.run(&sshd.dir, &args), 0);
    assert_eq!(sshd.logins() - before, 2, "{}", sshd.log());
    assert_code(&rt.run(&sshd.dir, &args), 0);
    assert_eq!(sshd.logins() - before, 3, "{}", sshd.log());
    assert_eq!(rt.sockets().len(), 1, "{:?}", rt.sockets());
}

#[test]
fn output_through_pipes_ends_with_the_command_while_the_master_stays() {
    let sshd = sshd_or_skip!();
    let rt = Runtime::new();
    // As `mitogen run … | cat`: the reader waits for the end of mitogen's
    // stdout and stderr, which the master must not hold open.
    let args = run_args(&sshd, &["--reuse", "30"], &["echo", "piped"]);
    for _ in 0..2 {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mitogen"));
        cmd.args(&args)
            .env("XDG_RUNTIME_DIR", &rt.0)
            .env_remove("MITOGEN_REUSE")
            .stdin(std::process::Stdio::null());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(cmd.output());
        });
        let out = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("mitogen's output did not end within 60 s")
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert!(stdout.contains(": piped\n"), "{stdout}");
    }
    let socket = rt.sockets().pop().expect("a control socket");
    assert!(master_pid(&socket).is_some());
}

#[test]
fn targets_racing_to_one_host_all_run_and_leave_one_master() {
    let sshd = sshd_or_skip!();
    let rt = Runtime::new();
    // Five commands to one host at once, no master yet: one becomes the
    // master, the others find its socket taken and log in on their own
    // (ssh's fallback); every one runs, and one login is left kept.
    let mut args = strings(&["run", "--timeout", "60", "--reuse", "30", "-j", "5"]);
    args.extend(sshd.options());
    for _ in 0..5 {
        args.push(sshd.target());
    }
    args.extend(strings(&["--", "echo", "raced"]));
    let before = sshd.logins();
    let out = rt.run(&sshd.dir, &args);
    assert_code(&out, 0);
    assert_eq!(out.stdout.matches(": raced\n").count(), 5, "{}", out.stdout);
    let logins = sshd.logins() - before;
    assert!((1..=5).contains(&logins), "{logins}: {}", sshd.log());
    assert_eq!(rt.sockets().len(), 1, "{:?}", rt.sockets());
    // Later ones ride it.
    let out = rt.run(&sshd.dir, &args);
    assert_code(&out, 0);
    assert_eq!(sshd.logins() - before, logins, "{}", sshd.log());
}
