//! Whose cache directory the first stage trusts, tried with two real
//! accounts: a victim whose home it cannot write (so it falls back to
//! `/tmp/mitogen-UID`, then `/dev/shm/mitogen-UID`) and another local user
//! who planted something there first. Whatever was planted, the attacker's
//! file never runs (a planted "build" or `.probe` would write a marker), the
//! attacker's directory is neither made 0700 nor written, and the
//! connection either goes on to the next candidate or fails naming what it
//! tried. `fs.protected_symlinks` is 0 on these machines, so a planted
//! symbolic link in `/tmp` is followed by anything that opens it.
//!
//! Also: a home with a space in its path.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use mitogen::Router;

use super::{check_entry, connect_as, entry, failure, hop, own, uploaded_during};
use crate::sshd::{self, Sshd, User};

/// The working directory of the context.
#[mitogen::remote]
pub fn cwd() -> String {
    std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Where a planted file that runs leaves its mark.
fn marker(case: &str) -> PathBuf {
    PathBuf::from(format!("/tmp/mitogen-test-planted-ran-{case}"))
}

/// What a planted "build" or `.probe` does when run: leave the marker.
fn planted_script(case: &str) -> String {
    format!("#!/bin/sh\necho ran > {}\n", marker(case).display())
}

/// Makes `path` (a file, directory or link) the attacker's.
fn give_to(path: &Path, user: &User) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(user.uid), Some(user.uid))
        .with_context(|| format!("chown {}", path.display()))
}

/// A directory of the attacker's at `dir`, mode 0777, with a planted build
/// under this program's hash and a planted `.probe`.
fn plant_dir(dir: &Path, attacker: &User, case: &str) -> Result<()> {
    std::fs::create_dir(dir).with_context(|| format!("mkdir {}", dir.display()))?;
    for name in [own().hash.as_str(), ".probe"] {
        let f = dir.join(name);
        std::fs::write(&f, planted_script(case))?;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755))?;
        give_to(&f, attacker)?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))?;
    give_to(dir, attacker)
}

/// Names, modes and owners of what is in `dir`, and of `dir` itself.
fn snapshot(dir: &Path) -> Result<Vec<(String, u32, u32)>> {
    let m = std::fs::symlink_metadata(dir)?;
    let mut v = vec![(".".to_owned(), m.mode(), m.uid())];
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        v.push((
            e.file_name().to_string_lossy().into_owned(),
            m.mode(),
            m.uid(),
        ));
    }
    v.sort();
    Ok(v)
}

/// Removes whatever is at `path`, a link or a tree.
fn remove(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// The victim's fallback in `/tmp`, under its name and (as the first stage
/// names it) its uid: an attacker would plant both.
fn tmp_names(victim: &User) -> [PathBuf; 2] {
    [
        PathBuf::from(format!("/tmp/mitogen-{}", victim.name)),
        victim.cache_dirs()[1].clone(),
    ]
}

/// The victim, with a home it cannot write and no `~/.cache`, and nothing
/// of its own in the fallbacks yet; the attacker.
fn accounts() -> Result<(User, User, RestoreHome)> {
    let victim = sshd::user("mitogen-vic", "/bin/sh")?;
    let attacker = sshd::user("mitogen-evil", "/bin/sh")?;
    remove(&victim.home.join(".cache"));
    for d in victim.cache_dirs().iter().chain(&tmp_names(&victim)) {
        remove(d);
    }
    std::fs::set_permissions(&victim.home, std::fs::Permissions::from_mode(0o555))?;
    let restore = RestoreHome(victim.home.clone());
    Ok((victim, attacker, restore))
}

/// Puts a home back to 0755 whatever happens in the test.
struct RestoreHome(PathBuf);

impl Drop for RestoreHome {
    fn drop(&mut self) {
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755));
    }
}

/// Connects as the victim and checks that nothing planted ran and that it
/// runs from `expected`, a directory of its own, 0700.
fn connects_from(
    router: &Router,
    sshd: &Sshd,
    victim: &User,
    expected: &Path,
    case: &str,
) -> Result<()> {
    let r = connect_as(router, sshd.ssh(&victim.name)?, victim);
    ensure!(
        !marker(case).exists(),
        "{case}: a file the attacker planted ran as the victim"
    );
    let (ctx, w) = r.with_context(|| format!("{case}: connecting"))?;
    ensure!(
        Path::new(&w.exe) == entry(expected),
        "{case}: runs {} rather than from {}",
        w.exe,
        expected.display()
    );
    check_entry(victim, expected).with_context(|| case.to_owned())?;
    drop(ctx);
    Ok(())
}

