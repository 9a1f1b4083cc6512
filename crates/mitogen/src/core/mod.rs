//! The message bus every context runs, on every hop: messages and their
//! framing, the broker thread, the router, the waiting primitives, calls and
//! channels, and what both ends of a connection share (the handshake, the
//! builds of the program, watching child processes).
//!
//! It imports nothing above it: the layers that start contexts (`api/`,
//! `methods/`, `parent/`) and the child's main loop (`child/`) reach it, never
//! the other way round. Where core needs to tell them something it calls a
//! trait object they installed (`router::ContextHooks`,
//! `handshake::Prompts`). The module is private: the types a program uses are
//! re-exported at the crate root.
//!
//! # Where each concept of the original lives
//!
//! Paths are from `crates/mitogen/src/`.
//!
//! | the original (Python) | here |
//! |---|---|
//! | `Message` | `core/message.rs`: [`Message`](message::Message), header layout, the built-in handles |
//! | `Side`, `io_op`, `set_block`, `set_cloexec`, `set_nonblock`, `create_socketpair` | `core/side.rs` |
//! | `BasicStream` / `Stream`, `pending_bytes`, `CHUNK_SIZE` | `core/stream.rs` (+ `stream/`: what leads to a context, the transmit queue); reading and reassembling frames in `core/reader.rs`; relaying large frames by `splice(2)` in `core/cut_through.rs` |
//! | `Broker`, `Waker`, `Poller` / `EpollPoller` / `KqueuePoller` | `core/broker.rs` (mio's poller) |
//! | `Router` (`mitogen.core`): handles, routes, `has_parent_authority` | `core/router.rs` (`RouterInner`, `Policy::ParentsOnly`; `router/`: routing, disconnection, the log budget) |
//! | `Router` (`mitogen.parent`): `local()`, `ssh()`, `sudo()`, ... | `api/router.rs`: the public `Router` |
//! | `RouteMonitor` (`ADD_ROUTE`, `DEL_ROUTE`) | `core/route_control.rs` |
//! | `Latch` | `core/latch.rs` |
//! | `Receiver`, `Sender`, `Channel` | `core/channel.rs` |
//! | `Select` | `core/select.rs` |
//! | `Context`, `Context.call*`, `CallChain`, `CallError` | `core/context.rs`, `core/call.rs`, `core/error.rs` |
//! | `FileService`, `PushFileService` | `files/` above core (push, fetch, fan-out); only its error, `core/file_error.rs`, is here, so that `Error` can carry it |
//! | (a caller giving up on a call) | `core/cancel.rs`: `CancelToken`, `cancelled()` |
//! | `Blob`, `Secret` | `core/payload.rs`, `core/secret.rs` |
//! | the functions a context may call (`@mitogen.core.takes_econtext`, ...) | `core/remote.rs`: what `#[mitogen::remote]` registers |
//! | `Dispatcher`, `ExternalContext` (the child's main loop) | `child/dispatch.rs`, `child/mod.rs` |
//! | `ExternalContext` detach | `core/detach.rs` |
//! | `IoLogger` | `core/io_logger.rs` |
//! | log forwarding, `PidfulStreamHandler` | `core/log.rs` |
//! | Signals (`listen`/`fire`) | `core/signals.rs`: typed hooks |
//! | `ProcessMonitor` | `core/process_monitor.rs` |
//! | `discard_until`, `iter_read`, `write_all` (bootstrap, with deadlines) | `core/handshake.rs` |
//! | `Importer`, `ModuleResponder`, `ModuleForwarder`, `get_child_modules` | `core/binary.rs` (the builds a router ships), `parent/first_stage.rs` (the upload), `child/cache.rs` (the cache at each hop) |
//! | `create_child`, `tty_create_child`, `hybrid_tty_create_child` | `parent/spawn.rs`, `parent/pty.rs`; password prompts in `parent/prompt.rs` |
//! | `fork.Stream`, `ssh.Stream`, `sudo.Stream`, `su.Stream`, `doas.Stream` | `methods/local.rs`, `ssh.rs`, `sudo.rs`, `su.rs`, `doas.rs` |
//! | `via=` | `parent/via.rs` |
//! | `unix.Listener`, `unix.connect` | `unix.rs` |
//! | `mitogen.main` | `entry.rs` (`run`), `#[mitogen::main]` in `crates/mitogen-macros` |
//!
//! Modules of core without an original: `spin` (when a waiting thread polls
//! before it sleeps), `token` (unguessable handle numbers). What differs
//! between operating systems is below core, in `sys/`.

pub mod binary;
pub(crate) mod broker;
pub(crate) mod call;
pub(crate) mod cancel;
pub(crate) mod channel;
pub(crate) mod context;
pub(crate) mod cut_through;
pub(crate) mod detach;
pub(crate) mod error;
pub(crate) mod file_error;
pub(crate) mod handshake;
pub(crate) mod int_hash;
pub(crate) mod io_logger;
pub mod latch;
pub mod log;
pub mod message;
pub(crate) mod packed;
pub(crate) mod payload;
pub(crate) mod process_monitor;
pub(crate) mod reader;
pub mod remote;
pub(crate) mod route_control;
pub(crate) mod router;
pub(crate) mod secret;
pub(crate) mod select;
pub mod side;
pub mod signals;
pub(crate) mod spin;
pub mod stream;
pub(crate) mod token;
