//! Starting a context through an intermediate one (`via`), for chains such as
//! laptop → bastion → host → sudo.
//!
//! The master allocates the new context's id, tells every context between
//! itself and the intermediate where that id lives (`ADD_ROUTE`), then asks the
//! intermediate to start the child with a call to [`connect_child`], which runs
//! the ordinary bootstrap there: the intermediate ships its *own* executable to
//! its child (the seed's `ModuleForwarder`), so the program crosses each link
//! once. If it fails, the routes are withdrawn and the error comes back typed,
//! naming the hop.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::context::Context;
use crate::core::error::{Error, Result, TransportFailure};
use crate::core::message::ContextId;
use crate::core::route_control::{self, AddRoute};
use crate::core::router::RouterInner;
use crate::methods::Method;

/// How starting a child in an intermediate went, in a form that crosses the
/// wire and turns back into the same [`Error`].
#[derive(Debug, Serialize, Deserialize)]
pub enum ConnectOutcome {
    /// The child is up.
    Ok,
    /// The transport failed ([`Error::Transport`]).
    Transport {
        /// The failure.
        kind: TransportFailure,
        /// What was observed.
        detail: String,
        /// The transport's stderr tail.
        stderr: String,
    },
    /// Any other failure, as text.
    Failed(String),
}

/// Runs in the intermediate: starts the child described by `method` with the
/// id the master chose.
#[crate::remote]
pub fn connect_child(method: Method, id: ContextId) -> ConnectOutcome {
    let Some(router) = crate::core::router::current_inner() else {
        return ConnectOutcome::Failed("no router in this context".into());
    };
    match method.connect(&router, Some(id)) {
        Ok(ctx) => {
            router.remember_child(ctx);
            ConnectOutcome::Ok
        }
        Err(Error::Transport {
            kind,
            detail,
            stderr,
            ..
        }) => ConnectOutcome::Transport {
            kind,
            detail,
            stderr,
        },
        Err(e) => ConnectOutcome::Failed(e.to_string()),
    }
}

/// The contexts strictly between the master and `via`, nearest the master first.
fn path_to(router: &RouterInner, via: ContextId) -> Vec<ContextId> {
    let mut path = Vec::new();
    let mut at = router.parent_of(via);
    while let Some(p) = at {
        if p == router.id {
            break;
        }
        path.push(p);
        at = router.parent_of(p);
    }
    path.reverse();
    path
}

/// Starts a context named `name` as a child of `via`.
pub(crate) fn connect_via(
    router: &Arc<RouterInner>,
    via: &Context,
    method: Method,
    name: &str,
    timeout: Duration,
) -> Result<Context> {
    let stream = router
        .route_to(via.id())
        .ok_or_else(|| Error::Disconnected {
            context: via.name().to_owned(),
            reason: "cannot start a child through a context that is gone".into(),
        })?;
    let id = router.alloc_context_id();
    router.add_route(id, name, stream);
    router.set_parent_of(id, via.id());
    let add = AddRoute {
        id,
        via: via.id(),
        name: name.to_owned(),
    };
    let path = path_to(router, via.id());
    for hop in &path {
        route_control::send_add_route(router, *hop, &add);
    }
    // The options may hold a password for the new hop: the request is marked
    // so that no hop leaves it in freed memory.
    let outcome = via.call_secret(connect_child, (method.named(name), id), timeout);
    let failure = match outcome {
        Ok(ConnectOutcome::Ok) => {
            return Ok(Context::new(router.clone(), id, name, None));
        }
        Ok(ConnectOutcome::Transport {
            kind,
            detail,
            stderr,
        }) => Error::Transport {
            context: name.to_owned(),
            kind,
            detail,
            stderr,
        },
        Ok(ConnectOutcome::Failed(reason)) => Error::Connect {
            context: name.to_owned(),
            reason,
        },
        Err(e) => e,
    };
    for hop in &path {
        route_control::send_del_route_to(router, *hop, &[id]);
    }
    router.forget_routes(&[id], false);
    Err(failure)
}
