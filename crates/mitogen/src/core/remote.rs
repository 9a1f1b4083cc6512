//! Remote functions: the link-time registry and the calling convention.
//!
//! `#[mitogen::remote]` turns a function into a unit value implementing
//! [`RemoteFn`] (so calls are type-checked at the call site) and adds an entry to
//! a link-time table ([`linkme`]; nothing runs before `main`). A call carries the
//! function's full path and its postcard-encoded argument tuple; since every
//! context runs the same executable, the callee finds the same function under
//! the same name.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::{de::DeserializeOwned, Serialize};

use super::error::CallErrorKind;

/// A function that can be called in another context. Implemented by
/// `#[mitogen::remote]`; not meant to be implemented by hand.
pub trait RemoteFn: Copy + Send + Sync + 'static {
    /// The argument tuple, e.g. `(String, u32)`, or `()`.
    type Args: Serialize + DeserializeOwned + Send + 'static + IntoArgs<Self>;
    /// The success value (for a function returning `Result<T, E>`, `T`).
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// Full path of the function, unique in the program.
    const NAME: &'static str;
}

/// What a call of `F` accepts as its arguments: the argument tuple always
/// (`(a, b)`, `(a,)`, `()`); for a function of one argument, also the bare
/// value (`x` for `(x,)`), and for one `String` argument also a `&str`.
/// Implemented by `#[mitogen::remote]` for each function (keyed by the
/// function, so each function gets exactly the forms that fit it and a call
/// still infers its literals' types).
pub trait IntoArgs<F: RemoteFn> {
    /// The argument tuple.
    fn into_args(self) -> F::Args;
}

/// How a remote invocation failed, before it is given the context's name.
#[derive(Debug)]
pub struct Failure {
    /// How it failed.
    pub kind: CallErrorKind,
    /// The error message.
    pub message: String,
    /// The `source()` chain.
    pub chain: Vec<String>,
}

/// The result of running a registered function: its encoded output.
pub type Invoked = Result<Vec<u8>, Failure>;

/// One registered remote function.
pub struct RemoteEntry {
    /// Full path, as [`RemoteFn::NAME`].
    pub name: &'static str,
    /// Decodes the arguments, runs the function, encodes the result.
    pub invoke: fn(&[u8]) -> Invoked,
    /// Declared `#[mitogen::remote(concurrent)]`: may run beside other calls
    /// on the context's pool instead of in order on its main thread.
    pub concurrent: bool,
}

/// Every `#[mitogen::remote]` function linked into the program.
#[linkme::distributed_slice]
pub static REMOTE_FNS: [RemoteEntry];

/// Looks a function up by name.
pub(crate) fn lookup(name: &str) -> Option<&'static RemoteEntry> {
    static MAP: OnceLock<HashMap<&'static str, &'static RemoteEntry>> = OnceLock::new();
    MAP.get_or_init(|| REMOTE_FNS.iter().map(|e| (e.name, e)).collect())
        .get(name)
        .copied()
}

/// Decodes an argument tuple (used by generated code).
pub fn decode_args<A: DeserializeOwned>(name: &str, bytes: &[u8]) -> Result<A, Failure> {
    postcard::from_bytes(bytes).map_err(|e| Failure {
        kind: CallErrorKind::BadArguments,
        message: format!("arguments of {name} do not decode: {e}"),
        chain: Vec::new(),
    })
}

/// Encodes the output of an infallible function (used by generated code).
pub fn encode_ok<T: Serialize>(value: &T) -> Invoked {
    postcard::to_allocvec(value).map_err(|e| Failure {
        kind: CallErrorKind::Returned,
        message: format!("result does not encode: {e}"),
        chain: Vec::new(),
    })
}

/// Encodes the result of a fallible function (used by generated code).
pub fn encode_result<T: Serialize, E>(r: Result<T, E>) -> Invoked
where
    E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
{
    match r {
        Ok(v) => encode_ok(&v),
        Err(e) => {
            let e: Box<dyn std::error::Error + Send + Sync + 'static> = e.into();
            let mut chain = Vec::new();
            let mut src = e.source();
            while let Some(s) = src {
                chain.push(s.to_string());
                src = s.source();
            }
            Err(Failure {
                kind: CallErrorKind::Returned,
                message: e.to_string(),
                chain,
            })
        }
    }
}
