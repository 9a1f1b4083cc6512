//! Container hops that cannot start, and one that dies under a call: each a
//! typed error naming the hop, none a hang, no process left behind.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use mitogen::{Docker, Exec, Router, TransportFailure};

use super::{docker, docker_children, expect_failure, image, nap, Container, Flavour};
use crate::util::{wait_until, Guard};

pub fn no_such_container(router: &Router) -> Result<()> {
    super::require_docker()?;
    let hop = format!("docker:{}", Container::fresh_name("nosuch"));
    expect_failure(
        router.connect(hop.as_str()),
        &hop,
        TransportFailure::NoSuchContainer,
    )?;
    Ok(())
}

pub fn container_not_running(router: &Router) -> Result<()> {
    super::require_docker()?;
    let img = image(Flavour::Busybox)?;
    let c = Container {
        name: Container::fresh_name("created"),
        engine: "docker",
    };
    // Created, never started.
    docker(&["create", "--name", &c.name, &img, "sleep", "100"])?;
    expect_failure(
        router.connect(c.hop().as_str()),
        &c.hop(),
        TransportFailure::ContainerNotRunning,
    )?;
    Ok(())
}

pub fn client_missing(router: &Router) -> Result<()> {
    let c = Container::start(Flavour::Busybox, &[])?;
    let name = c.hop();
    expect_failure(
        router.start(
            None,
            Docker::exec(&c.name).client_path("/nonexistent/docker"),
        ),
        &name,
        TransportFailure::NotInstalled,
    )?;
    Ok(())
}

pub fn image_missing(router: &Router) -> Result<()> {
    super::require_docker()?;
    let hop = "docker-run:mitogen-test%2Fnosuch:1";
    expect_failure(router.connect(hop), hop, TransportFailure::NoSuchImage)?;
    Ok(())
}

/// A user who may not open the docker socket: reached with sudo, whose
/// context then runs `docker exec`.
pub fn no_permission_on_the_docker_socket(router: &Router) -> Result<()> {
    let c = Container::start(Flavour::Busybox, &[])?;
    let user = mitogen_testkit::sshd::user("mitogen-t1", "/bin/sh")?;
    let target = format!("sudo:{}/{}", user.name, c.hop());
    match router.connect(target.as_str()) {
        Ok(_) => bail!("{} reached the docker socket", user.name),
        Err(e) => {
            let text = e.to_string();
            ensure!(
                text.contains(&target) && text.contains("container engine unavailable"),
                "{text}"
            );
            ensure!(text.contains("permission denied"), "{text}");
        }
    }
    Ok(())
}

pub fn container_dies_mid_call(router: &Router) -> Result<()> {
    let c = Container::start(Flavour::Busybox, &[])?;
    let ctx = Guard(router.connect(c.hop().as_str())?);
    ensure!(ctx.call(nap, (1,))? == 1);
    ensure!(docker_children().len() == 1, "{:?}", docker_children());
    let pending: Vec<_> = (0..3).map(|_| ctx.call_async(nap, (60_000,))).collect();
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    docker(&["kill", &c.name])?;
    for p in pending {
        match p.get() {
            Ok(_) => bail!("a call survived its container"),
            Err(e) => {
                let text = e.to_string();
                ensure!(text.contains(&c.hop()), "does not name the hop: {text}");
            }
        }
    }
    ensure!(
        t0.elapsed() < Duration::from_secs(10),
        "calls failed only after {:?}",
        t0.elapsed()
    );
    ensure!(ctx.call(nap, (1,)).is_err(), "a new call succeeded");
    let clean = wait_until(Duration::from_secs(10), || docker_children().is_empty());
    ensure!(clean, "docker clients left: {:?}", docker_children());
    Ok(())
}

/// A tool that would ask for credentials (as kubectl with an exec plugin
/// does) gets no terminal and fails; one that waits on its stdin instead is
/// ended by the deadline. Neither leaves a process.
pub fn a_tool_that_asks_never_hangs(router: &Router) -> Result<()> {
    let t0 = Instant::now();
    // No controlling terminal: /dev/tty cannot be opened.
    let r = router.start(
        None,
        Exec::new(["sh", "-c", "exec 3</dev/tty && read -r pw <&3"])
            .connect_timeout(Duration::from_secs(20)),
    );
    ensure!(r.is_err(), "connected");
    ensure!(
        t0.elapsed() < Duration::from_secs(10),
        "waited {:?} for a terminal",
        t0.elapsed()
    );
    let t0 = Instant::now();
    let r = router.start(
        None,
        Exec::new(["sh", "-c", "read -r password; exec sleep 600"])
            .connect_timeout(Duration::from_secs(2))
            .name("asks"),
    );
    match r {
        Ok(_) => bail!("connected"),
        Err(e) => ensure!(e.to_string().contains("asks"), "{e}"),
    }
    ensure!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    let clean = wait_until(Duration::from_secs(5), || {
        mitogen_testkit::proc::descendants(std::process::id())
            .iter()
            .all(|pid| {
                let c = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                !c.starts_with(b"sh\0-c\0read") && c != b"sleep\x00600\x00"
            })
    });
    ensure!(clean, "the tool is still running");
    Ok(())
}

crate::tests! {
    no_such_container => 120,
    container_not_running => 120,
    client_missing => 120,
    image_missing => 120,
    no_permission_on_the_docker_socket => 120,
    container_dies_mid_call => 120,
    a_tool_that_asks_never_hangs => 60,
}
