//! Starting the program inside another process's namespaces or inside a
//! directory tree (the setns and chroot methods).
//!
//! Everything the new process needs is opened and allocated beforehand, in
//! an [`Entry`]; [`Entry::enter`] then runs in the forked child (`pre_exec`)
//! and makes system calls only: no allocation and no lock, as after any fork
//! of a multi-threaded process. It ends by executing the program through a
//! descriptor opened before anything was entered ([`sealed_own_exe`]), so
//! nothing has to be written inside the target, and what runs there is a
//! sealed copy, never a file of the host's.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, OnceLock};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::process::{Gid, Pid, Uid};
use rustix::thread::LinkNameSpaceType;

/// A kind of namespace, as `/proc/PID/ns/` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Namespace {
    /// Control groups (`cgroup`).
    Cgroup,
    /// System V IPC and POSIX message queues (`ipc`).
    Ipc,
    /// Host and domain name (`uts`).
    Uts,
    /// Network (`net`).
    Net,
    /// Process ids (`pid`): takes effect for children only.
    Pid,
    /// Mounts (`mnt`): resets root and working directory.
    Mnt,
    /// Users (`user`).
    User,
}

impl Namespace {
    /// Every kind in the order they are entered. The user namespace comes
    /// last: until then the process has the host's capabilities, which the
    /// others need (a namespace is owned by a user namespace the host's root
    /// has authority over); inside it, it would have them only there. The
    /// mount namespace comes after those whose `/proc` files it could hide.
    pub(crate) const ORDER: [Namespace; 7] = [
        Namespace::Cgroup,
        Namespace::Ipc,
        Namespace::Uts,
        Namespace::Net,
        Namespace::Pid,
        Namespace::Mnt,
        Namespace::User,
    ];

    /// Its name under `/proc/PID/ns/`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Namespace::Cgroup => "cgroup",
            Namespace::Ipc => "ipc",
            Namespace::Uts => "uts",
            Namespace::Net => "net",
            Namespace::Pid => "pid",
            Namespace::Mnt => "mnt",
            Namespace::User => "user",
        }
    }

    fn kind(self) -> LinkNameSpaceType {
        match self {
            Namespace::Cgroup => LinkNameSpaceType::ControlGroup,
            Namespace::Ipc => LinkNameSpaceType::InterProcessCommunication,
            Namespace::Uts => LinkNameSpaceType::HostNameAndNISDomainName,
            Namespace::Net => LinkNameSpaceType::Network,
            Namespace::Pid => LinkNameSpaceType::ProcessID,
            Namespace::Mnt => LinkNameSpaceType::Mount,
            Namespace::User => LinkNameSpaceType::User,
        }
    }

    /// What the child was doing, for its report (no allocation there).
    fn step(self) -> &'static str {
        match self {
            Namespace::Cgroup => "entering the cgroup namespace",
            Namespace::Ipc => "entering the ipc namespace",
            Namespace::Uts => "entering the uts namespace",
            Namespace::Net => "entering the net namespace",
            Namespace::Pid => "entering the pid namespace",
            Namespace::Mnt => "entering the mnt namespace",
            Namespace::User => "entering the user namespace",
        }
    }
}

/// The line prefix of a step report the child writes on its stderr.
pub(crate) const REPORT_PREFIX: &str = "mitogen-enter: ";

/// A process's namespaces, root and working directory, opened from outside.
pub(crate) struct Leader {
    /// The namespaces that differ from ours, in [`Namespace::ORDER`].
    pub(crate) namespaces: Vec<(Namespace, OwnedFd)>,
    /// Its root directory (`/proc/PID/root`).
    pub(crate) root: OwnedFd,
    /// Its working directory, if it could be opened.
    pub(crate) cwd: Option<OwnedFd>,
    /// Its capability bounding set (`CapBnd`), if readable.
    pub(crate) bounding: Option<u64>,
}

/// Opens the namespaces, root and working directory of process `pid`, or
/// says why not. The process is held by a pidfd throughout and checked to be
/// alive after everything is open, so what was opened is that process's,
/// never a later one's that took its pid.
pub(crate) fn open_leader(pid: u32) -> Result<Leader, String> {
    let raw = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| format!("{pid} is not a process id"))?;
    let pidfd = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty()).map_err(
        |e| match e {
            Errno::SRCH => format!("no process with pid {pid}"),
            e => format!("opening process {pid}: {e}"),
        },
    )?;
    match open_leader_files(pid) {
        // Whatever failed, a process that exited meanwhile (or was a zombie
        // already) is named as such.
        _ if has_exited(&pidfd) => Err(format!("process {pid} exited while it was being opened")),
        r => r,
    }
}

