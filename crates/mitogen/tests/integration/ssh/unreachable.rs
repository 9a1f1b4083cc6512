//! An unreachable host, from inside an empty network namespace: the test
//! runs this binary again there (selected by [`NETNS_ENV`], see `main`), and
//! that scenario checks its isolation before it tries to connect.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context as _, Result};
use mitogen::Compression;
use mitogen::HostKeyPolicy;
use mitogen::{Error, Router, Ssh};

use crate::sshd;
use crate::util::{kill9, wait_until};

/// Selects the unreachable-host scenario in this binary run again inside a
/// network namespace: `ADDRESS NETNS`, the address to try and the network
/// namespace of the test run (`net:[…]`), which the scenario must not be in.
pub const NETNS_ENV: &str = "MITOGEN_TEST_NETNS";

/// An address that no route reaches inside the namespace.
const UNREACHABLE: &str = "10.255.255.1";

/// RTF_REJECT: an IPv6 route that only refuses.
const RTF_REJECT: u32 = 0x0200;

/// Fails unless this process is in a network namespace other than `outer`
/// whose only interface is `lo` and that has no route but the kernel's
/// built-in IPv6 reject entries, so no packet can leave it.
fn isolated(outer: &str) -> Result<()> {
    let own = std::fs::read_link("/proc/self/ns/net")?;
    ensure!(
        !outer.is_empty() && own.as_os_str() != outer,
        "in the test run's network namespace {outer:?}"
    );
    let dev = std::fs::read_to_string("/proc/self/net/dev")?;
    let ifaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(str::trim))
        .collect();
    ensure!(ifaces == ["lo"], "interfaces {ifaces:?}");
    let routes = std::fs::read_to_string("/proc/self/net/route")?;
    ensure!(routes.lines().count() <= 1, "IPv4 routes: {routes}");
    let routes6 = std::fs::read_to_string("/proc/self/net/ipv6_route").unwrap_or_default();
    for route in routes6.lines() {
        let flags = route
            .split_whitespace()
            .nth(8)
            .and_then(|f| u32::from_str_radix(f, 16).ok());
        ensure!(
            flags.is_some_and(|f| f & RTF_REJECT != 0),
            "IPv6 route: {route}"
        );
    }
    Ok(())
}

/// The inner scenario (`ADDRESS NETNS`, see [`NETNS_ENV`]): connects to the
/// address and prints one `RESULT` line.
pub fn netns_main(router: &Router, scenario: &str) -> usize {
    let (address, outer) = scenario.split_once(' ').unwrap_or((scenario, ""));
    if let Err(e) = isolated(outer) {
        println!("RESULT refused 0 not isolated: {e:#}");
        return 1;
    }
    let started = Instant::now();
    let ssh = Ssh::new(address)
        .user("root")
        .config_file("/dev/null")
        .host_key_policy(HostKeyPolicy::Ignore)
        .upload_compression(Compression::Never)
        .connect_timeout(Duration::from_secs(20));
    let r = router.ssh(ssh);
    let ms = started.elapsed().as_millis();
    match r {
        Ok(ctx) => {
            let _ = ctx.shutdown_timeout(Duration::from_secs(5));
            println!("RESULT ok {ms}");
        }
        Err(e) => {
            let kind = match &e {
                Error::Transport { kind, .. } => format!("{kind:?}"),
                _ => "none".to_owned(),
            };
            println!(
                "RESULT err {ms} {kind} {}",
                e.to_string().replace('\n', " ")
            );
        }
    }
    0
}

/// A network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn add() -> Result<Netns> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "mitogen-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .context("running ip netns add (iproute2)")?;
        ensure!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(Netns(name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

pub fn unreachable_host_in_an_empty_network_namespace(_router: &Router) -> Result<()> {
    sshd::require_root_and_sshd()?;
    let outer = std::fs::read_link("/proc/self/ns/net")?;
    let ns = Netns::add()?;
    // This very build, even should cargo replace the file meanwhile.
    let exe = format!("/proc/{}/exe", std::process::id());
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(&exe)
        .env(NETNS_ENV, format!("{UNREACHABLE} {}", outer.display()))
        .env_remove("MITOGEN_TEST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting ip netns exec")?;
    let pid = child.id();
    if !wait_until(Duration::from_secs(40), || {
        matches!(child.try_wait(), Ok(Some(_)))
    }) {
        let _ = kill9(pid);
    }
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .ok_or_else(|| anyhow!("no RESULT ({}): {stdout} {stderr}", out.status))?;
    let mut w = line.splitn(4, ' ');
    let (what, ms, kind, text) = (
        w.next().unwrap_or(""),
        w.next().unwrap_or("0").parse::<u64>().unwrap_or(u64::MAX),
        w.next().unwrap_or(""),
        w.next().unwrap_or(""),
    );
    ensure!(what == "err", "expected an error, got: {line}");
    let name = format!("root@{UNREACHABLE}");
    ensure!(
        text.contains(&name),
        "the error does not name the hop {name:?}: {text}"
    );
    ensure!(
        kind == "Unreachable",
        "expected Unreachable, got {kind}: {text}"
    );
    ensure!(
        text.contains("Network is unreachable"),
        "ssh's message is not in the error: {text}"
    );
    ensure!(
        ms < 5_000,
        "took {ms} ms to fail (connect timeout 20 s): {text}"
    );
    println!("    {text} after {ms} ms");
    let path = Path::new("/run/netns").join(&ns.0);
    drop(ns);
    ensure!(!path.exists(), "{} is left behind", path.display());
    Ok(())
}

crate::tests! {
    unreachable_host_in_an_empty_network_namespace,
}
