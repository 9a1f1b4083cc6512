//! Reading each fact: small files of `/proc`, `/sys` and `/etc`, and a few
//! system calls. Every reader returns `None` (or nothing) for what it cannot
//! read, so one missing file never costs the others.

use std::collections::HashMap;
use std::ffi::CStr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{Cpu, Facts, Group, Kernel, Memory, Mount, Os, User, STATVFS_DEADLINE};

/// Every fact.
pub(super) fn all() -> Facts {
    // The sizes of the mounts first: their thread works while the rest is
    // read.
    let (mounts, sizes) = mounts();
    let uname = rustix::system::uname();
    let text = |s: &CStr| Some(s.to_string_lossy().into_owned()).filter(|s| !s.is_empty());
    let mut facts = Facts {
        hostname: text(uname.nodename()),
        os: os(),
        kernel: Kernel {
            name: text(uname.sysname()),
            release: text(uname.release()),
            version: text(uname.version()),
            arch: text(uname.machine()),
        },
        cpu: Cpu {
            online: read("/sys/devices/system/cpu/online").and_then(|s| count_cpus(&s)),
            model: cpu_model(),
        },
        memory: memory(),
        uptime_secs: read("/proc/uptime").and_then(|s| first_number(&s)),
        load: read("/proc/loadavg").and_then(|s| load(&s)),
        user: user(),
        mounts: Vec::new(),
        interfaces: super::net::interfaces(),
        timezone: timezone(),
        container: container(),
    };
    facts.mounts = sized(mounts, sizes, STATVFS_DEADLINE);
    facts
}

/// A small file's text; `None` when it cannot be read.
fn read(path: &str) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// `ID`, `VERSION_ID` and `PRETTY_NAME` of os-release.
fn os() -> Os {
    let Some(text) = read("/etc/os-release").or_else(|| read("/usr/lib/os-release")) else {
        return Os::default();
    };
    let mut os = Os::default();
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once('=') else {
            continue;
        };
        let slot = match key {
            "ID" => &mut os.id,
            "VERSION_ID" => &mut os.version_id,
            "PRETTY_NAME" => &mut os.pretty_name,
            _ => continue,
        };
        *slot = Some(unquote(value)).filter(|v| !v.is_empty());
    }
    os
}

/// A value of os-release's shell-like syntax: in double quotes with `\"`,
/// `\\`, `` \` `` and `\$` escaped, in single quotes as it is, or bare.
pub(super) fn unquote(v: &str) -> String {
    let v = v.trim();
    if let Some(inner) = v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        return inner.to_owned();
    }
    let Some(inner) = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
        return v.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some(n @ ('"' | '\\' | '`' | '$'))) => {
                out.push(n);
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

/// The count of a CPU list such as `0-3,8,10-11`.
pub(super) fn count_cpus(list: &str) -> Option<u32> {
    let mut n = 0u32;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let a = part.parse::<u32>().ok()?;
                (a, a)
            }
        };
        n = n.checked_add(b.checked_sub(a)?.checked_add(1)?)?;
    }
    (n > 0).then_some(n)
}

/// The first processor's model in `/proc/cpuinfo`: only its first block is
/// looked at (the file is a few KiB per processor).
fn cpu_model() -> Option<String> {
    let text = read("/proc/cpuinfo")?;
    let mut fallback = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if value.is_empty() {
            continue;
        }
        match key {
            "model name" | "Model" | "cpu model" => return Some(value.to_owned()),
            "Hardware" | "Processor" | "cpu" if fallback.is_none() => {
                fallback = Some(value.to_owned())
            }
            _ => {}
        }
    }
    fallback
}

/// `/proc/meminfo`'s totals, in bytes.
fn memory() -> Memory {
    let Some(text) = read("/proc/meminfo") else {
        return Memory::default();
    };
    let mut m = Memory::default();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "MemTotal" => &mut m.total_bytes,
            "MemAvailable" => &mut m.available_bytes,
            "SwapTotal" => &mut m.swap_total_bytes,
            "SwapFree" => &mut m.swap_free_bytes,
            _ => continue,
        };
        let kib = rest.trim().trim_end_matches("kB").trim().parse::<u64>();
        *slot = kib.ok().and_then(|k| k.checked_mul(1024));
    }
    m
}

fn first_number(text: &str) -> Option<f64> {
    text.split_whitespace()
        .next()?
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
}

pub(super) fn load(text: &str) -> Option<[f64; 3]> {
    let mut it = text.split_whitespace().map(|w| w.parse::<f64>().ok());
    let mut out = [0.0; 3];
    for slot in &mut out {
        *slot = it.next().flatten().filter(|v| v.is_finite())?;
    }
    Some(out)
}

