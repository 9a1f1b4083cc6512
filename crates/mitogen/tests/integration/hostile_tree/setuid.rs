//! Child mode refused to a set-user-ID program.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use mitogen::Router;

pub fn setuid_program_refuses_child_mode(_: &Router) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = std::env::temp_dir().join(format!("mitogen-setuid-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let prog = dir.join("prog");
    std::fs::copy(std::env::current_exe()?, &prog)?;
    // Owned by root (who runs the tests), set-user-ID, run by nobody: the
    // kernel starts it with AT_SECURE.
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o4755))?;
    let started = Instant::now();
    let out = std::process::Command::new(&prog)
        .env("MITOGEN_CHILD", "1")
        .uid(65534)
        .gid(65534)
        .stdin(std::process::Stdio::null())
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !stdout.contains("MITOGEN-RS"),
        "the set-user-ID program greeted as a child: {stdout:?}"
    );
    ensure!(
        out.status.code() == Some(126) && stderr.contains("refusing child mode"),
        "exit {:?}, stderr {stderr:?}",
        out.status
    );
    ensure!(started.elapsed() < Duration::from_secs(10));
    Ok(())
}

crate::tests! {
    setuid_program_refuses_child_mode,
}
