//! podman, where it runs: as root here, with two resource limits lowered,
//! and rootless for a test user (its direct socket).
//!
//! podman gives every container the hard limits RLIMIT_NOFILE and
//! RLIMIT_NPROC of 1048576 by default, and raising a hard limit takes
//! CAP_SYS_RESOURCE, which the test machine's root does not have: runc then
//! fails with "error setting rlimit type 7: operation not permitted". Each
//! container here is started with `--ulimit nofile=1024:1024 --ulimit
//! nproc=1024:1024` (docs/containers.md). The images are imported into
//! podman's own store from the same tarball as docker's.

use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Result};
use mitogen::{Docker, Router, TransportFailure};

use super::{engine, expect_failure, image_in, inside, nap, Container, Flavour};
use crate::util::{wait_until, Guard};

/// The limits podman must be given on this machine (see the module docs).
const ULIMITS: &[&str] = &[
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

/// Fails the test (or skips it where allowed) unless podman answers as root.
fn require_podman() -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        return Err(crate::harness::cannot_run("root (for podman)"));
    }
    match Command::new("podman")
        .args(["info", "--format", "{{.Host.Arch}}"])
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(crate::harness::cannot_run(format!(
            "a working podman (podman info: {})",
            String::from_utf8_lossy(&o.stderr).trim()
        ))),
        Err(e) => Err(crate::harness::cannot_run(format!(
            "podman ({e}; .ci/run installs it)"
        ))),
    }
}

pub fn podman_hop_runs_in_the_container(router: &Router) -> Result<()> {
    require_podman()?;
    let c = Container::start_in("podman", Flavour::Busybox, ULIMITS)?;
    let ctx = Guard(router.connect(c.hop().as_str())?);
    ensure!(ctx.name() == c.hop(), "named {:?}", ctx.name());
    ensure!(
        super::direct::is_direct(&ctx, None)?,
        "podman as root: not on a direct socket"
    );
    let i = ctx.call(inside, ())?;
    ensure!(
        i.uid == 0 && i.exe.starts_with("/root/.cache/mitogen/"),
        "{i:?}"
    );
    drop(ctx);
    let before = router.uploaded_bytes();
    let hop = format!("podman:app@{}", c.name);
    let ctx = Guard(router.connect(hop.as_str())?);
    let i = ctx.call(inside, ())?;
    ensure!(
        i.uid == 1000 && i.exe.starts_with("/tmp/mitogen-1000/"),
        "{i:?}"
    );
    ensure!(router.uploaded_bytes() > before, "app's cache was filled");
    Ok(())
}

pub fn podman_run_goes_away_with_the_context(router: &Router) -> Result<()> {
    require_podman()?;
    let img = image_in("podman", Flavour::Busybox)?;
    let label = format!("mitogen-test-run={}", std::process::id());
    let filter = format!("label={label}");
    let mut args = ULIMITS.to_vec();
    args.extend(["--label", &label]);
    let ctx = router.start(None, Docker::podman_run(&img).args(args))?;
    ensure!(ctx.call(nap, (1,))? == 1);
    ctx.shutdown_timeout(Duration::from_secs(10))?;
    let gone = wait_until(Duration::from_secs(15), || {
        engine("podman", &["ps", "-aq", "--filter", &filter]).is_ok_and(|s| s.is_empty())
    });
    ensure!(gone, "the container outlived its context");
    Ok(())
}

pub fn podman_failures_are_typed(router: &Router) -> Result<()> {
    require_podman()?;
    let hop = format!("podman:{}", Container::fresh_name("nosuch"));
    expect_failure(
        router.connect(hop.as_str()),
        &hop,
        TransportFailure::NoSuchContainer,
    )?;
    let img = image_in("podman", Flavour::Busybox)?;
    let c = Container {
        name: Container::fresh_name("created"),
        engine: "podman",
    };
    let mut args = vec!["create", "--name", &c.name];
    args.extend_from_slice(ULIMITS);
    args.extend([img.as_str(), "sleep", "100"]);
    engine("podman", &args)?;
    expect_failure(
        router.connect(c.hop().as_str()),
        &c.hop(),
        TransportFailure::ContainerNotRunning,
    )?;
    Ok(())
}

