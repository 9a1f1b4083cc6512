//! The `facts` builtin (what `mitogen facts` calls): what it says of this
//! machine matches what the test reads itself, it names the user a sudo
//! context switched to, and it answers over ssh.

use anyhow::{ensure, Context as _, Result};
use mitogen::builtins::facts;
use mitogen::Router;

use crate::containers::{Container, Flavour};
use crate::sshd::Sshd;
use crate::switch_user::{fixture, APP_USER};
use crate::util::{local, Guard};

/// The online CPUs, as the test counts them itself (`cpuN` directories
/// whose `online` is 1 or absent, cpu0's).
fn cpus_online() -> Result<u32> {
    let mut n = 0;
    for entry in std::fs::read_dir("/sys/devices/system/cpu")? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let Some(num) = name.strip_prefix("cpu") else {
            continue;
        };
        if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let online = std::fs::read_to_string(format!("/sys/devices/system/cpu/{name}/online"));
        if online.map_or(true, |s| s.trim() == "1") {
            n += 1;
        }
    }
    Ok(n)
}

/// A local context's facts are this machine's: host name, kernel, CPUs,
/// user, memory, the root file system and the loopback address.
pub fn local_facts_match_this_machine(router: &Router) -> Result<()> {
    let ctx = local(router)?;
    let f = ctx.call(facts, ())?;
    let uname = rustix::system::uname();
    let text = |s: &std::ffi::CStr| s.to_string_lossy().into_owned();
    ensure!(
        f.hostname == Some(text(uname.nodename())),
        "hostname {:?}",
        f.hostname
    );
    ensure!(
        f.kernel.release == Some(text(uname.release())),
        "{:?}",
        f.kernel
    );
    ensure!(
        f.kernel.arch.as_deref() == Some(std::env::consts::ARCH),
        "{:?}",
        f.kernel
    );
    ensure!(f.cpu.online == Some(cpus_online()?), "cpus {:?}", f.cpu);
    ensure!(
        f.user.uid == rustix::process::geteuid().as_raw(),
        "{:?}",
        f.user
    );
    ensure!(
        f.user.gid == rustix::process::getegid().as_raw(),
        "{:?}",
        f.user
    );
    ensure!(
        f.user.groups.first().map(|g| g.gid) == Some(f.user.gid),
        "groups {:?}",
        f.user.groups
    );
    let os_release = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .context("no os-release here")?;
    let id = f.os.id.as_deref().context("no os id")?;
    ensure!(
        os_release
            .lines()
            .any(|l| l == format!("ID={id}") || l == format!("ID=\"{id}\"")),
        "ID {id:?} is not that of {os_release:?}"
    );
    let total = f.memory.total_bytes.context("no memory total")?;
    let available = f.memory.available_bytes.context("no memory available")?;
    ensure!(available <= total && total > 0, "{:?}", f.memory);
    ensure!(
        f.uptime_secs.is_some_and(|u| u > 0.0),
        "uptime {:?}",
        f.uptime_secs
    );
    ensure!(f.load.is_some(), "no load averages");
    let root = f
        .mounts
        .iter()
        .find(|m| m.mountpoint == "/")
        .context("no / mount")?;
    let st = rustix::fs::statvfs("/")?;
    ensure!(
        root.size_bytes == Some(st.f_blocks * st.f_frsize),
        "/ of {:?} bytes, statvfs says {}",
        root.size_bytes,
        st.f_blocks * st.f_frsize
    );
    ensure!(
        !f.mounts
            .iter()
            .any(|m| ["proc", "sysfs", "cgroup2", "devpts"].contains(&m.fstype.as_str())),
        "pseudo file systems among the mounts: {:?}",
        f.mounts
    );
    let lo = f
        .interfaces
        .iter()
        .find(|i| i.name == "lo")
        .context("no lo")?;
    ensure!(
        lo.addresses
            .iter()
            .any(|a| a.ip.is_loopback() && a.prefix == 8),
        "lo {lo:?}"
    );
    Ok(())
}

/// A context started by sudo as another user reports that user, its name
/// and its home (from the target's own passwd file).
pub fn sudo_facts_name_the_switched_user(router: &Router) -> Result<()> {
    let fx = fixture()?;
    let ctx = Guard(router.connect(format!("sudo:{APP_USER}"))?);
    let f = ctx.call(facts, ())?;
    ensure!(f.user.uid == fx.app_uid, "uid {:?}", f.user);
    ensure!(f.user.name.as_deref() == Some(APP_USER), "{:?}", f.user);
    ensure!(
        f.user.home.as_deref() == Some(&*format!("/home/{APP_USER}")),
        "{:?}",
        f.user
    );
    Ok(())
}

/// Over ssh, as a user of the fixture's: the same host name, that user.
pub fn ssh_facts(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    let user = crate::sshd::user("mitogen-t1", "/bin/sh")?;
    let ctx = Guard(router.ssh(sshd.ssh(&user.name)?)?);
    let f = ctx.call(facts, ())?;
    ensure!(f.user.uid == user.uid, "{:?}", f.user);
    ensure!(f.user.name.as_deref() == Some(&*user.name), "{:?}", f.user);
    let here = rustix::system::uname();
    ensure!(
        f.hostname.as_deref() == Some(&*here.nodename().to_string_lossy()),
        "hostname {:?}",
        f.hostname
    );
    Ok(())
}

/// In a docker container as its user `app`: the container's host name
/// (`--hostname`), `docker` for the container, the image's own passwd
/// entry; the image has no os-release, which leaves the OS fields empty
/// without failing the call.
pub fn docker_facts(router: &Router) -> Result<()> {
    let c = Container::start(Flavour::Busybox, &["--hostname", "facts-box"])?;
    let ctx = Guard(router.connect(format!("docker:app@{}", c.name))?);
    let f = ctx.call(facts, ())?;
    ensure!(
        f.hostname.as_deref() == Some("facts-box"),
        "{:?}",
        f.hostname
    );
    ensure!(
        f.container.as_deref() == Some("docker"),
        "{:?}",
        f.container
    );
    ensure!(f.user.uid == 1000, "{:?}", f.user);
    ensure!(f.user.name.as_deref() == Some("app"), "{:?}", f.user);
    ensure!(
        f.os.id.is_none() && f.os.pretty_name.is_none(),
        "{:?}",
        f.os
    );
    ensure!(
        f.kernel.release.is_some() && f.cpu.online.is_some(),
        "{f:?}"
    );
    ensure!(
        f.mounts.iter().any(|m| m.mountpoint == "/"),
        "{:?}",
        f.mounts
    );
    Ok(())
}

crate::tests! {
    local_facts_match_this_machine,
    sudo_facts_name_the_switched_user,
    ssh_facts,
    docker_facts => 180,
}
