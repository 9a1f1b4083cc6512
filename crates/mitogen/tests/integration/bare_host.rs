//! Hosts that hold nothing but a static busybox (and `/proc`): an embedded
//! box, a rescue system, a minimal image. The root, under
//! `/var/lib/mitogen-bare/` (root-owned all the way, as sshd's
//! `ChrootDirectory` wants), is reached two ways: as a local chroot, through
//! the ssh method with a stand-in for `ssh` that runs the command line it is
//! given in `chroot ROOT /bin/sh`, and over the test sshd with
//! `ChrootDirectory`. Either way the real first stage runs under busybox sh
//! there. Needs Debian's `busybox-static` (`.ci/run` installs it) and root
//! (chroot, mount, mknod).
//!
//! The workspace builds static by default (`.cargo/config.toml`), this test
//! binary included: it must run there. A dynamic build (the `mitogen`
//! command built with `-C target-feature=-crt-static`, which the test builds
//! into `target/dynamic` if needed) must fail there with an error that names
//! the missing loader and the fix, instead of the shell's
//! `exec: ./HASH: not found`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use mitogen::Router;
use mitogen::Ssh;

use crate::ssh::whoami;

/// A busybox-only root under `/tmp`, with `/proc` mounted; unmounted and
/// removed on drop.
struct BareRoot {
    dir: PathBuf,
    proc_mounted: bool,
    read_only: bool,
}

impl BareRoot {
    fn new(name: &str) -> Result<BareRoot> {
        let busybox = Path::new("/bin/busybox");
        let out = Command::new("file").arg("-L").arg(busybox).output();
        // Without `file`, trust the package: busybox-static is what .ci/run installs.
        if let Ok(out) = out {
            let what = String::from_utf8_lossy(&out.stdout).into_owned();
            ensure!(
                what.contains("statically linked") || what.contains("static-pie"),
                "/bin/busybox is not static (install busybox-static): {what}"
            );
        }
        // Under a root-owned 0755 directory, not /tmp: sshd's ChrootDirectory
        // refuses a path with a component others can write to.
        let base = Path::new("/var/lib/mitogen-bare");
        std::fs::create_dir_all(base)?;
        std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o755))?;
        let dir = base.join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut root = BareRoot {
            dir: dir.clone(),
            proc_mounted: false,
            read_only: false,
        };
        for sub in ["bin", "proc", "tmp", "dev/shm", "root"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        // Every path component root-owned, like sshd's ChrootDirectory wants.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        for sticky in ["tmp", "dev/shm"] {
            std::fs::set_permissions(dir.join(sticky), std::fs::Permissions::from_mode(0o1777))?;
        }
        std::fs::copy(busybox, dir.join("bin/busybox"))?;
        // Any system has /dev/null; the stage sends its tools' noise there.
        let st = Command::new("mknod")
            .args(["-m", "666"])
            .arg(dir.join("dev/null"))
            .args(["c", "1", "3"])
            .status()?;
        ensure!(st.success(), "mknod /dev/null in the chroot: {st}");
        let st = Command::new("chroot")
            .arg(&dir)
            .args(["/bin/busybox", "--install", "-s", "/bin"])
            .status()?;
        ensure!(st.success(), "busybox --install in the chroot: {st}");
        let st = Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(dir.join("proc"))
            .status()?;
        ensure!(st.success(), "mounting /proc in the chroot: {st}");
        root.proc_mounted = true;
        Ok(root)
    }

    /// Makes the whole root read-only (a bind mount of itself, remounted
    /// read-only): no directory is writable, not even for root.
    fn make_read_only(&mut self) -> Result<()> {
        let st = Command::new("mount")
            .args(["--bind"])
            .arg(&self.dir)
            .arg(&self.dir)
            .status()?;
        ensure!(st.success(), "bind-mounting the root: {st}");
        self.read_only = true;
        let st = Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(&self.dir)
            .status()?;
        ensure!(st.success(), "remounting the root read-only: {st}");
        // The bind mount hides the /proc mounted below it; mount it again.
        let st = Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(self.dir.join("proc"))
            .status()?;
        ensure!(st.success(), "mounting /proc in the read-only root: {st}");
        Ok(())
    }

    /// A stand-in for `ssh` that runs its last argument (the command line
    /// the method builds for the remote login shell) with `sh -c` in the root.
    fn transport(&self) -> Result<PathBuf> {
        let path = self.dir.with_extension("ssh");
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\nfor a; do last=$a; done\nexec chroot {} /bin/sh -c \"$last\"\n",
                self.dir.display()
            ),
        )?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        Ok(path)
    }
}

