//! What happens when a stream to a child or the parent goes: everything
//! waiting on a context behind it fails at once, the routes through it are
//! forgotten, and the parent hears of it (`DEL_ROUTE`), up to the master.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{RouterInner, Sink};
use crate::core::message::{ContextId, Message};
use crate::core::stream::Stream;

impl RouterInner {
    /// Called by the broker when `stream` has disconnected.
    pub(crate) fn on_disconnect(self: Arc<Self>, stream: &Arc<Stream>) {
        let gone: Vec<ContextId> = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, s)| Arc::ptr_eq(s, stream))
            .map(|(id, _)| *id)
            .collect();
        tracing::debug!(stream = %stream.name(), contexts = ?gone, "stream disconnected");
        // Ancestors above us route to these contexts through us: tell them.
        self.forget_routes(&gone, !stream.is_parent);
        if stream.is_parent {
            // Every context not below us was reached through the parent: all
            // of them are out of reach now, and whoever waits on one must
            // hear it (a unix client, or a child still finishing its work).
            let above: Vec<ContextId> = {
                let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
                let handles = self.lock_handles();
                let mut ids: Vec<ContextId> = handles
                    .values()
                    .filter_map(|e| e.respondent)
                    .filter(|r| !routes.contains_key(r))
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                ids
            };
            self.forget_routes(&above, false);
            let hook = self
                .parent_lost
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(f) = hook {
                f();
            }
        }
    }

    /// Drops the routes to `gone`: every waiter on them fails at once, their
    /// disconnect latches close, and (with `tell_parent`) our parent hears of it
    /// so the whole path up to the master forgets them too.
    pub(crate) fn forget_routes(&self, gone: &[ContextId], tell_parent: bool) {
        if gone.is_empty() {
            return;
        }
        let removed: Vec<ContextId> = {
            let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
            let removed = gone
                .iter()
                .copied()
                .filter(|id| routes.remove(id).is_some())
                .collect();
            self.route_count.store(routes.len(), Ordering::Release);
            removed
        };
        {
            let mut parents = self.parents.lock().unwrap_or_else(|e| e.into_inner());
            for id in gone {
                parents.remove(id);
            }
        }
        {
            let mut clients = self.unix_clients.write().unwrap_or_else(|e| e.into_inner());
            for id in gone {
                clients.remove(id);
            }
        }
        if tell_parent && self.parent.is_some() {
            crate::core::route_control::send_del_route(self, gone);
        }
        // Unix clients reach our contexts through us, not below us: nobody
        // else would tell them that one is gone.
        let clients: Vec<ContextId> = self
            .unix_clients
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .filter(|c| !gone.contains(c))
            .collect();
        for c in clients {
            crate::core::route_control::send_del_route_to(self, c, gone);
        }
        let mut newly_gone = Vec::new();
        for id in gone {
            let latch = self.disconnect_latch(*id);
            if !latch.is_closed() {
                newly_gone.push(*id);
            }
            latch.close("disconnected");
        }
        let mut dead = Vec::new();
        self.lock_handles().retain(|handle, e| match e.respondent {
            Some(r) if gone.contains(&r) => {
                dead.push((*handle, r, e.sink.clone()));
                false
            }
            _ => true,
        });
        for (handle, r, sink) in dead {
            let msg = Message::disconnected(self.id, r, handle, &self.disconnect_reason(r));
            match sink {
                Sink::Latch(l) => {
                    l.put(msg);
                }
                Sink::Channel(home) => {
                    home.latch().put(msg);
                }
                Sink::Func(f) => f(msg),
            }
        }
        // Hooks last: by now every waiter on these contexts has failed, so an
        // observer sees the same state a caller would.
        for id in removed {
            self.signals.route_removed.fire(&id);
        }
        for id in newly_gone {
            self.signals.disconnect.fire(&(id, self.name_of(id)));
        }
        // What nothing holds on to any more is forgotten: these contexts
        // unless a handle on them is still held, and any held earlier whose
        // last holder was dropped while another thread looked at it.
        self.prune_gone(None);
    }
}
