//! `ADD_ROUTE` and `DEL_ROUTE`: keeping every router on a path informed of the
//! contexts behind it.
//!
//! When the master starts a context through an intermediate (`via`), it first
//! tells every context on the path to the intermediate that the new id lives
//! behind the intermediate (`ADD_ROUTE`, accepted only from a parent), so the new
//! context's first messages already find their way. When a context goes away,
//! the router that saw its stream close tells its parent (`DEL_ROUTE`), and so on
//! up to the master; each router accepts a `DEL_ROUTE` from below only for
//! contexts inside the sender's own subtree (every router knows the parent of
//! each context below it: `ADD_ROUTE` names it), so a child can never make its
//! parent forget a sibling, a cousin or the parent itself.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::message::{handles, ContextId, Message, MASTER_ID};
use super::router::{Policy, RouterInner, Sink};

/// Body of `ADD_ROUTE`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct AddRoute {
    /// The new context.
    pub id: ContextId,
    /// The context it is (or will be) a child of.
    pub via: ContextId,
    /// Its name, for logs and errors.
    pub name: String,
}

/// Body of `DEL_ROUTE`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct DelRoute {
    /// Contexts that are gone.
    pub ids: Vec<ContextId>,
}

/// Tells context `to` that `id` is reachable through its route to `via`.
pub(crate) fn send_add_route(router: &RouterInner, to: ContextId, add: &AddRoute) {
    if let Ok(body) = postcard::to_allocvec(add) {
        router.send(Message {
            dst: to,
            handle: handles::ADD_ROUTE,
            body: Bytes::from(body),
            ..Default::default()
        });
    }
}

/// Tells context `to` (from above) or our parent (from below) that `ids` are gone.
pub(crate) fn send_del_route_to(router: &RouterInner, to: ContextId, ids: &[ContextId]) {
    if let Ok(body) = postcard::to_allocvec(&DelRoute { ids: ids.to_vec() }) {
        router.send(Message {
            dst: to,
            handle: handles::DEL_ROUTE,
            body: Bytes::from(body),
            ..Default::default()
        });
    }
}

/// Tells our parent that `ids` are gone.
pub(crate) fn send_del_route(router: &RouterInner, ids: &[ContextId]) {
    let parent = router.ancestors.first().copied().unwrap_or(MASTER_ID);
    send_del_route_to(router, parent, ids);
}

/// Installs both handlers.
pub(crate) fn install(router: &Arc<RouterInner>) {
    let weak = Arc::downgrade(router);
    router.add_handler_at(
        handles::ADD_ROUTE,
        Sink::Func(Arc::new(move |msg: Message| {
            let Some(router) = weak.upgrade() else { return };
            let add: AddRoute = match postcard::from_bytes(&msg.body) {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(src = msg.src, "undecodable ADD_ROUTE: {e}");
                    return;
                }
            };
            match router.route_to(add.via) {
                Some(stream) => {
                    router.add_route(add.id, &add.name, stream);
                    // Who the new context's parent is decides, later, whose
                    // DEL_ROUTE and replies may speak for it.
                    router.set_parent_of(add.id, add.via);
                }
                None => tracing::warn!(
                    id = add.id,
                    via = add.via,
                    "ADD_ROUTE through a context we do not route to"
                ),
            }
        })),
        None,
        false,
        Policy::ParentsOnly,
    );
    let weak = Arc::downgrade(router);
    router.add_handler_at(
        handles::DEL_ROUTE,
        Sink::Func(Arc::new(move |msg: Message| {
            let Some(router) = weak.upgrade() else { return };
            let del: DelRoute = match postcard::from_bytes(&msg.body) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(src = msg.src, "undecodable DEL_ROUTE: {e}");
                    return;
                }
            };
            let from_above = router.has_parent_authority(&msg);
            let ids: Vec<ContextId> = del
                .ids
                .into_iter()
                .filter(|id| {
                    // From below, only for contexts strictly inside the
                    // sender's subtree: a context that lost a child reports it,
                    // nothing else does.
                    let ok = from_above || (*id != msg.src && router.descends_from(*id, msg.src));
                    if !ok {
                        tracing::warn!(
                            src = msg.src,
                            id,
                            "refused DEL_ROUTE for a context not behind the sender"
                        );
                    }
                    ok
                })
                .collect();
            router.forget_routes(&ids, !from_above);
        })),
        None,
        false,
        Policy::Any,
    );
}
