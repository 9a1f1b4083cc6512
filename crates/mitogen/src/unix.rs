//! Joining a running master from another process (the seed's `mitogen.unix`).
//!
//! [`Router::listen`](crate::Router::listen) (or
//! [`Router::listen_private`](crate::Router::listen_private)) binds a Unix
//! socket and serves it on a thread of its own. Another process of the same
//! user calls [`connect`] and gets a [`Client`]: a small router whose parent
//! is the master, holding [`Context`]s for the contexts the master has. Calls
//! and channels from the client then travel through the master's router like
//! the master's own.
//!
//! Security: a client acts with the master's authority (it may run code in
//! every context, as the master may). That is more than another process of
//! the same user can otherwise get where Yama (`kernel.yama.ptrace_scope` 1
//! or more) keeps it from attaching a debugger to the master, so listening is
//! something a program opts into, and it is fenced on both sides:
//!
//! * the socket lives in a directory only this user may enter
//!   (`$XDG_RUNTIME_DIR`, or a fresh 0700 directory; a directory given by the
//!   caller must be private already). The directory is opened without
//!   following a symbolic link and checked on the descriptor, and the socket
//!   is created and set to 0600 through that descriptor, never through a path
//!   that could have been swapped (`unix/private_dir.rs`);
//! * every connection's peer credentials (`SO_PEERCRED`) are checked, whatever
//!   the file's mode: a process of another user is refused before anything is
//!   sent to it;
//! * the client checks the server's credentials the same way before it sends
//!   anything: a socket planted by another user is refused;
//! * a connection that does not say hello within [`HELLO_TIMEOUT`] is closed;
//!   connections waiting for theirs never hold up the others.

mod private_dir;

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use serde::{Deserialize, Serialize};

use crate::core::channel::{Receiver, Sender};
use crate::core::context::Context;
use crate::core::error::{Error, Result};
use crate::core::handshake;
use crate::core::message::{handles, ContextId, Message, MASTER_ID};
use crate::core::payload::Payload;
use crate::core::router::RouterInner;
use crate::core::side::Side;
use crate::core::stream::{FrameReader, Stream};
use private_dir::PrivateDir;

/// How long a client waits for the master's answer.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the listener waits for a new connection's hello before it
/// closes it.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// What a client says first, once it has checked who serves the socket.
const HELLO: &[u8] = b"MITOGEN-UNIX 1\n";

/// Connections the listener holds waiting for their hello; more are refused
/// until some finish or time out.
const MAX_WAITING: usize = 64;

/// How often the accepting thread looks whether it should stop.
const ACCEPT_POLL: Duration = Duration::from_millis(100);

/// What the listener tells a new client (the body of its first frame).
#[derive(Debug, Serialize, Deserialize)]
struct ClientConfig {
    id: ContextId,
    name: String,
    max_message_size: u64,
    /// The contexts the master knew of when the client connected.
    contexts: Vec<(ContextId, String)>,
}

/// A listening socket; dropping it stops accepting and removes the file
/// (and the directory, when it was made for it); clients already connected
/// stay connected.
#[derive(Debug)]
pub struct Listener {
    path: PathBuf,
    dir: PrivateDir,
    name: OsString,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Where the socket is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.dir.remove(&self.name);
    }
}

fn io(what: &str, e: impl Into<std::io::Error>) -> Error {
    Error::io(what.to_owned(), e.into())
}

/// Binds `path`, whose directory must be private to this user, and starts
/// accepting.
pub(crate) fn listen(router: &Arc<RouterInner>, path: &Path) -> Result<Listener> {
    let name = path
        .file_name()
        .ok_or_else(|| {
            io(
                "unix socket path",
                invalid(format!("{} names no file", path.display())),
            )
        })?
        .to_owned();
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = PrivateDir::open(parent).map_err(|e| io("unix socket directory", e))?;
    bind(router, dir, name)
}

/// Binds a socket in `$XDG_RUNTIME_DIR` when it is private to this user, or
/// else in a fresh private directory of the temporary directory.
pub(crate) fn listen_private(router: &Arc<RouterInner>) -> Result<Listener> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let name = OsString::from(format!(
        "mitogen-{}-{}.sock",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let dir = match PrivateDir::runtime() {
        Some(d) => d,
        None => PrivateDir::make_temp().map_err(|e| io("making a private directory", e))?,
    };
    bind(router, dir, name)
}

fn invalid(why: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, why)
}

