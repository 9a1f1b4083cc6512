//! Joining a running master from another process (the seed's `mitogen.unix`).
//!
//! [`Router::listen`](crate::Router::listen) binds a Unix socket (mode 0600)
//! and serves it on a thread of its own. Another process of the same user
//! calls [`connect`] and gets a [`Client`]: a small router whose parent is
//! the master, holding [`Context`]s for the contexts the master has. Calls and
//! channels from the client then travel through the master's router like the
//! master's own.
//!
//! Security: a client acts with the master's authority (it may run code in
//! every context, as the master may), so only processes of the master's own
//! user are accepted: the socket is created 0600 before it listens, and every
//! connection's peer credentials (`SO_PEERCRED`) are checked, whatever the
//! file's mode. A process of the same user could attach a debugger to the
//! master anyway, so this grants nothing that user did not have.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::core::channel::{Receiver, Sender};
use crate::core::context::Context;
use crate::core::error::{Error, Result};
use crate::core::message::{handles, ContextId, Message, MASTER_ID};
use crate::core::payload::Payload;
use crate::core::router::RouterInner;
use crate::core::side::Side;
use crate::core::stream::{FrameReader, Stream};
use crate::parent::bootstrap;

/// How long either side waits for the other during the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
/// (clients already connected stay connected).
#[derive(Debug)]
pub struct Listener {
    path: PathBuf,
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
        let _ = std::fs::remove_file(&self.path);
    }
}

fn io(what: &str, e: impl Into<std::io::Error>) -> Error {
    Error::io(what.to_owned(), e.into())
}

/// Binds `path` (0600 before anyone can connect) and starts accepting.
pub(crate) fn listen(router: &Arc<RouterInner>, path: &Path) -> Result<Listener> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(|e| io("creating a unix socket", e))?;
    let addr = SocketAddrUnix::new(path).map_err(|e| io("unix socket path", e))?;
    rustix::net::bind(&fd, &addr).map_err(|e| io(&format!("binding {}", path.display()), e))?;
    // Nobody can connect before `listen`, so the mode is right from the first
    // connection on.
    let ready = rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(0o600))
        .and_then(|()| rustix::net::listen(&fd, 64));
    if let Err(e) = ready {
        let _ = std::fs::remove_file(path);
        return Err(io(&format!("listening on {}", path.display()), e));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let weak = Arc::downgrade(router);
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("mitogen-unix".into())
        .spawn(move || accept_loop(fd, weak, stop2))
        .map_err(|e| io("starting the unix listener thread", e))?;
    Ok(Listener {
        path: path.to_owned(),
        stop,
        thread: Some(thread),
    })
}

fn accept_loop(fd: OwnedFd, router: std::sync::Weak<RouterInner>, stop: Arc<AtomicBool>) {
    let ts = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: ACCEPT_POLL.as_nanos() as i64,
    };
    while !stop.load(Ordering::Acquire) {
        let mut pfd = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        if !matches!(rustix::event::poll(&mut pfd, Some(&ts)), Ok(n) if n > 0) {
            continue;
        }
        let client = match rustix::net::accept_with(&fd, rustix::net::SocketFlags::CLOEXEC) {
            Ok(c) => c,
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => continue,
            Err(e) => {
                tracing::warn!("unix listener: accept failed: {e}");
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
        };
        let Some(router) = router.upgrade() else {
            return;
        };
        if router.is_shut_down() {
            return;
        }
        if let Err(e) = admit(&router, client) {
            tracing::warn!("unix listener: client refused: {e}");
        }
    }
}

/// Checks a new connection's user, tells it its id and the contexts there
/// are, and adds it to the router as a client acting for the master.
fn admit(router: &Arc<RouterInner>, fd: OwnedFd) -> std::result::Result<(), String> {
    let cred =
        rustix::net::sockopt::socket_peercred(&fd).map_err(|e| format!("SO_PEERCRED: {e}"))?;
    let me = rustix::process::getuid();
    if cred.uid != me {
        return Err(format!(
            "pid {} runs as uid {}, not {} like this master",
            cred.pid.as_raw_nonzero(),
            cred.uid.as_raw(),
            me.as_raw()
        ));
    }
    let id = router.alloc_context_id();
    let name = format!("unix:{}", cred.pid.as_raw_nonzero());
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
    bootstrap::write_all(fd.as_fd(), &frame, Instant::now() + HANDSHAKE_TIMEOUT)
        .map_err(|e| format!("handshake: {e}"))?;
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

/// Connects to the master listening at `path`.
pub fn connect(path: impl AsRef<Path>) -> Result<Client> {
    let path = path.as_ref();
    let stream = std::os::unix::net::UnixStream::connect(path)
        .map_err(|e| io(&format!("connecting to {}", path.display()), e))?;
    let fd = OwnedFd::from(stream);
    let (header, body) = bootstrap::read_frame(
        fd.as_fd(),
        crate::core::message::DEFAULT_MAX_MESSAGE_SIZE,
        Instant::now() + HANDSHAKE_TIMEOUT,
    )
    .map_err(|e| Error::Connect {
        context: path.display().to_string(),
        reason: format!("no handshake from the master (refused?): {e}"),
    })?;
    if header.handle != handles::BOOTSTRAP {
        return Err(Error::Connect {
            context: path.display().to_string(),
            reason: "the first frame is not a handshake".into(),
        });
    }
    let config: ClientConfig =
        postcard::from_bytes(&body).map_err(|e| Error::decode("unix handshake", e))?;
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
