//! [`LogBudget`]: a per-source rate limit on the logs of refused messages.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::core::message::ContextId;

/// Refusals logged per second and source at most; the rest are counted.
const REFUSALS_LOGGED_PER_SEC: u32 = 50;

/// Limits how many refused or undeliverable messages a router logs, so that a
/// flood of forged messages does not become a flood of log records (which a
/// child forwards to the master, multiplying the traffic). The budget is per
/// source, so one noisy context does not silence the refusals of another; the
/// first record after a quiet spell says how many were left out
/// (`suppressed`).
pub(crate) struct LogBudget {
    sources: Mutex<HashMap<ContextId, (Instant, u32, u64)>>,
    per_sec: u32,
}

/// Sources tracked at once; beyond this, stale entries are dropped.
const LOG_BUDGET_SOURCES: usize = 1024;

impl LogBudget {
    pub(crate) fn new() -> LogBudget {
        LogBudget::per_second(REFUSALS_LOGGED_PER_SEC)
    }

    /// A budget of `per_sec` events a second and source.
    pub(crate) fn per_second(per_sec: u32) -> LogBudget {
        LogBudget {
            sources: Mutex::new(HashMap::new()),
            per_sec,
        }
    }

    /// `Some(number left out before this one)` when an event about a message
    /// from `source` may be logged.
    pub(crate) fn take(&self, source: ContextId) -> Option<u64> {
        let mut map = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let second = Duration::from_secs(1);
        if map.len() >= LOG_BUDGET_SOURCES && !map.contains_key(&source) {
            map.retain(|_, b| now.duration_since(b.0) < second);
            if map.len() >= LOG_BUDGET_SOURCES {
                map.clear();
            }
        }
        let b = map.entry(source).or_insert((now, 0, 0));
        if now.duration_since(b.0) >= second {
            b.0 = now;
            b.1 = 0;
        }
        if b.1 < self.per_sec {
            b.1 += 1;
            Some(std::mem::take(&mut b.2))
        } else {
            b.2 += 1;
            None
        }
    }
}

impl LogBudget {
    /// Drops the budgets of `sources` (contexts that are gone).
    pub(crate) fn forget(&self, sources: &[ContextId]) {
        if sources.is_empty() {
            return;
        }
        let mut map = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        for s in sources {
            map.remove(s);
        }
    }

    /// Sources with a budget now.
    pub(crate) fn len(&self) -> usize {
        self.sources.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flooding_source_is_cut_off_and_others_are_not() {
        let budget = LogBudget::new();
        let (noisy, quiet): (ContextId, ContextId) = (7, 8);
        for _ in 0..REFUSALS_LOGGED_PER_SEC {
            assert_eq!(budget.take(noisy), Some(0));
        }
        assert_eq!(budget.take(noisy), None);
        assert_eq!(budget.take(noisy), None);
        assert_eq!(budget.take(quiet), Some(0), "the budget is per source");
    }
}
