//! A network cut under an ssh hop: sshd runs in its own network namespace,
//! reached over a veth pair; the link is taken down while a call is pending
//! two hops down. The call must fail naming a lost context, and nothing on
//! the far side may outlive the cut once sshd's client-alive checks give up.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use mitogen::{Error, Router};

use crate::calls::sleep_ms;
use crate::sshd::{self, Sshd};
use crate::util::{proc_state, wait_dead, wait_gone, Guard};

/// Runs `ip ARGS`, failing with its stderr.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .context("running ip (iproute2)")?;
    ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// A network namespace joined to this one by a veth pair on a private /30;
/// the namespace and the pair are deleted on drop.
struct Link {
    ns: String,
    /// The end in this namespace.
    host_if: String,
    /// This namespace's address.
    host_addr: String,
    /// The address inside the namespace.
    inside: String,
}

impl Link {
    fn up() -> Result<Link> {
        let pid = std::process::id();
        // A /30 of 10.213.0.0/16 from the pid: distinct for concurrent runs.
        let (a, b) = ((pid >> 6) & 0xff, (pid & 0x3f) * 4);
        let link = Link {
            ns: format!("mtgcut-{pid}"),
            host_if: format!("mtgc{pid}h"),
            host_addr: format!("10.213.{a}.{}", b + 1),
            inside: format!("10.213.{a}.{}", b + 2),
        };
        // Leftovers of a crashed run that had the same pid.
        link.remove();
        let inner_if = format!("mtgc{pid}n");
        ip(&["netns", "add", &link.ns])?;
        ip(&[
            "link",
            "add",
            &link.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &inner_if,
            "netns",
            &link.ns,
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", link.host_addr),
            "dev",
            &link.host_if,
        ])?;
        ip(&["link", "set", &link.host_if, "up"])?;
        let n = link.ns.as_str();
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("{}/30", link.inside),
            "dev",
            &inner_if,
        ])?;
        ip(&["-n", n, "link", "set", &inner_if, "up"])?;
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        Ok(link)
    }

    /// Takes this namespace's end down: nothing passes either way.
    fn cut(&self) -> Result<()> {
        ip(&["link", "set", &self.host_if, "down"])
    }

    fn remove(&self) {
        // Deleting one end of a veth pair deletes both.
        for args in [
            ["link", "del", self.host_if.as_str()],
            ["netns", "del", self.ns.as_str()],
        ] {
            let _ = Command::new("ip")
                .args(args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.remove();
    }
}

/// An ssh context with a local context named `below` under it, both
/// answering, and what the tests of a lost hop look for afterwards: both
/// remote pids and sshd's per-connection processes above the ssh context.
pub struct SshAndBelow {
    pub web: Guard,
    pub below: Guard,
    pub web_pid: u32,
    pub below_pid: u32,
    pub session: Vec<u32>,
}

impl SshAndBelow {
    /// Connects `ssh`, then a local context named `below` through it.
    pub fn start(router: &Router, ssh: mitogen::Ssh, below: &str) -> Result<SshAndBelow> {
        let web = Guard(router.ssh(ssh)?);
        let below_ctx = Guard(router.start(Some(&web), mitogen::Local::new().name(below))?);
        let web_pid = web.call(mitogen::builtins::getpid, ())?;
        let below_pid = below_ctx.call(mitogen::builtins::getpid, ())?;
        ensure!(
            crate::routing::processes_named(below) == [below_pid],
            "{below} ({below_pid}) is not the one process named so: {:?}",
            crate::routing::processes_named(below)
        );
        let session = sshd::sessions_above(web_pid);
        ensure!(
            !session.is_empty(),
            "no sshd session process above the ssh context ({web_pid})"
        );
        Ok(SshAndBelow {
            web,
            below: below_ctx,
            web_pid,
            below_pid,
            session,
        })
    }
}

/// Waits until `deadline` for the remote contexts `far` and sshd's
/// `session` processes above them to be gone, and for nothing named like the
/// last context to be left; returns how long after `since.0` (the event,
/// named `since.1`) that was.
pub fn expect_far_side_gone(
    far: [(&str, u32); 2],
    session: &[u32],
    since: (Instant, &str),
    deadline: Instant,
    sshd: &Sshd,
) -> Result<Duration> {
    let (event_at, event) = since;
    let all = far
        .into_iter()
        .chain(session.iter().map(|&pid| ("sshd session", pid)));
    for (what, pid) in all {
        ensure!(
            wait_dead(pid, deadline.saturating_duration_since(Instant::now())),
            "{what} ({pid}) still {:?} (parent {:?}) {:?} after {event}; sshd: {}",
            proc_state(pid),
            crate::util::proc_ppid(pid),
            event_at.elapsed(),
            sshd.log_tail()
        );
    }
    let gone = event_at.elapsed();
    let left = crate::routing::processes_named(far[1].0);
    ensure!(left.is_empty(), "processes left: {left:?}");
    Ok(gone)
}

pub fn network_cut_fails_calls_and_leaves_no_orphans(router: &Router) -> Result<()> {
    sshd::require_root_and_sshd()?;
    let link = Link::up()?;
    let sshd = Sshd::start_in_netns(
        &link.ns,
        &link.inside,
        &["ClientAliveInterval 1", "ClientAliveCountMax 2"],
    )?;
    let started = Instant::now();
    let SshAndBelow {
        web,
        below,
        web_pid,
        below_pid,
        session,
    } = SshAndBelow::start(
        router,
        sshd.ssh("root")?.keepalive(Some((1, 2))),
        "netcut-below",
    )?;
    let connected = started.elapsed();
    let ssh_pid = web.pid();
    // The remote really is on the other side of the link.
    let ns_of = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
    ensure!(
        ns_of(web_pid).is_some() && ns_of(web_pid) != ns_of(std::process::id()),
        "the ssh context ({web_pid}) runs in this network namespace"
    );
    let pending = below.call_async(sleep_ms, (60_000,));
    let pending_web = web.call_async(sleep_ms, (60_000,));
    // Both calls reach their contexts before the link goes.
    std::thread::sleep(Duration::from_millis(300));

    link.cut()?;
    let cut = Instant::now();
    let names = [web.name().to_owned(), below.name().to_owned()];
    match pending.get_timeout(Duration::from_secs(15)) {
        Err(Error::Disconnected { context, reason }) if names.contains(&context) => {
            println!(
                "    call in {:?} failed: {context} ({reason})",
                below.name()
            )
        }
        Err(Error::Timeout(_)) => bail!(
            "the call in netcut-below still pending 15 s after the cut; sshd: {}",
            sshd.log_tail()
        ),
        other => bail!("pending call: expected Disconnected naming {names:?}, got {other:?}"),
    }
    let failed = cut.elapsed();
    match pending_web.get_timeout(Duration::from_secs(5)) {
        Err(Error::Disconnected { context, .. }) if context == names[0] => {}
        other => bail!(
            "pending call in {:?}: expected Disconnected naming it, got {other:?}",
            names[0]
        ),
    }
    ensure!(
        web.wait_disconnect(Duration::from_secs(2))
            && below.wait_disconnect(Duration::from_secs(2)),
        "the router still has the contexts beyond the cut"
    );
    if let Some(pid) = ssh_pid {
        ensure!(
            wait_gone(pid, Duration::from_secs(5)),
            "the ssh client ({pid}) is still {:?}",
            proc_state(pid)
        );
    }
    // The far side: sshd ends the session when the client stops answering,
    // and the contexts follow their parent streams.
    let gone = expect_far_side_gone(
        [("ssh context", web_pid), ("netcut-below", below_pid)],
        &session,
        (cut, "the cut"),
        cut + Duration::from_secs(15),
        &sshd,
    )?;
    println!(
        "    connected in {connected:?}; call failed {failed:?} after the cut, \
         remote contexts ({web_pid}, {below_pid}) and sshd session {session:?} \
         gone after {gone:?}"
    );
    drop(below);
    drop(web);
    drop(sshd);
    let path = std::path::Path::new("/run/netns").join(&link.ns);
    let veth = std::path::Path::new("/sys/class/net").join(&link.host_if);
    drop(link);
    ensure!(!path.exists(), "{} is left behind", path.display());
    ensure!(!veth.exists(), "{} is left behind", veth.display());
    Ok(())
}

crate::tests! {
    network_cut_fails_calls_and_leaves_no_orphans => 120,
}
