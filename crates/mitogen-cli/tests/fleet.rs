//! `mitogen run`, `copy` and `fetch` across fleets, driven as an operator
//! drives them: targets from hosts files, the `-j` limit, run's progress
//! line and summary, and what a hostile target's output can and cannot do
//! to the text output. Real local contexts, a real pty (`script`) for the
//! progress line, and a real sshd on loopback (the fixture of `common`) for
//! a shared jump host.
//!
//! The ssh test needs root and openssh-server, the progress test script(1)
//! (docs/testing.md: they fail saying what is missing, or return where
//! skipping is allowed).

#[macro_use]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::scratch::{assert_code, assert_has, json_lines, strings, Scratch};
use common::{mitogen, mitogen_written};

fn targets_of(records: &[serde_json::Value]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r["target"].as_str().unwrap())
        .collect()
}

#[test]
fn a_hosts_file_gives_targets_before_the_command_lines() {
    let d = Scratch::new("hosts");
    let hosts = d.file(
        "hosts",
        "# the fleet\n\n   local   \n\tlocal/local # a chain\n#local/local/local\n\n",
    );
    // -j 1: reports in the targets' order, the file's first.
    let out = d.run(&[
        "run", "--json", "-j", "1", "-H", &hosts, "local", "--", "echo", "hi",
    ]);
    assert_code(&out, 0);
    let r = json_lines(&out);
    assert_eq!(targets_of(&r), ["local#1", "local/local", "local#2"]);
    assert!(r.iter().all(|r| r["stdout"] == "hi\n"), "{r:?}");

    // Two files, repeatable, and no target on the command line.
    let more = d.file("more", "local/local/local\n");
    let out = d.run(&[
        "run", "--json", "-j", "1", "--hosts", &more, "-H", &hosts, "--", "true",
    ]);
    assert_code(&out, 0);
    assert_eq!(
        targets_of(&json_lines(&out)),
        ["local/local/local", "local", "local/local"]
    );
}

#[test]
fn a_bad_hosts_file_is_a_usage_error_naming_file_and_line() {
    let d = Scratch::new("badhosts");
    let hosts = d.file("hosts", "local\n# fine\n\nlocal//local\nlocal\n");
    for cmd in ["run", "copy", "fetch"] {
        let tail: &[&str] = match cmd {
            "run" => &["--", "true"],
            _ => &["--", "/etc/hostname", "/tmp/x"],
        };
        let mut args = vec![cmd, "-H", &hosts];
        args.extend(tail);
        let out = d.run(&args);
        assert_code(&out, 2);
        assert!(
            out.stderr.contains(&format!(
                "hosts file {hosts}, line 4: bad target \"local//local\""
            )),
            "{cmd}: {}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "{cmd} ran: {}", out.stdout);
    }
    let missing = d.s("missing");
    let out = d.run(&["run", "-H", &missing, "local", "--", "true"]);
    assert_code(&out, 2);
    assert!(
        out.stderr
            .contains(&format!("cannot read hosts file {missing}: No such file")),
        "{}",
        out.stderr
    );
    let empty = d.file("empty", "# nobody yet\n");
    let out = d.run(&["run", "-H", &empty, "--", "true"]);
    assert_code(&out, 2);
    assert!(out.stderr.contains("no targets"), "{}", out.stderr);
    let out = d.run(&["run", "-j", "0", "local", "--", "true"]);
    assert_code(&out, 2);
}

/// A command that records how many copies of it are running at once: each
/// adds a file of its own to DIR, counts the files, sleeps, and removes its
/// file before it exits (so before its target can report and free a slot).
fn counting_command(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "touch {d}/running.$$; ls {d} | grep -c '^running' >> {d}/counts; \
         echo start; sleep 0.5; rm {d}/running.$$"
    )
}

fn peak(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("counts"))
        .unwrap()
        .lines()
        .map(|l| l.trim().parse::<usize>().unwrap())
        .max()
        .unwrap()
}

