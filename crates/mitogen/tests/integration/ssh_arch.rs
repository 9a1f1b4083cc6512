//! Remotes of another OS or architecture, over the real sshd of `sshd`: the
//! first stage reports what `uname -sm` prints there, and the master ships the
//! build registered for that system, or fails naming it.
//!
//! A remote "of another system" is a test user whose `~/.bashrc` puts a fake
//! `uname` first in `PATH`; it prints `Linux fakearch` for `-sm`. The build
//! registered for it is a copy of this test executable with bytes appended:
//! it runs the same code, but has another hash, so it is a different build.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use mitogen::testing::{content_hash, own_system};
use mitogen::Compression;
use mitogen::{Error, Router};

use crate::ssh::{failure, hop, own, plus_one, whoami};
use crate::sshd::{self, Sshd, User};
use crate::util::{wait_until, Guard};

/// What the fake `uname -sm` prints.
const FAKE_SYSTEM: &str = "Linux fakearch";

/// The user whose `uname -sm` says [`FAKE_SYSTEM`] in ssh sessions.
fn fake_arch_user(sshd: &Sshd) -> Result<User> {
    let user = sshd::user("mitogen-arch", "/bin/bash")?;
    let bin = user.home.join("fakebin");
    std::fs::create_dir_all(&bin)?;
    user.chown(&bin)?;
    let uname = bin.join("uname");
    std::fs::write(
        &uname,
        format!(
            "#!/bin/sh\n\
             if [ \"$*\" = -sm ]; then echo '{FAKE_SYSTEM}'; exit 0; fi\n\
             for u in /usr/bin/uname /bin/uname; do [ -x \"$u\" ] && exec \"$u\" \"$@\"; done\n\
             exit 1\n"
        ),
    )?;
    std::fs::set_permissions(&uname, std::fs::Permissions::from_mode(0o755))?;
    user.chown(&uname)?;
    let rc = user.home.join(".bashrc");
    std::fs::write(&rc, "PATH=\"$HOME/fakebin:$PATH\"\nexport PATH\n")?;
    user.chown(&rc)?;
    // bash reads ~/.bashrc for a command run by sshd, and the sh the first
    // stage runs in inherits its PATH: check it, or the tests below show nothing.
    let seen = sshd.plain_ssh(&user.name, "sh -c 'uname -sm'")?;
    ensure!(
        seen.trim() == FAKE_SYSTEM,
        "the fake uname is not used in ssh sessions: `sh -c 'uname -sm'` printed {seen:?}; \
         sshd log:\n{}",
        sshd.log_tail()
    );
    Ok(user)
}

/// A copy of this executable with `tag` appended, in `dir`; it still runs.
fn other_build(dir: &Path, tag: &str) -> Result<(PathBuf, Vec<u8>)> {
    let mut bytes = own().bytes.to_vec();
    bytes.extend_from_slice(format!("\nmitogen test build {tag}\n").as_bytes());
    let path = dir.join(format!("build-{tag}"));
    std::fs::write(&path, &bytes)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok((path, bytes))
}

/// Names in the user's cache directories that start with a dot, other than
/// `.probe` (of earlier versions' noexec check) and `.pruned`: temporary
/// files of an upload.
fn temp_files(user: &User) -> Vec<PathBuf> {
    user.cache_dirs()
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            // `.probe` (earlier versions' noexec check) and `.pruned` (the
            // day's look for unused builds) are meant to stay.
            n.starts_with('.') && n != ".probe" && n != ".pruned"
        })
        .map(|e| e.path())
        .collect()
}

pub fn other_system_gets_its_build(_: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    let user = fake_arch_user(&sshd)?;
    let (path, bytes) = other_build(&sshd.dir, "fakearch")?;
    let hash = content_hash(&bytes);
    ensure!(hash != own().hash, "the copy hashes like the original");
    let router = Router::builder().binary(FAKE_SYSTEM, &path).build()?;
    user.clear_cache()?;

    let ssh = sshd.ssh(&user.name)?.upload_compression(Compression::Never);
    let ctx = Guard(
        router
            .ssh(ssh)
            .with_context(|| format!("connecting; sshd log:\n{}", sshd.log_tail()))?,
    );
    let up = router.uploaded_bytes();
    ensure!(
        up == bytes.len() as u64,
        "uploaded {up} bytes; the build for {FAKE_SYSTEM} has {} (the master's own {})",
        bytes.len(),
        own().bytes.len()
    );
    let w = ctx.call_timeout(whoami, (), Duration::from_secs(20))?;
    let cached = user.cache_dirs()[0].join(&hash);
    ensure!(
        Path::new(&w.exe) == cached,
        "the context runs {} instead of {}",
        w.exe,
        cached.display()
    );
    ensure!(
        std::fs::read(&cached)? == bytes,
        "{} differs from the build registered for {FAKE_SYSTEM}",
        cached.display()
    );
    ensure!(
        !user.cache_dirs()[0].join(&own().hash).exists(),
        "the master's own build was stored as well"
    );
    ensure!(ctx.call(plus_one, (41,))? == 42, "wrong answer");
    let left = temp_files(&user);
    ensure!(left.is_empty(), "temporary files left: {left:?}");
    drop(ctx);

    // The next connection finds that build in the cache and uploads nothing.
    let ctx = Guard(router.ssh(sshd.ssh(&user.name)?)?);
    let again = router.uploaded_bytes() - up;
    ensure!(again == 0, "the second connection uploaded {again} bytes");
    let w = ctx.call_timeout(whoami, (), Duration::from_secs(20))?;
    ensure!(
        Path::new(&w.exe) == cached,
        "the second context runs {} instead of {}",
        w.exe,
        cached.display()
    );
    Ok(())
}