/// The effective user, named from `/etc/passwd` and `/etc/group`.
fn user() -> User {
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    let mut user = User {
        uid,
        gid,
        ..User::default()
    };
    if let Some(entry) = read("/etc/passwd").and_then(|t| passwd_entry(&t, uid)) {
        (user.name, user.home, user.shell) = entry;
    }
    let names = read("/etc/group")
        .map(|t| group_names(&t))
        .unwrap_or_default();
    let mut gids = vec![gid];
    for g in rustix::process::getgroups().unwrap_or_default() {
        if !gids.contains(&g.as_raw()) {
            gids.push(g.as_raw());
        }
    }
    user.groups = gids
        .into_iter()
        .map(|gid| Group {
            gid,
            name: names.get(&gid).cloned(),
        })
        .collect();
    user
}

/// Name, home and shell of `uid` in a passwd file.
pub(super) fn passwd_entry(
    text: &str,
    uid: u32,
) -> Option<(Option<String>, Option<String>, Option<String>)> {
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 || f[2].parse::<u32>().ok()? != uid {
            return None;
        }
        let some = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
        Some((some(f[0]), some(f[5]), some(f[6])))
    })
}

/// The first name of each gid in a group file.
fn group_names(text: &str) -> HashMap<u32, String> {
    let mut names = HashMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if let (Some(name), Some(Ok(gid))) = (f.first(), f.get(2).map(|g| g.parse::<u32>())) {
            names.entry(gid).or_insert_with(|| (*name).to_owned());
        }
    }
    names
}

/// File system types that hold no data of their own (or only memory's).
const PSEUDO: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "sysfs",
    "tmpfs",
    "tracefs",
];

/// A `/proc/self/mounts` field with its octal escapes (`\040` for a space)
/// undone.
pub(super) fn unescape_mount(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                let v = d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The sizes of mount `i`, as a thread of their own finds them.
type Sized = (usize, Option<rustix::fs::StatVfs>);

/// The data-holding mounts, and the receiving end of a thread that
/// `statvfs`es each in turn (a hung network file system holds that thread,
/// not the call: see [`sized`]).
fn mounts() -> (Vec<Mount>, Option<mpsc::Receiver<Sized>>) {
    let Some(text) = read("/proc/self/mounts") else {
        return (Vec::new(), None);
    };
    let mut mounts: Vec<Mount> = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let [source, mountpoint, fstype, ..] = f[..] else {
            continue;
        };
        if PSEUDO.contains(&fstype) {
            continue;
        }
        let m = Mount {
            source: unescape_mount(source),
            mountpoint: unescape_mount(mountpoint),
            fstype: unescape_mount(fstype),
            ..Mount::default()
        };
        // One mountpoint mounted over: the last is what shows there.
        mounts.retain(|old| old.mountpoint != m.mountpoint);
        mounts.push(m);
    }
    let points: Vec<String> = mounts.iter().map(|m| m.mountpoint.clone()).collect();
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("facts:statvfs".into())
        .spawn(move || {
            for (i, p) in points.iter().enumerate() {
                if tx.send((i, rustix::fs::statvfs(p.as_str()).ok())).is_err() {
                    return;
                }
            }
        });
    (mounts, spawned.is_ok().then_some(rx))
}

/// The mounts with the sizes found `within` from now (what has not come by
/// then stays `None`).
fn sized(
    mut mounts: Vec<Mount>,
    sizes: Option<mpsc::Receiver<Sized>>,
    within: Duration,
) -> Vec<Mount> {
    let Some(rx) = sizes else { return mounts };
    let deadline = Instant::now() + within;
    while let Ok((i, st)) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let (Some(m), Some(st)) = (mounts.get_mut(i), st) else {
            continue;
        };
        let frag = if st.f_frsize > 0 {
            st.f_frsize
        } else {
            st.f_bsize
        };
        let bytes = |blocks: u64| blocks.checked_mul(frag);
        m.size_bytes = bytes(st.f_blocks);
        m.used_bytes = bytes(st.f_blocks.saturating_sub(st.f_bfree));
        m.available_bytes = bytes(st.f_bavail);
    }
    mounts
}

/// `$TZ`, `/etc/timezone`, or the zone `/etc/localtime` links to.
fn timezone() -> Option<String> {
    let tz = std::env::var("TZ")
        .ok()
        .map(|t| t.trim_start_matches(':').to_owned());
    if let Some(tz) = tz.filter(|t| !t.is_empty()) {
        return Some(tz);
    }
    let file = read("/etc/timezone").map(|t| t.trim().to_owned());
    if let Some(tz) = file.filter(|t| !t.is_empty()) {
        return Some(tz);
    }
    let link = std::fs::read_link("/etc/localtime").ok()?;
    let link = link.to_string_lossy();
    let (_, zone) = link.split_once("zoneinfo/")?;
    Some(zone.to_owned()).filter(|z| !z.is_empty())
}