#[test]
fn forks_2_never_runs_more_than_2_targets_at_once() {
    let d = Scratch::new("forks2");
    let spy = d.path("spy");
    std::fs::create_dir(&spy).unwrap();
    let command = counting_command(&spy);
    let mut args = vec!["run", "--json", "--forks", "2"];
    args.extend(["local"; 6]);
    args.extend(["--", "sh", "-c", &command]);
    let out = d.run(&args);
    assert_code(&out, 0);
    let r = json_lines(&out);
    assert_eq!(r.len(), 6, "{}", out.stdout);
    assert!(r
        .iter()
        .all(|r| r["stdout"] == "start\n" && r["exit_code"] == 0));
    // Two at once, never three.
    assert_eq!(
        peak(&spy),
        2,
        "{:?}",
        std::fs::read_to_string(spy.join("counts"))
    );

    // Without the limit's being reached (6 at most 10 by default), all at once.
    std::fs::remove_file(spy.join("counts")).unwrap();
    let mut args = vec!["run", "--json"];
    args.extend(["local"; 6]);
    args.extend(["--", "sh", "-c", &command]);
    let out = d.run(&args);
    assert_code(&out, 0);
    assert!(
        peak(&spy) > 2,
        "{:?}",
        std::fs::read_to_string(spy.join("counts"))
    );
}

#[test]
fn a_targets_timeout_counts_from_its_own_start() {
    let d = Scratch::new("timeout");
    // One at a time, 0.6 s each: 1.8 s in all, each well within its 1.5 s.
    let t0 = Instant::now();
    let out = d.run(&[
        "run",
        "--json",
        "-j",
        "1",
        "--timeout",
        "1.5",
        "local",
        "local",
        "local",
        "--",
        "sleep",
        "0.6",
    ]);
    assert_code(&out, 0);
    assert!(t0.elapsed() >= Duration::from_millis(1800));
    let r = json_lines(&out);
    assert_eq!(r.len(), 3);
    for r in &r {
        assert_eq!(r["exit_code"], 0, "{r}");
        assert!(r["duration_ms"].as_f64().unwrap() < 1500.0, "{r}");
    }
}

#[test]
fn forks_1_goes_on_past_a_failed_target_and_sums_up() {
    let d = Scratch::new("forks1");
    let hosts = d.file("hosts", "local\nnosuchhost.invalid\nlocal\n");
    let out = d.run(&[
        "run", "-j", "1", "-H", &hosts, "local", "--", "sh", "-c", "exit 0",
    ]);
    assert_code(&out, 3);
    let status: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(status.len(), 3, "{}", out.stdout);
    for (line, label) in status.iter().zip(["local#1", "local#2", "local#3"]) {
        assert!(line.starts_with(&format!("[{label}] exit 0 in ")), "{line}");
    }
    let err: Vec<&str> = out.stderr.lines().collect();
    assert!(
        err[0].starts_with("[nosuchhost.invalid] failed: "),
        "{}",
        out.stderr
    );
    // The summary, last, on stderr; no progress line without a terminal.
    assert_eq!(err.len(), 2, "{}", out.stderr);
    assert!(
        err[1].starts_with("4 targets: 3 exit 0, 0 exit non-zero, 1 failed ("),
        "{}",
        out.stderr
    );

    // A command that fails counts as such, and one target has no summary.
    let out = d.run(&["run", "local", "local", "--", "sh", "-c", "exit 4"]);
    assert_code(&out, 1);
    assert!(
        out.stderr
            .starts_with("2 targets: 0 exit 0, 2 exit non-zero, 0 failed ("),
        "{}",
        out.stderr
    );
    let out = d.run(&["run", "local", "--", "true"]);
    assert_code(&out, 0);
    assert_eq!(out.stderr, "");
    // JSON: the per-target objects and nothing else, anywhere.
    let out = d.run(&["run", "--json", "local", "local", "--", "true"]);
    assert_code(&out, 0);
    assert_eq!(json_lines(&out).len(), 2);
    assert_eq!(out.stderr, "");
}