pub fn planted_fallback_directories_are_never_trusted(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    let (victim, attacker, _restore) = accounts()?;
    let shm = victim.cache_dirs()[2].clone();
    let cases = ["link-to-victim-dir", "link-to-attacker-dir", "squatted"];
    for case in cases {
        remove(&marker(case));
    }

    // (a) A link to a directory of the victim's own (here one the victim
    // keeps readable for others): following it would make that directory
    // 0700 and fill it.
    let victims_dir = PathBuf::from("/var/tmp/mitogen-test-victims-data");
    remove(&victims_dir);
    std::fs::create_dir(&victims_dir)?;
    std::fs::write(victims_dir.join("data"), b"the victim's")?;
    victim.chown(&victims_dir.join("data"))?;
    victim.chown(&victims_dir)?;
    std::fs::set_permissions(&victims_dir, std::fs::Permissions::from_mode(0o755))?;
    for t in tmp_names(&victim) {
        std::os::unix::fs::symlink(&victims_dir, &t)?;
        give_to(&t, &attacker)?;
    }
    let before = snapshot(&victims_dir)?;
    let r = connects_from(router, &sshd, &victim, &shm, cases[0]);
    ensure!(
        snapshot(&victims_dir)? == before,
        "{}: the directory behind the link changed: {:?} -> {:?}",
        cases[0],
        before,
        snapshot(&victims_dir)?
    );
    r?;
    remove(&shm);

    // (b) A link to a directory of the attacker's, holding a planted build.
    let attackers_dir = PathBuf::from("/var/tmp/mitogen-test-attackers-dir");
    remove(&attackers_dir);
    plant_dir(&attackers_dir, &attacker, cases[1])?;
    for t in tmp_names(&victim) {
        remove(&t);
        std::os::unix::fs::symlink(&attackers_dir, &t)?;
        give_to(&t, &attacker)?;
    }
    let before = snapshot(&attackers_dir)?;
    connects_from(router, &sshd, &victim, &shm, cases[1])?;
    ensure!(
        snapshot(&attackers_dir)? == before,
        "{}: the attacker's directory changed",
        cases[1]
    );
    remove(&shm);

    // (c) The fallback's name squatted by a directory of the attacker's.
    for t in tmp_names(&victim) {
        remove(&t);
        plant_dir(&t, &attacker, cases[2])?;
    }
    let squatted = victim.cache_dirs()[1].clone();
    let before = snapshot(&squatted)?;
    connects_from(router, &sshd, &victim, &shm, cases[2])?;
    ensure!(
        snapshot(&squatted)? == before,
        "{}: the squatted directory changed",
        cases[2]
    );

    // With /dev/shm squatted too, nothing is left: a clear error naming each
    // directory tried and why it was refused.
    remove(&shm);
    plant_dir(&shm, &attacker, cases[2])?;
    let name = hop(&victim.name, &sshd);
    let (_, text) = failure(router.ssh(sshd.ssh(&victim.name)?), &name)?;
    ensure!(
        !marker(cases[2]).exists(),
        "everything squatted: a planted file ran"
    );
    for d in &victim.cache_dirs()[1..] {
        ensure!(
            text.contains(&format!("{}: owned by another user", d.display())),
            "everything squatted: the error does not say why {} was refused: {text}",
            d.display()
        );
    }
    println!("    {text}");

    for t in tmp_names(&victim)
        .iter()
        .chain([&shm, &victims_dir, &attackers_dir])
    {
        remove(t);
    }
    Ok(())
}

pub fn planted_files_in_the_victims_directory_never_run(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    let (victim, attacker, _restore) = accounts()?;
    let tmp = victim.cache_dirs()[1].clone();
    for (case, mode) in [("loose-dir", 0o777), ("planted-earlier", 0o700)] {
        remove(&marker(case));
        // The victim's own fallback, in which the attacker's build and
        // `.probe` stand under the names the first stage uses: written while
        // the directory was open to others (a umask of 0, say), which it
        // still is, or no longer.
        for t in tmp_names(&victim) {
            remove(&t);
            plant_dir(&t, &attacker, case)?;
            victim.chown(&t)?;
            std::fs::set_permissions(&t, std::fs::Permissions::from_mode(mode))?;
        }
        let ((), up) =
            uploaded_during(router, || connects_from(router, &sshd, &victim, &tmp, case))?;
        ensure!(up > 0, "{case}: the planted build was taken as the cache");
        // The stage runs its noexec check under its own temporary name:
        // the attacker's `.probe` is neither run (the marker) nor written.
        let probe = tmp.join(".probe");
        ensure!(
            std::fs::read_to_string(&probe)? == planted_script(case)
                && std::fs::metadata(&probe)?.uid() == attacker.uid,
            "{case}: the attacker's .probe was written"
        );
    }
    for t in tmp_names(&victim) {
        remove(&t);
    }
    Ok(())
}

/// An account whose home is `home` (which may hold spaces).
fn user_with_home(name: &str, home: &Path) -> Result<User> {
    let u = sshd::user(name, "/bin/sh")?;
    if u.home != home {
        let out = Command::new("usermod")
            .arg("-d")
            .arg(home)
            .arg(name)
            .output()?;
        ensure!(
            out.status.success(),
            "usermod -d: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::create_dir_all(home)?;
    let u = User {
        home: home.to_owned(),
        ..u
    };
    u.chown(home)?;
    std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o755))?;
    Ok(u)
}

pub fn home_with_a_space(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    let user = user_with_home("mitogen-sp", Path::new("/home/Mitogen Space Test"))?;
    user.clear_cache()?;
    let dir = user.cache_dirs()[0].clone();

    let ((ctx, _), up) =
        uploaded_during(router, || connect_as(router, sshd.ssh(&user.name)?, &user))?;
    ensure!(
        up == own().gzipped().len() as u64,
        "the first connection uploaded {up} bytes"
    );
    check_entry(&user, &dir)?;
    // The program runs where a plain command would, not in its cache.
    let wd = ctx.call_timeout(cwd, (), Duration::from_secs(20))?;
    ensure!(
        Path::new(&wd) == user.home,
        "working directory {wd:?}, not the home"
    );
    drop(ctx);

    let ((ctx, _), up) =
        uploaded_during(router, || connect_as(router, sshd.ssh(&user.name)?, &user))?;
    ensure!(up == 0, "the second connection uploaded {up} bytes");
    let wd = ctx.call_timeout(cwd, (), Duration::from_secs(20))?;
    ensure!(
        Path::new(&wd) == user.home,
        "cached start: working directory {wd:?}, not the home"
    );
    drop(ctx);
    Ok(())
}

crate::tests! {
    planted_fallback_directories_are_never_trusted => 180,
    planted_files_in_the_victims_directory_never_run => 180,
    home_with_a_space => 120,
}
