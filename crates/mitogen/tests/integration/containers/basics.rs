//! Into a container and out again: `docker:` and `docker-run:` hops, the exec
//! hop with plain commands, users inside, containers with no gzip, a
//! read-only root, another system.

use std::time::Duration;

use anyhow::{bail, ensure, Result};
use mitogen::{Compression, Docker, Error, Exec, Router, TransportFailure};

use super::{docker, expect_failure, image, inside, nap, Container, Flavour};
use crate::util::{wait_until, Guard};

/// The machine's own host name, to tell the container's from it.
fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

pub fn docker_hop_runs_in_the_container(router: &Router) -> Result<()> {
    let c = Container::start(Flavour::Busybox, &[])?;
    let before = router.uploaded_bytes();
    let ctx = Guard(router.connect(c.hop().as_str())?);
    ensure!(ctx.name() == c.hop(), "named {:?}", ctx.name());
    let i = ctx.call(inside, ())?;
    ensure!(i.uid == 0, "uid {}", i.uid);
    ensure!(i.hostname != host_name(), "runs on the host: {i:?}");
    ensure!(
        i.exe.starts_with("/root/.cache/mitogen/"),
        "runs from {:?}",
        i.exe
    );
    ensure!(router.uploaded_bytes() > before, "nothing was uploaded");
    ensure!(ctx.call(nap, (1,))? == 1);
    drop(ctx);
    // The second connection finds the program in the container's cache.
    let before = router.uploaded_bytes();
    let ctx = Guard(router.start(None, Docker::exec(&c.name))?);
    ensure!(ctx.call(inside, ())?.exe == i.exe);
    ensure!(router.uploaded_bytes() == before, "uploaded again");
    Ok(())
}

pub fn user_inside_the_container(router: &Router) -> Result<()> {
    let c = Container::start(Flavour::Busybox, &[])?;
    // `app` has no home directory in the image: its cache falls back to
    // /tmp/mitogen-1000.
    let hop = format!("docker:app@{}", c.name);
    let ctx = Guard(router.connect(hop.as_str())?);
    ensure!(ctx.name() == hop);
    let i = ctx.call(inside, ())?;
    ensure!(i.uid == 1000, "uid {}", i.uid);
    ensure!(
        i.exe.starts_with("/tmp/mitogen-1000/"),
        "runs from {:?}",
        i.exe
    );
    drop(ctx);
    let ctx = Guard(router.start(None, Docker::exec(&c.name).user("1000:1000"))?);
    ensure!(ctx.call(inside, ())?.uid == 1000);
    Ok(())
}

pub fn exec_hop_with_plain_commands(router: &Router) -> Result<()> {
    let c = Container::start(Flavour::Busybox, &[])?;
    // The hop written as a target string, and as a builder with an argv.
    let hop = format!("exec:docker,exec,-i,{}", c.name);
    let ctx = Guard(router.connect(hop.as_str())?);
    ensure!(ctx.name() == hop, "named {:?}", ctx.name());
    let i = ctx.call(inside, ())?;
    ensure!(i.hostname != host_name(), "{i:?}");
    drop(ctx);
    let ctx = Guard(router.start(None, Exec::new(["docker", "exec", "-i", &c.name]))?);
    ensure!(ctx.call(inside, ())?.hostname == i.hostname);
    drop(ctx);
    // A plain local command: `env` runs `sh -c STAGE` on this machine; a
    // path in the hop is written with %2F.
    let ctx = Guard(router.connect("exec:%2Fusr%2Fbin%2Fenv,LC_ALL=C")?);
    let here = ctx.call(inside, ())?;
    ensure!(here.hostname == host_name() || here.hostname.is_empty());
    ensure!(ctx.call(nap, (2,))? == 2);
    Ok(())
}