/// Binds `name` in `dir` through the directory's descriptor, sets it to 0600
/// before anyone can connect, and starts the accepting thread.
fn bind(router: &Arc<RouterInner>, dir: PrivateDir, name: OsString) -> Result<Listener> {
    let path = dir.path().join(&name);
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(|e| io("creating a unix socket", e))?;
    let through = dir
        .path_through_fd(&name)
        .map_err(|e| io("unix socket path", e))?;
    let addr = SocketAddrUnix::new(&through).map_err(|e| io("unix socket path", e))?;
    rustix::net::bind(&fd, &addr).map_err(|e| io(&format!("binding {}", path.display()), e))?;
    // Only this user can write the directory, so `name` is still the socket
    // just bound; and nobody can connect before `listen`, so the mode is
    // right from the first connection on.
    let ready = rustix::fs::chmodat(
        dir.fd(),
        &name,
        rustix::fs::Mode::from_raw_mode(0o600),
        rustix::fs::AtFlags::empty(),
    )
    .and_then(|()| rustix::net::listen(&fd, 64));
    if let Err(e) = ready {
        dir.remove(&name);
        return Err(io(&format!("listening on {}", path.display()), e));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let weak = Arc::downgrade(router);
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("mitogen-unix".into())
        .spawn(move || accept_loop(fd, weak, stop2))
        .map_err(|e| {
            dir.remove(&name);
            io("starting the unix listener thread", e)
        })?;
    Ok(Listener {
        path,
        dir,
        name,
        stop,
        thread: Some(thread),
    })
}

/// A connection of this user that has not said hello yet.
struct Waiting {
    fd: OwnedFd,
    pid: i32,
    deadline: Instant,
    heard: Vec<u8>,
}

/// What reading a waiting connection came to.
enum Heard {
    More,
    Hello,
    Gone,
    Wrong,
}

impl Waiting {
    /// Reads what has arrived, never past the hello (what follows belongs to
    /// the stream).
    fn read(&mut self) -> Heard {
        let mut buf = [0u8; HELLO.len()];
        let want = HELLO.len() - self.heard.len();
        match rustix::io::read(&self.fd, &mut buf[..want]) {
            Ok(0) => Heard::Gone,
            Ok(n) => {
                self.heard.extend_from_slice(&buf[..n]);
                if !HELLO.starts_with(&self.heard) {
                    Heard::Wrong
                } else if self.heard.len() == HELLO.len() {
                    Heard::Hello
                } else {
                    Heard::More
                }
            }
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => Heard::More,
            Err(_) => Heard::Gone,
        }
    }
}

fn accept_loop(fd: OwnedFd, router: std::sync::Weak<RouterInner>, stop: Arc<AtomicBool>) {
    let mut waiting: Vec<Waiting> = Vec::new();
    while !stop.load(Ordering::Acquire) {
        let wait = waiting
            .iter()
            .map(|w| w.deadline.saturating_duration_since(Instant::now()))
            .fold(ACCEPT_POLL, Duration::min);
        let ts = Timespec {
            tv_sec: wait.as_secs() as i64,
            tv_nsec: i64::from(wait.subsec_nanos()),
        };
        let ready: Vec<bool> = {
            let mut pfds: Vec<PollFd<'_>> = std::iter::once(&fd)
                .chain(waiting.iter().map(|w| &w.fd))
                .map(|f| PollFd::new(f, PollFlags::IN))
                .collect();
            if rustix::event::poll(&mut pfds, Some(&ts)).is_err() {
                continue;
            }
            pfds.iter().map(|p| !p.revents().is_empty()).collect()
        };
        let Some(router) = router.upgrade() else {
            return;
        };
        if router.is_shut_down() {
            return;
        }
        let now = Instant::now();
        let mut still = Vec::with_capacity(waiting.len());
        for (mut w, ready) in waiting.drain(..).zip(ready[1..].iter().copied()) {
            match if ready { w.read() } else { Heard::More } {
                Heard::Hello => {
                    if let Err(e) = admit(&router, w.fd, w.pid, w.deadline) {
                        tracing::warn!("unix listener: pid {}: {e}", w.pid);
                    }
                }
                Heard::Wrong => tracing::warn!(
                    "unix listener: pid {} said {:?}, not hello; closed",
                    w.pid,
                    String::from_utf8_lossy(&w.heard)
                ),
                Heard::Gone => tracing::debug!("unix listener: pid {} left before hello", w.pid),
                Heard::More if now >= w.deadline => tracing::warn!(
                    "unix listener: pid {} said no hello within {HELLO_TIMEOUT:?}; closed",
                    w.pid
                ),
                Heard::More => still.push(w),
            }
        }
        waiting = still;
        if ready[0] {
            accept_all(&fd, &mut waiting);
        }
    }
}

/// Accepts every connection there is; those of this user wait for their
/// hello, the others are refused at once.
fn accept_all(fd: &OwnedFd, waiting: &mut Vec<Waiting>) {
    loop {
        let client =
            match rustix::net::accept_with(fd, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK) {
                Ok(c) => c,
                Err(rustix::io::Errno::AGAIN) => return,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    tracing::warn!("unix listener: accept failed: {e}");
                    std::thread::sleep(ACCEPT_POLL);
                    return;
                }
            };
        match check_peer(&client) {
            Ok(pid) if waiting.len() < MAX_WAITING => waiting.push(Waiting {
                fd: client,
                pid,
                deadline: Instant::now() + HELLO_TIMEOUT,
                heard: Vec::new(),
            }),
            Ok(pid) => tracing::warn!(
                "unix listener: client refused: pid {pid}: {MAX_WAITING} connections already wait for their hello"
            ),
            Err(e) => tracing::warn!("unix listener: client refused: {e}"),
        }
    }
}

