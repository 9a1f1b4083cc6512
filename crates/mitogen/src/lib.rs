//! # mitogen
//!
//! A library for writing distributed self-replicating programs. A program using
//! it starts *contexts* (new processes of itself, locally now; over ssh and as
//! other users through sudo, su and doas as those methods land), ships itself there
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
//!     let free = child.call(disk_free, ("/".into(),))?;   // typed, checked at compile time
//!     let pending = child.call_async(disk_free, ("/tmp".into(),)); // pipelined
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
//!
//! The protocol (frame layout, handles, the bootstrap of a child) is described
//! in `docs/protocol.md` and in the [`core`] module docs.

#![warn(missing_docs)]

extern crate self as mitogen;

pub mod builtins;
pub(crate) mod child;
pub mod core;
mod entry;
/// Where the program's builds used to live; see [`core`].
#[doc(hidden)]
pub mod master {
    pub use crate::core::binary;
}
mod api;
pub mod methods;
pub mod parent;
pub mod target;
#[doc(hidden)]
pub mod testing;
pub mod unix;

pub use crate::core::call::{CallChain, PendingCall};
pub use crate::core::channel::{Receiver, Recv, Sender};
pub use crate::core::context::Context;
pub use crate::core::error::{CallError, CallErrorKind, Error, Result, TransportFailure};
pub use crate::core::latch::Latch;
pub use crate::core::message::ContextId;
pub use crate::core::payload::{Blob, Payload};
pub use crate::core::remote::RemoteFn;
pub use crate::core::secret::Secret;
pub use crate::core::select::{Select, Selectable};
pub use crate::core::signals::{Signal, Subscription};
pub use api::{ConnectOptions, Router, RouterBuilder};
pub use entry::{is_child, run};
pub use methods::doas::Doas;
pub use methods::local::Local;
pub use methods::ssh::Ssh;
pub use methods::su::Su;
pub use methods::sudo::Sudo;
pub use mitogen_macros::{main, remote};
pub use target::Target;

/// Items used by the code `#[mitogen::remote]` generates. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::core::remote::{
        decode_args, encode_ok, encode_result, Invoked, RemoteEntry, REMOTE_FNS,
    };
    pub use linkme;
}
