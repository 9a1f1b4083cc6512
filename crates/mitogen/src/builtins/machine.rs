//! What a context's machine is: [`facts`] and the [`Facts`] it returns.
//!
//! Every fact is read from the kernel or a file, never by running a program,
//! so a call costs well under a millisecond of work on the target and works
//! wherever the context runs (a bare host, a container, as any user). A fact
//! that cannot be read (a file missing, unreadable for this user, or not in
//! the expected form) is `None` or an empty list: the call itself fails only
//! when the context does.
//!
//! Facts are what the target says. A hostile account on the target can make
//! any of them say anything (its own mount namespace, a `LD_PRELOAD`, a
//! patched kernel): use them to describe hosts, never to decide what is
//! safe to do to them. The strings may hold any character, control
//! characters included; whoever shows them to a person must make those
//! visible (the `mitogen` command does).

mod gather;
mod net;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Gathers the [`Facts`] of the machine this context runs on, as seen by the
/// context (its user, its mount and network namespaces).
///
/// ```no_run
/// # fn demo(router: mitogen::Router) -> mitogen::Result<()> {
/// use mitogen::builtins::facts;
/// let web = router.connect("deploy@web1/sudo")?;
/// let f = web.call(facts, ())?;
/// println!(
///     "{} runs {} as uid {}",
///     f.hostname.as_deref().unwrap_or("?"),
///     f.os.pretty_name.as_deref().unwrap_or("an unknown OS"),
///     f.user.uid,
/// );
/// for m in &f.mounts {
///     println!("{} {:?} bytes free", m.mountpoint, m.available_bytes);
/// }
/// # Ok(()) }
/// ```
#[crate::remote]
pub fn facts() -> Facts {
    gather::all()
}

/// What [`facts`] found. Each field says where it comes from; a field that
/// could not be read is `None` (or an empty list).
///
/// `#[non_exhaustive]`: later versions add fields (both ends of a connection
/// run the same program, so the wire form always matches).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Facts {
    /// The host name: `uname(2)`'s `nodename` (the context's UTS namespace).
    pub hostname: Option<String>,
    /// The distribution, from `/etc/os-release` (or `/usr/lib/os-release`).
    pub os: Os,
    /// The kernel, from `uname(2)`.
    pub kernel: Kernel,
    /// Processors, from `/sys/devices/system/cpu/online` and `/proc/cpuinfo`.
    pub cpu: Cpu,
    /// Memory and swap, from `/proc/meminfo`.
    pub memory: Memory,
    /// Seconds since boot: the first figure of `/proc/uptime`.
    pub uptime_secs: Option<f64>,
    /// The 1, 5 and 15 minute load averages: `/proc/loadavg`.
    pub load: Option<[f64; 3]>,
    /// The user the context runs as.
    pub user: User,
    /// Mounted file systems holding data, from `/proc/self/mounts` (the
    /// context's mount namespace) and `statvfs(3)` of each; pseudo file
    /// systems (`proc`, `sysfs`, `cgroup`, `devpts`, `tmpfs`, ...) left
    /// out. In the kernel's order.
    pub mounts: Vec<Mount>,
    /// Network interfaces and their addresses: `getifaddrs(3)` (the
    /// context's network namespace) and `/sys/class/net/NAME/address`.
    pub interfaces: Vec<Interface>,
    /// The time zone's name: `$TZ` of the context, else `/etc/timezone`,
    /// else the zone `/etc/localtime` links to (`Europe/Paris` of
    /// `/usr/share/zoneinfo/Europe/Paris`).
    pub timezone: Option<String>,
    /// The kind of container the context runs in, if it shows (the signs
    /// looked at are [`Facts::CONTAINER_SIGNS`]); `None` when none was
    /// seen, which does not prove there is none.
    pub container: Option<String>,
}

/// The distribution: `ID`, `VERSION_ID` and `PRETTY_NAME` of
/// `/etc/os-release` (`/usr/lib/os-release` when the former is missing),
/// unquoted as the file's shell-like syntax says.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Os {
    /// `ID`: `debian`, `ubuntu`, `alpine`, `rhel`...
    pub id: Option<String>,
    /// `VERSION_ID`: `12`, `22.04`, `3.19.1`... (absent on rolling releases).
    pub version_id: Option<String>,
    /// `PRETTY_NAME`: `Debian GNU/Linux 12 (bookworm)`.
    pub pretty_name: Option<String>,
}

