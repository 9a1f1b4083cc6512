//! The ssh method against a real sshd on loopback (see `sshd`): the program
//! ships itself to each user's cache, runs there, and every failure is a
//! typed error naming the hop.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use mitogen::master::binary::Binary;
use mitogen::methods::ssh::HostKeyPolicy;
use mitogen::parent::first_stage::Compression;
use mitogen::{Blob, Error, Router, Sender, Ssh, TransportFailure};
use serde::{Deserialize, Serialize};

use crate::sshd::{self, Sshd, User};
use crate::util::{kill9, proc_state, wait_gone, wait_until, Guard};

/// Who and where a context runs.
#[derive(Debug, Serialize, Deserialize)]
pub struct Whoami {
    pub pid: u32,
    pub uid: u32,
    pub home: String,
    pub exe: String,
}

#[mitogen::remote]
pub fn whoami() -> Whoami {
    Whoami {
        pid: std::process::id(),
        uid: rustix::process::getuid().as_raw(),
        home: std::env::var("HOME").unwrap_or_default(),
        exe: std::fs::read_link("/proc/self/exe")
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    }
}

#[mitogen::remote]
pub fn plus_one(v: u64) -> u64 {
    v + 1
}

/// Streams `n` blobs of `size` bytes, blob `i` filled with the byte `i`.
#[mitogen::remote]
pub fn blobs(n: u32, size: u32, out: Sender<Blob>) -> mitogen::Result<()> {
    for i in 0..n {
        out.send(Blob::from(vec![i as u8; size as usize]))?;
    }
    out.close()
}

/// This program as the router ships it (read and compressed once).
pub(crate) fn own() -> &'static Binary {
    static OWN: OnceLock<Binary> = OnceLock::new();
    OWN.get_or_init(|| {
        let b = Binary::load(Path::new("/proc/self/exe")).expect("reading own executable");
        b.gzipped();
        b
    })
}

/// Connects, and shuts the context down when the test is done with it.
fn connect(router: &Router, ssh: Ssh) -> Result<Guard> {
    Ok(Guard(router.ssh(ssh)?))
}

/// Connects and checks who and where the context runs.
fn connect_as(router: &Router, ssh: Ssh, user: &User) -> Result<(Guard, Whoami)> {
    connect_checked(router, ssh, user, false)
}

/// [`connect_as`]; with `replaced_ok`, the file the context runs may have been
/// replaced since it started (by another connection's upload of the same build).
fn connect_checked(
    router: &Router,
    ssh: Ssh,
    user: &User,
    replaced_ok: bool,
) -> Result<(Guard, Whoami)> {
    let ctx = connect(router, ssh)?;
    let mut w = ctx.call_timeout(whoami, (), Duration::from_secs(20))?;
    if replaced_ok {
        if let Some(live) = w.exe.strip_suffix(" (deleted)") {
            w.exe = live.to_owned();
        }
    }
    ensure!(
        w.uid == user.uid,
        "runs as uid {} instead of {}",
        w.uid,
        user.uid
    );
    ensure!(
        Path::new(&w.home) == user.home,
        "HOME {} instead of {}",
        w.home,
        user.home.display()
    );
    ensure!(
        Some(w.pid) != ctx.pid(),
        "the context's pid is the ssh client's"
    );
    ensure!(
        w.exe.ends_with(&format!("/{}", own().hash)),
        "runs {} rather than the cached build {}",
        w.exe,
        own().hash
    );
    Ok((ctx, w))
}

/// The cache entry of this build in `dir`.
fn entry(dir: &Path) -> PathBuf {
    dir.join(&own().hash)
}

fn check_entry(user: &User, dir: &Path) -> Result<()> {
    let path = entry(dir);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    ensure!(
        bytes == **own().bytes,
        "{} differs from the program ({} bytes, expected {})",
        path.display(),
        bytes.len(),
        own().bytes.len()
    );
    let dm = std::fs::metadata(dir)?;
    ensure!(
        dm.permissions().mode() & 0o777 == 0o700,
        "{} has mode {:o}",
        dir.display(),
        dm.permissions().mode()
    );
    ensure!(
        dm.uid() == user.uid,
        "{} not owned by the user",
        dir.display()
    );
    let fm = std::fs::metadata(&path)?;
    ensure!(
        fm.uid() == user.uid,
        "{} not owned by the user",
        path.display()
    );
    ensure!(
        fm.permissions().mode() & 0o100 != 0,
        "{} not executable",
        path.display()
    );
    // No half-written temporary files left behind.
    let leftovers: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!(".{}", own().hash)))
        .collect();
    ensure!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    Ok(())
}

