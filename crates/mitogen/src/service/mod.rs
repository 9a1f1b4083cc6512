//! Services: typed, named objects living in a context, whose methods other
//! contexts call under a rule of who may (the original's `Service`, `Pool`,
//! `@expose`, `@arg_spec`, `SerializedInvoker`, `DeduplicatingInvoker`).
//!
//! ```no_run
//! use std::collections::HashMap;
//! use std::sync::Mutex;
//!
//! /// A cache any context of the tree may read, and only parents may fill.
//! #[derive(Default)]
//! struct Cache {
//!     entries: Mutex<HashMap<String, String>>,
//! }
//!
//! #[mitogen::service]
//! impl Cache {
//!     /// Anyone may read.
//!     #[expose(policy = any)]
//!     fn get(&self, key: String) -> Option<String> {
//!         self.entries.lock().unwrap().get(&key).cloned()
//!     }
//!
//!     /// Only this context's ancestors may write (the default rule).
//!     #[expose]
//!     fn put(&self, key: String, value: String) {
//!         self.entries.lock().unwrap().insert(key, value);
//!     }
//! }
//!
//! # fn demo(router: mitogen::Router) -> mitogen::Result<()> {
//! let child = router.local()?;
//! let cache = child.service::<Cache>();         // nothing sent yet
//! cache.call(Cache::put, ("motd".into(), "hello".into()))?; // starts it, then calls
//! assert_eq!(cache.call(Cache::get, "motd")?.as_deref(), Some("hello"));
//! let pending = cache.call_async(Cache::get, "motd"); // a PendingCall, as for functions
//! # drop(pending); Ok(()) }
//! ```
//!
//! # What a service is
//!
//! * `#[mitogen::service]` goes on an `impl` block of a type that is `Send +
//!   Sync` (its methods run on several threads at once unless the invoker
//!   is `serialized`: keep state behind a `Mutex` or atomics). Each
//!   `#[expose]` method takes `&self` and owned `serde` arguments and
//!   returns a `serde` value, or a `Result` whose error comes back as a
//!   [`CallError`](crate::CallError), as for `#[mitogen::remote]`.
//! * `Cache::get` is then an [`Exposed`] value that names the method and its
//!   argument and result types, so a call is checked at compile time; the
//!   method itself stays callable in this process through the generated
//!   trait `CacheExposed` (`cache.get(key)` where the trait is in scope,
//!   as it is in the module of the `impl`).
//!   Arguments of the wrong type, or a method of another service, do not
//!   compile:
//!
//!   ```compile_fail
//!   # #[derive(Default)] struct Cache;
//!   # #[mitogen::service] impl Cache {
//!   #     #[expose] fn get(&self, key: String) -> Option<String> { None }
//!   # }
//!   # fn demo(ctx: &mitogen::Context) -> mitogen::Result<()> {
//!   ctx.service::<Cache>().call(Cache::get, 42u32)?; // not a String
//!   # Ok(()) }
//!   ```
//! * The service is built (with `Default`, or `new = path` naming a
//!   `fn() -> Self` or `fn() -> Result<Self, E>`) in the context where it is
//!   first called, by a caller its start rule admits, and lives as long as
//!   the context.
//!
//! # Rules
//!
//! Each exposed method has a [`Rule`]: `#[expose]` or `#[expose(policy =
//! parents)]` (the context itself and its ancestors: the callers that may
//! run any function there anyway), `#[expose(policy = any)]` (any context
//! that reaches this one), or `#[expose(policy = path::to::predicate)]`, a
//! `fn(&Caller) -> bool` over the [`Caller`] (its id, whether it has parent
//! authority, whether it lives below this context). The service's start
//! rule (`#[mitogen::service(start = …)]`, parents by default) says who may
//! start it by calling it while it is not running. Rules are judged as the
//! call arrives, on the router's thread, before anything is queued: a
//! predicate must be quick and must not block.
//!
//! # Where calls run
//!
//! Each service has its own threads, up to `threads = N` (4 by default),
//! started as calls need them: a long call of a service blocks neither the
//! functions called on the context's main thread nor the calls of other
//! services. The invoker says how calls share those threads:
//! `invoker = concurrent` (the default), `serialized` (one at a time, in
//! arrival order) or `deduplicated` (a call identical to one running, same
//! method and same encoded arguments, waits for that one's answer instead of
//! running again). A panic in a method is the call's error; the threads go
//! on serving.
//!
//! See `docs/services.md` for what a hostile context can and cannot do with
//! a service.

