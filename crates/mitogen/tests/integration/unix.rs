//! The unix-socket listener: other processes of this user join a running
//! master and use its contexts.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use mitogen::builtins::getpid;
use mitogen::{Error, Router};

use crate::calls::{add, squares};
use crate::routing::Chain;
use crate::util::wait_until;

/// Set in the environment of a copy of this program that connects to the
/// socket named by the variable and calls `add` and `getpid` in the context
/// whose id is its first argument.
pub const CLIENT_ENV: &str = "MITOGEN_TEST_UNIX_CLIENT";

/// `main` of that client.
pub fn client_main() -> usize {
    let run = || -> Result<String> {
        let path = std::env::var(CLIENT_ENV)?;
        let id: u32 = std::env::args().nth(1).context("no id")?.parse()?;
        let client = mitogen::unix::connect(&path)?;
        let ctx = client.context(id);
        Ok(format!(
            "ok {} {} {}",
            ctx.name(),
            ctx.call(add, (40, 2))?,
            ctx.call(getpid, ())?
        ))
    };
    match run() {
        Ok(line) => {
            println!("{line}");
            0
        }
        Err(e) => {
            println!("error {e:#}");
            1
        }
    }
}

fn socket_path(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("mitogen-test-{}-{tag}.sock", std::process::id()))
}

pub fn listener_serves_clients_of_the_same_user(router: &Router) -> Result<()> {
    let chain = Chain::new(router, "ux", 2)?;
    let path = socket_path("a");
    let listener = router.listen(&path)?;
    let meta = std::fs::metadata(&path)?;
    ensure!(meta.file_type().is_socket(), "not a socket");
    ensure!(
        meta.permissions().mode() & 0o777 == 0o600,
        "mode {:o}",
        meta.permissions().mode() & 0o777
    );

    // Another process joins and calls two hops down.
    let leaf = chain.leaf();
    let out = Command::new(std::env::current_exe()?)
        .arg(leaf.id().to_string())
        .env(CLIENT_ENV, &path)
        .env_remove(mitogen::parent::CHILD_ENV)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    let line = String::from_utf8_lossy(&out.stdout);
    let want = format!("ok {} 42 {}", leaf.name(), leaf.call(getpid, ())?);
    ensure!(
        line.trim() == want,
        "the client said {line:?}, expected {want:?}"
    );

    // In this process too: the client sees the master's contexts by name,
    // and channels work both ways.
    let client = mitogen::unix::connect(&path)?;
    ensure!(client.id() != 0);
    let mid = client
        .context_named(chain.hops[0].name())
        .context("the first hop is not listed")?;
    ensure!(mid.call(add, (1, 2))? == 3);
    let (tx, rx) = client.channel::<u64>();
    client.context(leaf.id()).call(squares, (4, tx))?;
    ensure!(rx.iter().collect::<Vec<_>>() == [0, 1, 4, 9]);

    // A context that dies fails the client's pending calls too.
    let leaf_pid = leaf.call(getpid, ())?;
    let doomed = client
        .context(leaf.id())
        .call_async(crate::calls::sleep_ms, (30_000,));
    std::thread::sleep(Duration::from_millis(100));
    crate::util::kill9(leaf_pid)?;
    match doomed.get_timeout(Duration::from_secs(5)) {
        Err(Error::Disconnected { .. }) => {}
        other => bail!("expected Disconnected, got {other:?}"),
    }

    // The client leaving is a disconnect like any other; the master goes on.
    let client_id = client.id();
    let gone = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let g = gone.clone();
    let _hook = router.on_disconnect(move |id, _| {
        if id == client_id {
            g.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    drop(client);
    ensure!(
        wait_until(Duration::from_secs(2), || gone
            .load(std::sync::atomic::Ordering::SeqCst)),
        "the master did not see the client go"
    );
    ensure!(chain.hops[0].call(add, (2, 2))? == 4);

    drop(listener);
    ensure!(!path.exists(), "the socket file was left behind");
    match mitogen::unix::connect(&path) {
        Err(_) => Ok(()),
        Ok(_) => bail!("connected after the listener was dropped"),
    }
}

pub fn client_calls_fail_when_the_master_goes(_: &Router) -> Result<()> {
    // The master goes away under a connected client: its calls fail at once
    // instead of hanging.
    let r = Router::builder().build()?;
    let ctx = r.local()?;
    let path = socket_path("b");
    let listener = r.listen(&path)?;
    let client = mitogen::unix::connect(&path)?;
    let remote = client.context(ctx.id());
    ensure!(remote.call(add, (1, 1))? == 2);
    let pending = remote.call_async(crate::calls::sleep_ms, (30_000,));
    std::thread::sleep(Duration::from_millis(100));
    drop(listener);
    drop(r);
    match pending.get_timeout(Duration::from_secs(10)) {
        Err(Error::Disconnected { .. }) => {}
        other => bail!("expected Disconnected, got {other:?}"),
    }
    match remote.call_timeout(add, (1, 1), Duration::from_secs(5)) {
        Err(Error::Disconnected { .. } | Error::RouterShutdown) => Ok(()),
        other => bail!("a call after the master went: {other:?}"),
    }
}

pub fn other_users_are_refused(router: &Router) -> Result<()> {
    if !rustix::process::getuid().is_root() {
        println!("    (skipped: needs root to run a client as another user)");
        return Ok(());
    }
    let ctx = crate::util::local(router)?;
    let path = socket_path("c");
    let _listener = router.listen(&path)?;
    let nobody = 65534;
    let run_as_nobody = || -> Result<String> {
        use std::os::unix::process::CommandExt;
        let out = Command::new(std::env::current_exe()?)
            .arg(ctx.id().to_string())
            .env(CLIENT_ENV, &path)
            .env_remove(mitogen::parent::CHILD_ENV)
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
    // ... and with the mode opened up, the peer's credentials still do.
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