fn uploaded_during<T>(router: &Router, f: impl FnOnce() -> Result<T>) -> Result<(T, u64)> {
    let before = router.uploaded_bytes();
    let t = f()?;
    Ok((t, router.uploaded_bytes() - before))
}

/// The transport error kind of a connection that must fail, after checking
/// that its message names the hop.
pub(crate) fn failure(r: mitogen::Result<mitogen::Context>, hop: &str) -> Result<(Error, String)> {
    match r {
        Ok(ctx) => {
            let _ = ctx.shutdown_timeout(Duration::from_secs(5));
            bail!("connecting {hop} succeeded but must fail")
        }
        Err(e) => {
            let text = e.to_string();
            ensure!(
                text.contains(hop),
                "the error does not name the hop {hop:?}: {text}"
            );
            Ok((e, text))
        }
    }
}

fn expect_kind(
    r: mitogen::Result<mitogen::Context>,
    hop: &str,
    want: TransportFailure,
) -> Result<()> {
    let (e, text) = failure(r, hop)?;
    match e {
        Error::Transport { kind, .. } if kind == want => Ok(()),
        _ => bail!("expected a {want:?} transport error, got: {text}"),
    }
}

pub(crate) fn hop(user: &str, sshd: &Sshd) -> String {
    format!("{user}@127.0.0.1:{}", sshd.port)
}

pub fn connects_as_root_and_as_a_user(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    for user in [sshd::root()?, sshd::user("mitogen-t1", "/bin/sh")?] {
        let (ctx, w) = connect_as(router, sshd.ssh(&user.name)?, &user)
            .with_context(|| format!("as {}; sshd log:\n{}", user.name, sshd.log_tail()))?;
        ensure!(
            ctx.name() == hop(&user.name, &sshd),
            "context named {:?}",
            ctx.name()
        );
        ensure!(
            user.cache_dirs()
                .iter()
                .any(|d| Path::new(&w.exe) == entry(d)),
            "runs {} which is in none of the user's cache dirs",
            w.exe
        );
        ensure!(
            proc_state(w.pid).is_some(),
            "remote pid {} not found",
            w.pid
        );
        ctx.shutdown_timeout(Duration::from_secs(10))?;
        ensure!(
            wait_gone(w.pid, Duration::from_secs(10)),
            "the remote process {} of {} outlived its shutdown",
            w.pid,
            user.name
        );
    }
    Ok(())
}

pub fn second_connection_uploads_nothing(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    let user = sshd::user("mitogen-t1", "/bin/sh")?;
    user.clear_cache()?;
    let home_cache = &user.cache_dirs()[0];

    let started = Instant::now();
    let ((ctx, _), up) =
        uploaded_during(router, || connect_as(router, sshd.ssh(&user.name)?, &user))?;
    let cold = started.elapsed();
    ensure!(
        up == own().gzipped().len() as u64,
        "the first connection uploaded {up} bytes; the gzipped program has {} (raw {})",
        own().gzipped().len(),
        own().bytes.len()
    );
    check_entry(&user, home_cache)?;
    drop(ctx);

    let started = Instant::now();
    let ((ctx, _), up) =
        uploaded_during(router, || connect_as(router, sshd.ssh(&user.name)?, &user))?;
    let warm = started.elapsed();
    ensure!(up == 0, "the second connection uploaded {up} bytes");
    drop(ctx);
    println!(
        "    cold connect {cold:?} ({} bytes gzipped), warm {warm:?}",
        own().gzipped().len()
    );

    // By default, over loopback, the program goes as it is (gunzip would cost
    // more than the bytes it saves).
    user.clear_cache()?;
    let ssh = sshd.ssh(&user.name)?.upload_compression(Compression::Auto);
    let ((ctx, _), up) = uploaded_during(router, || connect_as(router, ssh, &user))?;
    ensure!(
        up == own().bytes.len() as u64,
        "the default upload to a loopback address sent {up} bytes for a {}-byte program",
        own().bytes.len()
    );
    drop(ctx);

    // Without compression the program goes as it is.
    user.clear_cache()?;
    let ssh = sshd.ssh(&user.name)?.upload_compression(Compression::Never);
    let ((ctx, _), up) = uploaded_during(router, || connect_as(router, ssh, &user))?;
    ensure!(
        up == own().bytes.len() as u64,
        "an uncompressed upload sent {up} bytes for a {}-byte program",
        own().bytes.len()
    );
    check_entry(&user, home_cache)?;
    drop(ctx);
    Ok(())
}