pub fn other_system_without_a_build_is_a_clear_error(_: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    let user = fake_arch_user(&sshd)?;
    let (path, _) = other_build(&sshd.dir, "otherarch")?;
    let router = Router::builder().binary("Linux otherarch", &path).build()?;
    user.clear_cache()?;

    let timeout = Duration::from_secs(20);
    let ssh = sshd.ssh(&user.name)?.connect_timeout(timeout);
    let started = Instant::now();
    let (e, text) = failure(router.ssh(ssh), &hop(&user.name, &sshd))?;
    let took = started.elapsed();
    ensure!(
        matches!(e, Error::Connect { .. } | Error::Transport { .. }),
        "not a connect or transport error: {e:?}"
    );
    ensure!(
        took < Duration::from_secs(10),
        "the error took {took:?} (connect timeout {timeout:?}): {text}"
    );
    for want in [FAKE_SYSTEM, "Linux otherarch", own_system().as_str()] {
        ensure!(
            text.contains(want),
            "the error does not name {want:?}: {text}"
        );
    }
    ensure!(
        router.uploaded_bytes() == 0,
        "{} bytes uploaded",
        router.uploaded_bytes()
    );
    // The stage exits once it has the master's answer; wait for it a little.
    let mut left = Vec::new();
    let clean = wait_until(Duration::from_secs(5), || {
        left = temp_files(&user);
        left.is_empty()
    });
    ensure!(clean, "temporary files left: {left:?}");
    let entries: Vec<_> = std::fs::read_dir(&user.cache_dirs()[0])
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != ".probe" && n != ".pruned")
                .collect()
        })
        .unwrap_or_default();
    ensure!(entries.is_empty(), "the cache holds {entries:?}");
    println!("    {text}");
    Ok(())
}

pub fn cached_build_that_cannot_run_is_replaced(router: &Router) -> Result<()> {
    let sshd = Sshd::start()?;
    let user = sshd::user("mitogen-t4", "/bin/sh")?;
    let dir = user.cache_dirs()[0].clone();
    let entry = dir.join(&own().hash);
    let cases: [(&str, Vec<u8>); 3] = [
        ("a script that exits 126", b"#!/bin/sh\nexit 126\n".to_vec()),
        (
            "garbage bytes",
            (0..64 * 1024u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
        ),
        ("an ELF header of another machine", {
            // The start of an aarch64 executable: exec fails with ENOEXEC.
            let mut b = own().bytes[..4096].to_vec();
            b[18] = 0xb7;
            b[19] = 0;
            b
        }),
    ];
    for (what, content) in cases {
        user.clear_cache()?;
        std::fs::create_dir_all(&dir)?;
        user.chown(dir.parent().unwrap_or(&dir))?;
        user.chown(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        std::fs::write(&entry, &content)?;
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o700))?;
        user.chown(&entry)?;

        let mark = crate::capture::mark();
        let before = router.uploaded_bytes();
        let ssh = sshd
            .ssh(&user.name)?
            .upload_compression(Compression::Never)
            .connect_timeout(Duration::from_secs(20));
        let started = Instant::now();
        let ctx = match router.ssh(ssh) {
            Ok(c) => Guard(c),
            Err(e) => bail!("cached entry is {what}: {e}"),
        };
        let took = started.elapsed();
        let up = router.uploaded_bytes() - before;
        ensure!(
            up == own().bytes.len() as u64,
            "cached entry is {what}: uploaded {up} bytes, expected the program's {}",
            own().bytes.len()
        );
        let name = hop(&user.name, &sshd);
        ensure!(
            crate::capture::since(mark)
                .iter()
                .any(|e| e.field("context") == Some(name.as_str()) && e.message.contains("again")),
            "cached entry is {what}: no log of a second attempt"
        );
        let w = ctx.call_timeout(whoami, (), Duration::from_secs(20))?;
        ensure!(
            Path::new(&w.exe) == entry,
            "cached entry is {what}: runs {}",
            w.exe
        );
        ensure!(
            std::fs::read(&entry)? == **own().bytes,
            "cached entry is {what}: not replaced by the program"
        );
        ensure!(ctx.call(plus_one, (1,))? == 2, "wrong answer");
        println!("    {what}: replaced in {took:?}");
        drop(ctx);
        // The next connection runs the replaced entry without an upload.
        let ssh = sshd.ssh(&user.name)?;
        let before = router.uploaded_bytes();
        drop(Guard(router.ssh(ssh)?));
        let up = router.uploaded_bytes() - before;
        ensure!(
            up == 0,
            "cached entry was {what}: next connection uploaded {up}"
        );
        // Wait for the contexts to end: a running entry cannot be rewritten.
        ensure!(
            wait_until(Duration::from_secs(10), || {
                crate::ssh::running_from(&entry).is_empty()
            }),
            "contexts still run {}",
            entry.display()
        );
    }
    Ok(())
}

crate::tests! {
    other_system_gets_its_build => 120,
    other_system_without_a_build_is_a_clear_error,
    cached_build_that_cannot_run_is_replaced => 180,
}