/// [`open_leader`]'s files, with the process held by the caller.
fn open_leader_files(pid: u32) -> Result<Leader, String> {
    let dir = rustix::fs::open(
        format!("/proc/{pid}"),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("opening /proc/{pid}: {e}"))?;
    let mut namespaces = Vec::new();
    for ns in Namespace::ORDER {
        let name = ns.name();
        let theirs = match rustix::fs::openat(
            &dir,
            format!("ns/{name}"),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            // A kernel without this kind, or a process already gone (its
            // links vanish first; the pidfd check below names that).
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(format!("opening /proc/{pid}/ns/{name}: {e}")),
        };
        let same = match (
            rustix::fs::fstat(&theirs),
            rustix::fs::stat(format!("/proc/self/ns/{name}")),
        ) {
            (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
            (Err(e), _) => return Err(format!("reading /proc/{pid}/ns/{name}: {e}")),
            (Ok(_), Err(_)) => false,
        };
        // Entering one's own namespace is a no-op, except for the user
        // namespace, where it is refused (EINVAL): skip them all.
        if !same {
            namespaces.push((ns, theirs));
        }
    }
    let root = rustix::fs::openat(
        &dir,
        "root",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("opening the root of process {pid}: {e}"))?;
    let cwd = rustix::fs::openat(
        &dir,
        "cwd",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok();
    let bounding = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        });
    Ok(Leader {
        namespaces,
        root,
        cwd,
        bounding,
    })
}

/// Whether the process held by `pidfd` has exited (its pidfd is readable).
fn has_exited(pidfd: &OwnedFd) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
}

/// Opens a directory to become a root, refusing anything but a directory.
pub(crate) fn open_tree(path: &std::path::Path) -> Result<OwnedFd, String> {
    let fd = rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::NOTDIR => format!("{} is not a directory", path.display()),
        Errno::NOENT => format!("{} does not exist", path.display()),
        e => format!("opening {}: {e}", path.display()),
    })?;
    Ok(fd)
}

/// What to mount before changing root.
pub(crate) enum MountKind {
    /// A new proc file system.
    FreshProc,
    /// The host's directory at this path, with everything mounted below it.
    Bind(&'static CStr),
}

/// One mount onto a directory of a tree, made in the child's own mount
/// namespace.
pub(crate) struct Mount {
    kind: MountKind,
    /// The directory (one component below the tree's root), opened without
    /// following a link, so a link planted in the tree (`proc -> /etc`)
    /// cannot turn the mount onto a directory of the host's.
    name: &'static CStr,
    step: &'static str,
}

impl Mount {
    /// Plans `kind` onto the directory `name` (one component) of `tree`,
    /// checking now that it is a directory and not a link (the child checks
    /// again as it mounts).
    pub(crate) fn new(
        tree: &OwnedFd,
        name: &'static CStr,
        kind: MountKind,
        step: &'static str,
    ) -> Result<Mount, String> {
        let shown = name.to_string_lossy();
        rustix::fs::openat(
            tree,
            name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::NOENT => format!("the tree has no /{shown} directory to mount onto"),
            Errno::NOTDIR | Errno::LOOP => {
                format!("/{shown} in the tree is not a directory (a link is not followed)")
            }
            e => format!("opening /{shown} in the tree: {e}"),
        })?;
        Ok(Mount { kind, name, step })
    }

    /// Mounts, in the child: `tree` is the tree's root in the child's own
    /// mount namespace. The mount point is entered (`fchdir`) and mounted
    /// as `.`: a descriptor opened before the namespace was unshared would
    /// name the old namespace's mount, which the kernel refuses.
    fn make(&self, tree: &OwnedFd) -> Result<(), Errno> {
        use rustix::mount::MountFlags;
        let dir = rustix::fs::openat(
            tree,
            self.name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        rustix::process::fchdir(&dir)?;
        match self.kind {
            MountKind::FreshProc => rustix::mount::mount(
                c"proc",
                c".",
                c"proc",
                MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
                None,
            ),
            MountKind::Bind(source) => rustix::mount::mount_bind_recursive(source, c"."),
        }
    }
}

/// NUL-terminated C strings and the NUL-terminated array of pointers to
/// them that `execve` takes, built before the fork.
struct CStrings {
    _owned: Vec<CString>,
    ptrs: Vec<*const libc::c_char>,
}

// SAFETY: the pointers point into `_owned`, which is owned alongside and
// never changed; they are only read (by the exec in a forked child).
unsafe impl Send for CStrings {}
// SAFETY: as above: shared read-only.
unsafe impl Sync for CStrings {}

impl CStrings {
    fn new(items: impl IntoIterator<Item = Vec<u8>>) -> io::Result<CStrings> {
        let owned = items
            .into_iter()
            .map(|b| CString::new(b).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e)))
            .collect::<io::Result<Vec<_>>>()?;
        let mut ptrs: Vec<*const libc::c_char> = owned.iter().map(|c| c.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        Ok(CStrings {
            _owned: owned,
            ptrs,
        })
    }
}