pub fn corrupt_cache_entry_is_replaced(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    let user = sshd::user("mitogen-t1", "/bin/sh")?;
    let dir = user.cache_dirs()[0].clone();
    let path = entry(&dir);
    let len = own().bytes.len() as u64;
    if !path.exists() {
        connect_as(router, sshd.ssh(&user.name)?, &user)?;
    }
    check_entry(&user, &dir)?;

    type Damage = fn(&Path, u64) -> std::io::Result<()>;
    let cases: [(&str, Damage); 3] = [
        ("truncated to half", |p, len| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(p)?
                .set_len(len / 2)
        }),
        ("emptied", |p, _| {
            std::fs::OpenOptions::new().write(true).open(p)?.set_len(0)
        }),
        ("overwritten in the middle", |p, len| {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = std::fs::OpenOptions::new().write(true).open(p)?;
            f.seek(SeekFrom::Start(len / 2))?;
            f.write_all(&[0xa5; 4096])
        }),
    ];
    for (what, damage) in cases {
        // A file being executed cannot be written (ETXTBSY): contexts of earlier
        // connections must be gone first.
        let running = || running_from(&path);
        ensure!(
            wait_until(Duration::from_secs(10), || running().is_empty()),
            "processes {:?} still run {} 10 s after their shutdown",
            running(),
            path.display()
        );
        damage(&path, len).with_context(|| format!("damaging the entry ({what})"))?;
        ensure!(
            std::fs::read(&path)? != **own().bytes,
            "damaging the entry ({what}) changed nothing"
        );
        let mark = crate::capture::mark();
        let ((ctx, _), up) =
            uploaded_during(router, || connect_as(router, sshd.ssh(&user.name)?, &user))
                .with_context(|| format!("cache entry {what}"))?;
        ensure!(
            up == own().gzipped().len() as u64,
            "cache entry {what}: uploaded {up} bytes, expected a fresh upload"
        );
        // The master noticed and said why it uploaded again.
        let name = hop(&user.name, &sshd);
        let noticed = crate::capture::since(mark)
            .into_iter()
            .find(|e| e.field("context") == Some(name.as_str()) && e.message.contains("again"))
            .ok_or_else(|| anyhow!("cache entry {what}: no log of a second attempt"))?;
        if what.contains("middle") {
            // The program starts and its own hash check finds the damage.
            ensure!(
                noticed.message.contains("corrupt"),
                "cache entry {what}: {noticed}"
            );
        }
        println!("    {what}: {}", noticed.message);
        check_entry(&user, &dir).with_context(|| format!("cache entry {what}"))?;
        drop(ctx);
    }
    Ok(())
}

/// Processes whose executable is `path`.
pub(crate) fn running_from(path: &Path) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == path))
        .collect()
}

/// A tmpfs mounted `noexec`, unmounted on drop.
struct NoexecMount(PathBuf);

impl NoexecMount {
    fn new(at: &Path, user: &User) -> Result<NoexecMount> {
        std::fs::create_dir_all(at)?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!(
                "noexec,nosuid,size=256m,mode=0700,uid={0},gid={0}",
                user.uid
            ))
            .arg("mitogen-test")
            .arg(at)
            .output()?;
        ensure!(
            out.status.success(),
            "mount -t tmpfs -o noexec {}: {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(NoexecMount(at.to_owned()))
    }
}

impl Drop for NoexecMount {
    fn drop(&mut self) {
        quiet_umount(&self.0);
    }
}

/// Unmounts whatever is mounted at `at`, if anything (left by an earlier run).
fn quiet_umount(at: &Path) {
    let _ = Command::new("umount")
        .arg("-l")
        .arg(at)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// Puts a home back to 0755 whatever happens in the test.
struct RestoreHome(PathBuf);

impl Drop for RestoreHome {
    fn drop(&mut self) {
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755));
    }
}

