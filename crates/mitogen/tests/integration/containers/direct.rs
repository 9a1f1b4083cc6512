//! The direct socket of the docker and podman hops (docs/containers.md,
//! "Direct socket"): taken when the parent may, refused when the child's
//! report names anything but itself, and the client's pipe as the lifeline.
//!
//! What is checked is the transport itself, never a time: the context
//! holding the hop (the master, or the middle of a chain) has a Unix
//! socket whose peer is the process in the container, or it has none.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use mitogen::{Docker, Router};

use super::{docker, docker_children, inside, nap, Container, Flavour};
use crate::util::{wait_until, Guard};

/// The inode of process `pid`'s pid namespace (`self` for ours).
fn pid_ns(pid: &str) -> Result<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/pid"))?;
    let text = link.to_string_lossy();
    text.strip_prefix("pid:[")
        .and_then(|s| s.strip_suffix(']'))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("namespace link {text}"))
}

/// The pid, in its innermost pid namespace, of host process `pid`.
fn innermost_pid(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// Whether this process holds a Unix socket whose peer is a process in
/// another pid namespace that calls itself `inner_pid` there: the direct
/// socket to the child in the container.
#[mitogen::remote]
pub fn holds_direct_socket_to(inner_pid: u32) -> bool {
    let own = pid_ns("self").unwrap_or(0);
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.into_iter().any(|fd| {
        let is_socket = std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            return false;
        }
        // SAFETY: a descriptor listed just now, only borrowed for a
        // getsockopt: one closed meanwhile makes the call fail.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let Ok(cred) = rustix::net::sockopt::socket_peercred(fd) else {
            return false;
        };
        let peer = cred.pid.as_raw_nonzero().get() as u32;
        peer != std::process::id()
            && pid_ns(&peer.to_string()).is_ok_and(|ns| ns != own)
            && innermost_pid(peer) == Some(inner_pid)
    })
}

/// Whether `ctx` (a container's context) talks to the process that holds
/// the hop over a direct socket; `holder` is that process's own context
/// (`None`: this one).
pub fn is_direct(ctx: &mitogen::Context, holder: Option<&mitogen::Context>) -> Result<bool> {
    let pid = ctx.call(inside, ())?.pid;
    Ok(match holder {
        Some(h) => h.call(holds_direct_socket_to, (pid,))?,
        None => holds_direct_socket_to(pid),
    })
}

#[mitogen::remote]
fn echo(data: Vec<u8>) -> Vec<u8> {
    data
}

pub fn docker_hop_takes_a_direct_socket(router: &Router) -> Result<()> {
    let c = Container::start(Flavour::Busybox, &[])?;
    let ctx = Guard(router.connect(c.hop().as_str())?);
    ensure!(
        is_direct(&ctx, None)?,
        "the stream is not on a direct socket"
    );
    let big: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    ensure!(
        ctx.call(echo, (big.clone(),))? == big,
        "4 MiB came back wrong"
    );
    // Many calls at once over the socket.
    let pending: Vec<_> = (0..50).map(|i| ctx.call_async(nap, (i % 3,))).collect();
    for (i, p) in pending.into_iter().enumerate() {
        ensure!(p.get()? == (i % 3) as u64);
    }
    drop(ctx);
    // docker-run and a user inside too.
    let run = Guard(router.start(
        None,
        Docker::run(super::image(Flavour::Busybox)?).user("app"),
    )?);
    ensure!(
        is_direct(&run, None)?,
        "docker-run is not on a direct socket"
    );
    drop(run);
    // Turned off: in the target string and as a builder.
    let hop = format!("{},direct=off", c.hop());
    let off = Guard(router.connect(hop.as_str())?);
    ensure!(off.name() == hop, "named {:?}", off.name());
    ensure!(!is_direct(&off, None)?, "direct=off took a socket");
    ensure!(off.call(echo, (big.clone(),))? == big);
    drop(off);
    let off = Guard(router.start(None, Docker::exec(&c.name).direct(false))?);
    ensure!(!is_direct(&off, None)?, ".direct(false) took a socket");
    Ok(())
}

