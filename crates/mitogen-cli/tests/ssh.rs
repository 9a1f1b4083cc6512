//! `mitogen run` and `mitogen bench` against a real sshd that each test starts
//! on a random 127.0.0.1 port, with keys made for it in a temporary directory.
//!
//! They need root (sshd must switch to the login user) and openssh-server;
//! where either is missing they fail saying so, or print why and return where
//! `MITOGEN_TEST_ALLOW_SKIP=1` (never under `CI=true`; see docs/testing.md).

#[macro_use]
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::mitogen;

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

/// `mitogen run` returns as soon as the result is in, without waiting for the
/// remote side to acknowledge its end (docs/protocol.md, "No round trip of
/// its own"); the context there still goes, and nothing of it stays.
#[test]
fn run_returns_at_the_result_and_leaves_no_process_behind() {
    let sshd = sshd_or_skip!();
    let target = sshd.target();
    let mut a = args(&["run", "--timeout", "120", "--connect-timeout", "60"]);
    a.extend(sshd.options());
    // Twice: cold (the build uploaded) and warm (the configuration and the
    // command sent with the first stage).
    for round in ["cold", "warm"] {
        let mut a = a.clone();
        // The command's parent is the context serving it.
        a.extend(args(&[&target, "--", "sh", "-c", "echo $PPID"]));
        let out = mitogen(&sshd.dir, &a);
        assert_eq!(out.code, Some(0), "{round}: {}\n{}", out.stdout, out.stderr);
        let pid: u32 = out
            .stdout
            .lines()
            .next()
            .and_then(|l| l.strip_prefix(&format!("{target}: ")))
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("{round}: no pid in {:?}", out.stdout));
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while proc_dir.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !proc_dir.exists(),
            "{round}: the context {pid} is still there 10 s after `mitogen run` returned; sshd:\n{}",
            sshd.log()
        );
    }
}

#[test]
fn bench_files_only_over_ssh_moves_files_and_cleans_up() {
    let sshd = sshd_or_skip!();
    let target = sshd.target();
    let mut a = args(&[
        "bench",
        "--files-only",
        "--json",
        "--file-mib",
        "3",
        "--tree-files",
        "40",
        "--file-runs",
        "1",
        "--target",
        &target,
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
        "push_mib_s",
        "fetch_mib_s",
        "small_files_per_s",
        "repush_ms",
    ] {
        let x = v[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing: {v}"));
        assert!(x > 0.0, "{key}: {v}");
    }
    assert_eq!(v["repush_skipped"].as_u64(), Some(40), "{v}");
    assert_eq!(v["peak_rss_kib"].as_array().map(Vec::len), Some(2), "{v}");
    // The scratch directory it made in the session's TMPDIR is gone.
    let left: Vec<_> = std::fs::read_dir(sshd.dir.join("tmp"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("mitogen-bench-files")
        })
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
