//! The concurrency limit of `copy` and `fetch`: a window of `-j N` target
//! slots. A job (targets moved together, such as those `push_all` serves
//! from one staged copy) takes one slot per target and gives them back when
//! it is done; the next job starts as soon as enough are free.

use std::sync::{Condvar, Mutex, PoisonError};

/// Free target slots.
pub struct Window {
    free: Mutex<usize>,
    changed: Condvar,
    size: usize,
}

impl Window {
    /// A window of `size` slots (at least one).
    pub fn new(size: usize) -> Window {
        let size = size.max(1);
        Window {
            free: Mutex::new(size),
            changed: Condvar::new(),
            size,
        }
    }

    /// Waits until `n` slots are free (at most the window's size are asked
    /// for) and takes them. Never waits forever: every job gives its slots
    /// back when it ends, however it ends (see [`Slots`]).
    pub fn take(&self, n: usize) -> Slots<'_> {
        let n = n.min(self.size);
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *free < n {
            free = self
                .changed
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *free -= n;
        Slots { window: self, n }
    }
}

/// Slots taken from a [`Window`], given back when dropped (also when the
/// job's thread panics).
pub struct Slots<'a> {
    window: &'a Window,
    n: usize,
}

impl Drop for Slots<'_> {
    fn drop(&mut self) {
        let mut free = self
            .window
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *free += self.n;
        self.window.changed.notify_all();
    }
}

/// `items` cut into runs of at most `size` (at least one), in order.
pub fn chunks<T>(items: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let size = size.max(1);
    let mut out: Vec<Vec<T>> = Vec::new();
    for item in items {
        match out.last_mut() {
            Some(last) if last.len() < size => last.push(item),
            _ => out.push(vec![item]),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn never_more_than_the_window_at_once() {
        let w = Window::new(3);
        let (now, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|s| {
            for n in [1, 2, 3, 1, 2, 5] {
                let (w, now, peak) = (&w, &now, &peak);
                s.spawn(move || {
                    let n = n.min(3);
                    let _slots = w.take(n);
                    let v = now.fetch_add(n, Ordering::SeqCst) + n;
                    peak.fetch_max(v, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    now.fetch_sub(n, Ordering::SeqCst);
                });
            }
        });
        assert!(peak.load(Ordering::SeqCst) <= 3);
        assert_eq!(*w.free.lock().unwrap(), 3);
    }

    #[test]
    fn chunks_keep_order() {
        assert_eq!(
            chunks(vec![1, 2, 3, 4, 5], 2),
            [vec![1, 2], vec![3, 4], vec![5]]
        );
        assert!(chunks(Vec::<u8>::new(), 2).is_empty());
    }
}