pub fn read_only_or_noexec_home_falls_back(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;

    // Read-only home without ~/.cache: /tmp/mitogen-USER.
    let ro = sshd::user("mitogen-ro", "/bin/sh")?;
    ro.clear_cache()?;
    let _ = std::fs::remove_dir_all(ro.home.join(".cache"));
    std::fs::set_permissions(&ro.home, std::fs::Permissions::from_mode(0o555))?;
    let _restore = RestoreHome(ro.home.clone());
    let (ctx, w) = connect_as(router, sshd.ssh(&ro.name)?, &ro).context("read-only home")?;
    ensure!(
        Path::new(&w.exe) == entry(&ro.cache_dirs()[1]),
        "read-only home: runs {}",
        w.exe
    );
    ensure!(
        !ro.home.join(".cache").exists(),
        "~/.cache appeared in a read-only home"
    );
    check_entry(&ro, &ro.cache_dirs()[1])?;
    drop(ctx);

    // ~/.cache on a noexec file system: skipped for /tmp/mitogen-USER; with that
    // noexec too, /dev/shm/mitogen-USER; with all three noexec, a clear error.
    let nx = sshd::user("mitogen-nx", "/bin/sh")?;
    for d in nx.cache_dirs() {
        quiet_umount(&d);
    }
    quiet_umount(&nx.home.join(".cache"));
    nx.clear_cache()?;
    let _ = std::fs::remove_dir_all(nx.home.join(".cache"));
    let home_cache = nx.home.join(".cache");
    let _m1 = match NoexecMount::new(&home_cache, &nx) {
        Ok(m) => m,
        Err(e) => {
            println!("    SKIPPED the noexec sub-cases: {e:#}");
            return Ok(());
        }
    };
    let (ctx, w) = connect_as(router, sshd.ssh(&nx.name)?, &nx).context("noexec ~/.cache")?;
    ensure!(
        Path::new(&w.exe) == entry(&nx.cache_dirs()[1]),
        "noexec ~/.cache: runs {}",
        w.exe
    );
    drop(ctx);

    nx.clear_cache()?;
    let _m2 = NoexecMount::new(&nx.cache_dirs()[1], &nx)?;
    let (ctx, w) = connect_as(router, sshd.ssh(&nx.name)?, &nx).context("noexec /tmp too")?;
    ensure!(
        Path::new(&w.exe) == entry(&nx.cache_dirs()[2]),
        "noexec ~/.cache and /tmp/mitogen-USER: runs {}",
        w.exe
    );
    drop(ctx);

    let _ = std::fs::remove_dir_all(&nx.cache_dirs()[2]);
    let _m3 = NoexecMount::new(&nx.cache_dirs()[2], &nx)?;
    let name = hop(&nx.name, &sshd);
    let (_, text) = failure(router.ssh(sshd.ssh(&nx.name)?), &name)?;
    ensure!(
        text.contains("cache directory"),
        "every cache dir noexec: unclear error: {text}"
    );
    Ok(())
}

pub fn two_connections_fill_an_empty_cache_at_once(router: &Router) -> Result<()> {
    let sshd = Arc::new(Sshd::start()?);
    let user = sshd::user("mitogen-t2", "/bin/sh")?;
    user.clear_cache()?;
    let before = router.uploaded_bytes();
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (router, sshd, user, barrier) =
                (router.clone(), sshd.clone(), user.clone(), barrier.clone());
            std::thread::spawn(move || -> Result<u32> {
                let ssh = sshd.ssh(&user.name)?;
                barrier.wait();
                let (ctx, w) = connect_checked(&router, ssh, &user, true)?;
                drop(ctx);
                Ok(w.pid)
            })
        })
        .collect();
    let mut pids = Vec::new();
    for (i, t) in threads.into_iter().enumerate() {
        let r = t.join().map_err(|_| anyhow!("connection {i} panicked"))?;
        pids.push(r.with_context(|| format!("connection {i}"))?);
    }
    ensure!(pids[0] != pids[1], "both connections reached one process");
    let up = router.uploaded_bytes() - before;
    let gz = own().gzipped().len() as u64;
    ensure!(
        up == gz || up == 2 * gz,
        "uploaded {up} bytes, not one or two programs of {gz}"
    );
    if up == gz {
        println!("    note: the second connection found the first one's upload");
    }
    check_entry(&user, &user.cache_dirs()[0])
}

pub fn wrong_key_is_authentication_failed(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    let ssh = sshd.ssh("root")?.identity_file(&sshd.wrong_key);
    expect_kind(
        router.ssh(ssh),
        &hop("root", &sshd),
        TransportFailure::AuthenticationFailed,
    )
}

pub fn closed_port_is_connection_refused(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    let port = sshd::closed_port()?;
    let ssh = sshd.ssh("root")?.port(port);
    expect_kind(
        router.ssh(ssh),
        &format!("root@127.0.0.1:{port}"),
        TransportFailure::ConnectionRefused,
    )
}

