//! Containers against a real docker daemon: the exec hop, `docker:` and
//! `docker-run:` hops, their failures, and chains through them.
//!
//! No image can be pulled here, so the images are made from scratch: a
//! tarball holding Debian's static busybox (`busybox-static`) and its applet
//! links, `docker import`ed under a tag that is the hash of what went in
//! (`mitogen-test/FLAVOUR:HASH`), built once and reused by every later run.
//! The shipped program is the test binary itself, static like every build of
//! the workspace (`.cargo/config.toml`), so it runs in a busybox-only root.
//!
//! Needs root and a docker daemon that answers (`.ci/run` installs
//! `docker.io` and starts `dockerd` when none answers); without one every
//! test here fails saying so (docs/testing.md, skip policy).

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, ensure, Context as _, Result};
use mitogen::{Error, TransportFailure};
use serde::{Deserialize, Serialize};

mod basics;
mod chains;
mod direct;
mod failures;
mod hostile;
mod podman;

/// What an image holds besides busybox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// busybox with every applet, `/tmp` 1777, users root and app (uid
    /// 1000, home `/home/app` that does not exist).
    Busybox,
    /// dash as `sh` (with the libraries it needs) and busybox links for
    /// the other tools the first stage needs, but no gzip. (busybox's own
    /// sh runs its applets whatever `PATH` holds, gzip and uname
    /// included, so it cannot stand for a system without them.)
    NoGzip,
    /// busybox alone, with no applet links: no `sh` anywhere.
    NoShell,
    /// As [`NoGzip`](Self::NoGzip), with a `uname` that reports `Linux
    /// fakearch`: a container of a system the master has no build for.
    FakeArch,
}

impl Flavour {
    fn name(self) -> &'static str {
        match self {
            Flavour::Busybox => "busybox",
            Flavour::NoGzip => "nogzip",
            Flavour::NoShell => "noshell",
            Flavour::FakeArch => "fakearch",
        }
    }
}

/// The applets the first stage uses, and `sleep` for the containers' main
/// process.
const STAGE_APPLETS: &[&str] = &[
    "sh", "uname", "id", "ls", "mkdir", "head", "chmod", "mv", "rm", "cat", "sleep", "echo",
];

/// Fails the test (or skips it where allowed) unless a docker daemon
/// answers and we are root.
pub fn require_docker() -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        return Err(crate::harness::cannot_run(
            "root (to reach the docker daemon)",
        ));
    }
    let out = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(crate::harness::cannot_run(format!(
            "a docker daemon (docker info: {})",
            String::from_utf8_lossy(&o.stderr).trim()
        ))),
        Err(e) => Err(crate::harness::cannot_run(format!(
            "the docker client ({e}; .ci/run installs docker.io)"
        ))),
    }
}

/// Runs `docker ARGS`; its stdout, or an error with its stderr.
pub fn docker(args: &[&str]) -> Result<String> {
    engine("docker", args)
}