/// The first of [`Facts::CONTAINER_SIGNS`] found, as a kind.
fn container() -> Option<String> {
    let exists = |p: &str| std::fs::symlink_metadata(p).is_ok();
    if exists("/run/.containerenv") {
        return Some("podman".into());
    }
    if exists("/.dockerenv") {
        return Some("docker".into());
    }
    let systemd = read("/run/systemd/container").map(|t| t.trim().to_owned());
    if let Some(kind) = systemd.filter(|k| !k.is_empty()) {
        return Some(kind);
    }
    cgroup_container(&read("/proc/1/cgroup")?)
}

/// The kind of container a cgroup file's paths show, if any.
pub(super) fn cgroup_container(text: &str) -> Option<String> {
    let paths = text.lines().filter_map(|l| l.splitn(3, ':').nth(2));
    for path in paths {
        for kind in ["docker", "kubepods", "containerd", "lxc"] {
            if path.contains(kind) {
                return Some(kind.to_owned());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_values_are_unquoted() {
        assert_eq!(
            unquote("\"Debian GNU/Linux 12 (bookworm)\""),
            "Debian GNU/Linux 12 (bookworm)"
        );
        assert_eq!(unquote("'a \\\" b'"), "a \\\" b");
        assert_eq!(
            unquote("\"a \\\"b\\\" \\$c \\\\ \\n\""),
            "a \"b\" $c \\ \\n"
        );
        assert_eq!(unquote("debian"), "debian");
        assert_eq!(unquote("\""), "\"");
    }

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(count_cpus("0-3,8,10-11\n"), Some(7));
        assert_eq!(count_cpus("0\n"), Some(1));
        assert_eq!(count_cpus(""), None);
        assert_eq!(count_cpus("3-1"), None);
        assert_eq!(count_cpus("x"), None);
    }

    #[test]
    fn loads_and_numbers() {
        assert_eq!(load("0.69 0.50 0.40 1/123 456\n"), Some([0.69, 0.5, 0.4]));
        assert_eq!(load("0.69 0.50"), None);
        assert_eq!(load("0.69 NaN 1"), None);
        assert_eq!(first_number("123.45 678.9\n"), Some(123.45));
    }

    #[test]
    fn passwd_and_groups() {
        let text = "root:x:0:0:root:/root:/bin/bash\nbad line\napp:x:1001:1001::/srv/app:\n";
        assert_eq!(
            passwd_entry(text, 1001),
            Some((Some("app".into()), Some("/srv/app".into()), None))
        );
        assert_eq!(passwd_entry(text, 7), None);
        let g = group_names("root:x:0:\nwheel:x:10:a,b\nalias:x:10:\n");
        assert_eq!(g.get(&10).map(String::as_str), Some("wheel"));
    }

    #[test]
    fn mount_fields_are_unescaped() {
        assert_eq!(unescape_mount("/mnt/a\\040b\\011c"), "/mnt/a b\tc");
        assert_eq!(unescape_mount("/x\\9"), "/x\\9");
        assert_eq!(unescape_mount("\\777"), "?");
    }

    /// A file system whose `statvfs` never returns (a network one whose
    /// server is gone) costs the call `within`, and only its own sizes.
    #[test]
    fn a_statvfs_that_never_returns_is_not_waited_for() {
        let mounts: Vec<Mount> = ["/", "/mnt/dead"]
            .iter()
            .map(|p| Mount {
                mountpoint: (*p).into(),
                ..Mount::default()
            })
            .collect();
        let (tx, rx) = mpsc::channel();
        tx.send((0, rustix::fs::statvfs("/").ok())).unwrap();
        let t = Instant::now();
        let got = sized(mounts, Some(rx), Duration::from_millis(200));
        let took = t.elapsed();
        drop(tx);
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(5),
            "{took:?}"
        );
        assert!(got[0].size_bytes.is_some_and(|b| b > 0), "{got:?}");
        assert!(got[1].size_bytes.is_none() && got[1].available_bytes.is_none());
    }

    #[test]
    fn cgroup_paths_name_the_container() {
        assert_eq!(
            cgroup_container("0::/system.slice/docker-abc.scope\n").as_deref(),
            Some("docker")
        );
        assert_eq!(cgroup_container("0::/init.scope\n"), None);
        assert_eq!(cgroup_container("0::/\n"), None);
    }
}
