//! The inner scenarios: this binary run again as a test user, a master of its
//! own that connects once as `SCENARIO_ENV` says and prints a `RESULT` line
//! (`inner_main`); and the outer side, which runs it with the password on
//! stdin, scans every process for that password meanwhile, and reads the
//! outcome (`run_as`).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use mitogen::{Doas, Error, Router, Secret, Su, Sudo, TransportFailure};

use super::{check_identity, fixture, identity, Identity, SCENARIO_ENV};

/// Connects once as `scenario` says and prints a `RESULT` line.
pub fn inner_main(router: &Router, scenario: &str) -> usize {
    let mut line = zeroize::Zeroizing::new(String::new());
    let _ = std::io::stdin().read_to_string(&mut line);
    let password = line
        .lines()
        .next()
        .filter(|l| !l.is_empty())
        .map(Secret::new);
    let mut words = scenario.split_whitespace();
    let (method, user) = (words.next().unwrap_or(""), words.next().unwrap_or("root"));
    if method == "chain-hops" {
        // `chain-hops TARGET`: stdin holds `HOP PASSWORD` lines, one
        // password per hop path (see `chains::per_hop_passwords`).
        let mut options = mitogen::ConnectOptions::default();
        for l in line.lines() {
            if let Some((hop, pw)) = l.split_once(' ') {
                options = options.hop_password(hop, pw);
            }
        }
        return crate::chains::inner_chain_with(router, user, options);
    }
    if method == "su-env" {
        return crate::hostile_switch::su_env_main(router, user);
    }
    if method == "chain" {
        // `chain TARGET`: a whole target string (see `chains`).
        return crate::chains::inner_chain(router, user, password);
    }
    let timeout = Duration::from_secs(20);
    let started = Instant::now();
    let r = match method {
        "sudo" => {
            let mut s = Sudo::new().user(user).connect_timeout(timeout);
            if let Some(p) = password {
                s = s.password(p);
            }
            router.sudo(s)
        }
        "su" => {
            let mut s = Su::user(user).connect_timeout(timeout);
            if let Some(p) = password {
                s = s.password(p);
            }
            router.su(s)
        }
        "doas" => {
            let mut d = Doas::new().user(user).connect_timeout(timeout);
            if let Some(p) = password {
                d = d.password(p);
            }
            router.doas(d)
        }
        other => {
            println!("RESULT other 0 unknown method {other}");
            return 1;
        }
    };
    let ms = started.elapsed().as_millis();
    let r = r.and_then(|ctx| {
        let id = ctx.call_timeout(identity, (), timeout);
        let _ = ctx.shutdown_timeout(Duration::from_secs(5));
        id
    });
    match r {
        Ok(id) => println!(
            "RESULT ok {ms} {}",
            serde_json_line(&id).unwrap_or_default()
        ),
        Err(Error::Transport { kind, .. }) => println!("RESULT err {ms} {kind:?}"),
        Err(e) => println!("RESULT other {ms} {e}"),
    }
    0
}

/// `Identity` as space-separated fields (no JSON crate in the tests).
pub(crate) fn serde_json_line(id: &Identity) -> Option<String> {
    Some(format!(
        "{} {} {} {} {}",
        id.uid, id.exe_uid, id.dir_uid, id.dir_mode, id.exe
    ))
}

/// What an inner scenario printed.
#[derive(Debug)]
pub(crate) enum Outcome {
    Ok { ms: u64, id: Identity },
    Err { ms: u64, kind: String },
}

/// Processes whose argv or environment contain one of `secrets`.
pub(crate) fn leaking_processes(secrets: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        for file in ["cmdline", "environ"] {
            let Ok(data) = std::fs::read(format!("/proc/{pid}/{file}")) else {
                continue;
            };
            for s in secrets {
                if data.windows(s.len()).any(|w| w == s.as_bytes()) {
                    found.push(format!(
                        "pid {pid} {file}: {}",
                        String::from_utf8_lossy(&data).replace('\0', " ")
                    ));
                }
            }
        }
    }
    found
}

/// Runs `scenario` as `user`, typing `password` into its stdin, and scans
/// every process for the password while it runs.
pub(crate) fn run_as(user: &str, scenario: &str, password: Option<&str>) -> Result<Outcome> {
    let exe = fixture()?.exe.clone();
    let mut child = Command::new("runuser")
        .args(["-u", user, "--"])
        .arg(&exe)
        .env(SCENARIO_ENV, scenario)
        .env_remove("MITOGEN_TEST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting runuser")?;
    let done = Arc::new(AtomicBool::new(false));
    let scanner = {
        let done = done.clone();
        let secret = password.map(str::to_owned);
        std::thread::spawn(move || {
            let mut leaks = Vec::new();
            let mut scans = 0u32;
            while let Some(s) = &secret {
                leaks.extend(leaking_processes(&[s.as_str()]));
                scans += 1;
                if done.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            (leaks, scans)
        })
    };
    if let Some(p) = password {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{p}\n").as_bytes())?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output()?;
    done.store(true, Ordering::Relaxed);
    let (leaks, scans) = scanner.join().map_err(|_| anyhow!("scanner panicked"))?;
    ensure!(password.is_none() || scans > 0, "/proc was never scanned");
    ensure!(
        leaks.is_empty(),
        "the password is visible in /proc: {leaks:?}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .ok_or_else(|| anyhow!("no RESULT from {user}: {} {stdout} {stderr}", out.status))?;
    let mut w = line.splitn(3, ' ');
    let (what, ms, rest) = (
        w.next().unwrap_or(""),
        w.next().unwrap_or("0").parse::<u64>()?,
        w.next().unwrap_or(""),
    );
    match what {
        "ok" => {
            let f: Vec<&str> = rest.splitn(5, ' ').collect();
            ensure!(f.len() == 5, "bad RESULT line {line:?}");
            Ok(Outcome::Ok {
                ms,
                id: Identity {
                    uid: f[0].parse()?,
                    exe_uid: f[1].parse()?,
                    dir_uid: f[2].parse()?,
                    dir_mode: f[3].parse()?,
                    exe: f[4].to_owned(),
                },
            })
        }
        "err" => Ok(Outcome::Err {
            ms,
            kind: rest.to_owned(),
        }),
        _ => bail!("{user} `{scenario}`: {line} (stderr: {stderr})"),
    }
}

pub(crate) fn expect_ok(o: Outcome, uid: u32) -> Result<u64> {
    match o {
        Outcome::Ok { ms, id } => {
            check_identity(&id, uid)?;
            Ok(ms)
        }
        other => bail!("expected a context, got {other:?}"),
    }
}

pub(crate) fn expect_err(o: Outcome, kind: TransportFailure) -> Result<u64> {
    match o {
        Outcome::Err { ms, kind: k } if k == format!("{kind:?}") => Ok(ms),
        other => bail!("expected {kind:?}, got {other:?}"),
    }
}
