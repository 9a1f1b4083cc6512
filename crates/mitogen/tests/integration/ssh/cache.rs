//! The program cache over ssh: who and where a context runs, uploads only
//! when the cache lacks the build (or holds a damaged copy), the fallbacks
//! when the home is read-only or `noexec`, and two connections filling one
//! empty cache at once.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context as _, Result};
use mitogen::Compression;
use mitogen::Router;

use super::{
    check_entry, connect_as, connect_checked, entry, failure, hop, own, running_from,
    uploaded_during,
};
use crate::sshd::{self, Sshd, User};
use crate::util::{proc_state, wait_gone, wait_until};

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

    // By default the program goes compressed, to a loopback address too
    // (sshd's buffering costs more per byte than gunzip).
    user.clear_cache()?;
    let ssh = sshd.ssh(&user.name)?.upload_compression(Compression::Auto);
    let ((ctx, _), up) = uploaded_during(router, || connect_as(router, ssh, &user))?;
    ensure!(
        up == own().gzipped().len() as u64,
        "the default upload to a loopback address sent {up} bytes; the gzipped program has {}",
        own().gzipped().len()
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
            return crate::harness::skip_part(format!(
                "the noexec sub-cases: mounting a noexec tmpfs failed: {e:#}"
            ));
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

/// A read-only home and a `noexec` `/tmp` fallback together: only
/// `/dev/shm/mitogen-UID` is left, and it is used.
pub fn read_only_home_and_noexec_tmp_leave_dev_shm(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    let user = sshd::user("mitogen-rx", "/bin/sh")?;
    for d in user.cache_dirs() {
        quiet_umount(&d);
    }
    user.clear_cache()?;
    let _ = std::fs::remove_dir_all(user.home.join(".cache"));
    std::fs::set_permissions(&user.home, std::fs::Permissions::from_mode(0o555))?;
    let _restore = RestoreHome(user.home.clone());
    let _tmp = match NoexecMount::new(&user.cache_dirs()[1], &user) {
        Ok(m) => m,
        Err(e) => {
            return crate::harness::skip_part(format!("mounting a noexec tmpfs failed: {e:#}"));
        }
    };
    let (ctx, w) = connect_as(router, sshd.ssh(&user.name)?, &user)
        .context("read-only home and noexec /tmp")?;
    ensure!(
        Path::new(&w.exe) == entry(&user.cache_dirs()[2]),
        "read-only home and noexec /tmp/mitogen-USER: runs {}",
        w.exe
    );
    check_entry(&user, &user.cache_dirs()[2])?;
    drop(ctx);
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

/// A file in a user's cache, owned by the user, last modified `age` ago.
fn cache_file(user: &User, dir: &Path, name: &str, age: Duration) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, b"not a build")?;
    std::os::unix::fs::chown(&path, Some(user.uid), None)?;
    set_age(&path, age)?;
    Ok(path)
}

fn set_age(path: &Path, age: Duration) -> Result<()> {
    std::fs::File::options()
        .write(true)
        .open(path)?
        .set_modified(std::time::SystemTime::now() - age)
        .with_context(|| format!("setting the time of {}", path.display()))
}

fn age_of(path: &Path) -> Result<Duration> {
    let m = std::fs::metadata(path)?.modified()?;
    Ok(m.elapsed().unwrap_or(Duration::ZERO))
}

pub fn unused_builds_are_removed(router: &Router) -> Result<()> {
    const DAY: Duration = Duration::from_secs(24 * 3600);
    let sshd = Sshd::start()?;
    let user = sshd::user("mitogen-t1", "/bin/sh")?;
    user.clear_cache()?;
    let dir = &user.cache_dirs()[0];
    let (ctx, _) = connect_as(router, sshd.ssh(&user.name)?, &user)?;
    drop(ctx);

    // Builds of earlier releases: one unused for 40 days, one run yesterday;
    // an upload that died 2 days ago; a file of the user's own. Our own
    // build was last run 40 days ago too, and the last look through the
    // directory was 2 days ago.
    let old = cache_file(&user, dir, &"b".repeat(32), 40 * DAY)?;
    let recent = cache_file(&user, dir, &"c".repeat(32), DAY)?;
    let dead_upload = cache_file(&user, dir, &format!(".{}.4242", "d".repeat(32)), 2 * DAY)?;
    let foreign = cache_file(&user, dir, "notes", 400 * DAY)?;
    set_age(&entry(dir), 40 * DAY)?;
    set_age(&dir.join(".pruned"), 2 * DAY).context("the first connection left no stamp")?;

    let ((ctx, _), up) =
        uploaded_during(router, || connect_as(router, sshd.ssh(&user.name)?, &user))?;
    ensure!(up == 0, "the connection uploaded {up} bytes");
    ensure!(
        wait_until(Duration::from_secs(10), || !old.exists()
            && !dead_upload.exists()),
        "still there after 10 s: {} {}",
        old.display(),
        dead_upload.display()
    );
    ensure!(recent.exists(), "a build run yesterday was removed");
    ensure!(
        foreign.exists(),
        "a file not named like a build was removed"
    );
    check_entry(&user, dir)?;
    ensure!(
        age_of(&entry(dir))? < DAY,
        "the running build was not marked as used"
    );
    drop(ctx);

    // The next look is a day away: a build that turns old now stays.
    set_age(&recent, 40 * DAY)?;
    let (ctx, _) = connect_as(router, sshd.ssh(&user.name)?, &user)?;
    std::thread::sleep(Duration::from_millis(500));
    ensure!(recent.exists(), "removed before the day was over");
    drop(ctx);
    Ok(())
}

crate::tests! {
    connects_as_root_and_as_a_user,
    second_connection_uploads_nothing => 180,
    corrupt_cache_entry_is_replaced => 180,
    read_only_or_noexec_home_falls_back => 180,
    read_only_home_and_noexec_tmp_leave_dev_shm => 180,
    two_connections_fill_an_empty_cache_at_once => 120,
    unused_builds_are_removed => 120,
}
