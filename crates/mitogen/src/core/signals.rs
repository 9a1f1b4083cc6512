//! Typed observer hooks (the seed's `Signals`: `listen`/`fire`).
//!
//! A [`Signal`] keeps a list of observers; [`Signal::connect`] adds one and
//! returns a [`Subscription`] that removes it again when dropped, so an
//! observer never outlives the code that registered it by accident (call
//! [`Subscription::forever`] to keep it for the life of the router).
//!
//! Observers run on the thread that fires the signal, most often the broker
//! thread: they must return quickly and must not wait for anything a context
//! sends (a blocking call from an observer would stall the very thread that
//! delivers its reply). Hand work to another thread or a channel instead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

type Observer<A> = Arc<dyn Fn(&A) + Send + Sync>;

/// A list of observers of events carrying an `A`.
pub struct Signal<A> {
    next: AtomicU64,
    observers: Mutex<Vec<(u64, Observer<A>)>>,
}

impl<A> Default for Signal<A> {
    fn default() -> Self {
        Signal {
            next: AtomicU64::new(1),
            observers: Mutex::new(Vec::new()),
        }
    }
}

impl<A: 'static> std::fmt::Debug for Signal<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signal")
            .field("observers", &self.lock().len())
            .finish()
    }
}

/// What a [`Subscription`] needs to undo itself, whatever the signal's type.
trait Unsubscribe: Send + Sync {
    fn remove(&self, id: u64);
}

impl<A: 'static> Unsubscribe for Signal<A> {
    fn remove(&self, id: u64) {
        self.lock().retain(|(i, _)| *i != id);
    }
}

impl<A: 'static> Signal<A> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Observer<A>)>> {
        self.observers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `f`; it is called on every [`fire`](Self::fire) until the returned
    /// subscription is dropped.
    pub fn connect(self: &Arc<Self>, f: impl Fn(&A) + Send + Sync + 'static) -> Subscription {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().push((id, Arc::new(f)));
        let weak: Weak<dyn Unsubscribe> = Arc::downgrade(self) as Weak<dyn Unsubscribe>;
        Subscription {
            signal: Some(weak),
            id,
        }
    }

    /// Calls every observer with `arg`. The list is copied first, so an
    /// observer may connect or drop subscriptions without deadlocking.
    pub fn fire(&self, arg: &A) {
        let observers: Vec<Observer<A>> = self.lock().iter().map(|(_, f)| f.clone()).collect();
        for f in observers {
            f(arg);
        }
    }

    /// True when nobody observes the signal (firing would do nothing).
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// An observer's registration; dropping it unregisters the observer.
#[must_use = "dropping a Subscription unregisters the observer at once"]
pub struct Subscription {
    signal: Option<Weak<dyn Unsubscribe>>,
    id: u64,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .finish()
    }
}

impl Subscription {
    /// Keeps the observer registered for as long as the signal exists.
    pub fn forever(mut self) {
        self.signal = None;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(s) = self.signal.take().and_then(|w| w.upgrade()) {
            s.remove(self.id);
        }
    }
}

/// The router's hooks.
#[derive(Default)]
pub(crate) struct RouterSignals {
    /// A context became unreachable: `(id, name)`, once per context.
    pub disconnect: Arc<Signal<(u32, String)>>,
    /// A route to a context below this router was recorded: `(id, name)`.
    pub route_added: Arc<Signal<(u32, String)>>,
    /// A route was forgotten: the context's id.
    pub route_removed: Arc<Signal<u32>>,
    /// The router began shutting down.
    pub shutdown: Arc<Signal<()>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn dropping_the_subscription_unregisters() {
        let s: Arc<Signal<u32>> = Arc::default();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let sub = s.connect(move |v| {
            h.fetch_add(*v as usize, Ordering::Relaxed);
        });
        s.fire(&2);
        drop(sub);
        s.fire(&3);
        assert_eq!(hits.load(Ordering::Relaxed), 2);
        assert!(s.is_empty());
    }

    #[test]
    fn forever_keeps_it_and_observers_may_unsubscribe_while_firing() {
        let s: Arc<Signal<()>> = Arc::default();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        s.connect(move |_| {
            h.fetch_add(1, Ordering::Relaxed);
        })
        .forever();
        let inner = Arc::new(Mutex::new(None::<Subscription>));
        let i2 = inner.clone();
        *inner.lock().unwrap() = Some(s.connect(move |_| {
            i2.lock().unwrap().take();
        }));
        s.fire(&());
        s.fire(&());
        assert_eq!(hits.load(Ordering::Relaxed), 2);
        assert!(inner.lock().unwrap().is_none());
    }
}
