//! `setns:PID`: a context inside a leader's namespaces and root, chains
//! through it (`setns:PID/local`, over ssh), a docker container's leader,
//! and the refusals.

use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use mitogen::{Router, Setns, Sudo};

use super::{inside, processes_in_pid_ns_of, Inside, NsLeader, CAP_SYS_MODULE};

const CALL: Duration = Duration::from_secs(20);

/// What every context inside the leader must see.
fn check_inside(got: &Inside, leader: &NsLeader, master: &Inside) -> Result<()> {
    ensure!(
        got.hostname == leader.hostname,
        "host name {:?}, not the leader's {:?}",
        got.hostname,
        leader.hostname
    );
    ensure!(
        got.interfaces == ["lo"],
        "network interfaces {:?} (the leader's namespace has only lo)",
        got.interfaces
    );
    let mounts = got.mounts.as_ref().context("no /proc/self/mounts inside")?;
    ensure!(
        mounts.iter().any(|m| m == "/inside"),
        "the leader's tmpfs on /inside is not among the mounts: {mounts:?}"
    );
    ensure!(
        got.pid < 100 && got.pid != master.pid,
        "pid {} is not one of the leader's pid namespace",
        got.pid
    );
    ensure!(got.marker, "the root is not the leader's busybox tree");
    ensure!(!got.host_visible, "the host's files are visible inside");
    ensure!(got.uid == 0, "runs as uid {}", got.uid);
    Ok(())
}

