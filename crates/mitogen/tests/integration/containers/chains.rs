//! Container hops inside chains: after a local hop, behind ssh and sudo over
//! the test sshd, and in the middle of a chain (a context started from
//! inside the container).

use std::time::Duration;

use anyhow::{ensure, Result};
use mitogen::{ConnectOptions, Router};

use super::{inside, nap, Container, Flavour};
use crate::sshd::Sshd;
use crate::util::Guard;

pub fn local_then_docker(router: &Router) -> Result<()> {
    let c = Container::start(Flavour::Busybox, &[])?;
    let target = format!("local/{}", c.hop());
    let ctx = Guard(router.connect(target.as_str())?);
    ensure!(ctx.name() == target, "named {:?}", ctx.name());
    let i = ctx.call(inside, ())?;
    ensure!(i.exe.starts_with("/root/.cache/mitogen/"), "{i:?}");
    Ok(())
}

pub fn docker_in_the_middle(router: &Router) -> Result<()> {
    let c = Container::start(Flavour::Busybox, &[])?;
    let target = format!("{}/local", c.hop());
    let ctx = Guard(router.connect(target.as_str())?);
    let i = ctx.call(inside, ())?;
    let mid_ctx = router.connect(c.hop().as_str())?;
    ensure!(super::direct::is_direct(&mid_ctx, None)?, "not direct");
    let mid = mid_ctx.call(inside, ())?;
    // Both run in the container, as two processes of the same program.
    ensure!(i.hostname == mid.hostname, "{i:?} vs {mid:?}");
    ensure!(i.exe == mid.exe && i.pid != mid.pid, "{i:?} vs {mid:?}");
    ensure!(ctx.call(nap, (5,))? == 5);
    Ok(())
}

pub fn ssh_sudo_docker(router: &Router) -> Result<()> {
    let c = Container::start(Flavour::Busybox, &[])?;
    let sshd = Sshd::start()?;
    sshd.authorize("root")?;
    let mut options = ConnectOptions {
        ssh_config: Some("/dev/null".into()),
        connect_timeout: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    options.ssh_options = vec![
        format!("IdentityFile={}", sshd.client_key.display()),
        "IdentitiesOnly=yes".into(),
        "StrictHostKeyChecking=no".into(),
        "UserKnownHostsFile=/dev/null".into(),
    ];
    // The sudo hop connected first, so the target runs through it.
    let mid = Guard(router.connect_with(
        format!("root@127.0.0.1:{}/sudo", sshd.port).as_str(),
        &options,
    )?);
    let target = format!("root@127.0.0.1:{}/sudo/{}", sshd.port, c.hop());
    let ctx = Guard(router.connect_with(target.as_str(), &options)?);
    ensure!(ctx.name() == target, "named {:?}", ctx.name());
    let i = ctx.call(inside, ())?;
    ensure!(
        i.uid == 0 && i.exe.starts_with("/root/.cache/mitogen/"),
        "{i:?}"
    );
    // The sudo context (root) holds the docker hop's direct socket.
    ensure!(
        mid.call(super::direct::holds_direct_socket_to, (i.pid,))?,
        "the sudo context holds no direct socket"
    );
    Ok(())
}

crate::tests! {
    local_then_docker => 120,
    docker_in_the_middle => 120,
    ssh_sudo_docker => 180,
}