/// Runs `ENGINE ARGS` (docker or podman); its stdout, or an error with its
/// stderr.
pub fn engine(engine: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(engine)
        .args(args)
        .output()
        .with_context(|| format!("running {engine}"))?;
    ensure!(
        out.status.success(),
        "{engine} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The tag of the image of `flavour` in docker, imported now unless an
/// earlier run did.
pub fn image(flavour: Flavour) -> Result<String> {
    image_in("docker", flavour)
}

/// [`image`] in `engine`'s store (docker or podman).
pub fn image_in(engine_name: &str, flavour: Flavour) -> Result<String> {
    let busybox = std::fs::read("/bin/busybox").context("reading /bin/busybox (busybox-static)")?;
    let mut hasher = blake3::Hasher::new();
    hasher.update(&busybox);
    // The recipe below is part of the key: a change to it makes a new image.
    hasher.update(format!("v2 {flavour:?} {STAGE_APPLETS:?}").as_bytes());
    let tag = format!(
        "mitogen-test/{}:{}",
        flavour.name(),
        &hasher.finalize().to_hex()[..16]
    );
    if engine(
        engine_name,
        &["image", "inspect", "--format", "{{.Id}}", &tag],
    )
    .is_ok()
    {
        return Ok(tag);
    }
    let dir = std::env::temp_dir().join(format!(
        "mitogen-image-{}-{}",
        flavour.name(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let result = build(engine_name, &dir, &busybox, flavour, &tag);
    let _ = std::fs::remove_dir_all(&dir);
    result.map(|()| tag)
}

fn build(engine: &str, dir: &Path, busybox: &[u8], flavour: Flavour, tag: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for sub in ["bin", "etc", "tmp", "root", "proc", "dev", "sys"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    std::fs::set_permissions(dir.join("root"), std::fs::Permissions::from_mode(0o700))?;
    std::fs::write(dir.join("bin/busybox"), busybox)?;
    std::fs::set_permissions(
        dir.join("bin/busybox"),
        std::fs::Permissions::from_mode(0o755),
    )?;
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    )?;
    std::fs::write(dir.join("etc/group"), "root:x:0:\napp:x:1000:\n")?;
    let link = |name: &str| std::os::unix::fs::symlink("busybox", dir.join("bin").join(name));
    match flavour {
        Flavour::NoShell => {}
        Flavour::NoGzip | Flavour::FakeArch => {
            for a in STAGE_APPLETS.iter().filter(|a| **a != "sh") {
                link(a)?;
            }
            copy_with_libraries(dir, Path::new("/bin/dash"))?;
            std::fs::rename(dir.join("bin/dash"), dir.join("bin/sh"))?;
        }
        Flavour::Busybox => {
            let out = Command::new("/bin/busybox").arg("--list").output()?;
            for a in String::from_utf8_lossy(&out.stdout).lines() {
                if !a.is_empty() && a != "busybox" {
                    link(a)?;
                }
            }
        }
    }
    if flavour == Flavour::FakeArch {
        std::fs::remove_file(dir.join("bin/uname"))?;
        std::fs::write(dir.join("bin/uname"), "#!/bin/sh\necho Linux fakearch\n")?;
        std::fs::set_permissions(
            dir.join("bin/uname"),
            std::fs::Permissions::from_mode(0o755),
        )?;
    }
    let tar = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .args(["--owner=0", "--group=0", "-c", "."])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running tar")?;
    let out = Command::new(engine)
        .args(["import", "-", tag])
        .stdin(tar.stdout.context("tar's stdout")?)
        .output()
        .context("running docker import")?;
    ensure!(
        out.status.success(),
        "{engine} import {tag}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Copies the dynamic program `program` into the root `dir`, with the
/// libraries and loader `ldd` names, each at its own path.
fn copy_with_libraries(dir: &Path, program: &Path) -> Result<()> {
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .context("running ldd")?;
    let mut files = vec![program.to_path_buf()];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // `libc.so.6 => /lib/…/libc.so.6 (0x…)` or `/lib64/ld-linux….so.2 (0x…)`
        let path = line.split("=>").last().unwrap_or_default().trim();
        let path = path.split(" (").next().unwrap_or_default();
        if path.starts_with('/') {
            files.push(path.into());
        }
    }
    for f in files {
        let to = dir.join(f.strip_prefix("/")?);
        std::fs::create_dir_all(to.parent().context("a parent")?)?;
        std::fs::copy(&f, &to).with_context(|| format!("copying {}", f.display()))?;
    }
    Ok(())
}

static SERIAL: AtomicU32 = AtomicU32::new(0);

/// A container of this test's own, removed (`docker rm -f`) on drop.
pub struct Container {
    /// Its name.
    pub name: String,
    /// `docker` or `podman`.
    pub engine: &'static str,
}

impl Container {
    /// A new name for a container of this run.
    pub fn fresh_name(what: &str) -> String {
        format!(
            "mitogen-test-{what}-{}-{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Starts a container of `flavour` running `sleep` for ever, with more
    /// `docker run` options.
    pub fn start(flavour: Flavour, options: &[&str]) -> Result<Container> {
        require_docker()?;
        Container::start_in("docker", flavour, options)
    }

    /// [`start`](Self::start) with `engine` (docker or podman).
    pub fn start_in(
        engine_name: &'static str,
        flavour: Flavour,
        options: &[&str],
    ) -> Result<Container> {
        let image = image_in(engine_name, flavour)?;
        let name = Container::fresh_name(flavour.name());
        let c = Container {
            name,
            engine: engine_name,
        };
        let mut args = vec!["run", "-d", "--name", &c.name];
        args.extend_from_slice(options);
        args.extend_from_slice(&[&image, "/bin/busybox", "sleep", "1000000"]);
        engine(engine_name, &args)?;
        Ok(c)
    }

    /// The hop's target string (`docker:NAME`, `podman:NAME`).
    pub fn hop(&self) -> String {
        format!("{}:{}", self.engine, self.name)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = engine(self.engine, &["rm", "-f", &self.name]);
    }
}

/// Who and where a context runs, from inside.
#[derive(Debug, Serialize, Deserialize)]
pub struct Inside {
    pub uid: u32,
    pub hostname: String,
    pub exe: String,
    pub pid: u32,
}

#[mitogen::remote]
pub fn inside() -> Inside {
    Inside {
        uid: rustix::process::getuid().as_raw(),
        hostname: std::fs::read_to_string("/etc/hostname")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        exe: std::fs::read_link("/proc/self/exe")
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        pid: std::process::id(),
    }
}

#[mitogen::remote]
pub fn nap(ms: u64) -> u64 {
    std::thread::sleep(std::time::Duration::from_millis(ms));
    ms
}

/// Checks that `r` failed as a transport failure of `kind` naming `context`.
pub fn expect_failure<T>(
    r: mitogen::Result<T>,
    context: &str,
    kind: TransportFailure,
) -> Result<String> {
    match r {
        Ok(_) => bail!("{context}: connected, expected {kind}"),
        Err(Error::Transport {
            context: c,
            kind: k,
            detail,
            stderr,
        }) => {
            let text = format!("{c}: {k}: {detail}; {stderr}");
            ensure!(c == context, "names {c:?}, not {context:?}: {text}");
            ensure!(k == kind, "{k:?}, expected {kind:?}: {text}");
            Ok(text)
        }
        Err(e) => bail!("{context}: expected a {kind} transport failure, got: {e}"),
    }
}

/// The docker clients (`docker exec`, `docker run`) among our child
/// processes.
pub fn docker_children() -> Vec<u32> {
    mitogen_testkit::proc::descendants(std::process::id())
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.starts_with(b"docker\0"))
                .unwrap_or(false)
        })
        .collect()
}