/// `mitogen ARGS` under a pty (`common::pty`).
fn on_a_terminal(args: &str) -> Option<String> {
    common::pty::on_a_terminal(&std::env::temp_dir(), args)
}

#[test]
fn progress_is_drawn_on_a_terminal_only_and_never_shares_a_line() {
    let Some(screen) = on_a_terminal("run local local local -j 1 -- sleep 0.4") else {
        return;
    };
    assert!(
        screen.contains("running: 1/3 targets done, 0 failed"),
        "{screen:?}"
    );
    // Each report line starts at the beginning of a line (the progress line
    // cleared first) and nothing is drawn after it on that line.
    for n in 1..=3 {
        let status = format!("[local#{n}] exit 0 in ");
        let line = screen
            .split('\n')
            .find(|l| l.contains(&status))
            .unwrap_or_else(|| panic!("no {status:?} in {screen:?}"));
        let line = line.trim_end_matches('\r');
        let start = line.rsplit(['\r', 'K']).next().unwrap();
        assert!(start.starts_with(&status), "{line:?} in {screen:?}");
        assert!(
            !line.contains("running:") || line.find("running:") < line.find(&status),
            "{line:?}"
        );
    }
    assert!(
        screen.contains("3 targets: 3 exit 0, 0 exit non-zero, 0 failed"),
        "{screen:?}"
    );
    // Not with --json, even on a terminal.
    let Some(screen) = on_a_terminal("run --json local local -j 1 -- sleep 0.4") else {
        return;
    };
    assert!(!screen.contains("running:"), "{screen:?}");
    assert_eq!(screen.lines().count(), 2, "{screen:?}");
}

#[test]
fn a_target_cannot_forge_another_targets_lines_or_move_the_cursor() {
    let d = Scratch::new("forge");
    // Each writes a carriage return and a line that looks like the other
    // target's, an erase-line sequence, a C1 CSI and a backspace, on stdout
    // and on stderr, and a failure message cannot carry any either.
    let evil = r#"printf 'ok\rweb2: forged\033[2K\302\233A\b\n'; printf 'e\r[web2] exit 0\n' >&2"#;
    let out = d.run(&["run", "local", "local", "--", "sh", "-c", evil]);
    assert_code(&out, 0);
    for text in [&out.stdout, &out.stderr] {
        assert!(!text.contains(['\r', '\x1b', '\u{9b}', '\x08']), "{text:?}");
        for line in text.lines() {
            assert!(
                line.starts_with("local#")
                    || line.starts_with("[local#")
                    || line.starts_with("2 targets:"),
                "{line:?}"
            );
        }
    }
    assert!(
        out.stdout
            .contains(r"local#1: ok^Mweb2: forged^[[2K\x9bA^H"),
        "{}",
        out.stdout
    );
    assert_has(&out.stderr, "local#2: e^M[web2] exit 0");
}

#[test]
fn a_shared_jump_host_is_crossed_once_whatever_forks() {
    let sshd = sshd_or_skip!();
    let d = Scratch::new("jump");
    let host = sshd.target();
    let behind = format!("{host}/local");
    let hosts = d.file("hosts", &format!("{behind}\n{behind}\n{behind}\n"));
    let before = sshd.logins();
    let mut args = strings(&["run", "--json", "-j", "1", "-H", &hosts]);
    args.extend(sshd.options());
    args.extend(strings(&["--", "sh", "-c", "echo $PPID"]));
    let out = mitogen(&d.0, &args);
    assert_code(&out, 0);
    let r = json_lines(&out);
    assert_eq!(r.len(), 3, "{}", out.stdout);
    assert_eq!(sshd.logins() - before, 1, "{}", sshd.log());

    // copy and fetch too: one login for three targets taken one at a time.
    std::fs::write(d.path("f"), "data").unwrap();
    let dest = d.s("copied");
    let transfer = |verb: &str, j: &str, from: String, to: String, logins: usize| {
        let mut args = strings(&[verb, "-j", j, "-H", &hosts]);
        args.extend(sshd.options());
        args.extend(["--".into(), from, to]);
        let out = mitogen(&d.0, &args);
        assert_code(&out, 0);
        assert_has(&out.stdout, "3 targets, 3 ok, 0 failed");
        assert_eq!(sshd.logins() - before, logins, "{verb}: {}", sshd.log());
    };
    transfer("copy", "1", d.s("f"), dest.clone(), 2);
    transfer("fetch", "2", dest, d.s("got"), 3);
    for n in 1..=3 {
        let dir = format!("got/{}#{n}/copied", behind.replace('/', "%2F"));
        assert_eq!(std::fs::read_to_string(d.path(&dir)).unwrap(), "data");
    }
}