/// Everything a new process needs to enter its target and run the program
/// there, opened before the fork.
pub(crate) struct Entry {
    /// Namespaces to enter other than the user namespace, in order.
    pub(crate) namespaces: Vec<(Namespace, OwnedFd)>,
    /// The user namespace, entered last.
    pub(crate) user_ns: Option<OwnedFd>,
    /// The directory that becomes the root.
    pub(crate) root: OwnedFd,
    /// The working directory afterwards (`/` if `None` or unusable).
    pub(crate) cwd: Option<OwnedFd>,
    /// Mounts made first, in a mount namespace of the child's own whose
    /// mounts are all private (nothing propagates back to the host's).
    pub(crate) mounts: Vec<Mount>,
    /// Whether to fork once more after entering: a new pid namespace
    /// applies to children only.
    pub(crate) fork: bool,
    /// The capability bounding set to keep (the rest is dropped).
    pub(crate) bounding: Option<u64>,
    exe: Arc<OwnedFd>,
    argv: CStrings,
    envp: CStrings,
    report: OwnedFd,
    parent_pid: u32,
}

impl Entry {
    /// An entry that runs `exe` with `argv` and exactly the environment
    /// `env`, reporting a failed step on `report` (which becomes its
    /// stderr), into `root`; the other fields say what else to enter.
    pub(crate) fn new(
        exe: Arc<OwnedFd>,
        argv: &[&OsStr],
        env: &[(OsString, OsString)],
        report: OwnedFd,
        root: OwnedFd,
    ) -> io::Result<Entry> {
        let argv = CStrings::new(argv.iter().map(|a| a.as_bytes().to_vec()))?;
        let envp = CStrings::new(env.iter().map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            kv
        }))?;
        Ok(Entry {
            namespaces: Vec::new(),
            user_ns: None,
            root,
            cwd: None,
            mounts: Vec::new(),
            fork: false,
            bounding: None,
            exe,
            argv,
            envp,
            report,
            parent_pid: std::process::id(),
        })
    }

    /// Writes which step failed to the report descriptor and returns the
    /// error. Allocation-free.
    fn fail(&self, step: &str, e: Errno) -> io::Error {
        let fd = self.report.as_fd();
        for part in [REPORT_PREFIX.as_bytes(), step.as_bytes(), b"\n"] {
            let _ = rustix::io::write(fd, part);
        }
        e.into()
    }

    /// Runs in the forked child: enters everything, then executes the
    /// program. Returns only on failure (the step is on the report
    /// descriptor, the errno in the error). Async-signal-safe: system calls
    /// only.
    pub(crate) fn enter(&self) -> io::Result<()> {
        use rustix::mount::MountPropagationFlags;
        rustix::stdio::dup2_stderr(&self.report).map_err(|e| self.fail("redirecting stderr", e))?;
        crate::sys::die_with_parent(self.parent_pid).map_err(|e| {
            self.fail(
                "arming the parent-death signal",
                Errno::from_io_error(&e).unwrap_or(Errno::SRCH),
            )
        })?;
        if !self.mounts.is_empty() {
            // The tree as this new namespace has it: the working directory
            // was moved into the namespace's copy of its mount, the
            // descriptor `root` was not.
            rustix::process::fchdir(&self.root)
                .map_err(|e| self.fail("changing into the new root", e))?;
            // SAFETY: as above.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }
                .map_err(|e| self.fail("making a mount namespace of its own", e))?;
            rustix::mount::mount_change(
                c"/",
                MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
            )
            .map_err(|e| self.fail("making its mounts private", e))?;
            let tree = rustix::fs::open(
                c".",
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| self.fail("opening the new root", e))?;
            for m in &self.mounts {
                m.make(&tree).map_err(|e| self.fail(m.step, e))?;
            }
            rustix::process::fchdir(&tree)
                .map_err(|e| self.fail("changing into the new root", e))?;
            rustix::process::chroot(c".").map_err(|e| self.fail("changing root", e))?;
        }
        for (ns, fd) in &self.namespaces {
            rustix::thread::move_into_link_name_space(fd.as_fd(), Some(ns.kind()))
                .map_err(|e| self.fail(ns.step(), e))?;
        }
        if self.mounts.is_empty() {
            rustix::process::fchdir(&self.root)
                .map_err(|e| self.fail("changing into the new root", e))?;
            rustix::process::chroot(c".").map_err(|e| self.fail("changing root", e))?;
        }
        if let Some(user) = &self.user_ns {
            rustix::thread::move_into_link_name_space(user.as_fd(), Some(LinkNameSpaceType::User))
                .map_err(|e| self.fail(Namespace::User.step(), e))?;
            // Root of that namespace, as a container's own root is; denied
            // supplementary groups (`setgroups` = deny) are left as they are.
            let _ = rustix::thread::set_thread_groups(&[]);
            rustix::thread::set_thread_res_gid(Gid::ROOT, Gid::ROOT, Gid::ROOT)
                .and_then(|()| rustix::thread::set_thread_res_uid(Uid::ROOT, Uid::ROOT, Uid::ROOT))
                .map_err(|e| self.fail("becoming root of the user namespace (is 0 mapped?)", e))?;
        }
        let in_cwd = self
            .cwd
            .as_ref()
            .is_some_and(|c| rustix::process::fchdir(c).is_ok());
        if !in_cwd {
            rustix::process::chdir(c"/").map_err(|e| self.fail("changing to /", e))?;
        }
        if let Some(keep) = self.bounding {
            self.drop_capabilities(keep)?;
        }
        if self.fork {
            self.fork_into_pid_namespace()?;
        }
        // SAFETY: both arrays are NUL-terminated arrays of pointers to NUL-
        // terminated strings, owned by `self`, which outlives the call.
        unsafe {
            libc::fexecve(
                self.exe.as_raw_fd(),
                self.argv.ptrs.as_ptr(),
                self.envp.ptrs.as_ptr(),
            )
        };
        Err(self.fail("starting the program", Errno::from_raw_os_error(errno())))
    }

    /// Keeps only the capabilities in `keep` in the bounding set and the
    /// inheritable set: root's permitted and effective sets after the exec
    /// are then those of the target (its leader's bounding set), no more.
    fn drop_capabilities(&self, keep: u64) -> io::Result<()> {
        use rustix::thread::CapabilitySet;
        for cap in 0..64u32 {
            if keep & (1 << cap) != 0 {
                continue;
            }
            match rustix::thread::remove_capability_from_bounding_set(
                CapabilitySet::from_bits_retain(1 << cap),
            ) {
                // Beyond the last capability this kernel knows.
                Ok(()) | Err(Errno::INVAL) => {}
                Err(e) => return Err(self.fail("dropping capabilities", e)),
            }
        }
        let mut sets =
            rustix::thread::capabilities(None).map_err(|e| self.fail("reading capabilities", e))?;
        let keep = CapabilitySet::from_bits_retain(keep);
        sets.inheritable &= keep;
        sets.permitted &= keep;
        sets.effective &= keep;
        rustix::thread::set_capabilities(None, sets)
            .map_err(|e| self.fail("dropping capabilities", e))
    }

    /// Forks once more: the child (in the new pid namespace) returns and goes
    /// on to exec; this process waits for it and exits with its status, so
    /// the parent's handle on this process stands for the context.
    fn fork_into_pid_namespace(&self) -> io::Result<()> {
        // SAFETY: this process has one thread (it is a fresh fork), so the
        // child may go on with anything this one could.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            let e = Errno::from_raw_os_error(errno());
            // ENOMEM: the namespace's init has exited, nothing may join it.
            let step = if e == Errno::NOMEM {
                "starting a process in the pid namespace (its init process has exited)"
            } else {
                "starting a process in the pid namespace"
            };
            return Err(self.fail(step, e));
        }
        if pid == 0 {
            // Killed with this process; its parent is outside its pid
            // namespace, so `getppid` reads 0 and cannot be checked: if
            // this process died meanwhile, the stream's far end is gone and
            // the program exits at its greeting.
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(|e| self.fail("arming the parent-death signal", e))?;
            return Ok(());
        }
        // Nothing of the parent's may stay open here: not the stream (the
        // program's exit must read as its end), not the descriptor through
        // which the exec's success reaches the parent (a copy held here
        // would make it wait for the whole context).
        let _ = rustix::stdio::dup2_stdin(&self.report);
        let _ = rustix::stdio::dup2_stdout(&self.report);
        // SAFETY: closes descriptors only; close_range takes plain integers.
        let closed = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
        if closed != 0 {
            for fd in 3..4096 {
                // SAFETY: as above.
                unsafe { libc::close(fd) };
            }
        }
        let code = loop {
            let mut status = 0;
            // SAFETY: waits for our own child; `status` is a valid pointer.
            let r = unsafe { libc::waitpid(pid, &mut status, 0) };
            if r == pid {
                break if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else if libc::WIFSIGNALED(status) {
                    128 + libc::WTERMSIG(status)
                } else {
                    continue;
                };
            }
            if r < 0 && errno() != libc::EINTR {
                break 1;
            }
        };
        // SAFETY: leaves at once, running nothing of the parent's (no atexit
        // handlers, no buffers flushed twice).
        unsafe { libc::_exit(code) }
    }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A copy of the image this process runs in a sealed memory file (no write,
/// grow, shrink or new seal), made once: a target that sees the program
/// through `/proc/PID/exe` can read it, but not write it, and nothing of the
/// host's (the program's file) is reachable through it. Descriptor
/// close-on-exec.
pub(crate) fn sealed_own_exe() -> io::Result<Arc<OwnedFd>> {
    static SEALED: OnceLock<Result<Arc<OwnedFd>, String>> = OnceLock::new();
    SEALED
        .get_or_init(|| make_sealed_copy().map(Arc::new).map_err(|e| e.to_string()))
        .clone()
        .map_err(io::Error::other)
}

fn make_sealed_copy() -> io::Result<OwnedFd> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    // Executable on purpose (`MFD_EXEC`, Linux 6.3+); older kernels refuse
    // the flag and make every memory file executable.
    let fd = rustix::fs::memfd_create(c"mitogen", flags | MemfdFlags::EXEC)
        .or_else(|_| rustix::fs::memfd_create(c"mitogen", flags))?;
    let mut file = std::fs::File::from(fd);
    let mut own = crate::sys::open_own_exe()?;
    io::copy(&mut own, &mut file)?;
    rustix::fs::fchmod(&file, Mode::from_raw_mode(0o500))?;
    rustix::fs::fcntl_add_seals(
        &file,
        SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
    )?;
    Ok(file.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sealed_copy_is_the_program_and_cannot_be_written() {
        let fd = sealed_own_exe().unwrap();
        let mut copy = Vec::new();
        let mut f = std::fs::File::from(fd.as_fd().try_clone_to_owned().unwrap());
        use std::io::{Read, Seek, Write};
        f.seek(io::SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut copy).unwrap();
        assert_eq!(copy, crate::sys::read_own_exe().unwrap());
        assert!(f.write_all(b"x").is_err(), "a sealed copy took a write");
        assert!(f.set_len(1).is_err(), "a sealed copy was truncated");
        // The same copy every time.
        assert_eq!(sealed_own_exe().unwrap().as_raw_fd(), fd.as_raw_fd(),);
    }

    #[test]
    fn a_process_that_is_not_there_is_named() {
        let e = open_leader(i32::MAX as u32).err().unwrap();
        assert!(e.contains("no process with pid"), "{e}");
        let e = open_leader(0).err().unwrap();
        assert!(e.contains("not a process id"), "{e}");
    }

    #[test]
    fn a_zombie_is_a_process_that_exited() {
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not reaped yet: a zombie, whose pid still names it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
        {
            assert!(std::time::Instant::now() < deadline, "never a zombie");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let e = open_leader(pid).err().unwrap();
        let mut child = child;
        child.wait().unwrap();
        assert!(e.contains("exited while it was being opened"), "{e}");
    }

    #[test]
    fn own_namespaces_are_not_entered() {
        let me = open_leader(std::process::id());
        // Opening another process's namespace files needs ptrace access,
        // which a process has to itself.
        let me = me.unwrap();
        assert!(
            me.namespaces.is_empty(),
            "{:?}",
            me.namespaces.iter().map(|n| n.0).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_file_is_not_a_tree() {
        let e = open_tree(std::path::Path::new("/proc/self/status")).unwrap_err();
        assert!(e.contains("not a directory"), "{e}");
        let e = open_tree(std::path::Path::new("/nonexistent-tree")).unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
    }
}
