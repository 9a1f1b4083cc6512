//! The unix-socket listener: other processes of this user join a running
//! master and use its contexts; nobody else gets in, and nobody else can
//! pose as the master.
//!
//! This module holds the client processes (this binary run again with
//! [`CLIENT_ENV`]), the socket directory and running a command as another
//! user. The tests are in the parts: `clients` (serving clients, their calls
//! when the master goes, silent clients), `peers` (other users, as clients and
//! as a server) and `directories` (the private directory, shared or planted
//! directories, the runtime directory).

pub mod clients;
pub mod directories;
pub mod peers;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use mitogen::builtins::getpid;
use mitogen::Router;

use crate::calls::add;

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
