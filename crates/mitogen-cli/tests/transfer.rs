//! `mitogen copy` and `mitogen fetch` driven as an operator drives them:
//! real local contexts, and a real sshd on loopback (the fixture of
//! `common`) for shared hops, other users and unreachable hosts. Each test
//! works in a fresh directory of its own under the system's temporary
//! directory, removed at the end.
//!
//! The ssh tests need root and openssh-server (docs/testing.md: they fail
//! saying what is missing, or return where skipping is allowed); the
//! fan-out test needs `strace` (installed by `.ci/run`).

#[macro_use]
mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::scratch::{assert_code, assert_has, json_lines, strings, Scratch};
use common::{mitogen, Output};

/// The JSON records of `--json` output, one per line, by target.
#[track_caller]
fn records(out: &Output) -> Vec<serde_json::Value> {
    let mut v = json_lines(out);
    v.sort_by_key(|r| r["target"].as_str().unwrap_or_default().to_owned());
    v
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// A tree with a file of each kind of mode, a subdirectory of its own mode,
/// an empty directory, a larger file and a relative symbolic link.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub/empty")).unwrap();
    std::fs::write(root.join("plain.txt"), "plain\n").unwrap();
    std::fs::write(root.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::write(root.join("sub/secret"), "s3cret\n").unwrap();
    let big: Vec<u8> = (0..600_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(root.join("sub/big.bin"), big).unwrap();
    std::os::unix::fs::symlink("../plain.txt", root.join("sub/link")).unwrap();
    let set = |rel: &str, m: u32| {
        std::fs::set_permissions(root.join(rel), std::fs::Permissions::from_mode(m)).unwrap()
    };
    set("run.sh", 0o755);
    set("sub/secret", 0o600);
    set("sub", 0o750);
}

/// Checks that `copy` is `make_tree`'s tree: content, modes, the link.
#[track_caller]
fn assert_tree(copy: &Path, source: &Path) {
    for f in ["plain.txt", "run.sh", "sub/secret", "sub/big.bin"] {
        assert_eq!(
            std::fs::read(copy.join(f)).unwrap(),
            std::fs::read(source.join(f)).unwrap(),
            "{f}"
        );
    }
    assert_eq!(mode(&copy.join("run.sh")), 0o755);
    assert_eq!(mode(&copy.join("sub/secret")), 0o600);
    assert_eq!(mode(&copy.join("sub")), 0o750);
    assert!(copy.join("sub/empty").is_dir());
    assert_eq!(
        std::fs::read_link(copy.join("sub/link")).unwrap(),
        Path::new("../plain.txt")
    );
    let t = |p: &Path| std::fs::symlink_metadata(p).unwrap().mtime_nsec();
    assert_eq!(t(&copy.join("sub/big.bin")), t(&source.join("sub/big.bin")));
}

#[test]
fn copy_keeps_a_tree_and_a_second_copy_skips_every_file() {
    let d = Scratch::new("copy-tree");
    make_tree(&d.path("site"));
    std::fs::create_dir(d.path("srv")).unwrap();

    let out = d.run(&["copy", "local", "--", &d.s("site"), &d.s("srv/www")]);
    assert_code(&out, 0);
    assert_tree(&d.path("srv/www"), &d.path("site"));
    assert!(
        out.stdout
            .starts_with("[local] sent 4 files (586.0 KiB), 0 unchanged, 3 dirs, 1 link in "),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("1 target, 1 ok, 0 failed: sent 4 files"),
        "{}",
        out.stdout
    );
    assert_eq!(out.stderr, "");

    // Unchanged: nothing is sent again, and the report says so.
    let out = d.run(&[
        "copy",
        "--json",
        "local",
        "--",
        &d.s("site"),
        &d.s("srv/www"),
    ]);
    assert_code(&out, 0);
    let r = &records(&out)[0];
    assert_eq!(r["target"], "local");
    assert_eq!(r["ok"], true);
    assert_eq!(r["files"], 0, "{r}");
    assert_eq!(r["bytes"], 0);
    assert_eq!(r["skipped"], 5, "4 files and the link: {r}");
    assert_eq!(r["paths_done"], 1);
    assert!(r["error"].is_null() && r["errors"].as_array().unwrap().is_empty());
    assert!(r["duration_ms"].as_f64().unwrap() > 0.0);

    // -I sends them all anyway.
    let out = d.run(&["copy", "-I", "local", "--", &d.s("site"), &d.s("srv/www")]);
    assert_code(&out, 0);
    assert!(
        out.stdout.starts_with("[local] sent 4 files"),
        "{}",
        out.stdout
    );
}

#[test]
fn copy_puts_several_sources_and_a_slash_dest_under_their_names() {
    let d = Scratch::new("copy-names");
    std::fs::write(d.path("a.conf"), "a").unwrap();
    std::fs::create_dir(d.path("b")).unwrap();
    std::fs::write(d.path("b/b.conf"), "b").unwrap();
    std::fs::create_dir(d.path("etc")).unwrap();
    let out = d.run(&[
        "copy",
        "local",
        "--",
        &d.s("a.conf"),
        &d.s("b/b.conf"),
        &d.s("etc"),
    ]);
    assert_code(&out, 0);
    assert_eq!(std::fs::read(d.path("etc/a.conf")).unwrap(), b"a");
    assert_eq!(std::fs::read(d.path("etc/b.conf")).unwrap(), b"b");

    let out = d.run(&[
        "copy",
        "local",
        "--",
        &d.s("b"),
        &format!("{}/", d.s("etc")),
    ]);
    assert_code(&out, 0);
    assert_eq!(std::fs::read(d.path("etc/b/b.conf")).unwrap(), b"b");

    // Two sources of one name, and a source without one: usage errors,
    // before anything is connected.
    for paths in [
        vec![d.s("a.conf"), d.s("etc/a.conf"), d.s("etc")],
        vec![format!("{}/..", d.s("b")), format!("{}/", d.s("etc"))],
    ] {
        let mut a = vec!["copy", "local", "--"];
        a.extend(paths.iter().map(String::as_str));
        let out = d.run(&a);
        assert_code(&out, 2);
        assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
    }
}

#[test]
fn a_missing_source_fails_that_path_and_the_others_are_copied() {
    let d = Scratch::new("copy-missing");
    std::fs::write(d.path("good"), "good").unwrap();
    std::fs::create_dir(d.path("dst")).unwrap();
    let missing = d.s("no-such-file");
    let out = d.run(&["copy", "local", "--", &missing, &d.s("good"), &d.s("dst")]);
    assert_code(&out, 1);
    assert_eq!(std::fs::read(d.path("dst/good")).unwrap(), b"good");
    assert!(!d.path("dst/no-such-file").exists());
    assert!(
        out.stderr
            .contains(&format!("[local] failed: {missing} in context ")),
        "{}",
        out.stderr
    );
    assert_has(&out.stderr, "no such file or directory");
    assert_has(&out.stdout, "(1 of 2 paths failed)");

    let out = d.run(&[
        "copy",
        "--json",
        "local",
        "--",
        &missing,
        &d.s("good"),
        &d.s("dst"),
    ]);
    assert_code(&out, 1);
    let r = &records(&out)[0];
    assert_eq!(r["ok"], false);
    assert_eq!(r["paths_failed"], 1);
    assert_eq!(r["errors"][0]["kind"], "NotFound");
    assert_eq!(r["errors"][0]["path"], missing.as_str());
}

#[test]
fn fetch_puts_each_target_in_a_directory_of_its_own() {
    let d = Scratch::new("fetch-two");
    make_tree(&d.path("site"));
    std::fs::write(d.path("one.log"), "log\n").unwrap();
    let out = d.run(&[
        "fetch",
        "local",
        "local/local",
        "--",
        &d.s("site"),
        &d.s("one.log"),
        &d.s("out"),
    ]);
    assert_code(&out, 0);
    for dir in ["out/local", "out/local%2Flocal"] {
        assert_tree(&d.path(dir).join("site"), &d.path("site"));
        assert_eq!(
            std::fs::read(d.path(dir).join("one.log")).unwrap(),
            b"log\n"
        );
    }
    assert_has(
        &out.stdout,
        &format!(
            "[local/local] fetched 5 files (586.0 KiB), 0 unchanged, 3 dirs, 1 link into {} in ",
            d.s("out/local%2Flocal")
        ),
    );

    // Again, as JSON: nothing fetched twice, each record names its directory.
    let out = d.run(&[
        "fetch",
        "--json",
        "local",
        "local/local",
        "--",
        &d.s("site"),
        &d.s("one.log"),
        &d.s("out"),
    ]);
    assert_code(&out, 0);
    let r = records(&out);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0]["target"], "local");
    assert_eq!(r[0]["dest"], d.s("out/local").as_str());
    assert_eq!(r[1]["dest"], d.s("out/local%2Flocal").as_str());
    for r in &r {
        assert_eq!(
            (r["files"].as_u64(), r["skipped"].as_u64()),
            (Some(0), Some(6))
        );
    }

    // --flat: straight into the directory, one target only.
    let out = d.run(&[
        "fetch",
        "--flat",
        "local",
        "--",
        &d.s("one.log"),
        &d.s("flat"),
    ]);
    assert_code(&out, 0);
    assert_eq!(std::fs::read(d.path("flat/one.log")).unwrap(), b"log\n");
    let out = d.run(&[
        "fetch",
        "--flat",
        "local",
        "local",
        "--",
        &d.s("one.log"),
        &d.s("flat"),
    ]);
    assert_code(&out, 2);
}

