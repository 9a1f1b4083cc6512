//! A host without `gzip`: the first stage says so, and the program is sent
//! uncompressed even when compression is asked for.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{ensure, Context as _, Result};
use mitogen::Router;

use super::{connect_as, own, uploaded_during};
use crate::sshd::{self, Sshd};

/// The tools the first stage runs, and nothing else (no `gzip`).
const TOOLS: &[&str] = &[
    "sh", "id", "ls", "mkdir", "chmod", "uname", "rm", "head", "mv",
];

/// A directory holding links to [`TOOLS`] only.
const BIN: &str = "/usr/local/lib/mitogen-test-nogzip-bin";

/// A login shell that runs its command with `PATH` set to [`BIN`].
const SHELL: &str = "/usr/local/bin/mitogen-test-nogzip-shell";

/// Writes [`BIN`] and [`SHELL`] (the same every run; test users and these
/// files are shared by concurrent runs, so nothing is removed).
fn no_gzip_shell() -> Result<()> {
    std::fs::create_dir_all(BIN)?;
    for tool in TOOLS {
        let found = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .with_context(|| format!("no {tool} on this machine"))?;
        let link = Path::new(BIN).join(tool);
        if std::fs::symlink_metadata(&link).is_err() {
            match std::os::unix::fs::symlink(&found, &link) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e.into()),
                _ => {}
            }
        }
    }
    let text = format!("#!/bin/sh\nPATH={BIN}\nexport PATH\nexec /bin/sh \"$@\"\n");
    let tmp = format!("{SHELL}.{}", std::process::id());
    std::fs::write(&tmp, text)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, SHELL)?;
    Ok(())
}

pub fn host_without_gzip_gets_the_program_uncompressed(router: &Router) -> Result<()> {
    no_gzip_shell()?;
    let sshd = Sshd::start()?;
    let user = sshd::user("mitogen-nogzip", SHELL)?;
    user.clear_cache()?;
    // The fixture asks for gzip; without it there, the upload is plain.
    let ((ctx, w), up) =
        uploaded_during(router, || connect_as(router, sshd.ssh(&user.name)?, &user))?;
    ensure!(
        up == own().bytes.len() as u64,
        "uploaded {up} bytes; the program has {} (gzipped {})",
        own().bytes.len(),
        own().gzipped().len()
    );
    ensure!(w.uid == user.uid, "runs as uid {}", w.uid);
    drop(ctx);
    let ((ctx, _), up) =
        uploaded_during(router, || connect_as(router, sshd.ssh(&user.name)?, &user))?;
    ensure!(up == 0, "the second connection uploaded {up} bytes");
    drop(ctx);
    Ok(())
}

crate::tests! {
    host_without_gzip_gets_the_program_uncompressed => 180,
}
