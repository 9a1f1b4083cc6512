//! Hosts that hold nothing but a static busybox (and `/proc`): an embedded
//! box, a rescue system, a minimal image. The root is a local chroot, reached
//! through the ssh method with a stand-in for `ssh` that runs the command line
//! it is given in `chroot ROOT /bin/sh` (so the real first stage runs under
//! busybox sh in the chroot, exactly as over ssh). Needs Debian's
//! `busybox-static` (`.ci/run` installs it) and root (chroot, mount).
//!
//! The test binary is a dynamic build: such a host has no loader for it, and
//! the connection must fail with an error that names the missing loader and
//! the fix, instead of the shell's `exec: ./HASH: not found`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context as _, Result};
use mitogen::methods::ssh::Ssh;
use mitogen::Router;

/// A busybox-only root under `/tmp`, with `/proc` mounted; unmounted and
/// removed on drop.
struct BareRoot {
    dir: PathBuf,
    proc_mounted: bool,
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
        let dir = PathBuf::from(format!("/tmp/mitogen-bare-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut root = BareRoot {
            dir: dir.clone(),
            proc_mounted: false,
        };
        for sub in ["bin", "proc", "tmp", "dev/shm", "root"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        // Every path component root-owned, like sshd's ChrootDirectory wants.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
        std::fs::copy(busybox, dir.join("bin/busybox"))?;
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

/// A dynamic build sent to a busybox-only root fails with an error that
/// names the loader it lacks and how to build static, and leaves nothing
/// running.
pub fn dynamic_build_names_the_missing_loader(router: &Router) -> Result<()> {
    let root = BareRoot::new("dyn")?;
    let ssh = Ssh::new("bare")
        .ssh_path(root.transport()?)
        .name("bare-dyn");
    let text = match router.ssh(ssh) {
        Ok(ctx) => {
            let _ = ctx.shutdown_timeout(std::time::Duration::from_secs(5));
            bail!("a dynamic build started in a root without its loader")
        }
        Err(e) => e.to_string(),
    };
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