pub fn docker_run_goes_away_with_the_context(router: &Router) -> Result<()> {
    super::require_docker()?;
    let img = image(Flavour::Busybox)?;
    let label = format!("mitogen-test-run={}", std::process::id());
    let filter = format!("label={label}");
    let ctx = router.start(None, Docker::run(&img).args(["--label", &label]))?;
    ensure!(ctx.name() == format!("docker-run:{img}"), "{}", ctx.name());
    ensure!(ctx.call(inside, ())?.hostname != host_name());
    let running = docker(&["ps", "-q", "--filter", &filter])?;
    ensure!(running.lines().count() == 1, "containers: {running:?}");
    ctx.shutdown_timeout(Duration::from_secs(10))?;
    let gone = wait_until(Duration::from_secs(15), || {
        docker(&["ps", "-aq", "--filter", &filter]).is_ok_and(|s| s.is_empty())
    });
    ensure!(gone, "the container outlived its context");

    // The same as a target string; the image's `/` is written `%2F`.
    let hop = format!("docker-run:{}", img.replace('/', "%2F"));
    let ctx = Guard(router.connect(hop.as_str())?);
    ensure!(ctx.call(nap, (3,))? == 3);
    Ok(())
}

pub fn no_gzip_in_the_container(router: &Router) -> Result<()> {
    let c = Container::start(Flavour::NoGzip, &[])?;
    let before = router.uploaded_bytes();
    let ctx = Guard(router.start(
        None,
        Docker::exec(&c.name).upload_compression(Compression::Gzip),
    )?);
    ensure!(ctx.call(nap, (4,))? == 4);
    let sent = router.uploaded_bytes() - before;
    let own = std::fs::metadata("/proc/self/exe")?.len();
    ensure!(
        sent == own,
        "uploaded {sent} bytes, the program is {own}: not sent plain"
    );
    Ok(())
}

pub fn read_only_root_says_what_was_tried(router: &Router) -> Result<()> {
    let c = Container::start(Flavour::Busybox, &["--read-only"])?;
    match router.connect(c.hop().as_str()) {
        Ok(_) => bail!("connected into a read-only container"),
        Err(Error::Connect { context, reason }) => {
            ensure!(context == c.hop(), "names {context:?}");
            for tried in [
                "/root/.cache/mitogen",
                "/tmp/mitogen-0",
                "/dev/shm/mitogen-0",
            ] {
                ensure!(reason.contains(tried), "{tried} not named: {reason}");
            }
            ensure!(reason.contains("no usable cache directory"), "{reason}");
        }
        Err(e) => bail!("unexpected error: {e}"),
    }
    drop(c);
    // With an executable tmpfs on /tmp, the program runs from there.
    let c = Container::start(Flavour::Busybox, &["--read-only", "--tmpfs", "/tmp:exec"])?;
    let ctx = Guard(router.connect(c.hop().as_str())?);
    let i = ctx.call(inside, ())?;
    ensure!(
        i.exe.starts_with("/tmp/mitogen-0/"),
        "runs from {:?}",
        i.exe
    );
    Ok(())
}

pub fn another_system_is_named(router: &Router) -> Result<()> {
    let c = Container::start(Flavour::FakeArch, &[])?;
    match router.connect(c.hop().as_str()) {
        Ok(_) => bail!("connected into a container of another system"),
        Err(e) => {
            let text = e.to_string();
            ensure!(
                text.contains(&c.hop()) && text.contains("Linux fakearch"),
                "{text}"
            );
        }
    }
    Ok(())
}

pub fn no_shell_in_the_container(router: &Router) -> Result<()> {
    let c = Container::start(Flavour::NoShell, &[])?;
    let text = expect_failure(
        router.connect(c.hop().as_str()),
        &c.hop(),
        TransportFailure::NoShell,
    )?;
    ensure!(
        text.contains(&format!("{} has no sh", c.hop()))
            && text.contains("executable file not found"),
        "{text}"
    );
    Ok(())
}

crate::tests! {
    docker_hop_runs_in_the_container => 120,
    user_inside_the_container => 120,
    exec_hop_with_plain_commands => 120,
    docker_run_goes_away_with_the_context => 120,
    no_gzip_in_the_container => 120,
    read_only_root_says_what_was_tried => 120,
    another_system_is_named => 120,
    no_shell_in_the_container => 120,
}
