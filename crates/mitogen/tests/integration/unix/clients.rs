//! Clients of the same user: served, failed at once when the master goes, and
//! not held up by a silent client.

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use mitogen::builtins::getpid;
use mitogen::{Error, Router};

use super::{SocketDir, CLIENT_ENV};
use crate::calls::{add, squares};
use crate::routing::Chain;
use crate::util::wait_until;

pub fn listener_serves_clients_of_the_same_user(router: &Router) -> Result<()> {
    let chain = Chain::new(router, "ux", 2)?;
    let dir = SocketDir::new("a", 0o700)?;
    let path = dir.join("s.sock");
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
        .env_remove(mitogen::testing::CHILD_ENV)
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
    let dir = SocketDir::new("b", 0o700)?;
    let path = dir.join("s.sock");
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

pub fn silent_clients_do_not_hold_up_others(router: &Router) -> Result<()> {
    let ctx = crate::util::local(router)?;
    let dir = SocketDir::new("silent", 0o700)?;
    let path = dir.join("s.sock");
    let _listener = router.listen(&path)?;
    let mut silent = UnixStream::connect(&path)?;
    let mut halfway = UnixStream::connect(&path)?;
    halfway.write_all(b"MITOGEN")?;
    let mut wrong = UnixStream::connect(&path)?;
    wrong.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let start = Instant::now();

    // The next client gets in at once.
    let client = mitogen::unix::connect(&path)?;
    ensure!(client.context(ctx.id()).call(add, (20, 22))? == 42);
    ensure!(
        start.elapsed() < Duration::from_secs(3),
        "the next client waited {:?}",
        start.elapsed()
    );

    // Each is closed without being told anything: a wrong hello at once,
    // silence and half a hello at the deadline.
    let closed_after = |s: &mut UnixStream| -> Result<Duration> {
        s.set_read_timeout(Some(mitogen::unix::HELLO_TIMEOUT * 3))?;
        let mut buf = [0u8; 64];
        // Closed with what it sent unread: a reset rather than an end.
        let n = match s.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            r => r?,
        };
        ensure!(n == 0, "a client that never said hello was sent {n} bytes");
        Ok(start.elapsed())
    };
    let t = closed_after(&mut wrong)?;
    ensure!(
        t < Duration::from_secs(3),
        "a wrong hello was closed after {t:?}"
    );
    for s in [&mut silent, &mut halfway] {
        let t = closed_after(s)?;
        ensure!(
            t >= mitogen::unix::HELLO_TIMEOUT - Duration::from_millis(500)
                && t < mitogen::unix::HELLO_TIMEOUT * 2,
            "closed after {t:?}"
        );
    }
    ensure!(client.context(ctx.id()).call(add, (1, 1))? == 2);
    Ok(())
}

crate::tests! {
    listener_serves_clients_of_the_same_user,
    client_calls_fail_when_the_master_goes,
    silent_clients_do_not_hold_up_others,
}