pub fn host_key_policies(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    let root = sshd::root()?;
    let name = hop("root", &sshd);
    let enforce = |known: &Path| -> Result<Ssh> {
        Ok(sshd
            .ssh("root")?
            .host_key_policy(HostKeyPolicy::Enforce)
            .ssh_args([
                "-o".to_owned(),
                format!("UserKnownHostsFile={}", known.display()),
                "-o".to_owned(),
                "GlobalKnownHostsFile=/dev/null".to_owned(),
            ]))
    };

    // The right key is accepted, so the two refusals below are about the key.
    let right = sshd.known_hosts("known_right", Some(&sshd.host_pub))?;
    connect_as(router, enforce(&right)?, &root).context("known host key under Enforce")?;

    let wrong = sshd.known_hosts("known_wrong", Some(&sshd.other_pub))?;
    expect_kind(
        router.ssh(enforce(&wrong)?),
        &name,
        TransportFailure::HostKeyMismatch,
    )
    .context("a different key in known_hosts")?;

    let empty = sshd.known_hosts("known_empty", None)?;
    expect_kind(
        router.ssh(enforce(&empty)?),
        &name,
        TransportFailure::HostKeyUnknown,
    )
    .context("an empty known_hosts")?;

    // AcceptNew takes the unknown key and remembers it.
    let fresh = sshd.known_hosts("known_fresh", None)?;
    let accept = sshd
        .ssh("root")?
        .host_key_policy(HostKeyPolicy::AcceptNew)
        .ssh_args([
            "-o".to_owned(),
            format!("UserKnownHostsFile={}", fresh.display()),
        ]);
    connect_as(router, accept, &root).context("AcceptNew")?;
    let remembered = std::fs::read_to_string(&fresh)?;
    let key_b64 = sshd.host_pub.split_whitespace().nth(1).unwrap_or("?");
    ensure!(
        remembered.contains(key_b64),
        "AcceptNew did not remember the key: {remembered:?}"
    );
    Ok(())
}

pub fn login_shell_that_is_not_a_shell(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    for (name, shell) in [
        ("mitogen-false", "/bin/false"),
        ("mitogen-nologin", "/usr/sbin/nologin"),
    ] {
        sshd::user(name, shell)?;
        let started = Instant::now();
        let ssh = sshd.ssh(name)?.connect_timeout(Duration::from_secs(20));
        let (err, text) = failure(router.ssh(ssh), &hop(name, &sshd))?;
        let took = started.elapsed();
        ensure!(
            took < Duration::from_secs(10),
            "login shell {shell}: the error took {took:?}: {text}"
        );
        if shell.ends_with("nologin") {
            // nologin says why on stdout; the error says it is no shell.
            ensure!(
                matches!(
                    err,
                    Error::Transport {
                        kind: TransportFailure::NoShell,
                        ..
                    }
                ),
                "login shell {shell}: not a NoShell transport error: {err:?}"
            );
        }
        ensure!(
            text.contains("first stage"),
            "login shell {shell}: unclear error: {text}"
        );
        println!("    {shell}: {text}");
    }
    Ok(())
}

pub fn banner_on_stdout_before_the_stage(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    let user = sshd::user("mitogen-noisy", "/bin/bash")?;
    let rc = user.home.join(".bashrc");
    std::fs::write(
        &rc,
        "echo 'Welcome to the noisy host'\n\
         printf 'MITOGEN garbage \\001\\002\\377 no newline'\n\
         echo 'to stderr as well' >&2\n",
    )?;
    user.chown(&rc)?;
    // The noise must really reach ssh's stdout, or this test shows nothing.
    let out = sshd.plain_ssh(&user.name, "echo END")?;
    ensure!(
        out.contains("Welcome to the noisy host") && out.contains("END"),
        "bash did not print the banner over ssh: {out:?}"
    );
    let (ctx, _) = connect_as(router, sshd.ssh(&user.name)?, &user)?;
    ensure!(ctx.call(plus_one, (41,))? == 42, "wrong answer");
    Ok(())
}

pub fn remote_that_hangs_times_out(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    let user = sshd::user("mitogen-slow", "/bin/bash")?;
    let rc = user.home.join(".bashrc");
    std::fs::write(&rc, "sleep 8\n")?;
    user.chown(&rc)?;
    let timeout = Duration::from_secs(2);
    let started = Instant::now();
    let ssh = sshd.ssh(&user.name)?.connect_timeout(timeout);
    let (_, text) = failure(router.ssh(ssh), &hop(&user.name, &sshd))?;
    let took = started.elapsed();
    ensure!(
        took >= timeout && took < timeout + Duration::from_secs(3),
        "the error came after {took:?} with a {timeout:?} connect timeout: {text}"
    );
    ensure!(
        text.contains("no answer") || text.contains("timed out"),
        "unclear error: {text}"
    );
    Ok(())
}

/// Processes of `uid` whose command name is `comm`.
fn processes(uid: u32, comm: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
                && std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == uid)
        })
        .collect()
}