/// The peer's pid if it runs as this process's user.
fn check_peer(fd: &OwnedFd) -> std::result::Result<i32, String> {
    let cred = crate::sys::peer_credentials(fd.as_fd()).map_err(|e| format!("SO_PEERCRED: {e}"))?;
    let me = rustix::process::geteuid().as_raw();
    let pid = cred.pid.map_or(-1, |p| p as i32);
    if cred.uid != me {
        return Err(format!(
            "pid {pid} runs as uid {}, not {me} like this master",
            cred.uid
        ));
    }
    Ok(pid)
}

/// Tells a client that said hello its id and the contexts there are, and
/// adds it to the router as a client acting for the master.
fn admit(
    router: &Arc<RouterInner>,
    fd: OwnedFd,
    pid: i32,
    deadline: Instant,
) -> std::result::Result<(), String> {
    let id = router.alloc_context_id();
    let name = format!("unix:{pid}");
    let config = ClientConfig {
        id,
        name: name.clone(),
        max_message_size: router.max_message_size as u64,
        contexts: router.known_contexts(),
    };
    let body = postcard::to_allocvec(&config).map_err(|e| e.to_string())?;
    let msg = Message {
        dst: id,
        src: router.id,
        auth_id: router.id,
        handle: handles::BOOTSTRAP,
        body: body.into(),
        ..Default::default()
    };
    let mut frame = msg.encode_header().to_vec();
    frame.extend_from_slice(&msg.body);
    // The client reads as soon as its hello is out, so this takes no time;
    // the deadline only bounds one that stops reading.
    handshake::write_all(fd.as_fd(), &frame, deadline).map_err(|e| format!("handshake: {e}"))?;
    let side = Arc::new(Side::new(fd).map_err(|e| e.to_string())?);
    let stream = Arc::new(Stream::new(name.clone(), side.clone(), side, false));
    stream.set_remote_id(id);
    router.add_unix_client(id);
    router.add_route(id, &name, stream.clone());
    router
        .broker
        .add_stream(stream, FrameReader::new(router.max_message_size, &[]));
    tracing::debug!(id, %name, "unix client joined");
    Ok(())
}

/// A connection to a running master's [`Listener`], acting with the master's
/// authority on the master's contexts. Dropping it disconnects.
pub struct Client {
    inner: Arc<RouterInner>,
    contexts: Vec<(ContextId, String)>,
    /// The socket, shut down on drop: contexts handed out keep the router
    /// (and so the descriptor) alive, but the master must see us go.
    side: Arc<Side>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.inner.id)
            .field("contexts", &self.contexts)
            .finish()
    }
}

