//! Shared hops held for the whole command. The library shares the hops
//! before a target's last (`bastion` of `bastion/web1` and `bastion/web2`)
//! while a context below them is up, and shuts such a hop down when its last
//! one goes. Under a concurrency limit the targets behind one hop may not be
//! up at the same time, so each such hop is connected here, once, as the
//! program's own (the library then never shuts it down and runs every later
//! target through it), and dismissed when the command is done: a jump host
//! shared by many chains is crossed once whatever `-j` is.
//!
//! A hop that cannot be connected is tried once: every target behind it
//! fails with that hop's error, at once, instead of each trying again.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use mitogen::{ConnectOptions, Context, Router, Target};

/// A held hop: not tried yet, up, or failed with this message.
type Cell = Mutex<Option<Result<Context, String>>>;

/// The hops shared by several targets of one command.
pub struct Holds {
    router: Router,
    options: ConnectOptions,
    /// Held hops by their path (`bastion`, `bastion/web1`).
    cells: HashMap<String, Cell>,
}

/// The hop paths to hold for `targets`: every path that comes before the
/// last hop of two or more targets (or of one target given twice).
pub fn shared_prefixes(targets: &[Target]) -> Vec<String> {
    let mut count: HashMap<String, usize> = HashMap::new();
    let mut order = Vec::new();
    for t in targets {
        for n in 1..t.hops().len() {
            let p = t.prefix(n);
            let c = count.entry(p.clone()).or_insert(0);
            if *c == 0 {
                order.push(p);
            }
            *c += 1;
        }
    }
    order.retain(|p| count[p] > 1);
    order
}

impl Holds {
    /// The holds for `targets` (nothing is connected yet).
    pub fn new(router: &Router, options: &ConnectOptions, targets: &[Target]) -> Self {
        let cells = shared_prefixes(targets)
            .into_iter()
            .map(|p| (p, Mutex::new(None)))
            .collect();
        Holds {
            router: router.clone(),
            options: options.clone(),
            cells,
        }
    }

    /// Connects the held hops `target` runs through, nearest first, unless
    /// they are up already (a thread that finds one being connected waits
    /// for it). The error is that of the first hop that failed, naming it.
    pub fn ready(&self, target: &Target) -> Result<(), String> {
        for n in 1..target.hops().len() {
            let path = target.prefix(n);
            let Some(cell) = self.cells.get(&path) else {
                continue;
            };
            let mut held = cell.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(Ok(ctx)) = held.as_ref() {
                if !ctx.is_disconnected() {
                    continue;
                }
                // Gone since: the next target connects it again.
                *held = None;
            }
            let state = held.get_or_insert_with(|| {
                path.parse::<Target>()
                    .and_then(|p| self.router.connect_with(&p, &self.options))
                    .map_err(|e| e.to_string())
            });
            if let Err(e) = state {
                return Err(e.clone());
            }
        }
        Ok(())
    }

    /// Connects `target` through its held hops, as `Router::connect_with`.
    pub fn connect(&self, target: &Target) -> Result<Context, crate::transfer::Failure> {
        self.ready(target)
            .map_err(crate::transfer::Failure::other)?;
        self.router
            .connect_with(target, &self.options)
            .map_err(Into::into)
    }

    /// Tells every held hop to go, deepest first (each takes the contexts
    /// below it along), without waiting for them.
    pub fn release(&self) {
        let mut held: Vec<(usize, Context)> = self
            .cells
            .iter()
            .filter_map(|(path, cell)| {
                let ctx = cell.lock().unwrap_or_else(PoisonError::into_inner).take()?;
                Some((path.matches('/').count(), ctx.ok()?))
            })
            .collect();
        held.sort_by_key(|(depth, _)| std::cmp::Reverse(*depth));
        for (_, ctx) in held {
            ctx.dismiss();
        }
    }
}

/// Whether target `i` begins another target (`web1` of `web1/sudo`): its
/// context must stay up until the other is done with it.
pub fn is_a_hop_of_another(targets: &[Target], i: usize) -> bool {
    let (depth, text) = (targets[i].hops().len(), targets[i].to_string());
    targets
        .iter()
        .any(|t| t.hops().len() > depth && t.prefix(depth) == text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[&str]) -> Vec<Target> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn holds_what_two_targets_run_through() {
        let targets = t(&[
            "b/w1/sudo",
            "b/w2",
            "web3",
            "web3/sudo",
            "j/x",
            "k/y",
            "k/y",
        ]);
        assert_eq!(shared_prefixes(&targets), ["b", "k"]);
        assert!(shared_prefixes(&t(&["a/b", "a/b/c"])).contains(&"a".to_string()));
        assert!(shared_prefixes(&t(&["local", "local"])).is_empty());
        let u = t(&["web1", "web1/sudo", "web2"]);
        assert!(is_a_hop_of_another(&u, 0));
        assert!(!is_a_hop_of_another(&u, 1) && !is_a_hop_of_another(&u, 2));
    }
}