/// This process's `ssh` children that talk to `port`.
fn ssh_clients(port: u16) -> Vec<u32> {
    let needle = format!("\0-p\0{port}\0");
    crate::util::child_processes()
        .into_iter()
        .map(|(pid, _)| pid)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .collect()
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// Starts an uncompressed upload in a thread and stops the remote `head` that
/// stores it, so that the upload stalls half-way; returns the thread and the
/// stopped processes.
fn stalled_upload(
    router: &Router,
    sshd: &Sshd,
    user: &User,
    timeout: Duration,
) -> Result<(
    std::thread::JoinHandle<mitogen::Result<mitogen::Context>>,
    Vec<u32>,
)> {
    user.clear_cache()?;
    let ssh = sshd
        .ssh(&user.name)?
        .upload_compression(Compression::Never)
        .connect_timeout(timeout);
    let r = router.clone();
    let t = std::thread::spawn(move || r.ssh(ssh));
    let mut heads = Vec::new();
    let found = wait_until(Duration::from_secs(15), || {
        heads = processes(user.uid, "head");
        for &h in &heads {
            signal(h, rustix::process::Signal::STOP);
        }
        !heads.is_empty() || t.is_finished()
    });
    ensure!(
        found && !heads.is_empty(),
        "the remote head never ran (the upload did not start or ended at once)"
    );
    Ok((t, heads))
}

pub fn ssh_dying_or_stalling_mid_upload(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    let user = sshd::user("mitogen-t3", "/bin/sh")?;
    let name = hop(&user.name, &sshd);

    // The ssh client dies: a clear error at once.
    let (t, heads) = stalled_upload(router, &sshd, &user, Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_millis(200));
    ensure!(
        !t.is_finished(),
        "the connection ended before ssh was killed"
    );
    let clients = ssh_clients(sshd.port);
    ensure!(clients.len() == 1, "ssh clients to kill: {clients:?}");
    let killed = Instant::now();
    kill9(clients[0])?;
    ensure!(
        wait_until(Duration::from_secs(10), || t.is_finished()),
        "no error 10 s after ssh died mid-upload"
    );
    let took = killed.elapsed();
    for h in heads {
        signal(h, rustix::process::Signal::KILL);
    }
    let r = t.join().map_err(|_| anyhow!("connect panicked"))?;
    let (_, text) = failure(r, &name).context("ssh killed mid-upload")?;
    no_temp_files_left(&user).context("ssh killed mid-upload")?;
    ensure!(
        took < Duration::from_secs(5),
        "the error came {took:?} after ssh died"
    );
    println!("    ssh killed: {text}");

    // The upload stalls: a time-out error at the connect timeout.
    let timeout = Duration::from_secs(3);
    let started = Instant::now();
    let (t, heads) = stalled_upload(router, &sshd, &user, timeout)?;
    let finished = wait_until(timeout + Duration::from_secs(5), || t.is_finished());
    let took = started.elapsed();
    for h in heads {
        signal(h, rustix::process::Signal::KILL);
    }
    ensure!(finished, "no error {took:?} into a stalled upload");
    let r = t.join().map_err(|_| anyhow!("connect panicked"))?;
    let (_, text) = failure(r, &name).context("stalled upload")?;
    no_temp_files_left(&user).context("stalled upload")?;
    ensure!(
        text.contains("timed out") || text.contains("no answer") || text.contains("no greeting"),
        "a stalled upload gave: {text}"
    );
    println!("    stalled: {text} after {took:?}");

    // Nothing half-written stops the next connection.
    connect_as(router, sshd.ssh(&user.name)?, &user).context("after the failed uploads")?;
    check_entry(&user, &user.cache_dirs()[0])
}

/// Waits a little for the stage of a failed upload to remove its temporary file.
fn no_temp_files_left(user: &User) -> Result<()> {
    let dir = &user.cache_dirs()[0];
    let mut left = Vec::new();
    let gone = wait_until(Duration::from_secs(5), || {
        left = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&format!(".{}.", own().hash)))
                    .collect()
            })
            .unwrap_or_default();
        left.is_empty()
    });
    ensure!(gone, "temporary files left in {}: {left:?}", dir.display());
    Ok(())
}

pub fn target_string_with_connect_options(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    let user = sshd::user("mitogen-t1", "/bin/sh")?;
    sshd.authorize(&user.name)?;
    let text = format!("{}@127.0.0.1:{}", user.name, sshd.port);
    let target: mitogen::Target = text.parse()?;
    let mut options = mitogen::ConnectOptions {
        ssh_config: Some("/dev/null".into()),
        ..Default::default()
    };
    options.ssh_options = vec![
        format!("IdentityFile={}", sshd.client_key.display()),
        "IdentitiesOnly=yes".into(),
        "StrictHostKeyChecking=no".into(),
        "UserKnownHostsFile=/dev/null".into(),
    ];
    options.connect_timeout = Some(Duration::from_secs(20));
    let ctx = Guard(router.connect_with(&target, &options)?);
    ensure!(ctx.name() == text, "context named {:?}", ctx.name());
    let w = ctx.call(whoami, ())?;
    ensure!(w.uid == user.uid, "runs as uid {}", w.uid);
    drop(ctx);

    // The options reach ssh: without the key, the same target is refused.
    let mut bare = options.clone();
    bare.ssh_options.retain(|o| !o.starts_with("IdentityFile"));
    expect_kind(
        router.connect_with(&target, &bare),
        &text,
        TransportFailure::AuthenticationFailed,
    )
}