/// Runs `podman ARGS` as `user` (rootless), from `/`; its stdout.
fn podman_as(user: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("sudo")
        .args(["-u", user, "-H", "podman"])
        .args(args)
        .current_dir("/")
        .output()?;
    ensure!(
        out.status.success(),
        "podman {args:?} as {user}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A rootless podman container of `user`, removed on drop.
struct Rootless {
    user: String,
    name: String,
}

impl Drop for Rootless {
    fn drop(&mut self) {
        let _ = podman_as(&self.user, &["rm", "-f", &self.name]);
    }
}

/// Rootless podman: a user's own container, reached through `sudo:USER`,
/// whose context (not root) takes the direct socket: the child runs in a
/// user namespace that user owns, so the kernel lets it take the
/// descriptor. Needs `newuidmap` (Debian's uidmap, which `.ci/run`
/// installs) and subordinate ids for the user; runs with `--network none`
/// (no slirp4netns).
pub fn rootless_podman_takes_a_direct_socket(router: &Router) -> Result<()> {
    require_podman()?;
    if Command::new("newuidmap").arg("--help").output().is_err() {
        return Err(crate::harness::cannot_run(
            "newuidmap (Debian's uidmap), for rootless podman",
        ));
    }
    let user = mitogen_testkit::sshd::user("mitogen-t1", "/bin/sh")?;
    let has_ids = |file: &str| {
        std::fs::read_to_string(file)
            .is_ok_and(|s| s.lines().any(|l| l.starts_with(&format!("{}:", user.name))))
    };
    if !has_ids("/etc/subuid") || !has_ids("/etc/subgid") {
        let range = "3000000-3065535";
        let ok = Command::new("usermod")
            .args(["--add-subuids", range, "--add-subgids", range, &user.name])
            .status()?
            .success();
        ensure!(ok, "usermod --add-subuids failed");
    }
    // The image, from root's store into the user's.
    let img = image_in("podman", Flavour::Busybox)?;
    if podman_as(&user.name, &["image", "exists", &img]).is_err() {
        let dir = tempfile_dir()?;
        let tar = format!("{dir}/image.tar");
        engine("podman", &["save", "-o", &tar, &img])?;
        std::fs::set_permissions(&tar, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        podman_as(&user.name, &["load", "-i", &tar])?;
        let _ = std::fs::remove_dir_all(&dir);
    }
    let c = Rootless {
        user: user.name.clone(),
        name: Container::fresh_name("rootless"),
    };
    podman_as(
        &user.name,
        &[
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            &c.name,
            &img,
            "/bin/busybox",
            "sleep",
            "1000000",
        ],
    )?;
    let mid = Guard(router.connect(format!("sudo:{}", user.name).as_str())?);
    let ctx = Guard(router.connect(format!("sudo:{}/podman:{}", user.name, c.name).as_str())?);
    let i = ctx.call(inside, ())?;
    ensure!(i.uid == 0, "{i:?}");
    ensure!(
        mid.call(super::direct::holds_direct_socket_to, (i.pid,))?,
        "the rootless user's context holds no direct socket"
    );
    ensure!(ctx.call(nap, (1,))? == 1);
    let off =
        Guard(router.connect(format!("sudo:{}/podman:{},direct=off", user.name, c.name).as_str())?);
    let j = off.call(inside, ())?;
    ensure!(
        !mid.call(super::direct::holds_direct_socket_to, (j.pid,))?,
        "direct=off took a socket"
    );
    Ok(())
}

/// A fresh directory under /tmp that other users can read.
fn tempfile_dir() -> Result<String> {
    let dir = format!("/tmp/{}", Container::fresh_name("image"));
    std::fs::create_dir(&dir)?;
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    Ok(dir)
}

crate::tests! {
    podman_hop_runs_in_the_container => 120,
    rootless_podman_takes_a_direct_socket => 180,
    podman_run_goes_away_with_the_context => 120,
    podman_failures_are_typed => 120,
}
