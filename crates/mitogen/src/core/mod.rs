//! The message bus every context runs: messages and their framing, the broker
//! thread, the router, and the waiting primitives.
//!
//! | module | concept (the original's name) |
//! |---|---|
//! | [`message`] | `Message`: header and body |
//! | [`side`] | `Side`: one non-blocking fd, disconnection as EOF (`io_op`) |
//! | [`stream`] | `Stream`: framing, `pending_bytes` |
//! | `reader` | reading a stream: reassembling frames, routing them |
//! | `cut_through` | relaying large frames by `splice(2)` as they arrive |
//! | `broker` | `Broker`, `Waker`, `Poller` (mio) |
//! | `router` | `Router`: handles, routes, authority |
//! | [`latch`] | `Latch` |
//! | `spin` | when a waiting thread polls before it sleeps |
//! | `channel`, `select` | `Receiver`, `Sender`, `Select` |
//! | `call`, `context` | `Context.call*`, `CallChain` |
//! | `remote` | what `#[mitogen::remote]` registers |
//! | `io_logger`, [`log`] | `IoLogger`, log forwarding, `PidfulStreamHandler` |
//! | [`signals`] | `Signals` (`listen`/`fire`): typed observer hooks |

pub mod binary;
pub(crate) mod broker;
pub(crate) mod call;
pub(crate) mod channel;
pub(crate) mod context;
pub(crate) mod cut_through;
pub(crate) mod detach;
pub(crate) mod error;
pub(crate) mod handshake;
pub(crate) mod io_logger;
pub mod latch;
pub mod log;
pub mod message;
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