pub fn rtt_and_streaming(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    let user = sshd::user("mitogen-t1", "/bin/sh")?;
    let (ctx, _) = connect_as(router, sshd.ssh(&user.name)?, &user)?;

    let n = 300u64;
    let started = Instant::now();
    for i in 0..n {
        let got = ctx.call(plus_one, (i,))?;
        ensure!(got == i + 1, "call {i} returned {got}");
    }
    let rtt = started.elapsed() / n as u32;
    let pending: Vec<_> = (0..n).map(|i| ctx.call_async(plus_one, (i,))).collect();
    for (i, p) in pending.into_iter().enumerate() {
        ensure!(
            p.get_timeout(Duration::from_secs(30))? == i as u64 + 1,
            "pipelined call {i}"
        );
    }

    let (count, size) = (32u32, 256 * 1024u32);
    let (tx, rx) = ctx.channel::<Blob>();
    let started = Instant::now();
    let done = ctx.call_async(blobs, (count, size, tx));
    let mut got = 0u32;
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(b) => {
                ensure!(b.len() == size as usize, "blob {got} has {} bytes", b.len());
                ensure!(b.iter().all(|&x| x == got as u8), "blob {got} corrupt");
                got += 1;
            }
            Err(Error::ChannelClosed(_)) => break,
            Err(e) => bail!("after {got} blobs: {e}"),
        }
    }
    done.get()?;
    ensure!(got == count, "received {got} of {count} blobs");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "    rtt {rtt:?}; {} MiB streamed at {:.0} MiB/s",
        count * size / (1024 * 1024),
        f64::from(count * size) / (1024.0 * 1024.0) / secs
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Password logins, against an sshd that takes passwords and no keys.

/// The account that logs in with a password, and its password.
const PW_SSH_USER: &str = "mitogen-pw";
const PW_SSH_PASSWORD: &str = "ssh-Pw-Sekret-2718";

/// An sshd where a password is the only way in (`UsePAM no` stays: sshd
/// checks the hash in `/etc/shadow`, which [`sshd::user_with_password`] sets).
fn password_sshd() -> Result<(Sshd, User)> {
    let sshd = Sshd::start_with(&["PasswordAuthentication yes", "PubkeyAuthentication no"])?;
    let user = sshd::user_with_password(PW_SSH_USER, "/bin/sh", PW_SSH_PASSWORD)?;
    Ok((sshd, user))
}

/// Runs `f` while another thread scans every process's argv and environment
/// for `secret`; fails if it was seen.
fn scanning_for<T>(secret: &str, f: impl FnOnce() -> T) -> Result<T> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = Arc::new(AtomicBool::new(false));
    let scanner = {
        let (done, secret) = (done.clone(), secret.to_owned());
        std::thread::spawn(move || {
            let (mut leaks, mut scans) = (Vec::new(), 0u32);
            loop {
                leaks.extend(crate::switch_user::leaking_processes(&[&secret]));
                scans += 1;
                if done.load(Ordering::Relaxed) {
                    return (leaks, scans);
                }
                std::thread::sleep(Duration::from_millis(3));
            }
        })
    };
    let t = f();
    done.store(true, Ordering::Relaxed);
    let (leaks, scans) = scanner.join().map_err(|_| anyhow!("scanner panicked"))?;
    ensure!(scans > 1, "/proc was scanned {scans} times only");
    ensure!(
        leaks.is_empty(),
        "the password is visible in /proc: {leaks:?}"
    );
    Ok(t)
}

pub fn password_login(router: &Router) -> Result<()> {
    let (sshd, user) = password_sshd()?;
    // The scan does find a password where it would be visible.
    let mut control = Command::new("sleep")
        .arg("5")
        .env("CONTROL", PW_SSH_PASSWORD)
        .spawn()?;
    let seen = scanning_for(PW_SSH_PASSWORD, || {
        std::thread::sleep(Duration::from_millis(300))
    });
    let _ = control.kill();
    let _ = control.wait();
    ensure!(
        seen.is_err_and(|e| e.to_string().contains("is visible")),
        "the /proc scan does not see a password in an environment"
    );

    user.clear_cache()?;
    let ssh = sshd
        .ssh_without_key(&user.name)
        .password(PW_SSH_PASSWORD)
        .connect_timeout(Duration::from_secs(30));
    let (ctx, _) = scanning_for(PW_SSH_PASSWORD, || connect_as(router, ssh, &user))?
        .with_context(|| format!("with the right password; sshd log:\n{}", sshd.log_tail()))?;
    ensure!(
        ctx.name() == hop(&user.name, &sshd),
        "context named {:?}",
        ctx.name()
    );
    ensure!(ctx.call(plus_one, (1,))? == 2, "wrong answer");
    drop(ctx);
    ensure!(
        sshd.log_tail().contains("Accepted password"),
        "sshd did not log a password login:\n{}",
        sshd.log_tail()
    );

    // Warm: the cached program starts behind the same prompt.
    let ssh = sshd.ssh_without_key(&user.name).password(PW_SSH_PASSWORD);
    let ((ctx, _), up) = uploaded_during(router, || {
        scanning_for(PW_SSH_PASSWORD, || connect_as(router, ssh, &user))?
    })?;
    ensure!(up == 0, "the second password login uploaded {up} bytes");
    drop(ctx);
    Ok(())
}

