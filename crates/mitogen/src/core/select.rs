//! [`Select`]: wait on several receivers or pending calls at once.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use super::error::{Error, Result};
use super::latch::{Latch, LatchError};
use super::message::Message;

/// Something a [`Select`] can wait on: a [`Receiver`](crate::Receiver) or a
/// [`PendingCall`](crate::PendingCall).
pub trait Selectable {
    #[doc(hidden)]
    fn latch(&self) -> &Arc<Latch<Message>>;

    /// True when the member has something for its owner (a value, or the
    /// error that ends it), not only bookkeeping of its own.
    #[doc(hidden)]
    fn is_ready(&self) -> bool {
        self.latch().is_ready()
    }
}

/// Waits for the first of several receivers to have something.
///
/// ```no_run
/// # fn demo(a: &mitogen::Receiver<u32>, b: &mitogen::Receiver<String>) -> mitogen::Result<()> {
/// let mut select = mitogen::Select::new();
/// let ia = select.add(a)?;
/// let _ib = select.add(b)?;
/// let ready = select.wait_timeout(std::time::Duration::from_secs(5))?;
/// if ready == ia {
///     let n = a.recv()?;
/// }
/// # Ok(()) }
/// ```
pub struct Select<'a> {
    signal: Arc<Latch<usize>>,
    members: Vec<&'a dyn Selectable>,
}

impl Default for Select<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> Select<'a> {
    /// An empty select.
    pub fn new() -> Select<'a> {
        Select {
            signal: Arc::new(Latch::new()),
            members: Vec::new(),
        }
    }

    /// Adds a member and returns its index. A receiver can be in one select at
    /// a time.
    pub fn add(&mut self, member: &'a dyn Selectable) -> Result<usize> {
        let index = self.members.len();
        if !member
            .latch()
            .set_notify(Some((self.signal.clone(), index)))
        {
            return Err(Error::io(
                "Select::add",
                std::io::Error::other("already part of another Select"),
            ));
        }
        self.members.push(member);
        Ok(index)
    }

    /// Index of a member that is ready now, if any.
    pub fn ready(&self) -> Option<usize> {
        self.members.iter().position(|m| m.is_ready())
    }

    /// Waits up to `timeout` for a member to be ready and returns its index.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.ready() {
                return Ok(i);
            }
            match self.signal.get_deadline(Some(deadline)) {
                Ok(i) if self.members.get(i).is_some_and(|m| m.is_ready()) => return Ok(i),
                Ok(_) => continue,
                Err(LatchError::Timeout) => return Err(Error::Timeout(timeout)),
                Err(e) => return Err(e.into_error(Some(timeout))),
            }
        }
    }

    /// [`wait_timeout`](Self::wait_timeout) as a future (any executor), without
    /// a deadline: ready with the index of a member that is ready. Bound the
    /// wait with the runtime's own time-out if nothing else ends it; an empty
    /// select fails at once rather than wait for nothing.
    pub fn wait_async(&self) -> impl Future<Output = Result<usize>> + '_ {
        std::future::poll_fn(move |cx| {
            if self.members.is_empty() {
                return Poll::Ready(Err(Error::io(
                    "Select::wait_async",
                    std::io::Error::other("nothing to wait for"),
                )));
            }
            loop {
                if let Some(i) = self.ready() {
                    return Poll::Ready(Ok(i));
                }
                match self.signal.poll_get(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(i)) if self.members.get(i).is_some_and(|m| m.is_ready()) => {
                        return Poll::Ready(Ok(i))
                    }
                    // A stale notice, or (never: the signal latch is not
                    // closed) a close: look again.
                    Poll::Ready(_) => continue,
                }
            }
        })
    }
}

impl Drop for Select<'_> {
    fn drop(&mut self) {
        for m in &self.members {
            m.latch().set_notify(None);
        }
    }
}