/// The kernel, from `uname(2)`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Kernel {
    /// `sysname`: `Linux`.
    pub name: Option<String>,
    /// `release`: `6.1.0-18-amd64`.
    pub release: Option<String>,
    /// `version`: `#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)`.
    pub version: Option<String>,
    /// `machine`, the architecture: `x86_64`, `aarch64`...
    pub arch: Option<String>,
}

/// Processors.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Cpu {
    /// Processors online: the count of `/sys/devices/system/cpu/online`
    /// (the machine's, not the context's affinity or cgroup share).
    pub online: Option<u32>,
    /// The first processor's model: `model name` of `/proc/cpuinfo`
    /// (`Model`, `cpu model`, `Hardware` or `Processor` on other
    /// architectures).
    pub model: Option<String>,
}

/// Memory and swap in bytes, from `/proc/meminfo` (the machine's, not a
/// container's cgroup limit).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Memory {
    /// `MemTotal`.
    pub total_bytes: Option<u64>,
    /// `MemAvailable`: what can be had without swapping.
    pub available_bytes: Option<u64>,
    /// `SwapTotal`.
    pub swap_total_bytes: Option<u64>,
    /// `SwapFree`.
    pub swap_free_bytes: Option<u64>,
}

/// The user a context runs as: its effective ids, with names from the local
/// `/etc/passwd` and `/etc/group` (users and groups known only to another
/// source, such as LDAP, have no name here).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct User {
    /// Effective user id: `geteuid(2)`.
    pub uid: u32,
    /// Effective group id: `getegid(2)`.
    pub gid: u32,
    /// The user's name: the `/etc/passwd` entry of `uid`.
    pub name: Option<String>,
    /// The home directory of that entry.
    pub home: Option<String>,
    /// The login shell of that entry.
    pub shell: Option<String>,
    /// Supplementary groups, `getgroups(2)`, with the effective group
    /// first, each once.
    pub groups: Vec<Group>,
}

/// A group id and its name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Group {
    /// The group id.
    pub gid: u32,
    /// Its name in `/etc/group`.
    pub name: Option<String>,
}

/// One mounted file system.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Mount {
    /// What is mounted: a device (`/dev/sda1`), a share (`srv:/export`),
    /// `overlay`...
    pub source: String,
    /// Where.
    pub mountpoint: String,
    /// The file system type: `ext4`, `xfs`, `overlay`, `nfs4`...
    pub fstype: String,
    /// Its size (`statvfs`: blocks times fragment size); `None` when
    /// `statvfs` failed or did not answer within [`STATVFS_DEADLINE`].
    pub size_bytes: Option<u64>,
    /// In use: size less free blocks.
    pub used_bytes: Option<u64>,
    /// Free for an unprivileged user (`f_bavail`).
    pub available_bytes: Option<u64>,
}

/// How long [`facts`] waits for the sizes of the mounted file systems: a
/// network file system whose server is gone can block `statvfs` for
/// minutes, and facts must not. The mounts not measured by then have no
/// sizes.
pub const STATVFS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// One network interface.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Interface {
    /// Its name: `eth0`, `lo`...
    pub name: String,
    /// Its hardware address, `/sys/class/net/NAME/address`, when it has one
    /// that is not all zeros.
    pub mac: Option<String>,
    /// Whether it is up (`IFF_UP`).
    pub up: bool,
    /// Its IPv4 and IPv6 addresses.
    pub addresses: Vec<Address>,
}

/// An address of an interface, with its prefix length.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Address {
    /// The address.
    pub ip: IpAddr,
    /// Its network's prefix length (`24` of `10.0.0.5/24`).
    pub prefix: u8,
}

impl Address {
    /// An address with its prefix length.
    pub fn new(ip: IpAddr, prefix: u8) -> Address {
        Address { ip, prefix }
    }
}

impl Facts {
    /// The signs of a container that [`facts`] looks for, in order; the
    /// first found names [`Facts::container`]: `/run/.containerenv`
    /// (`podman`), `/.dockerenv` (`docker`), the first line of
    /// `/run/systemd/container` (written by systemd: `lxc`,
    /// `systemd-nspawn`, `docker`...), then a `docker`, `kubepods`,
    /// `containerd` or `lxc` path in `/proc/1/cgroup`. Cheap and
    /// documented rather than certain: a container made otherwise shows
    /// none of them.
    pub const CONTAINER_SIGNS: &'static [&'static str] = &[
        "/run/.containerenv",
        "/.dockerenv",
        "/run/systemd/container",
        "/proc/1/cgroup",
    ];
}
