//! Other users: refused as clients, and refused as a server that poses as the
//! master.

use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use mitogen::Router;

use super::{other_user, SocketDir, CLIENT_ENV};
use crate::calls::add;

pub fn other_users_are_refused(router: &Router) -> Result<()> {
    if !rustix::process::getuid().is_root() {
        return Err(crate::harness::cannot_run(
            "root, to run a client as another user",
        ));
    }
    let ctx = crate::util::local(router)?;
    let dir = SocketDir::new("c", 0o700)?;
    let path = dir.join("s.sock");
    let _listener = router.listen(&path)?;
    let nobody = 65534;
    let run_as_nobody = || -> Result<String> {
        use std::os::unix::process::CommandExt;
        let out = Command::new(std::env::current_exe()?)
            .arg(ctx.id().to_string())
            .env(CLIENT_ENV, &path)
            .env_remove(mitogen::testing::CHILD_ENV)
            .uid(nobody)
            .gid(nobody)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    // The file's mode keeps another user out ...
    let said = run_as_nobody()?;
    ensure!(
        said.starts_with("error"),
        "a client as nobody said {said:?}"
    );
    // ... and with the modes opened up, the peer's credentials still do.
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o711))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
    let mark = crate::capture::mark();
    let said = run_as_nobody()?;
    ensure!(
        said.starts_with("error"),
        "a client as nobody said {said:?}"
    );
    crate::capture::wait_for(mark, Duration::from_secs(5), |e| {
        e.message.contains("client refused") && e.message.contains(&format!("uid {nobody}"))
    })
    .context("the refusal was not logged")?;
    ensure!(ctx.call(add, (1, 1))? == 2);
    Ok(())
}

pub fn a_server_of_another_user_is_refused(_: &Router) -> Result<()> {
    let other = other_user()?;
    // The other user's own directory, where they serve a socket posing as a
    // master.
    let dir = SocketDir::new("impostor", 0o755)?;
    other.chown(&dir.0)?;
    let path = dir.join("s.sock");
    use std::os::unix::process::CommandExt;
    let mut impostor = Command::new(std::env::current_exe()?)
        .arg("impostor")
        .env(CLIENT_ENV, &path)
        .env_remove(mitogen::testing::CHILD_ENV)
        .uid(other.uid)
        .gid(other.uid)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut said = std::io::BufReader::new(impostor.stdout.take().context("no stdout")?);
    let mut line = String::new();
    said.read_line(&mut line)?;
    ensure!(line.trim() == "ready", "the impostor said {line:?}");
    let result = mitogen::unix::connect(&path);
    if let Ok(client) = &result {
        // What a fooled client would go on to send.
        let _ = client
            .context(1)
            .call_timeout(add, (1, 2), Duration::from_secs(1));
    }
    line.clear();
    said.read_line(&mut line)?;
    let _ = impostor.wait();
    match result {
        Err(e) => ensure!(
            e.to_string().contains(&format!("uid {}", other.uid)),
            "refused without naming the server's uid: {e}"
        ),
        Ok(_) => bail!("connected to a socket served by uid {}", other.uid),
    }
    ensure!(
        line.trim() == "got 0",
        "the impostor heard from the client: {line:?}"
    );
    Ok(())
}

crate::tests! {
    other_users_are_refused,
    a_server_of_another_user_is_refused,
}