/// A target that turns a link it sent earlier into a directory, hoping the
/// next fetch writes through the link: nothing lands outside its directory.
#[test]
fn fetch_never_writes_through_a_link_an_earlier_fetch_left() {
    let d = Scratch::new("fetch-hostile");
    std::fs::create_dir_all(d.path("remote/tree")).unwrap();
    std::fs::create_dir(d.path("outside")).unwrap();
    std::os::unix::fs::symlink(d.path("outside"), d.path("remote/evil")).unwrap();
    std::os::unix::fs::symlink(d.path("outside"), d.path("remote/tree/sub")).unwrap();
    let fetch = || {
        d.run(&[
            "fetch",
            "local",
            "--",
            &d.s("remote/evil"),
            &d.s("remote/tree"),
            &d.s("out"),
        ])
    };
    assert_code(&fetch(), 0);
    assert!(d.path("out/local/evil").is_symlink());

    // The links become directories with files in them.
    std::fs::remove_file(d.path("remote/evil")).unwrap();
    std::fs::remove_file(d.path("remote/tree/sub")).unwrap();
    std::fs::create_dir(d.path("remote/evil")).unwrap();
    std::fs::create_dir(d.path("remote/tree/sub")).unwrap();
    std::fs::write(d.path("remote/evil/authorized_keys"), "evil").unwrap();
    std::fs::write(d.path("remote/tree/sub/passwd"), "evil").unwrap();
    let out = fetch();
    assert_code(&out, 1);
    assert_eq!(
        std::fs::read_dir(d.path("outside")).unwrap().count(),
        0,
        "written through a link: {}",
        out.stderr
    );
    let evil = d.s("out/local/evil");
    assert!(
        out.stderr
            .contains(&format!("[local] failed: {evil} in context ")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("is a symbolic link"), "{}", out.stderr);
    assert_has(&out.stderr, &d.s("out/local/tree/sub"));
}

/// A `--flat` fetch whose target sent a link named as a target's directory
/// (`local`): a later fetch into per-target directories is not written
/// through it.
#[test]
fn fetch_never_uses_a_link_as_a_target_directory() {
    let d = Scratch::new("fetch-flat-link");
    std::fs::create_dir_all(d.path("remote")).unwrap();
    std::fs::create_dir(d.path("outside")).unwrap();
    std::os::unix::fs::symlink(d.path("outside"), d.path("remote/local")).unwrap();
    std::fs::write(d.path("remote/file"), "evil").unwrap();
    let out = d.run(&[
        "fetch",
        "--flat",
        "local",
        "--",
        &d.s("remote/local"),
        &d.s("out"),
    ]);
    assert_code(&out, 0);
    assert!(d.path("out/local").is_symlink());

    let out = d.run(&["fetch", "local", "--", &d.s("remote/file"), &d.s("out")]);
    assert_code(&out, 1);
    assert!(!d.path("outside/file").exists(), "written through a link");
    assert!(
        out.stderr
            .contains(&format!("[local] failed: {} in context ", d.s("out/local")))
            && out.stderr.contains("is a symbolic link"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_unreachable_target_gives_3_and_the_others_are_done() {
    let d = Scratch::new("copy-unreachable");
    std::fs::write(d.path("f"), "f").unwrap();
    std::fs::create_dir(d.path("dst")).unwrap();
    let port = mitogen_testkit::sshd::closed_port().unwrap().to_string();
    let host = format!("root@127.0.0.1:{port}");
    let out = d.run(&[
        "copy",
        "--json",
        "--connect-timeout",
        "20",
        &host,
        "local",
        "--",
        &d.s("f"),
        &d.s("dst/"),
    ]);
    assert_code(&out, 3);
    assert_eq!(std::fs::read(d.path("dst/f")).unwrap(), b"f");
    let r = records(&out);
    assert_eq!(r[0]["target"], "local");
    assert_eq!(r[0]["ok"], true);
    assert_eq!(r[1]["target"], host.as_str());
    assert_eq!(r[1]["ok"], false);
    assert!(r[1]["errors"][0]["kind"].is_null(), "{}", r[1]);
    assert!(r[1]["error"].as_str().unwrap().contains(&host), "{}", r[1]);
}

#[test]
fn copy_and_fetch_through_a_shared_ssh_hop_log_in_once() {
    let sshd = sshd_or_skip!();
    let d = Scratch::new("ssh-shared");
    make_tree(&d.path("site"));
    std::fs::create_dir(d.path("srv")).unwrap();
    let host = sshd.target();
    let (a, b) = (format!("{host}/local"), format!("{host}/local/local"));
    let before = sshd.logins();

    let mut args = strings(&["copy", "--json"]);
    args.extend(sshd.options());
    args.extend([
        a.clone(),
        b.clone(),
        "--".into(),
        d.s("site"),
        d.s("srv/www"),
    ]);
    let out = mitogen(&d.0, &args);
    assert_code(&out, 0);
    assert_eq!(sshd.logins() - before, 1, "{}", sshd.log());
    assert_tree(&d.path("srv/www"), &d.path("site"));
    let r = records(&out);
    assert_eq!(r.len(), 2);
    for r in &r {
        // Both copies are at one path of this machine: the second finds the
        // first's files in place.
        let n = |k: &str| r[k].as_u64().unwrap();
        assert_eq!(n("files") + n("links") + n("skipped"), 5, "{r}");
        assert_eq!(r["ok"], true);
    }

    let mut args = strings(&["fetch"]);
    args.extend(sshd.options());
    args.extend([
        host.clone(),
        a.clone(),
        "--".into(),
        d.s("srv/www"),
        d.s("got"),
    ]);
    let out = mitogen(&d.0, &args);
    assert_code(&out, 0);
    assert_eq!(sshd.logins() - before, 2, "{}", sshd.log());
    let dir_a = format!("got/{}", a.replace('/', "%2F"));
    assert_tree(&d.path(&format!("got/{host}/www")), &d.path("site"));
    assert_tree(&d.path(&dir_a).join("www"), &d.path("site"));
    assert_has(&out.stdout, "2 targets, 2 ok, 0 failed");
}

#[test]
fn a_read_only_destination_and_an_unreadable_path_fail_only_their_target() {
    let sshd = sshd_or_skip!();
    let user = mitogen_testkit::sshd::user("mitogen-cli1", "/bin/sh").unwrap();
    sshd.server.authorize(&user.name).unwrap();
    let d = Scratch::new("ssh-readonly");
    std::fs::write(d.path("app.conf"), "conf").unwrap();
    // Root's, not writable by the other login.
    std::fs::create_dir(d.path("etc")).unwrap();
    std::fs::write(d.path("private"), "root only").unwrap();
    std::fs::set_permissions(d.path("private"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let root = sshd.target();
    let other = format!("{}@{}:{}", user.name, sshd.server.address, sshd.port);

    // -I: the other login must write (without it, it would find root's copy
    // already in place, the same, and rightly leave it).
    let mut args = strings(&["copy", "--json", "-I"]);
    args.extend(sshd.options());
    args.extend([
        root.clone(),
        other.clone(),
        "--".into(),
        d.s("app.conf"),
        d.s("etc/"),
    ]);
    let out = mitogen(&d.0, &args);
    assert_code(&out, 1);
    assert_eq!(std::fs::read(d.path("etc/app.conf")).unwrap(), b"conf");
    let r = records(&out);
    let (ok, failed) = if r[0]["target"] == root.as_str() {
        (&r[0], &r[1])
    } else {
        (&r[1], &r[0])
    };
    assert_eq!(ok["ok"], true, "{ok}");
    assert_eq!(failed["target"], other.as_str());
    assert_eq!(failed["errors"][0]["kind"], "PermissionDenied", "{failed}");
    assert_eq!(failed["errors"][0]["context"], other.as_str(), "{failed}");
    assert!(
        failed["errors"][0]["path"]
            .as_str()
            .unwrap()
            .starts_with(&d.s("etc/")),
        "{failed}"
    );

    // The other login cannot read the file, and neither finds the missing
    // one: those paths fail, the rest is fetched.
    let mut args = strings(&["fetch"]);
    args.extend(sshd.options());
    let missing = d.s("missing");
    args.extend([
        root.clone(),
        other.clone(),
        "--".into(),
        d.s("private"),
        missing.clone(),
        d.s("app.conf"),
        d.s("got"),
    ]);
    let out = mitogen(&d.0, &args);
    assert_code(&out, 1);
    assert_eq!(
        std::fs::read(d.path(&format!("got/{root}/private"))).unwrap(),
        b"root only"
    );
    assert!(!d.path(&format!("got/{other}/private")).exists());
    assert_eq!(
        std::fs::read(d.path(&format!("got/{other}/app.conf"))).unwrap(),
        b"conf"
    );
    let denied = format!(
        "[{other}] failed: {} in context {other:?}: permission denied",
        d.s("private")
    );
    assert!(out.stderr.contains(&denied), "{}", out.stderr);
    for t in [&root, &other] {
        assert_has(
            &out.stderr,
            &format!("[{t}] failed: {missing} in context {t:?}: no such file or directory"),
        );
    }
}

/// Bytes the `mitogen` process itself (its threads, not the contexts it
/// starts) wrote to anything while running `args`, counted by `strace`.
/// (`wchar` of /proc/PID/io read from outside over-counts, by whole
/// multiples, the writes of threads that have exited.)
fn written_by_mitogen(dir: &Path, args: &[&str]) -> u64 {
    let trace = dir.join("strace.out");
    let status = std::process::Command::new("strace")
        .args(["-f", "-qq", "-s", "0", "-e", "signal=none", "-o"])
        .arg(&trace)
        .args([
            "-e",
            "trace=write,writev,pwrite64,sendmsg,sendto,splice,vmsplice,sendfile,clone,clone3",
        ])
        .arg(env!("CARGO_BIN_EXE_mitogen"))
        .args(args)
        .env_remove("MITOGEN_LOG")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("running strace (the tests need it: apt-get install strace)");
    assert!(status.success(), "mitogen {args:?} under strace: {status}");
    let text = std::fs::read_to_string(&trace).unwrap();
    let result = |line: &str| -> Option<u64> { line.rsplit_once("= ")?.1.trim().parse().ok() };
    let writes = [
        "write", "writev", "pwrite64", "sendmsg", "sendto", "splice", "vmsplice", "sendfile",
    ];
    let (mut threads, mut pending) = (
        std::collections::HashSet::new(),
        std::collections::HashSet::new(),
    );
    let mut total = 0;
    for line in text.lines() {
        let Some((pid, call)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        let call = call.trim_start();
        if threads.is_empty() {
            threads.insert(pid); // the first to make a call: the program
        }
        if !threads.contains(&pid) {
            continue;
        }
        let name = call
            .strip_prefix("<... ")
            .unwrap_or(call)
            .split(['(', ' '])
            .next()
            .unwrap_or("");
        if name.starts_with("clone") {
            let resumed = call.starts_with("<... ");
            if call.contains("CLONE_THREAD") || (resumed && pending.remove(&pid)) {
                match result(call) {
                    Some(tid) if !call.ends_with("<unfinished ...>") => {
                        threads.insert(tid as u32);
                    }
                    _ => {
                        pending.insert(pid);
                    }
                }
            }
        } else if writes.contains(&name) && !call.ends_with("<unfinished ...>") {
            total += result(call).unwrap_or(0);
        }
    }
    total
}

/// Three targets behind one shared hop get the bytes over the first link
/// once (`push_all`); three independent targets, three times.
#[test]
fn copy_to_targets_behind_a_shared_hop_sends_the_file_once() {
    let d = Scratch::new("copy-fanout");
    let size: u64 = 24 << 20;
    let data: Vec<u8> = (0..size).map(|i| (i * 31 % 253) as u8).collect();
    std::fs::write(d.path("big"), data).unwrap();
    std::fs::create_dir(d.path("dst")).unwrap();
    let (src, dst) = (d.s("big"), d.s("dst/"));
    // -I: every target writes, whatever another has put there already.
    let shared = written_by_mitogen(
        &d.0,
        &[
            "copy",
            "-I",
            "local/local",
            "local/local",
            "local/local",
            "--",
            &src,
            &dst,
        ],
    );
    let direct = written_by_mitogen(
        &d.0,
        &["copy", "-I", "local", "local", "local", "--", &src, &dst],
    );
    assert!(direct >= 3 * size, "three direct pushes wrote {direct}");
    assert!(
        shared >= size && shared < size * 3 / 2,
        "through a shared hop: {shared} bytes written for a file of {size}"
    );
    assert_eq!(std::fs::read(d.path("dst/big")).unwrap().len() as u64, size);
}
