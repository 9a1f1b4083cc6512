//! The operating system, in one place: every call that is not plain POSIX
//! goes through here, so that porting the library means writing one module.
//!
//! This is the floor of the crate: it imports nothing from the rest of it, and
//! `core/` and everything above use it. Portable calls (`read`, `poll`,
//! `socketpair`, `setsid`, termios, `openpt`...) are made directly through
//! rustix elsewhere; what is here is what differs between systems.
//!
//! # Platforms
//!
//! **Only Linux builds today** (any libc, any architecture rustix supports).
//! Other targets stop at a `compile_error!` naming this module. The broker's
//! poller is mio's (epoll on Linux, kqueue on the BSDs and macOS) and needs no
//! porting; everything else a port must supply is the contract below.
//!
//! # The contract
//!
//! Each platform module (`sys/linux/` today) provides these items, with the
//! same signatures and the guarantees stated. The last column names what a
//! port to macOS or a BSD uses: a master on a macOS laptop driving a Linux
//! fleet is the commonest setup, and such a master needs only the rows
//! marked *master* or *both*; rows marked *context* run only in contexts (on
//! the targets), *both* in the master and in contexts that start others.
//!
//! | item | guarantee | Linux | macOS / BSD |
//! |---|---|---|---|
//! | [`ProcessHandle::open`] (both) | a descriptor the poller can wait on that becomes readable once the child exits; held open, the pid cannot be reused under it | `pidfd_open(2)` | a kqueue of its own with one `EVFILT_PROC`/`NOTE_EXIT` filter: a kqueue descriptor is itself readable when an event is pending, so mio's kqueue can wait on it; the child is a zombie until reaped, so its pid stays ours |
//! | [`ProcessHandle::kill`] (both) | `SIGKILL` to that child and no other process | `pidfd_send_signal(2)` | `kill(2)`, under a lock that the reaper also takes around `waitpid`: a pid is only reusable once reaped, so one never signals a stranger |
//! | [`die_with_parent`] (context) | from `pre_exec` (async-signal-safe, allocation-free): the new process is killed when the thread that forked it exits; fails with `ESRCH` if the parent is already gone | `prctl(PR_SET_PDEATHSIG, SIGKILL)` then `getppid()` check | none in the kernel: a context starts a parent-watch thread on a kqueue `EVFILT_PROC`/`NOTE_EXIT` for its parent's pid (FreeBSD also has `procctl(PROC_PDEATHSIG_CTL)`); a command started by `run_command` is instead killed with its process group when its context exits |
//! | [`outlive_parent`] (context) | undoes [`die_with_parent`] for this process | `prctl(PR_SET_PDEATHSIG, 0)` | stop the parent-watch thread |
//! | [`started_privileged`] (both) | true when the kernel raised the program's privileges at `exec` (set-user-ID, set-group-ID, file capabilities) | `getauxval(AT_SECURE)` | `issetugid(2)` |
//! | [`set_controlling_terminal`] (both) | from `pre_exec`, after `setsid`: makes the given terminal the session's controlling terminal | `ioctl(TIOCSCTTY)` | the same ioctl (no port needed; here so every `pre_exec` call is in one place) |
//! | [`peer_credentials`], [`PeerCredentials`] (both) | uid, gid and (where known) pid of the process at the other end of a connected Unix socket, as of `connect`/`socketpair` | `SO_PEERCRED` | `getpeereid(3)` for uid and gid; the pid from `LOCAL_PEERPID` (macOS) or `LOCAL_PEERCRED`'s `cr_pid` (FreeBSD 13+) |
//! | [`read_own_exe`], [`open_own_exe`] (master: upload; context: cache check) | the bytes of the image this process runs, even if its file was since replaced or deleted | `/proc/self/exe` | the path from `_NSGetExecutablePath` (macOS) or `sysctl(KERN_PROC_PATHNAME)` (FreeBSD), opened and checked against the running image's `dev`/`ino` taken at start-up (a replaced file is an error, not a different program) |
//! | [`path_through_fd`] (master) | a path that resolves through an open directory descriptor, whatever became of the directory's own path (for `bind(2)`, which takes no descriptor) | `/proc/self/fd/N/name` | FreeBSD: `bindat(2)`; macOS: `fcntl(F_GETPATH)` then a `fstat` check that the path still names the same directory, failing if it does not |
//! | [`SUN_PATH_MAX`] (master: the unix listener) | the longest path a Unix socket address holds | 107 (`sun_path[108]`) | 103 (`sun_path[104]`) |
//! | [`open_for_stat`] (context) | opens a name in a directory without following a link and without side effects (no device opened, no FIFO waited on), for `fstat` only | `O_PATH \| O_NOFOLLOW` | `fstatat(AT_SYMLINK_NOFOLLOW)` instead of an open |
//! | [`resident_set_kib`] (context) | the process's resident set now, in KiB | `VmRSS` in `/proc/self/status` | `proc_pidinfo(PROC_PIDTASKINFO)` (macOS), `kinfo_proc.ki_rssize` (BSD) |
//! | [`tune_allocator`] (both) | at start: keeps the allocator from returning and re-mapping memory for each large buffer (frames of file transfers, stream chunks) | `mallopt(M_MMAP_THRESHOLD, 4 MiB)` and `mallopt(M_TRIM_THRESHOLD, 16 MiB)` under glibc, nothing under musl | nothing |
//! | [`release_free_memory`] (context) | hands the allocator's free memory back to the system, or does nothing | `malloc_trim(0)` under glibc, nothing under musl | nothing (the system allocators return memory themselves) |
//! | [`random_bytes`] (both) | fills a buffer from the kernel's random source (handles, the key of the handle generator) | `getrandom(2)` | `getentropy(2)`, 256 bytes a call (macOS, OpenBSD); `getrandom(2)` on FreeBSD |
//! | [`pipe`] (both) | a close-on-exec pipe, atomically so (no fork in between may inherit it) | `pipe2(O_CLOEXEC)` | `pipe2` on the BSDs; macOS has none: `pipe` then `FD_CLOEXEC`, not atomic (std accepts the same window there) |
//! | [`relay_pipe`], [`splice`], [`can_splice`] (both: relays) | moves bytes descriptor to descriptor without copying them through this process; `EAGAIN` when the source is empty *or* the destination full, `Ok(0)` at the source's end, and never loses a byte it read | `splice(2)` through a pipe | `sys::portable`: a socketpair instead of the pipe and a copy by `recv(MSG_PEEK)`, write, then consume what was written (no byte is taken from the source before its destination took it); sources that are not sockets fall back to buffering frames whole, as terminals already do |
//! | [`widen_stream_pipe`] (context) | asks for a larger kernel buffer on a pipe the context's stream runs over, best effort; leaves anything but a pipe alone | `F_SETPIPE_SZ` to 256 KiB | nothing (pipes keep their size) |
//! | [`open_leader`], [`Leader`], [`Namespace`], [`open_tree`], [`Entry`], [`Mount`], [`MountKind`], [`REPORT_PREFIX`], [`sealed_own_exe`] (context: the setns and chroot hops) | opens a running process's namespaces, root and working directory (held by a pidfd, so never a later process's), or a directory tree; [`Entry::enter`], in `pre_exec`, enters them (and mounts `/proc`, `/dev` in a private mount namespace), forks once more for a pid namespace, and executes a sealed copy of the program through a descriptor opened before, naming the failed step on the new stderr | `pidfd_open`, `setns(2)` per `/proc/PID/ns/*` file, `unshare(CLONE_NEWNS)`, `mount(2)`, `fchdir`+`chroot`, `memfd_create`+`F_ADD_SEALS`, `fexecve` | none: namespaces are Linux's. A port's `Entry::enter` fails with `Unsupported` and its `open_leader` says so (FreeBSD's `jail_attach(2)` and `chroot(2)` would be the counterparts of setns and chroot) |
//! | [`open_unnamed`], [`link_unnamed`] (both: file transfer) | a new file in a directory that has no name until linked, so a process that dies mid-write leaves nothing; `Ok(None)` where the file system cannot | `O_TMPFILE`, then `linkat(AT_EMPTY_PATH)` or through `/proc/self/fd` | `Ok(None)` (the caller falls back to a named temporary file, `O_EXCL`) |
//! | [`own_pid_namespace`], [`find_in_pid_namespace`], [`take_fd`], [`is_unix_stream`], [`peek`] (both: the direct socket of the docker and podman hops, the context reporting, the master taking) | a process named by its pid in its own pid namespace and that namespace's inode is found here (never in our own namespace) and one of its descriptors duplicated, held by a pidfd so a reused pid is caught; a socket's waiting bytes copied without taking them | `/proc/PID/ns/pid`, `NSpid:` of `/proc/PID/status`, `pidfd_open`, `pidfd_getfd(2)`, `SO_DOMAIN`/`SO_TYPE`, `recv(MSG_PEEK \| MSG_DONTWAIT)` | none (no container runs on this kernel): `own_pid_namespace` fails with `Unsupported`, and every hop stays on its engine's pipe |
//!
//! Everything here is also usable from `core/` without pulling in anything
//! above it.

