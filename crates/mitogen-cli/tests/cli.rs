//! Drives the built `mitogen` binary the way a user does. The binary is a real
//! mitogen program, so the contexts it starts are copies of itself.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn mitogen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mitogen"))
        .args(args)
        // Keep the user's log settings from changing what the tests read.
        .env_remove("MITOGEN_LOG")
        .env_remove("RUST_LOG")
        .output()
        .expect("starting mitogen")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn assert_status(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn run_prints_prefixed_output_and_status() {
    let out = mitogen(&["run", "local", "--", "echo", "hi"]);
    assert_status(&out, 0);
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("local: hi"));
    assert!(
        lines.next().unwrap().starts_with("[local] exit 0 in "),
        "{stdout}"
    );
    assert_eq!(lines.next(), None);
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn verbose_flags_show_the_log() {
    // Quiet by default; `-vv` shows debug events (a context connecting),
    // with no MITOGEN_LOG or RUST_LOG set.
    let quiet = mitogen(&["run", "local", "--", "true"]);
    assert_status(&quiet, 0);
    assert!(
        !text(&quiet.stderr).contains("DEBUG"),
        "{}",
        text(&quiet.stderr)
    );
    let loud = mitogen(&["-vv", "run", "local", "--", "true"]);
    assert_status(&loud, 0);
    let stderr = text(&loud.stderr);
    assert!(
        stderr.contains("DEBUG") && stderr.contains("connected"),
        "{stderr}"
    );
}

#[test]
fn a_failing_command_gives_exit_status_1() {
    let out = mitogen(&["run", "local", "--", "sh", "-c", "echo oops >&2; exit 5"]);
    assert_status(&out, 1);
    assert!(text(&out.stdout).contains("[local] exit 5 in "));
    assert_eq!(text(&out.stderr), "local: oops\n");
}

#[test]
fn json_has_one_object_per_target() {
    let out = mitogen(&[
        "run",
        "--json",
        "local",
        "local",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_status(&out, 1);
    let stdout = text(&out.stdout);
    let records: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(records.len(), 2, "{stdout}");
    let mut targets: Vec<&str> = records
        .iter()
        .map(|r| r["target"].as_str().unwrap())
        .collect();
    targets.sort();
    assert_eq!(targets, ["local#1", "local#2"]);
    for r in &records {
        assert_eq!(r["exit_code"], 3);
        assert!(r["signal"].is_null());
        assert_eq!(r["stdout"], "out\n");
        assert_eq!(r["stderr"], "err\n");
        assert!(r["error"].is_null());
        assert!(r["duration_ms"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn json_reports_a_signal() {
    let out = mitogen(&["run", "--json", "local", "--", "sh", "-c", "kill -9 $$"]);
    assert_status(&out, 1);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["exit_code"].is_null());
    assert_eq!(r["signal"], 9);
}

#[test]
fn bad_target_syntax_is_a_usage_error() {
    let out = mitogen(&["run", "a//b", "--", "true"]);
    assert_status(&out, 2);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("bad target \"a//b\""), "{stderr}");
    assert!(stderr.contains("empty hop"), "{stderr}");
}

#[test]
fn missing_command_is_a_usage_error() {
    assert_status(&mitogen(&["run", "local"]), 2);
    assert_status(&mitogen(&["run", "local", "--"]), 2);
}

#[test]
fn a_target_that_cannot_be_connected_fails_clearly_and_alone() {
    // `.invalid` never resolves (RFC 2606), so this fails the same way whether
    // or not this build can connect over ssh yet.
    let host = "nosuchhost.invalid";
    let out = mitogen(&["run", "--json", host, "local", "--", "true"]);
    assert_status(&out, 3);
    let by_target: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let bad = by_target.iter().find(|r| r["target"] == host).unwrap();
    let error = bad["error"].as_str().unwrap();
    assert!(error.contains(host), "{error}");
    assert!(bad["exit_code"].is_null());
    let local = by_target.iter().find(|r| r["target"] == "local").unwrap();
    assert_eq!(local["exit_code"], 0);

    let out = mitogen(&["run", host, "--", "true"]);
    assert_status(&out, 3);
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!("[{host}] failed: ")),
        "{stderr}"
    );
}

#[test]
fn a_command_that_cannot_start_fails_the_target() {
    let out = mitogen(&["run", "local", "--", "/nonexistent/command"]);
    assert_status(&out, 3);
    assert!(text(&out.stderr).contains("cannot run \"/nonexistent/command\""));
}

#[test]
fn timeout_stops_a_slow_command() {
    let t0 = Instant::now();
    let out = mitogen(&["run", "--timeout", "0.5", "local", "--", "sleep", "30"]);
    assert_status(&out, 3);
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert!(text(&out.stderr).contains("[local] timed out after"));
}

#[test]
fn bench_quick_json_prints_every_key() {
    let out = mitogen(&["bench", "--quick", "--json"]);
    assert_status(&out, 0);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "connect_ms",
        "rtt_us",
        "pipelined_calls_per_s",
        "throughput_mib_s",
        "child_rss_kib",
    ] {
        let v = r[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing in {r}"));
        assert!(v > 0.0, "{key} = {v}");
    }
    assert_eq!(r.as_object().unwrap().len(), 5, "{r}");
}

#[test]
fn bench_cpu_reports_every_process_on_the_path() {
    let out = mitogen(&[
        "bench",
        "--quick",
        "--json",
        "--cpu",
        "--mib",
        "64",
        "--target",
        "local/local",
    ]);
    assert_status(&out, 0);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cpu: Vec<f64> = r["cpu_ms_per_gib"]
        .as_array()
        .unwrap_or_else(|| panic!("cpu_ms_per_gib missing in {r}"))
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    // This process, the relay, the measured context: each moved every byte.
    assert_eq!(cpu.len(), 3, "{r}");
    for (i, ms) in cpu.iter().enumerate() {
        assert!(*ms > 0.0, "process {i} used no CPU streaming: {r}");
    }
}

#[test]
fn bench_table_names_every_key() {
    let out = mitogen(&["bench", "--quick", "--mib", "4"]);
    assert_status(&out, 0);
    let stdout = text(&out.stdout);
    for key in [
        "connect_ms",
        "rtt_us",
        "pipelined_calls_per_s",
        "throughput_mib_s",
        "child_rss_kib",
    ] {
        assert!(stdout.contains(key), "{stdout}");
    }
}

#[test]
fn help_documents_exit_codes() {
    let out = mitogen(&["run", "--help"]);
    assert_status(&out, 0);
    let help = text(&out.stdout);
    assert!(help.contains("Exit status:"), "{help}");
    assert!(help.contains("3  at least one target"), "{help}");
}

#[test]
fn one_password_file_never_reaches_two_hops() {
    let dir = std::env::temp_dir().join(format!("mitogen-cli-pw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pw = dir.join("pw");
    std::fs::write(&pw, "not-needed-Sekret\n").unwrap();
    let pw = pw.to_str().unwrap();
    // sudo and su hops both would get it: refused, naming both hops.
    let out = mitogen(&["run", "--password-file", pw, "sudo/su", "--", "true"]);
    assert_status(&out, 3);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        all.contains("give each its own") && all.contains("sudo/su"),
        "{all}"
    );
    if rustix_is_root() {
        // One file per hop, named by its path (root needs neither).
        let sudo = format!("sudo={pw}");
        let su = format!("sudo/su={pw}");
        let out = mitogen(&[
            "run",
            "--password-file",
            &sudo,
            "--password-file",
            &su,
            "sudo/su",
            "--",
            "id",
            "-u",
        ]);
        assert_status(&out, 0);
        assert!(
            text(&out.stdout).starts_with("sudo/su: 0\n"),
            "{}",
            text(&out.stdout)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether this test runs as root (sudo and su then ask for nothing).
fn rustix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// `--ask-password` asks once per sudo, su or doas hop path, on the terminal
/// (here a pty from `script`), naming the hop and whose password it wants.
#[test]
fn ask_password_asks_once_per_hop() {
    use std::io::{Read, Write};
    use std::process::Stdio;
    if !rustix_is_root() || !std::path::Path::new("/usr/bin/script").exists() {
        let why = "needs root (sudo and su then ask nothing) and script(1)";
        // The rule of docs/testing.md: fail unless skipping is allowed here.
        match mitogen_testkit::skip::cannot_run(why).downcast::<mitogen_testkit::skip::Skipped>() {
            Ok(skipped) => {
                eprintln!("{skipped}");
                return;
            }
            Err(e) => panic!("{e:#}"),
        }
    }
    let command = format!(
        "{} run --ask-password sudo/su sudo -- id -u",
        env!("CARGO_BIN_EXE_mitogen")
    );
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_remove("MITOGEN_LOG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting script");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 1024];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            let _ = tx.send(String::from_utf8_lossy(&all).into_owned());
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    // Answers each question once it is on the screen (the prompt flushes
    // what was typed before it).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = String::new();
    for question in ["Password for sudo (", "Password for sudo/su ("] {
        while seen.matches(question).count() == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(s) => seen = s,
                Err(_) => panic!("no question {question:?}; the screen shows {seen:?}"),
            }
        }
        stdin.write_all(b"not-needed\n").unwrap();
    }
    drop(stdin);
    let status = child.wait().unwrap();
    let screen = reader.join().unwrap();
    assert!(status.success(), "{status}: {screen}");
    // Two hop paths, two questions: `sudo` appears in both targets but is
    // asked for once.
    assert_eq!(screen.matches("Password for ").count(), 2, "{screen}");
    assert!(
        screen.contains("Password for sudo (the calling user's): "),
        "{screen}"
    );
    assert!(
        screen.contains("Password for sudo/su (root's): "),
        "{screen}"
    );
    assert!(
        !screen.contains("not-needed"),
        "the password was echoed: {screen}"
    );
    assert!(
        screen.contains("sudo/su: 0") && screen.contains("sudo: 0"),
        "{screen}"
    );
}