pub fn wrong_password_is_authentication_failed(router: &Router) -> Result<()> {
    let (sshd, user) = password_sshd()?;
    let timeout = Duration::from_secs(30);
    let started = Instant::now();
    let ssh = sshd
        .ssh_without_key(&user.name)
        .password("not-the-password")
        .connect_timeout(timeout);
    let (err, text) = failure(router.ssh(ssh), &hop(&user.name, &sshd))?;
    let took = started.elapsed();
    ensure!(
        matches!(
            err,
            Error::Transport {
                kind: TransportFailure::AuthenticationFailed,
                ..
            }
        ),
        "not an AuthenticationFailed transport error: {text}"
    );
    ensure!(
        took < Duration::from_secs(5),
        "a wrong password took {took:?} to fail (connect timeout {timeout:?}): {text}"
    );
    ensure!(
        sshd.log_tail().contains("Failed password"),
        "sshd saw no password attempt:\n{}",
        sshd.log_tail()
    );
    println!("    {text} after {took:?}");
    Ok(())
}

pub fn no_password_is_password_required(router: &Router) -> Result<()> {
    let (sshd, user) = password_sshd()?;
    let started = Instant::now();
    let ssh = sshd
        .ssh_without_key(&user.name)
        .connect_timeout(Duration::from_secs(30));
    let (err, text) = failure(router.ssh(ssh), &hop(&user.name, &sshd))?;
    let took = started.elapsed();
    ensure!(
        matches!(
            err,
            Error::Transport {
                kind: TransportFailure::PasswordRequired,
                ..
            }
        ),
        "not a PasswordRequired transport error: {text}"
    );
    ensure!(
        took < Duration::from_secs(3),
        "no password took {took:?} to fail: {text}"
    );
    println!("    {text} after {took:?}");
    Ok(())
}

/// With a password, ssh is not in batch mode: an unknown host key under the
/// configuration's policy (`ask`) makes it ask on the terminal. That question
/// is refused at once, not left to the connect timeout.
pub fn password_login_with_unknown_host_key(router: &Router) -> Result<()> {
    let (sshd, user) = password_sshd()?;
    let empty = sshd.known_hosts("known_empty", None)?;
    let started = Instant::now();
    let ssh = sshd
        .ssh_without_key(&user.name)
        .password(PW_SSH_PASSWORD)
        .host_key_policy(HostKeyPolicy::FromConfig)
        .ssh_args([
            "-o".to_owned(),
            format!("UserKnownHostsFile={}", empty.display()),
            "-o".to_owned(),
            "GlobalKnownHostsFile=/dev/null".to_owned(),
        ])
        .connect_timeout(Duration::from_secs(30));
    let (err, text) = failure(router.ssh(ssh), &hop(&user.name, &sshd))?;
    let took = started.elapsed();
    ensure!(
        matches!(
            err,
            Error::Transport {
                kind: TransportFailure::HostKeyUnknown,
                ..
            }
        ),
        "not a HostKeyUnknown transport error: {text}"
    );
    ensure!(
        took < Duration::from_secs(5),
        "the host key question took {took:?} to fail: {text}"
    );
    ensure!(
        std::fs::read_to_string(&empty)?.trim().is_empty(),
        "the unknown key was accepted into known_hosts"
    );
    // ssh's question is quoted as it was asked: the fingerprint is base64.
    let listing = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(sshd.dir.join("host_ed25519.pub"))
        .output()?;
    let listing = String::from_utf8_lossy(&listing.stdout);
    let fingerprint = listing
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow!("no fingerprint from ssh-keygen: {listing:?}"))?;
    ensure!(
        text.contains(fingerprint),
        "the error does not show the fingerprint {fingerprint}: {text}"
    );
    println!("    {text} after {took:?}");
    Ok(())
}

// ---------------------------------------------------------------------------
// An unreachable host, from inside an empty network namespace.

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