#[cfg(not(target_os = "linux"))]
compile_error!(
    "mitogen builds on Linux only for now: porting it to another system means \
     writing crates/mitogen/src/sys/<system>/ to the contract in sys/mod.rs \
     (macOS and the BSDs: each item names the call to use)"
);

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::*;

#[cfg(any(test, not(target_os = "linux")))]
pub(crate) mod portable;

/// The contract's signatures, checked by the compiler: a platform module
/// that lacks an item, or gives it another type, fails here with the item's
/// name rather than somewhere in its callers.
const _CONTRACT: () = {
    use std::ffi::OsStr;
    use std::fs::File;
    use std::io::Result;
    use std::os::fd::{BorrowedFd, OwnedFd};
    use std::path::PathBuf;

    fn has_a_descriptor<T: std::os::fd::AsFd + std::os::fd::AsRawFd>() {}

    let _: fn(u32) -> Result<ProcessHandle> = ProcessHandle::open;
    let _: fn(&ProcessHandle) -> Result<()> = ProcessHandle::kill;
    let _ = has_a_descriptor::<ProcessHandle>;
    let _: fn(u32) -> Result<()> = die_with_parent;
    let _: fn() -> Result<()> = outlive_parent;
    let _: fn() -> bool = started_privileged;
    let _: fn(BorrowedFd<'_>) -> Result<()> = set_controlling_terminal;
    let _: fn(BorrowedFd<'_>) -> Result<PeerCredentials> = peer_credentials;
    let _: fn(PeerCredentials) -> (Option<u32>, u32, u32) = |c| (c.pid, c.uid, c.gid);
    let _: fn() -> Result<Vec<u8>> = read_own_exe;
    let _: fn() -> Result<File> = open_own_exe;
    let _: fn(BorrowedFd<'_>, &OsStr) -> PathBuf = path_through_fd;
    let _: usize = SUN_PATH_MAX;
    let _: fn(BorrowedFd<'_>, &OsStr) -> Result<OwnedFd> = |dir, name| open_for_stat(dir, name);
    let _: fn() -> Result<u64> = resident_set_kib;
    let _: fn() = release_free_memory;
    let _: fn() = tune_allocator;
    let _: fn(&mut [u8]) -> Result<()> = random_bytes;
    let _: fn() -> Result<(OwnedFd, OwnedFd)> = pipe;
    let _: fn() -> Result<(OwnedFd, OwnedFd)> = relay_pipe;
    let _: fn(BorrowedFd<'_>) -> bool = can_splice;
    let _: fn(BorrowedFd<'_>) = widen_stream_pipe;
    let _: fn(BorrowedFd<'_>, BorrowedFd<'_>, usize) -> rustix::io::Result<usize> = splice;
    let _: fn(u32) -> std::result::Result<Leader, String> = open_leader;
    let _: fn(&std::path::Path) -> std::result::Result<OwnedFd, String> = open_tree;
    let _: fn() -> Result<std::sync::Arc<OwnedFd>> = sealed_own_exe;
    let _: fn(&Entry) -> Result<()> = Entry::enter;
    let _: &str = REPORT_PREFIX;
    let _: fn(
        &OwnedFd,
        &'static std::ffi::CStr,
        MountKind,
        &'static str,
    ) -> std::result::Result<Mount, String> = Mount::new;
    let _: [Namespace; 7] = Namespace::ORDER;
    let _: fn(BorrowedFd<'_>, u32) -> Result<Option<OwnedFd>> = open_unnamed;
    let _: fn(BorrowedFd<'_>, BorrowedFd<'_>, &OsStr) -> Result<()> = link_unnamed;
    let _: fn() -> Result<u64> = own_pid_namespace;
    let _: fn(u64, u32) -> Result<Option<u32>> = find_in_pid_namespace;
    let _: fn(u32, i32, u64, u32) -> Result<OwnedFd> = take_fd;
    let _: fn(BorrowedFd<'_>) -> bool = is_unix_stream;
    let _: fn(BorrowedFd<'_>, &mut [u8]) -> Result<usize> = |fd, buf| peek(fd, buf);
};
