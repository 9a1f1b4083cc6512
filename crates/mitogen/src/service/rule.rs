//! Who may call a service's method, or start the service: the [`Rule`]s,
//! and the [`Caller`] they judge.

use std::cell::RefCell;
use std::fmt;

use crate::core::message::{ContextId, Message};
use crate::core::router::RouterInner;

/// Who a rule admits. Written in `#[expose(policy = …)]` and
/// `#[mitogen::service(start = …)]` as `parents`, `any` or the path of a
/// predicate `fn(&Caller) -> bool`.
#[derive(Clone, Copy)]
pub enum Rule {
    /// The context itself and its ancestors only: the callers that may
    /// already run any function here (the original's
    /// `has_parent_authority`). The default.
    Parents,
    /// Any context that can reach this one. The router's own rules still
    /// apply first: a context in another subtree reaches this one only when
    /// the master allows lateral messages.
    Any,
    /// Whoever the predicate admits.
    Predicate {
        /// The predicate as written in the attribute (named in refusals).
        name: &'static str,
        /// True for a caller that may call.
        admits: fn(&Caller) -> bool,
    },
}

impl Rule {
    /// True when the rule lets `caller` in.
    pub fn admits(&self, caller: &Caller) -> bool {
        match self {
            Rule::Parents => caller.has_parent_authority(),
            Rule::Any => true,
            Rule::Predicate { admits, .. } => admits(caller),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Parents => f.write_str("parents only (has_parent_authority)"),
            Rule::Any => f.write_str("any context"),
            Rule::Predicate { name, .. } => write!(f, "predicate `{name}`"),
        }
    }
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The context calling a service, as this context's router knows it: what
/// the rules judge, and what a method can ask with [`caller`].
///
/// Everything here comes from the router, never from the caller's own word:
/// the source of a message is checked against the stream it came on at every
/// hop, and its authority is assigned by the receiving router.
#[derive(Clone, Debug)]
pub struct Caller {
    id: ContextId,
    name: String,
    parent_authority: bool,
    descendant: bool,
}

impl Caller {
    /// The caller of `msg`, arriving at `router`.
    pub(crate) fn of(router: &RouterInner, msg: &Message) -> Caller {
        Caller {
            id: msg.src,
            name: router.name_of(msg.src),
            parent_authority: router.has_parent_authority(msg),
            // Contexts below this one are exactly those it has a route to
            // (the parent is reached by default, without one).
            descendant: msg.src != router.id && router.route_to(msg.src).is_some(),
        }
    }

    /// The caller's context id (the master is 0).
    pub fn id(&self) -> ContextId {
        self.id
    }

    /// The caller's name as this context knows it (its own name for
    /// contexts below this one, `context N` for others).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True when the caller is this context or one of its ancestors (or a
    /// process acting for one of them): it could run any function here.
    pub fn has_parent_authority(&self) -> bool {
        self.parent_authority
    }

    /// True when the caller lives below this context (a child, a
    /// grandchild, …).
    pub fn is_descendant(&self) -> bool {
        self.descendant
    }
}

thread_local! {
    /// The caller of the service method running on this thread.
    static CURRENT: RefCell<Option<Caller>> = const { RefCell::new(None) };
}

/// The context that called the service method running on this thread;
/// `None` outside a service method.
pub fn caller() -> Option<Caller> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Makes `caller` this thread's caller until the guard is dropped.
pub(crate) fn enter(caller: Caller) -> CallerGuard {
    CURRENT.with(|c| *c.borrow_mut() = Some(caller));
    CallerGuard(())
}

/// Clears the thread's caller when dropped (also on a panic).
pub(crate) struct CallerGuard(());

impl Drop for CallerGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| *c.borrow_mut() = None);
    }
}
