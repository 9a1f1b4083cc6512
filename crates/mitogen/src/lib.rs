//! # mitogen
//!
//! A library for writing distributed self-replicating programs. A program using
//! it starts *contexts* (new processes of itself: locally, over ssh, as other
//! users through sudo, su and doas, and chains of those), ships itself there
//! with nothing installed on the far side but a POSIX shell, and then calls its
//! own functions in them, with typed arguments and results, over one
//! multiplexed connection per hop.
//!
//! ```no_run
//! /// Runs in whichever context it is called in.
//! #[mitogen::remote]
//! fn disk_free(path: String) -> std::io::Result<u64> {
//!     let st = rustix::fs::statvfs(path.as_str())?;
//!     Ok(st.f_bavail * st.f_frsize)
//! }
//!
//! #[mitogen::main]
//! fn main(router: mitogen::Router) -> Result<(), mitogen::Error> {
//!     let child = router.local()?;                        // same executable, new process
//!     let free = child.call(disk_free, "/")?;             // typed, checked at compile time
//!     let pending = child.call_async(disk_free, "/tmp");  // pipelined
//!     println!("{free} {}", pending.get()?);
//!     Ok(())
//! }
//! ```
//!
//! * [`#[mitogen::main]`](main) (or [`run`]) decides before any user code runs
//!   whether the process is the master or a child; a child serves calls instead
//!   of running `main`.
//! * [`#[mitogen::remote]`](remote) makes a function callable in other contexts.
//!   Arguments and result are `serde` types; a function returning `Result` sends
//!   its error back as a [`CallError`], and so does a panic.
//! * [`Context::call`], [`Context::call_async`] (also a `Future`),
//!   [`Context::call_no_reply`] and [`CallChain`] cover blocking, async and
//!   pipelined use; [`Sender`]/[`Receiver`] stream values between contexts.
//!   A function of one argument takes it bare or in a tuple ([`IntoArgs`]);
//!   dropping a [`PendingCall`] cancels the call ([`cancelled`]).
//!
//! * [`#[mitogen::service]`](macro@service) makes a type a service: an object
//!   living in a context whose methods other contexts call under a rule of
//!   who may, on the service's own threads (see [`service`](mod@service)).
//!
//! * [`Router::connect`] takes a [`Target`] (`"deploy@web1/sudo:app"`), or
//!   [`Router::start`] one method at a time: [`Local`], [`Ssh`], [`Sudo`],
//!   [`Su`], [`Doas`], each a builder of its options.
//!
//! The protocol (frame layout, handles, the bootstrap of a child) is described
//! in `docs/protocol.md`.
//!
//! # Where things live
//!
//! Dependencies point down: each folder uses only those below it.
//!
//! | module | what it holds |
//! |---|---|
//! | [`files`] | pushing and fetching files and trees between contexts ([`Context::push`], [`Context::fetch`], [`files::push_all`]) |
//! | `api/` | the public [`Router`] a program holds: builder, connect options, the hops `connect` shares, every method of starting a context |
//! | `methods/` | one file per connection method: its options and how it starts ([`Local`], [`Ssh`], [`Sudo`], [`Su`], [`Doas`]) |
//! | `target.rs` | [`Target`]: a chain of hops written as text |
//! | `parent/` | starting a child: spawn, first stage, pty and password prompts, connecting through another context |
//! | `child/` | what a child runs: the handshake's far side, the call dispatcher, its cache of builds |
//! | [`service`](mod@service) | services: objects living in a context, their methods called by other contexts under a rule ([`#[mitogen::service]`](macro@service)) |
//! | [`unix`] | other processes of the same user joining a router over a unix socket |
//! | `entry.rs` | [`run`]/[`main`]: master or child, decided before user code |
//! | [`builtins`] | remote functions every program has |
//! | `core/` | the message bus every context runs, on every hop: messages, streams, the broker, the router, channels, calls, the handshake, process watching, the builds to ship (its `mod.rs` maps each concept of the original to its module) |
//!
//! Only what a program uses is public, at the root; the rest is private to the
//! crate (the `testing` module opens a few internals to the crate's own tests
//! and fuzz targets, and is not an API).

#![warn(missing_docs)]

extern crate self as mitogen;

mod api;
pub mod builtins;
mod child;
mod core;
mod entry;
pub mod files;
mod methods;
mod parent;
pub mod service;
mod sys;
mod target;
#[doc(hidden)]
pub mod testing;
pub mod unix;

pub use crate::api::IntoTarget;
pub use crate::api::{ConnectOptions, Router, RouterBuilder};
pub use crate::core::call::{CallChain, PendingCall};
pub use crate::core::cancel::{cancelled, CancelToken};
pub use crate::core::channel::{Receiver, Recv, Sender, DEFAULT_WINDOW};
pub use crate::core::context::Context;
pub use crate::core::error::{CallError, CallErrorKind, Error, Result, TransportFailure};
pub use crate::core::file_error::{FileError, FileErrorKind};
pub use crate::core::log::log_dir_layer;
pub use crate::core::message::{ContextId, FrameError};
pub use crate::core::payload::{Blob, Payload};
pub use crate::core::remote::{IntoArgs, RemoteFn};
pub use crate::core::secret::Secret;
pub use crate::core::select::{Select, Selectable};
pub use crate::core::signals::Subscription;
pub use crate::methods::SshReuse;
pub use crate::methods::{
    Buildah, ContainerHop, Docker, Engine, Exec, Kubectl, Lxc, Lxd, LxdClient, Machinectl,
};
pub use crate::methods::{Chroot, Leader, Setns, TreeDev, TreeProc};
pub use crate::methods::{Doas, HostKeyPolicy, Local, Method, Ssh, Su, Sudo};
pub use crate::parent::first_stage::Compression;
pub use crate::target::{Hop, Target};
pub use entry::{is_child, run};
pub use mitogen_macros::{main, remote, service};

/// Items used by the code `#[mitogen::remote]` generates. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::core::remote::{
        decode_args, encode_ok, encode_result, Failure, Invoked, RemoteEntry, REMOTE_FNS,
    };
    pub use linkme;
}
