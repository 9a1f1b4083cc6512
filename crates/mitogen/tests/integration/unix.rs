//! The unix-socket listener: other processes of this user join a running
//! master and use its contexts; nobody else gets in, and nobody else can
//! pose as the master.

use std::io::{BufRead, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

/// `main` of that client (or, with the argument `impostor`, of a server
/// posing as a master: see [`impostor_main`]).
pub fn client_main() -> usize {
    match std::env::args().nth(1).as_deref() {
        Some("impostor") => return impostor_main(),
        Some("where") => return where_main(),
        _ => {}
    }
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

/// `main` of a process of another user that listens at the path in
/// [`CLIENT_ENV`] and answers the first connection as a master would (a
/// well-formed handshake), then counts what the client sends it in 3 s:
/// prints `ready`, then `got N`.
fn impostor_main() -> usize {
    let run = || -> Result<usize> {
        let path = std::env::var(CLIENT_ENV)?;
        let listener = std::os::unix::net::UnixListener::bind(&path)?;
        println!("ready");
        std::io::stdout().flush()?;
        // Not forever: the test may fail before it connects.
        listener.set_nonblocking(true)?;
        let give_up = Instant::now() + Duration::from_secs(10);
        let mut conn = loop {
            match listener.accept() {
                Ok((c, _)) => break c,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < give_up =>
                {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => return Err(e.into()),
            }
        };
        conn.set_nonblocking(false)?;
        let config = (
            7u32,
            "unix:impostor".to_owned(),
            1u64 << 20,
            vec![(1u32, "local.1".to_owned())],
        );
        let msg = mitogen::testing::message::Message {
            dst: 7,
            handle: mitogen::testing::message::handles::BOOTSTRAP,
            body: postcard::to_allocvec(&config)?.into(),
            ..Default::default()
        };
        let mut frame = msg.encode_header().to_vec();
        frame.extend_from_slice(&msg.body);
        let _ = conn.write_all(&frame);
        conn.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut got = 0;
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = conn.read(&mut buf) {
            got += n;
        }
        Ok(got)
    };
    match run() {
        Ok(got) => {
            println!("got {got}");
            0
        }
        Err(e) => {
            println!("error {e:#}");
            1
        }
    }
}

/// `main` of a process that listens with `Router::listen_private` (under the
/// `$XDG_RUNTIME_DIR` it was given) and prints where: `at PATH`.
fn where_main() -> usize {
    let run = || -> Result<PathBuf> {
        let router = Router::builder().build()?;
        let listener = router.listen_private()?;
        Ok(listener.path().to_owned())
    };
    match run() {
        Ok(path) => {
            println!("at {}", path.display());
            0
        }
        Err(e) => {
            println!("error {e:#}");
            1
        }
    }
}

/// A fresh directory for a test's socket, removed with what is in it on drop.
struct SocketDir(PathBuf);

impl SocketDir {
    /// Private (0700) unless `mode` says otherwise.
    fn new(tag: &str, mode: u32) -> Result<SocketDir> {
        let dir = std::env::temp_dir().join(format!("mitogen-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))?;
        Ok(SocketDir(dir))
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The test account that plays the other user.
fn other_user() -> Result<crate::sshd::User> {
    crate::sshd::user("mitogen-unix", "/bin/sh")
}

/// Runs `cmd` as `user` (runuser), failing on a non-zero exit.
fn run_as(user: &crate::sshd::User, cmd: &[&str]) -> Result<()> {
    let out = Command::new("runuser")
        .args(["-u", &user.name, "--"])
        .args(cmd)
        .stdin(Stdio::null())
        .output()?;
    ensure!(
        out.status.success(),
        "{cmd:?} as {}: {}",
        user.name,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

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
    listener_serves_clients_of_the_same_user,
    client_calls_fail_when_the_master_goes,
    other_users_are_refused,
    listen_private_uses_a_private_directory,
    shared_or_planted_directories_are_refused,
    a_server_of_another_user_is_refused,
    silent_clients_do_not_hold_up_others,
    listen_private_uses_only_a_runtime_dir_of_its_own,
}
