//! `mitogen facts` against real targets: a local context (whose facts the
//! test reads itself), an ssh target through the sshd fixture, a sudo
//! target as a test user, a target that cannot be reached, and a target
//! whose facts carry control characters (a local context whose `$TZ`, which
//! it reports as its time zone, holds an escape sequence).
//!
//! The ssh and sudo tests need root and openssh-server (docs/testing.md:
//! they fail saying what is missing, or return where skipping is allowed).

#[macro_use]
mod common;

use common::scratch::{assert_code, assert_has, json_lines, test_user, Scratch};

/// This machine's host name and kernel release, as `uname(2)` says.
fn uname() -> (String, String) {
    let u = rustix::system::uname();
    (
        u.nodename().to_string_lossy().into_owned(),
        u.release().to_string_lossy().into_owned(),
    )
}

/// The online CPUs, counted from `/sys/devices/system/cpu/online` (`0-1`,
/// `0,2-3`).
fn cpus_online() -> u64 {
    let list = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    list.trim()
        .split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => b.parse::<u64>().unwrap() - a.parse::<u64>().unwrap() + 1,
            None => 1,
        })
        .sum()
}

#[test]
fn local_facts_are_this_machines() {
    let d = Scratch::new("facts-local");
    let (host, release) = uname();
    let uid = rustix::process::geteuid().as_raw();
    let cpus = cpus_online();

    let out = d.run(&["facts", "local"]);
    assert_code(&out, 0);
    let first = out.stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("[local] {host}: ")),
        "{}",
        out.stdout
    );
    assert_has(first, &format!(" {release} "));
    assert_has(first, &format!(", {cpus} CPU"));
    assert_has(&out.stdout, "[local]   user ");
    assert_has(&out.stdout, &format!(" (uid {uid}, gid "));
    assert_has(&out.stdout, "[local]   disk / ");
    // One target: no summary.
    assert!(out.stderr.is_empty(), "{}", out.stderr);

    let out = d.run(&["facts", "--json", "local"]);
    assert_code(&out, 0);
    let r = json_lines(&out);
    assert_eq!(r.len(), 1, "{}", out.stdout);
    assert_eq!(r[0]["target"], "local");
    assert!(r[0]["error"].is_null());
    assert!(r[0]["duration_ms"].as_f64().is_some_and(|ms| ms > 0.0));
    let f = &r[0]["facts"];
    assert_eq!(f["hostname"], host.as_str());
    assert_eq!(f["kernel"]["release"], release.as_str());
    assert_eq!(f["kernel"]["arch"], std::env::consts::ARCH);
    assert_eq!(f["cpu"]["online"], cpus);
    assert_eq!(f["user"]["uid"], uid);
    assert!(f["memory"]["total_bytes"].as_u64().is_some_and(|b| b > 0));
    assert_eq!(f["load"].as_array().map(Vec::len), Some(3));
    let mounts = f["mounts"].as_array().unwrap();
    assert!(mounts.iter().any(|m| m["mountpoint"] == "/"), "{f}");
    let lo = f["interfaces"].as_array().unwrap();
    let lo = lo.iter().find(|i| i["name"] == "lo").expect("lo");
    assert!(lo["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["ip"] == "127.0.0.1" && a["prefix"] == 8));
    for key in ["os", "uptime_secs", "timezone", "container"] {
        assert!(f.get(key).is_some(), "no {key} in {f}");
    }
}

#[test]
fn a_hosts_file_and_the_limit_work_as_for_run() {
    let d = Scratch::new("facts-hosts");
    let hosts = d.file("hosts", "# two\nlocal\nlocal/local\n");
    let out = d.run(&["facts", "--json", "-j", "1", "-H", &hosts, "local"]);
    assert_code(&out, 0);
    let targets: Vec<String> = json_lines(&out)
        .iter()
        .map(|r| r["target"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(targets, ["local#1", "local/local", "local#2"]);
    let out = d.run(&["facts", "-H", &hosts]);
    assert_code(&out, 0);
    assert_has(&out.stderr, "2 targets: 2 answered, 0 failed");
}

#[test]
fn an_ssh_target_answers_as_its_login() {
    let sshd = sshd_or_skip!();
    let target = sshd.target();
    let mut args = vec!["facts".to_owned(), "--json".to_owned(), target.clone()];
    args.extend(sshd.options());
    let out = common::mitogen(&sshd.dir, &args);
    assert_code(&out, 0);
    let r = json_lines(&out);
    assert_eq!(r[0]["target"], target.as_str(), "{}", out.stdout);
    let f = &r[0]["facts"];
    assert_eq!(f["user"]["uid"], 0, "{f}");
    assert_eq!(f["user"]["name"], "root");
    assert_eq!(f["hostname"], uname().0.as_str());
}

#[test]
fn a_sudo_target_shows_the_switched_user() {
    let Some(user) = test_user("mitogen-facts") else {
        return;
    };
    let d = Scratch::new("facts-sudo");
    let via_sudo = format!("sudo:{}", user.name);
    let chain = format!("local/sudo:{}", user.name);
    let out = d.run(&["facts", &via_sudo, &chain]);
    assert_code(&out, 0);
    for t in [&via_sudo, &chain] {
        assert_has(
            &out.stdout,
            &format!("[{t}]   user {} (uid {}, ", user.name, user.uid),
        );
    }
    let out = d.run(&["facts", "--json", &via_sudo]);
    assert_code(&out, 0);
    let f = &json_lines(&out)[0]["facts"];
    assert_eq!(f["user"]["uid"], user.uid);
    assert_eq!(f["user"]["name"], user.name.as_str());
    assert_eq!(f["user"]["home"], user.home.display().to_string());
    // --become-user adds the same hop as `local/sudo:USER` written out.
    let out = d.run(&["facts", "--become-user", &user.name, "local"]);
    assert_code(&out, 0);
    assert_has(
        &out.stdout,
        &format!("[{chain}]   user {} (uid {}, ", user.name, user.uid),
    );
}

#[test]
fn an_unreachable_target_fails_alone_with_status_3() {
    let d = Scratch::new("facts-unreachable");
    let port = mitogen_testkit::sshd::closed_port().unwrap().to_string();
    let dead = format!("root@127.0.0.1:{port}");
    let o = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"];
    let mut args = vec!["facts", "--json", &dead, "local"];
    args.extend(o);
    let out = d.run(&args);
    assert_code(&out, 3);
    let r = json_lines(&out);
    let bad = r.iter().find(|r| r["target"] == dead.as_str()).unwrap();
    assert!(bad["facts"].is_null());
    let error = bad["error"].as_str().unwrap();
    assert!(error.contains(&dead), "{error}");
    let local = r.iter().find(|r| r["target"] == "local").unwrap();
    assert!(local["error"].is_null() && local["facts"]["hostname"].is_string());

    let mut args = vec!["facts", &dead, "local"];
    args.extend(o);
    let out = d.run(&args);
    assert_code(&out, 3);
    assert_has(&out.stderr, &format!("[{dead}] failed: "));
    assert_has(&out.stderr, "2 targets: 1 answered, 1 failed");
    assert_has(&out.stdout, "[local] ");
}

/// A target that puts an escape sequence and a carriage return in what it
/// reports: a local context under `TZ=...`, which it reads as its time
/// zone. The text shows them visibly on the target's own line; JSON
/// carries them escaped.
#[test]
fn control_characters_in_a_targets_facts_are_never_obeyed() {
    let d = Scratch::new("facts-hostile");
    let hostile = "UTC\x1b]0;owned\x07\r[web2] forged\x1b[2K";
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mitogen"))
            .args(args)
            .env("TZ", hostile)
            .current_dir(&d.0)
            .output()
            .unwrap();
        (out.status.code(), out.stdout)
    };
    let (code, stdout) = run(&["facts", "local/local"]);
    assert_eq!(code, Some(0));
    let text = String::from_utf8(stdout).unwrap();
    assert!(
        !text.contains(['\x1b', '\r', '\x07']),
        "a raw control character reached the terminal: {text:?}"
    );
    assert_has(&text, "; time zone UTC^[]0;owned^G^M[web2] forged^[[2K");
    assert!(
        text.lines().all(|l| l.starts_with("[local/local] ")),
        "{text}"
    );

    let (code, stdout) = run(&["facts", "--json", "local/local"]);
    assert_eq!(code, Some(0));
    assert!(!stdout.contains(&0x1b) && !stdout.contains(&b'\r'));
    let v: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(v["facts"]["timezone"], hostile);
}

#[test]
fn no_target_or_a_bad_one_is_a_usage_error() {
    let d = Scratch::new("facts-usage");
    for args in [
        &["facts"][..],
        &["facts", "a//b"],
        &["facts", "--timeout", "0", "local"],
    ] {
        let out = d.run(args);
        assert_code(&out, 2);
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
    }
}
