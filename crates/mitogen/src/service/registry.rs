//! The link-time table of services, which `#[mitogen::service]` fills: for
//! each service its name, rules, invoker, pool size, constructor and exposed
//! methods. Every context runs the same executable, so a service named in a
//! call is found under the same name at the callee.

use std::any::Any;
use std::collections::HashMap;
use std::sync::OnceLock;

use crate::core::error::CallErrorKind;
use crate::core::remote::{Failure, Invoked};

use super::rule::Rule;

/// How a service runs the calls it is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invoker {
    /// Side by side, up to the service's number of threads (the default).
    Concurrent,
    /// One at a time, in the order they arrived (the original's
    /// `SerializedInvoker`).
    Serialized,
    /// Side by side, except that a call identical to one still running (the
    /// same method, the same encoded arguments) is not run again: it gets
    /// the answer of the one running (the original's `DeduplicatingInvoker`).
    Deduplicated,
}

/// A service instance, as the table holds it.
pub type Instance = Box<dyn Any + Send + Sync>;

/// One exposed method.
pub struct MethodEntry {
    /// Its name (the method's own).
    pub name: &'static str,
    /// Who may call it.
    pub rule: Rule,
    /// Decodes the arguments, runs the method on the instance, encodes the
    /// result.
    pub invoke: fn(&(dyn Any + Send + Sync), &[u8]) -> Invoked,
}

/// One service.
pub struct ServiceEntry {
    /// Full path of the type, as `Service::NAME`.
    pub name: &'static str,
    /// Who may start it by calling it while it is not running.
    pub start: Rule,
    /// How its calls run.
    pub invoker: Invoker,
    /// Most threads its calls run on at once.
    pub threads: usize,
    /// Builds the instance.
    pub new: fn() -> Result<Instance, Failure>,
    /// Its exposed methods.
    pub methods: &'static [MethodEntry],
}

impl ServiceEntry {
    /// The exposed method `name`.
    pub(crate) fn method(&self, name: &str) -> Option<&'static MethodEntry> {
        self.methods.iter().find(|m| m.name == name)
    }
}

/// Every `#[mitogen::service]` linked into the program.
#[linkme::distributed_slice]
pub static SERVICES: [ServiceEntry];

/// Looks a service up by name.
pub(crate) fn lookup(name: &str) -> Option<&'static ServiceEntry> {
    static MAP: OnceLock<HashMap<&'static str, &'static ServiceEntry>> = OnceLock::new();
    MAP.get_or_init(|| SERVICES.iter().map(|e| (e.name, e)).collect())
        .get(name)
        .copied()
}

/// What a service's constructor may return: the service, or a `Result` of
/// it (used by generated code).
pub trait Construct<S> {
    /// The instance, or why it could not be built.
    fn construct(self) -> Result<S, Failure>;
}

impl<S: super::Service> Construct<S> for S {
    fn construct(self) -> Result<S, Failure> {
        Ok(self)
    }
}

impl<S: super::Service, E> Construct<S> for Result<S, E>
where
    E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
{
    fn construct(self) -> Result<S, Failure> {
        self.map_err(|e| {
            let e: Box<dyn std::error::Error + Send + Sync + 'static> = e.into();
            let mut chain = Vec::new();
            let mut src = e.source();
            while let Some(s) = src {
                chain.push(s.to_string());
                src = s.source();
            }
            Failure {
                kind: CallErrorKind::Returned,
                message: format!("starting {} failed: {e}", S::NAME),
                chain,
            }
        })
    }
}

/// Boxes what a constructor returned (used by generated code).
pub fn instance<S: super::Service>(made: impl Construct<S>) -> Result<Instance, Failure> {
    made.construct().map(|s| Box::new(s) as Instance)
}

/// The instance as its own type; a mismatch (which generated code never
/// makes) is an error, not a panic (used by generated code).
pub fn downcast<S: super::Service>(svc: &(dyn Any + Send + Sync)) -> Result<&S, Failure> {
    svc.downcast_ref::<S>().ok_or_else(|| Failure {
        kind: CallErrorKind::BadArguments,
        message: format!("the instance is not a {}", S::NAME),
        chain: Vec::new(),
    })
}
