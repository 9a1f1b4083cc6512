//! Where the socket lives: a private directory, shared or planted directories
//! refused, and only a runtime directory of its own.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context as _, Result};
use mitogen::Router;

use super::{other_user, run_as, SocketDir, CLIENT_ENV};
use crate::calls::add;

pub fn listen_private_uses_a_private_directory(router: &Router) -> Result<()> {
    let ctx = crate::util::local(router)?;
    let listener = router.listen_private()?;
    let path = listener.path().to_owned();
    let dir = path.parent().context("no directory")?.to_owned();
    let me = rustix::process::geteuid().as_raw();
    let d = std::fs::symlink_metadata(&dir)?;
    ensure!(
        d.is_dir() && d.uid() == me && d.mode() & 0o077 == 0,
        "{} is uid {} mode {:o}",
        dir.display(),
        d.uid(),
        d.mode() & 0o7777
    );
    let f = std::fs::symlink_metadata(&path)?;
    ensure!(f.file_type().is_socket() && f.mode() & 0o777 == 0o600);
    let client = mitogen::unix::connect(&path)?;
    ensure!(client.context(ctx.id()).call(add, (2, 3))? == 5);
    drop(client);
    let made = std::env::var_os("XDG_RUNTIME_DIR").is_none_or(|x| Path::new(&x) != dir);
    drop(listener);
    ensure!(!path.exists(), "the socket was left behind");
    ensure!(
        !made || !dir.exists(),
        "the directory made for the socket was left behind"
    );
    Ok(())
}

pub fn shared_or_planted_directories_are_refused(router: &Router) -> Result<()> {
    let other = other_user()?;
    // A directory everyone may write, like /tmp, where another user has
    // planted a directory of theirs and a symbolic link to one of ours.
    let shared = SocketDir::new("shared", 0o1777)?;
    let ours = SocketDir::new("ours", 0o700)?;
    let planted = shared.join("planted");
    let link = shared.join("link");
    run_as(&other, &["mkdir", "-m", "0777", &planted.to_string_lossy()])?;
    run_as(
        &other,
        &[
            "ln",
            "-s",
            &ours.0.to_string_lossy(),
            &link.to_string_lossy(),
        ],
    )?;
    for (path, why) in [
        (shared.join("s.sock"), "not a private directory"),
        (planted.join("s.sock"), "not a private directory"),
        (link.join("s.sock"), "symbolic link"),
    ] {
        match router.listen(&path) {
            Err(e) => ensure!(
                e.to_string().contains(why),
                "listening at {}: {e}, expected {why:?}",
                path.display()
            ),
            Ok(_) => bail!("listened at {}", path.display()),
        }
        ensure!(
            std::fs::symlink_metadata(&path).is_err(),
            "{} was created",
            path.display()
        );
    }
    ensure!(std::fs::read_dir(&ours.0)?.next().is_none());
    // Our own private directory is fine.
    let _ok = router.listen(ours.join("s.sock"))?;
    Ok(())
}

pub fn listen_private_uses_only_a_runtime_dir_of_its_own(_: &Router) -> Result<()> {
    let other = other_user()?;
    let ours = SocketDir::new("xdg-ours", 0o700)?;
    let open = SocketDir::new("xdg-open", 0o755)?;
    // What `sudo -E` leaves: the invoking user's runtime directory.
    let theirs = SocketDir::new("xdg-theirs", 0o700)?;
    other.chown(&theirs.0)?;
    let listen_under = |xdg: &Path| -> Result<PathBuf> {
        let out = Command::new(std::env::current_exe()?)
            .arg("where")
            .env(CLIENT_ENV, "")
            .env("XDG_RUNTIME_DIR", xdg)
            .env_remove(mitogen::testing::CHILD_ENV)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()?;
        let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let path = said
            .strip_prefix("at ")
            .with_context(|| format!("it said {said:?}"))?;
        Ok(PathBuf::from(path))
    };
    let at = listen_under(&ours.0)?;
    ensure!(
        at.parent() == Some(ours.0.as_path()),
        "not in $XDG_RUNTIME_DIR: {}",
        at.display()
    );
    for dir in [&open.0, &theirs.0] {
        let at = listen_under(dir)?;
        let parent = at.parent().context("no parent")?;
        ensure!(
            parent != dir.as_path()
                && parent.starts_with(std::env::temp_dir())
                && parent
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("mitogen-unix-")),
            "with $XDG_RUNTIME_DIR={} the socket was at {}",
            dir.display(),
            at.display()
        );
        ensure!(!parent.exists(), "{} was left behind", parent.display());
    }
    ensure!(std::fs::read_dir(&theirs.0)?.next().is_none());
    Ok(())
}

crate::tests! {
    listen_private_uses_a_private_directory,
    shared_or_planted_directories_are_refused,
    listen_private_uses_only_a_runtime_dir_of_its_own,
}