impl Drop for BareRoot {
    fn drop(&mut self) {
        if self.read_only {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        if self.proc_mounted {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.join("proc"))
                .status();
        }
        let _ = std::fs::remove_file(self.dir.with_extension("ssh"));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether the ELF file at `path` names a loader (a dynamic build).
fn is_dynamic(path: &Path) -> Result<bool> {
    let out = Command::new("file").arg("-L").arg(path).output()?;
    let what = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(out.status.success(), "file {}: {what}", path.display());
    Ok(what.contains("interpreter"))
}

/// The static build (the workspace's default) runs in a busybox-only root:
/// uploaded into the root's cache, then called.
pub fn static_build_runs_in_a_busybox_root(router: &Router) -> Result<()> {
    let me = std::env::current_exe()?;
    ensure!(
        !is_dynamic(&me)?,
        "this test binary is dynamically linked; the workspace's .cargo/config.toml \
         builds it static (is RUSTFLAGS set?)"
    );
    let root = BareRoot::new("static")?;
    let ssh = Ssh::new("bare")
        .ssh_path(root.transport()?)
        .name("bare-static");
    let ctx = router.ssh(ssh)?;
    let w = ctx.call_timeout(whoami, (), Duration::from_secs(20));
    let _ = ctx.shutdown_timeout(Duration::from_secs(5));
    let w = w?;
    ensure!(w.uid == 0, "runs as uid {}", w.uid);
    ensure!(
        w.exe.starts_with("/root/.cache/mitogen/") || w.exe.starts_with("/tmp/mitogen-0/"),
        "runs {} (not from the root's cache)",
        w.exe
    );
    let in_root = root.dir.join(w.exe.trim_start_matches('/'));
    ensure!(
        in_root.is_file(),
        "{} is not in the chroot",
        in_root.display()
    );

    Ok(())
}

/// A root where nothing is writable, not even `/dev/shm`: the connection
/// fails with an error naming each cache directory tried and why.
pub fn read_only_root_is_a_clear_error(router: &Router) -> Result<()> {
    let mut root = BareRoot::new("ro")?;
    let transport = root.transport()?;
    root.make_read_only()?;
    let ssh = Ssh::new("bare").ssh_path(transport).name("bare-ro");
    let text = match router.ssh(ssh) {
        Ok(ctx) => {
            let _ = ctx.shutdown_timeout(Duration::from_secs(5));
            bail!("connected to a root with no writable directory")
        }
        Err(e) => e.to_string(),
    };
    for dir in [
        "/root/.cache/mitogen",
        "/tmp/mitogen-0",
        "/dev/shm/mitogen-0",
    ] {
        ensure!(text.contains(dir), "the error does not name {dir}: {text}");
    }
    ensure!(
        text.contains("no usable cache directory"),
        "unclear error: {text}"
    );
    Ok(())
}

/// The same root reached over the test sshd with `ChrootDirectory`, as a
/// user of its own (login shell `/bin/sh`, home not in the root, so the
/// stage falls back to `/tmp/mitogen-UID` there): the static build runs, a
/// dynamic `mitogen` command names the loader it lacks.
pub fn static_build_runs_over_sshd_into_a_busybox_root(router: &Router) -> Result<()> {
    let me = std::env::current_exe()?;
    ensure!(
        !is_dynamic(&me)?,
        "this test binary is dynamically linked; the workspace's .cargo/config.toml \
         builds it static (is RUSTFLAGS set?)"
    );
    let root = BareRoot::new("sshd")?;
    let user = crate::sshd::user("mitogen-bare", "/bin/sh")?;
    let chroot = format!("ChrootDirectory {}", root.dir.display());
    let sshd = crate::sshd::Sshd::start_with(&[chroot.as_str()])?;
    let ctx = router
        .ssh(sshd.ssh(&user.name)?)
        .with_context(|| format!("sshd log:\n{}", sshd.log_tail()))?;
    let w = ctx.call_timeout(whoami, (), Duration::from_secs(20));
    let _ = ctx.shutdown_timeout(Duration::from_secs(5));
    let w = w?;
    ensure!(w.uid == user.uid, "runs as uid {}", w.uid);
    let expected = format!("/tmp/mitogen-{}/", user.uid);
    ensure!(w.exe.starts_with(&expected), "runs {}", w.exe);
    let in_root = root.dir.join(w.exe.trim_start_matches('/'));
    ensure!(
        in_root.is_file(),
        "{} is not in the chroot",
        in_root.display()
    );

    // A dynamic build over the same sshd: the missing loader, named.
    let exe = dynamic_cli()?;
    let out = Command::new(&exe)
        .args(["run", "-F", "/dev/null"])
        .arg("-o")
        .arg(format!("IdentityFile={}", sshd.client_key.display()))
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .arg(format!("{}@{}:{}", user.name, sshd.address, sshd.port))
        .args(["--", "true"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(!out.status.success(), "a dynamic build ran in the chroot");
    ensure!(
        text.contains("needs the loader /") && text.contains("crt-static"),
        "the error does not name the missing loader and the fix: {text}"
    );
    Ok(())
}

/// A dynamic build of the `mitogen` command, built once into
/// `target/dynamic` (a debug build: it only has to start).
fn dynamic_cli() -> Result<PathBuf> {
    let top = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target_dir = top.join("target/dynamic");
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let out = Command::new(cargo)
        .current_dir(&top)
        .env("RUSTFLAGS", "-C target-feature=-crt-static")
        .args(["build", "--quiet", "-p", "mitogen-cli", "--bin", "mitogen"])
        .arg("--target-dir")
        .arg(&target_dir)
        .output()
        .context("running cargo to build a dynamic mitogen")?;
    ensure!(
        out.status.success(),
        "building a dynamic mitogen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let exe = [
        target_dir.join(&triple).join("debug/mitogen"),
        target_dir.join("debug/mitogen"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .context("the dynamic build is not where cargo puts it")?;
    ensure!(is_dynamic(&exe)?, "{} is not dynamic", exe.display());
    Ok(exe)
}

/// A dynamic build sent to a busybox-only root fails with an error that
/// names the loader it lacks and how to build static.
pub fn dynamic_build_names_the_missing_loader(_router: &Router) -> Result<()> {
    let exe = dynamic_cli()?;
    let root = BareRoot::new("dyn")?;
    // `mitogen run bare` runs `ssh`: the stand-in, first on PATH.
    let bin = root.dir.with_extension("bin");
    std::fs::create_dir_all(&bin)?;
    let ssh = bin.join("ssh");
    std::fs::rename(root.transport()?, &ssh)?;
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(&exe)
        .env("PATH", path)
        .args(["run", "bare", "--", "true"])
        .output();
    let _ = std::fs::remove_dir_all(&bin);
    let out = out?;
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(
        !out.status.success(),
        "a dynamic build ran in a root without its loader"
    );
    let interp = "/lib64/ld-linux-x86-64.so.2";
    ensure!(
        text.contains(&format!("needs the loader {interp}")) || !Path::new(interp).exists(),
        "the error does not name the missing loader: {text}"
    );
    ensure!(
        text.contains("crt-static"),
        "the error does not say how to build static: {text}"
    );
    // The upload itself went through: the build is in the root's cache.
    let cached = std::fs::read_dir(root.dir.join("root/.cache/mitogen"))
        .context("the root's cache directory")?
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().len() == 32);
    ensure!(cached, "the build was not uploaded to the root's cache");
    Ok(())
}

crate::tests! {
    static_build_runs_in_a_busybox_root => 60,
    dynamic_build_names_the_missing_loader => 300,
    read_only_root_is_a_clear_error => 60,
    static_build_runs_over_sshd_into_a_busybox_root => 300,
}