mod answer;
mod call;
mod host;
mod pool;
mod registry;
mod rule;

use std::marker::PhantomData;

pub use call::ServiceRef;
pub use registry::Invoker;
pub use rule::{caller, Caller, Rule};

pub(crate) use host::install;

/// A type made a service by `#[mitogen::service]`; not meant to be
/// implemented by hand.
pub trait Service: Send + Sync + Sized + 'static {
    /// Full path of the type, unique in the program (what a call names).
    const NAME: &'static str;
}

/// An exposed method of the service `S`, taking the argument tuple `A` and
/// returning `R`: what `#[mitogen::service]` makes of each `#[expose]`
/// method (`Cache::get`), and what [`ServiceRef::call`] takes.
pub struct Exposed<S, A, R> {
    name: &'static str,
    _sig: PhantomData<fn(&S, A) -> R>,
}

impl<S, A, R> Exposed<S, A, R> {
    /// The method named `name` (used by generated code).
    #[doc(hidden)]
    pub const fn new(name: &'static str) -> Self {
        Exposed {
            name,
            _sig: PhantomData,
        }
    }

    /// The method's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl<S, A, R> Clone for Exposed<S, A, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S, A, R> Copy for Exposed<S, A, R> {}

impl<S, A, R> std::fmt::Debug for Exposed<S, A, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Exposed({})", self.name)
    }
}

/// What a service call accepts as the argument tuple `A`: the tuple itself
/// (`(a, b)`, `(a,)`, `()`), for a method of one argument also the bare
/// value, and for one `String` argument also a `&str` (as [`IntoArgs`]
/// does for remote functions).
///
/// [`IntoArgs`]: crate::IntoArgs
pub trait MethodArgs<A> {
    /// The argument tuple.
    fn into_args(self) -> A;
}

impl<A> MethodArgs<A> for A {
    fn into_args(self) -> A {
        self
    }
}

impl<T> MethodArgs<(T,)> for T {
    fn into_args(self) -> (T,) {
        (self,)
    }
}

impl MethodArgs<(String,)> for &str {
    fn into_args(self) -> (String,) {
        (self.to_owned(),)
    }
}

/// An argument tuple whose last element is a [`Sender`](crate::Sender):
/// what [`ServiceRef::stream`] splits into the other arguments and the
/// channel it makes.
pub trait EndsWithSender {
    /// The arguments before the sender.
    type Rest;
    /// What the sender sends.
    type Item;
    /// The whole tuple.
    fn join(rest: Self::Rest, sender: crate::Sender<Self::Item>) -> Self;
}

macro_rules! ends_with_sender {
    ($( ($($a:ident),*) )*) => {
        $(
            impl<$($a,)* T> EndsWithSender for ($($a,)* crate::Sender<T>,) {
                type Rest = ($($a,)*);
                type Item = T;
                #[allow(non_snake_case)]
                fn join(($($a,)*): Self::Rest, sender: crate::Sender<T>) -> Self {
                    ($($a,)* sender,)
                }
            }
        )*
    };
}
ends_with_sender! { () (A) (A, B) (A, B, C) (A, B, C, D) (A, B, C, D, E) }

/// Items used by the code `#[mitogen::service]` generates. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use super::registry::{downcast, instance, Instance, MethodEntry, ServiceEntry, SERVICES};
}