/// A socketpair whose `keep` end holds `bytes` unread.
fn loaded_socket(bytes: &[u8]) -> Result<(OwnedFd, OwnedFd)> {
    let (w, keep) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::empty(),
        None,
    )?;
    rustix::io::write(&w, bytes)?;
    Ok((w, keep))
}

/// What still waits at `fd` (read without waiting).
fn waiting(fd: BorrowedFd<'_>) -> Vec<u8> {
    let mut buf = [0u8; 256];
    match rustix::net::recv(fd, &mut buf, rustix::net::RecvFlags::DONTWAIT) {
        Ok((n, _)) => buf[..n].to_vec(),
        Err(_) => Vec::new(),
    }
}

/// A child whose report names another process (the container's pid 1, a
/// process of the host, a process in another pid namespace, a descriptor
/// it does not have) is refused: the context works over the pipe, and a
/// socket named in a process outside loses nothing.
pub fn a_lying_child_is_refused(router: &Router) -> Result<()> {
    ensure!(
        cfg!(debug_assertions),
        "the report override exists in debug builds only"
    );
    let c = Container::start(Flavour::Busybox, &[])?;
    let secret = b"not for the container";
    // A socket of this process (in the host's pid namespace).
    let (_w, keep) = loaded_socket(secret)?;
    let own_ns = pid_ns("self")?;
    let own = format!("{} {own_ns} {}", std::process::id(), {
        use std::os::fd::AsRawFd;
        keep.as_raw_fd()
    });
    // A process in a pid namespace of its own (as another container's
    // would be), holding a copy of that socket at descriptor 3.
    let (_w2, keep2) = loaded_socket(secret)?;
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--kill-child", "sleep", "1000"]);
    {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let raw = keep2.as_raw_fd();
        // SAFETY: dup2 between fork and exec, async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(raw, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut other = cmd.spawn().context("unshare --pid")?;
    let sleeper = {
        let parent = other.id();
        let mut found = None;
        wait_until(Duration::from_secs(5), || {
            found = mitogen_testkit::proc::descendants(parent)
                .into_iter()
                .find(|p| pid_ns(&p.to_string()).is_ok_and(|n| n != own_ns));
            found.is_some()
        });
        found.context("no process in the new pid namespace")?
    };
    let other_ns = pid_ns(&sleeper.to_string())?;
    let lies = [
        ("the container's pid 1", "1 - 0".to_owned()),
        (
            "the container's pid 1, its descriptor 1",
            "1 - 1".to_owned(),
        ),
        ("a descriptor it does not have", "- - 999".to_owned()),
        ("its own socket without the secret", "- - a".to_owned()),
        ("a host process's socket", own),
        (
            "another namespace's process's socket",
            format!("1 {other_ns} 3"),
        ),
        ("a namespace that is nowhere", "- 1 -".to_owned()),
    ];
    let result = (|| {
        for (what, lie) in &lies {
            let env = format!("MITOGEN_TEST_DIRECT_REPORT={lie}");
            let ctx = Guard(
                router
                    .start(None, Docker::exec(&c.name).args(["-e", &env]))
                    .with_context(|| format!("{what}: no context"))?,
            );
            ensure!(ctx.call(nap, (1,))? == 1, "{what}: call failed");
            ensure!(!is_direct(&ctx, None)?, "{what}: a socket was taken");
        }
        Ok(())
    })();
    let _ = other.kill();
    let _ = other.wait();
    result?;
    ensure!(
        waiting(keep.as_fd()) == secret,
        "the host socket lost its bytes"
    );
    ensure!(
        waiting(keep2.as_fd()) == secret,
        "the other namespace's socket lost its bytes"
    );
    Ok(())
}

/// The processes in container `c` that run our program (any but its
/// `sleep` and the `ps` looking).
fn ours_in(c: &Container) -> Result<Vec<String>> {
    let ps = docker(&["exec", &c.name, "/bin/busybox", "ps", "-o", "pid,args"])?;
    Ok(ps
        .lines()
        .skip(1)
        .filter(|l| !l.contains("sleep") && !l.contains(" ps"))
        .map(str::to_owned)
        .collect())
}

/// Killing the `docker exec` client (the lifeline) ends a context on a
/// direct socket, and leaves nothing in the container.
pub fn killing_the_client_ends_a_direct_context(router: &Router) -> Result<()> {
    let c = Container::start(Flavour::Busybox, &[])?;
    let ctx = Guard(router.connect(c.hop().as_str())?);
    ensure!(is_direct(&ctx, None)?, "not on a direct socket");
    ensure!(ours_in(&c)?.len() == 1, "{:?}", ours_in(&c)?);
    let pending = ctx.call_async(nap, (60_000,));
    let clients = docker_children();
    ensure!(clients.len() == 1, "{clients:?}");
    crate::util::kill9(clients[0])?;
    let t0 = Instant::now();
    match pending.get() {
        Ok(_) => bail!("the call survived its client"),
        Err(e) => ensure!(e.to_string().contains(&c.hop()), "{e}"),
    }
    ensure!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    ensure!(ctx.call(nap, (1,)).is_err(), "a new call succeeded");
    let clean = wait_until(Duration::from_secs(10), || {
        ours_in(&c).is_ok_and(|v| v.is_empty())
    });
    ensure!(clean, "left in the container: {:?}", ours_in(&c)?);
    Ok(())
}

/// A parent that cuts the stream (here: garbage written on the socket by
/// the child) closes the direct socket for good: the child exits, and its
/// docker client with it.
pub fn a_stream_cut_by_the_parent_ends_the_child(router: &Router) -> Result<()> {
    let c = Container::start(Flavour::Busybox, &[])?;
    let ctx = Guard(router.connect(c.hop().as_str())?);
    ensure!(is_direct(&ctx, None)?, "not on a direct socket");
    let writing = ctx.call_async(super::hostile::write_up_stream, (vec![0xff; 64],));
    let _ = writing.get_timeout(Duration::from_secs(10));
    let cut = wait_until(Duration::from_secs(10), || ctx.is_disconnected());
    ensure!(cut, "the parent did not cut the stream");
    let clean = wait_until(Duration::from_secs(10), || {
        ours_in(&c).is_ok_and(|v| v.is_empty()) && docker_children().is_empty()
    });
    ensure!(
        clean,
        "left: {:?} in the container, clients {:?}",
        ours_in(&c)?,
        docker_children()
    );
    Ok(())
}

/// `docker stop` while calls run over the direct socket: each fails naming
/// the hop, and no client is left.
pub fn docker_stop_fails_calls_on_a_direct_socket(router: &Router) -> Result<()> {
    let c = Container::start(Flavour::Busybox, &[])?;
    let ctx = Guard(router.connect(c.hop().as_str())?);
    ensure!(is_direct(&ctx, None)?, "not on a direct socket");
    let pending: Vec<_> = (0..3).map(|_| ctx.call_async(nap, (60_000,))).collect();
    std::thread::sleep(Duration::from_millis(200));
    docker(&["stop", "--time", "1", &c.name])?;
    for p in pending {
        match p.get() {
            Ok(_) => bail!("a call survived docker stop"),
            Err(e) => ensure!(e.to_string().contains(&c.hop()), "{e}"),
        }
    }
    let clean = wait_until(Duration::from_secs(10), || docker_children().is_empty());
    ensure!(clean, "docker clients left: {:?}", docker_children());
    Ok(())
}

/// Through a `local` context, the hop's direct socket is held there.
pub fn a_chain_takes_the_socket_in_its_middle(router: &Router) -> Result<()> {
    let c = Container::start(Flavour::Busybox, &[])?;
    let local = Guard(router.connect("local")?);
    let ctx = Guard(local.start(Docker::exec(&c.name))?);
    ensure!(
        is_direct(&ctx, Some(&local))?,
        "the middle holds no direct socket"
    );
    ensure!(!is_direct(&ctx, None)?, "the master holds one too");
    let target = format!("local/{}", c.hop());
    let ctx = Guard(router.connect(target.as_str())?);
    ensure!(ctx.call(nap, (1,))? == 1);
    Ok(())
}

crate::tests! {
    docker_hop_takes_a_direct_socket => 120,
    a_lying_child_is_refused => 180,
    killing_the_client_ends_a_direct_context => 120,
    docker_stop_fails_calls_on_a_direct_socket => 120,
    a_stream_cut_by_the_parent_ends_the_child => 120,
    a_chain_takes_the_socket_in_its_middle => 120,
}