/// Connects to the master listening at `path`. The process serving the socket
/// must run as this process's user (`SO_PEERCRED`); any other is refused
/// before a byte is sent to it.
pub fn connect(path: impl AsRef<Path>) -> Result<Client> {
    let path = path.as_ref();
    let refused = |reason: String| Error::Connect {
        context: path.display().to_string(),
        reason,
    };
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let fd = connect_by_path(path, deadline)
        .map_err(|e| io(&format!("connecting to {}", path.display()), e))?;
    let server = crate::sys::peer_credentials(fd.as_fd())
        .map_err(|e| refused(format!("SO_PEERCRED: {e}")))?;
    // Not even root's: a real master serves only its own user, so a socket
    // served by any other uid is not one, whoever runs it.
    let me = rustix::process::geteuid().as_raw();
    if server.uid != me {
        return Err(refused(format!(
            "the socket is served by pid {} as uid {}, not uid {me} like this process: \
             not a master of this user, refused",
            server.pid.map_or(-1, |p| p as i64),
            server.uid,
        )));
    }
    handshake::write_all(fd.as_fd(), HELLO, deadline)
        .map_err(|e| refused(format!("saying hello: {e}")))?;
    let (header, body) = handshake::read_frame(
        fd.as_fd(),
        crate::core::message::DEFAULT_MAX_MESSAGE_SIZE,
        deadline,
    )
    .map_err(|e| refused(format!("no handshake from the master (refused?): {e}")))?;
    if header.handle != handles::BOOTSTRAP {
        return Err(refused("the first frame is not a handshake".into()));
    }
    let config = decode_config(&body)?;
    let side = Arc::new(Side::new(fd).map_err(|e| io("unix socket", e))?);
    let stream = Arc::new(Stream::new(
        "master".into(),
        side.clone(),
        side.clone(),
        true,
    ));
    stream.set_remote_id(MASTER_ID);
    let inner = RouterInner::start(
        config.id,
        config.name,
        vec![MASTER_ID],
        Some(stream.clone()),
        config.max_message_size as usize,
    )
    .map_err(|e| io("starting the broker", e))?;
    // The master tells us with DEL_ROUTE when one of its contexts goes, so
    // that calls waiting on it here fail at once.
    crate::core::route_control::install(&inner);
    inner
        .broker
        .add_stream(stream, FrameReader::new(inner.max_message_size, &[]));
    Ok(Client {
        inner,
        contexts: config.contexts,
        side,
    })
}

/// Connects a non-blocking socket to `path` by `deadline`: a listener whose
/// backlog is full makes `connect(2)` on a Unix socket wait (or, non-blocking,
/// fail with `EAGAIN`) rather than fail, so it is retried until then.
fn connect_by_path(path: &Path, deadline: Instant) -> std::io::Result<OwnedFd> {
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    let addr = SocketAddrUnix::new(path)?;
    loop {
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => return Ok(fd),
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(rustix::io::Errno::AGAIN) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the listener's backlog stayed full",
                ))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Decodes the body of the master's handshake frame.
fn decode_config(body: &[u8]) -> Result<ClientConfig> {
    postcard::from_bytes(body).map_err(|e| Error::decode("unix handshake", e))
}

/// [`decode_config`] for the fuzz targets: whether `body` decodes.
pub(crate) fn decode_config_for_fuzzing(body: &[u8]) -> bool {
    decode_config(body).is_ok()
}

impl Client {
    /// This client's context id (given by the master).
    pub fn id(&self) -> ContextId {
        self.inner.id
    }

    /// The master's contexts when this client connected: `(id, name)`.
    pub fn contexts(&self) -> &[(ContextId, String)] {
        &self.contexts
    }

    /// A handle on the master's context `id` (which may have been started
    /// after this client connected); calls through it fail with
    /// [`Error::Disconnected`] if it is gone.
    pub fn context(&self, id: ContextId) -> Context {
        let name = self
            .contexts
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, n)| n.clone())
            .unwrap_or_else(|| format!("context {id}"));
        Context::new(self.inner.clone(), id, &name, None)
    }

    /// The first context the master knew of under `name`.
    pub fn context_named(&self, name: &str) -> Option<Context> {
        self.contexts
            .iter()
            .find(|(_, n)| n == name)
            .map(|(id, _)| self.context(*id))
    }

    /// A channel whose receiver lives in this process.
    pub fn channel<T: Payload>(&self) -> (Sender<T>, Receiver<T>) {
        let rx = Receiver::new(self.inner.clone(), None);
        (rx.sender(), rx)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = rustix::net::shutdown(self.side.as_fd(), rustix::net::Shutdown::Both);
        self.inner.stop();
    }
}