/// `setns:PID` runs with the leader's host name, network (lo only), mounts,
/// pid namespace and root; keeps no capability outside the leader's
/// bounding set and none of the caller's environment; `setns:PID/local`
/// runs there too; nothing is left after.
pub fn setns_runs_inside_the_leaders_namespaces(router: &Router) -> Result<()> {
    let leader = NsLeader::start("setns")?;
    let master = inside();
    let ctx = router.connect(format!("setns:{}", leader.pid))?;
    let got = ctx.call_timeout(inside, (), CALL)?;
    check_inside(&got, &leader, &master)?;
    let has = |set: Option<u64>, cap: u32| set.is_some_and(|s| s & (1 << cap) != 0);
    ensure!(
        has(master.cap_bnd, CAP_SYS_MODULE) && !has(got.cap_bnd, CAP_SYS_MODULE),
        "the bounding set inside ({:x?}) is not the leader's (no CAP_SYS_MODULE)",
        got.cap_bnd
    );
    let allowed = ["PATH", "HOME", "USER", "LOGNAME"];
    ensure!(
        got.env.iter().all(|k| allowed.contains(&k.as_str())),
        "the environment inside has more than the fixed variables: {:?}",
        got.env
    );

    // A chain through it: the program started again from inside.
    let local = router.connect(format!("setns:{}/local", leader.pid))?;
    let again = local.call_timeout(inside, (), CALL)?;
    check_inside(&again, &leader, &master)?;
    ensure!(again.pid != got.pid, "the local hop is the same process");

    local.shutdown_timeout(Duration::from_secs(10))?;
    ctx.shutdown_timeout(Duration::from_secs(10))?;
    // Only the leader is left in its pid namespace.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_in_pid_ns_of(leader.pid)?;
        if left == [leader.pid] {
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "processes left in the namespace: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    leader.stop_and_check()
}

/// `HOST/setns:PID` over the test sshd, logged in as root: the ssh context
/// enters the leader with its own (cached) build.
pub fn setns_through_an_ssh_hop(router: &Router) -> Result<()> {
    let leader = NsLeader::start("ssh")?;
    let master = inside();
    let sshd = crate::sshd::Sshd::start()?;
    let host = router.ssh(sshd.ssh("root")?)?;
    let ctx = host.start(Setns::pid(leader.pid))?;
    let got = ctx.call_timeout(inside, (), CALL)?;
    check_inside(&got, &leader, &master)?;
    ensure!(
        ctx.name().ends_with(&format!("setns:{}", leader.pid)),
        "named {}",
        ctx.name()
    );
    ctx.shutdown_timeout(Duration::from_secs(10))?;
    host.shutdown_timeout(Duration::from_secs(10))?;
    leader.stop_and_check()
}

/// A process that is gone, a caller that is not root, and a caller that may
/// not enter a namespace (root without `CAP_SYS_ADMIN`) each fail at once
/// with an error naming the hop and the cause; nothing is left.
pub fn setns_refusals_are_clear(router: &Router) -> Result<()> {
    let leader = NsLeader::start("refuse")?;

    // A pid that was just used and is gone.
    let mut gone = Command::new("true").spawn()?;
    let gone_pid = gone.id();
    gone.wait()?;
    let e = router
        .connect(format!("setns:{gone_pid}"))
        .err()
        .context("entered a process that is gone")?
        .to_string();
    ensure!(
        e.contains(&format!("setns:{gone_pid}")) && e.contains("no process with pid"),
        "unclear error: {e}"
    );

    // Not root: from a context of a test user.
    let user = crate::sshd::user("mitogen-t1", "/bin/sh")?;
    let plain = router.start(None, Sudo::new().user(&user.name))?;
    let e = plain
        .start(Setns::pid(leader.pid))
        .err()
        .context("a user that is not root entered")?
        .to_string();
    ensure!(
        e.contains("the setns method needs root") && e.contains(&format!("uid {}", user.uid)),
        "unclear error: {e}"
    );
    plain.shutdown_timeout(Duration::from_secs(10))?;

    // Root without CAP_SYS_ADMIN (a process whose bounding set lacks it,
    // entered first) may not enter the leader's namespaces.
    let mut weak = Command::new("setpriv")
        .args(["--bounding-set=-sys_admin", "sleep", "60"])
        .spawn()?;
    std::thread::sleep(Duration::from_millis(100));
    let result = (|| -> Result<String> {
        let restricted = router.start(None, Setns::pid(weak.id()))?;
        let e = restricted
            .start(Setns::pid(leader.pid))
            .err()
            .context("entered without CAP_SYS_ADMIN")?
            .to_string();
        restricted.shutdown_timeout(Duration::from_secs(10))?;
        Ok(e)
    })();
    let _ = weak.kill();
    let _ = weak.wait();
    let e = result?;
    ensure!(
        e.contains("entering the") && e.contains("namespace") && e.contains("os error 1"),
        "the error does not name the namespace refused: {e}"
    );
    leader.stop_and_check()
}

/// `setns:docker:NAME` finds a docker container's leader with `docker
/// inspect` and enters it (when a docker daemon answers here: the image is
/// made from the busybox tree with `docker import`, never pulled).
pub fn setns_into_a_docker_container(router: &Router) -> Result<()> {
    let up = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !up {
        return crate::harness::skip_part("a docker daemon (setns into a docker container)");
    }
    let tree = super::BusyRoot::new("docker")?;
    let image = "mitogen-ns-busybox:latest";
    let have = Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "tar -C {} -c . | docker import - {image}",
                tree.dir.display()
            ))
            .status()?;
        ensure!(st.success(), "docker import: {st}");
    }
    let name = format!("mitogen-ns-{}", std::process::id());
    let st = Command::new("docker")
        .args(["run", "-d", "--rm", "--network=none", "--name", &name])
        .args(["--hostname", "mitogen-ns-c", image, "/bin/sleep", "600"])
        .stdout(std::process::Stdio::null())
        .status()?;
    ensure!(st.success(), "docker run: {st}");
    let result = (|| -> Result<()> {
        let ctx = router.connect(format!("setns:docker:{name}"))?;
        let got = ctx.call_timeout(inside, (), CALL)?;
        let local = router.connect(format!("setns:docker:{name}/local"))?;
        let again = local.call_timeout(inside, (), CALL)?;
        local.shutdown_timeout(Duration::from_secs(10))?;
        ctx.shutdown_timeout(Duration::from_secs(10))?;
        ensure!(
            again.hostname == "mitogen-ns-c" && again.marker && again.pid != got.pid,
            "the local hop is not a second process in the container: {again:?}"
        );
        ensure!(got.hostname == "mitogen-ns-c", "host name {}", got.hostname);
        ensure!(got.marker && !got.host_visible, "not the container's root");
        ensure!(got.interfaces == ["lo"], "interfaces {:?}", got.interfaces);
        ensure!(
            got.cap_bnd.is_some_and(|c| c & (1 << CAP_SYS_MODULE) == 0),
            "capabilities beyond the container's: {:x?}",
            got.cap_bnd
        );
        Ok(())
    })();
    let _ = Command::new("docker")
        .args(["rm", "-f", &name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    result?;
    // No such container: the client's own message.
    let e = router
        .connect("setns:docker:mitogen-ns-nonexistent")
        .err()
        .context("entered a container that does not exist")?
        .to_string();
    ensure!(
        e.contains("docker inspect -f {{.State.Pid}} mitogen-ns-nonexistent` failed"),
        "unclear error: {e}"
    );
    Ok(())
}

/// A leader on the host's own tree (so sudo is there) in namespaces of its
/// own: `setns:PID/sudo:USER` starts the first stage inside, as another
/// user, with the leader's host name and network.
pub fn setns_chains_to_sudo_inside(router: &Router) -> Result<()> {
    let user = crate::sshd::user("mitogen-t1", "/bin/sh")?;
    let hostname = format!("ns-sudo-{}", std::process::id() % 100_000);
    let mut unshare = Command::new("unshare")
        .args(["--mount", "--pid", "--net", "--uts", "--ipc", "--fork"])
        .args([
            "sh",
            "-c",
            &format!("hostname {hostname} && exec sleep 600"),
        ])
        .spawn()?;
    let me = unshare.id();
    // The namespace's pid 1 (the `sleep`), once it is there.
    let leader = || -> Result<u32> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let children = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"))?;
            let first = children
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            let comm = std::fs::read_to_string(format!("/proc/{first}/comm")).unwrap_or_default();
            if comm.trim() == "sleep" {
                return Ok(first.parse()?);
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "the leader did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let pid = leader();
    let result = pid
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .and_then(|&pid| {
            let ctx = router.connect(format!("setns:{pid}/sudo:{}", user.name))?;
            let got = ctx.call_timeout(inside, (), CALL)?;
            let who = ctx.call_timeout(crate::ssh::whoami, (), CALL)?;
            ctx.shutdown_timeout(Duration::from_secs(10))?;
            ensure!(got.hostname == hostname, "host name {}", got.hostname);
            ensure!(got.interfaces == ["lo"], "interfaces {:?}", got.interfaces);
            ensure!(who.uid == user.uid, "runs as uid {}", who.uid);
            Ok(())
        });
    if let Ok(pid) = pid {
        // Pid 1 of the namespace: everything in it goes with it.
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    let _ = unshare.kill();
    let _ = unshare.wait();
    result
}

/// A leader in a user namespace of its own (`unshare --user
/// --map-root-user`: only uid 0 mapped): the context enters it too, as its
/// root, and sees its one-line uid map.
pub fn setns_enters_a_user_namespace(router: &Router) -> Result<()> {
    let leader = NsLeader::start_with("user", &["--user", "--map-root-user"])?;
    let master = inside();
    let ctx = router.connect(format!("setns:{}", leader.pid))?;
    let got = ctx.call_timeout(inside, (), CALL)?;
    ctx.shutdown_timeout(Duration::from_secs(10))?;
    check_inside(&got, &leader, &master)?;
    ensure!(
        got.uid_map == "0 0 1" && master.uid_map != got.uid_map,
        "not in the leader's user namespace: uid map {:?} (ours {:?})",
        got.uid_map,
        master.uid_map
    );
    leader.stop_and_check()
}

/// When the container goes (its init killed), a pending call fails at once
/// naming the hop, and no process of the context is left on the host (the
/// one outside the pid namespace that waits for it included).
pub fn setns_context_dies_with_its_namespace(router: &Router) -> Result<()> {
    let leader = NsLeader::start("dies")?;
    let baseline = mitogen_testkit::proc::descendants(std::process::id());
    let ctx = router.connect(format!("setns:{}", leader.pid))?;
    let ours: Vec<u32> = mitogen_testkit::proc::descendants(std::process::id())
        .into_iter()
        .filter(|p| !baseline.contains(p))
        .collect();
    // The one waiting outside the pid namespace, and the program inside.
    ensure!(
        ours.len() == 2,
        "the context's processes on the host: {ours:?}"
    );
    let pending = ctx.call_async(crate::calls::sleep_ms, (30_000,));
    std::thread::sleep(Duration::from_millis(200));
    let _ = Command::new("kill")
        .args(["-KILL", &leader.pid.to_string()])
        .status();
    let started = std::time::Instant::now();
    let e = pending
        .get_timeout(Duration::from_secs(10))
        .err()
        .context("the call outlived its container")?
        .to_string();
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "the call took {:?} to fail",
        started.elapsed()
    );
    ensure!(
        e.contains(&format!("setns:{}", leader.pid)),
        "the error does not name the hop: {e}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = mitogen_testkit::proc::descendants(std::process::id());
        if left.iter().all(|p| !ours.contains(p)) {
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "processes left: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    leader.stop_and_check()
}

/// What a process inside sees of the program: a sealed in-memory copy, which
/// it can read but never write, and no path to the program's file on the
/// host (`/proc/PID/exe` of the context, looked at with the host's root's
/// full powers, which are more than any process inside has).
pub fn setns_program_is_sealed_from_the_target(router: &Router) -> Result<()> {
    let leader = NsLeader::start("sealed")?;
    let ctx = router.connect(format!("setns:{}", leader.pid))?;
    let ns_procs = processes_in_pid_ns_of(leader.pid)?;
    let child = *ns_procs
        .iter()
        .find(|p| **p != leader.pid)
        .context("no context process in the namespace")?;
    let exe = std::fs::read_link(format!("/proc/{child}/exe"))?;
    ensure!(
        exe.to_string_lossy().starts_with("/memfd:mitogen"),
        "the context runs {} (not the sealed copy)",
        exe.display()
    );
    let write = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{child}/exe"));
    ensure!(
        write.is_err(),
        "the program opened for writing through /proc/PID/exe"
    );
    let copy = std::fs::read(format!("/proc/{child}/exe"))?;
    ensure!(
        copy == std::fs::read("/proc/self/exe")?,
        "the copy is not the program"
    );
    ctx.shutdown_timeout(Duration::from_secs(10))?;
    leader.stop_and_check()
}

crate::tests! {
    setns_runs_inside_the_leaders_namespaces => 120,
    setns_enters_a_user_namespace,
    setns_chains_to_sudo_inside => 120,
    setns_context_dies_with_its_namespace,
    setns_program_is_sealed_from_the_target,
    setns_through_an_ssh_hop => 300,
    setns_refusals_are_clear => 120,
    setns_into_a_docker_container => 120,
}