/// `n` bytes that no compression shrinks (xorshift).
fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Five targets behind one ssh login (`HOST/local` four times, and in the
/// middle `HOST/sudo:mitogen-cli1`, which cannot write in root's `dst`),
/// `-j 2`: `mitogen copy` writes the 8 MiB file to the ssh client about
/// once (where jobs of two wrote it three times: two stagings and a direct
/// push), over one login; four targets have it, and the middle one fails
/// alone (exit status 1); each is reported as its push ends.
#[test]
fn copy_to_five_behind_a_jump_host_crosses_its_link_once_with_j_2() {
    let sshd = sshd_or_skip!();
    let user = mitogen_testkit::sshd::user("mitogen-cli1", "/bin/sh").unwrap();
    let d = Scratch::new("jump-copy");
    let size = 8 << 20;
    std::fs::write(d.path("f"), noise(size)).unwrap();
    // Root's: the middle target, another user, cannot write in it.
    std::fs::create_dir(d.path("dst")).unwrap();
    let host = sshd.target();
    let behind = format!("{host}/local");
    let other = format!("{host}/sudo:{}", user.name);
    let hosts = d.file(
        "hosts",
        &format!("{behind}\n{behind}\n{other}\n{behind}\n{behind}\n"),
    );
    // The program is in the host's cache before the copy, so that what the
    // copy sends is the file and the calls.
    let mut args = strings(&["run", &host]);
    args.extend(sshd.options());
    args.extend(strings(&["--", "true"]));
    assert_code(&mitogen(&d.0, &args), 0);
    let before = sshd.logins();

    // -I: every target writes (they share one path of this machine).
    let mut args = strings(&["copy", "--json", "-I", "-j", "2", "-H", &hosts]);
    args.extend(sshd.options());
    args.extend(["--".into(), d.s("f"), d.s("dst/f")]);
    let (out, written) = mitogen_written(&d.0, &args);
    assert_code(&out, 1);
    assert_eq!(sshd.logins() - before, 1, "{}", sshd.log());
    let written = written.expect("the count of bytes mitogen wrote");
    assert!(
        written < size as u64 * 3 / 2,
        "mitogen wrote {written} bytes for five copies of {size} behind one hop"
    );
    assert_eq!(std::fs::read(d.path("dst/f")).unwrap(), noise(size));
    let r = json_lines(&out);
    assert_eq!(r.len(), 5, "{}", out.stdout);
    // Each is reported as its push ends, not all when the last one does
    // (where they were, a fraction of a millisecond apart): two pushes at
    // once, so the last two are a push of 8 MiB after the first.
    let ms: Vec<f64> = r
        .iter()
        .map(|r| r["duration_ms"].as_f64().unwrap())
        .collect();
    let spread =
        ms.iter().cloned().fold(f64::MIN, f64::max) - ms.iter().cloned().fold(f64::MAX, f64::min);
    assert!(spread > 5.0, "reported together: {ms:?}");
    for r in &r {
        if r["target"] == other.as_str() {
            assert_eq!(r["ok"], false, "{r}");
            assert_eq!(r["errors"][0]["kind"], "PermissionDenied", "{r}");
        } else {
            assert_eq!(r["ok"], true, "{r}");
            assert_eq!(r["files"], 1, "{r}");
            assert_eq!(r["bytes"], size as u64, "{r}");
        }
    }
}
