//! `--become`, `--become-user`, `--become-method`: a user switch hop after
//! every target, with real sudo and su and a test account (root, so neither
//! asks for a password), from the command line and hosts files, local and
//! over ssh.

#[macro_use]
mod common;

use common::scratch::{assert_code, strings, test_user, Scratch};

/// The account the tests become.
const USER: &str = "mitogen-become";

#[test]
fn become_adds_the_hop_to_every_target_and_hosts_file_line() {
    let Some(_user) = test_user(USER) else { return };
    let d = Scratch::new("become");
    let hosts = d.file("hosts", "local/local\n");
    let out = d.run(&[
        "run",
        "-b",
        "--become-user",
        USER,
        "-H",
        &hosts,
        "local",
        "--",
        "id",
        "-un",
    ]);
    assert_code(&out, 0);
    for label in [
        format!("local/sudo:{USER}"),
        format!("local/local/sudo:{USER}"),
    ] {
        assert!(
            out.stdout.contains(&format!("{label}: {USER}\n")),
            "{label}: {}",
            out.stdout
        );
    }

    // su instead, and root by default.
    let out = d.run(&[
        "run",
        "--become-method",
        "su",
        "--become-user",
        USER,
        "local",
        "--",
        "id",
        "-un",
    ]);
    assert_code(&out, 0);
    assert!(
        out.stdout.contains(&format!("local/su:{USER}: {USER}\n")),
        "{}",
        out.stdout
    );
    let out = d.run(&["run", "--become", "local", "--", "id", "-u"]);
    assert_code(&out, 0);
    assert!(out.stdout.contains("local/sudo: 0\n"), "{}", out.stdout);

    // Without it, nothing is added.
    let out = d.run(&["run", "local", "--", "id", "-un"]);
    assert!(out.stdout.contains("local: root\n"), "{}", out.stdout);
}

#[test]
fn the_become_hop_is_named_for_its_password_and_copy_and_fetch_take_it() {
    let Some(user) = test_user(USER) else { return };
    let d = Scratch::new("become-pw");
    let pw = d.file("pw", "unused-by-root\n");
    // A password for the hop by its path: only a hop of the targets takes
    // HOP=FILE (anything else would be read as a file name, and fail).
    let named = format!("local/sudo:{USER}={pw}");
    let out = d.run(&[
        "run",
        "-b",
        "--become-user",
        USER,
        "--password-file",
        &named,
        "local",
        "--",
        "id",
        "-un",
    ]);
    assert_code(&out, 0);
    assert!(
        out.stdout.contains(&format!(": {USER}\n")),
        "{}",
        out.stdout
    );

    // A bad user name is a usage error, before anything starts.
    let out = d.run(&["run", "--become-user", "a/b", "local", "--", "true"]);
    assert_code(&out, 2);
    assert!(out.stderr.contains("not a user name"), "{}", out.stderr);

    // copy writes as the user become, fetch reads as it.
    std::fs::write(d.path("f"), "data").unwrap();
    let dest = user.home.join("become-copied");
    let _ = std::fs::remove_file(&dest);
    let dest = dest.display().to_string();
    let out = d.run(&[
        "copy",
        "-b",
        "--become-user",
        USER,
        "local",
        "--",
        &d.s("f"),
        &dest,
    ]);
    assert_code(&out, 0);
    let meta = std::fs::metadata(&dest).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), user.uid);
    let got = d.s("got");
    let out = d.run(&[
        "fetch",
        "--flat",
        "-b",
        "--become-user",
        USER,
        "local",
        "--",
        &dest,
        &got,
    ]);
    assert_code(&out, 0);
    assert_eq!(
        std::fs::read_to_string(d.path("got/become-copied")).unwrap(),
        "data"
    );
    let _ = std::fs::remove_file(&dest);
}

#[test]
fn become_over_ssh_rides_a_reused_login() {
    let sshd = sshd_or_skip!();
    let Some(_user) = test_user(USER) else { return };
    let d = Scratch::new("become-ssh");
    // Short: a control socket's path must fit in 107 bytes.
    let runtime = std::path::PathBuf::from(format!("/tmp/mb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&runtime);
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let before = sshd.logins();
    let mut args = strings(&["run", "--reuse", "5", "-b", "--become-user", USER]);
    args.extend(sshd.options());
    args.extend(strings(&[&sshd.target(), "--", "id", "-un"]));
    for _ in 0..2 {
        let out = common::mitogen_with(&d.0, &args, &[("XDG_RUNTIME_DIR", runtime.as_os_str())]);
        assert_code(&out, 0);
        let label = format!("{}/sudo:{USER}", sshd.target());
        assert!(
            out.stdout.contains(&format!("{label}: {USER}\n")),
            "{}",
            out.stdout
        );
    }
    assert_eq!(sshd.logins() - before, 1, "{}", sshd.log());
    // The master goes 5 s after its last session; not waited for here.
    let _ = std::process::Command::new("ssh")
        .args(["-F", "/dev/null", "-O", "exit", "-o"])
        .arg(format!("ControlPath={}/mitogen/ssh/%C", runtime.display()))
        .args(["-p", &sshd.port.to_string(), "-l", "root", "127.0.0.1"])
        .output();
    let _ = std::fs::remove_dir_all(&runtime);
}
