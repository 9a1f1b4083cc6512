//! [`RouterBuilder`]: the settings a master router starts with.

use std::time::Duration;

use super::router::Router;
use crate::core::error::{Error, Result};
use crate::core::message::{DEFAULT_MAX_MESSAGE_SIZE, MASTER_ID};
use crate::core::router::{set_current, RouterInner};

/// Settings of a master router.
#[derive(Clone, Debug)]
pub struct RouterBuilder {
    max_message_size: usize,
    allow_lateral: bool,
    binaries: Vec<(String, std::path::PathBuf)>,
    call_timeout: Option<Duration>,
}

impl Default for RouterBuilder {
    fn default() -> Self {
        RouterBuilder {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            allow_lateral: false,
            binaries: Vec::new(),
            call_timeout: None,
        }
    }
}

impl RouterBuilder {
    /// Largest message body sent or accepted (default 128 MiB); children get
    /// the same limit. A larger value than a frame's 32-bit length field
    /// holds is clamped to `u32::MAX - 1` bytes (one byte is kept for a
    /// relay's trailer), so a length is never cut short on the wire;
    /// [`Router::max_message_size`] gives the limit in force. Larger data is
    /// streamed in chunks ([`Blob`](crate::Blob) over a channel).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Gives the router a build of this program for another system, named as
    /// `uname -sm` prints it there (`"Linux aarch64"`); hosts of that system
    /// get it instead of the master's own executable.
    pub fn binary(
        mut self,
        system: impl Into<String>,
        path: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.binaries.push((system.into(), path.into()));
        self
    }

    /// Lets contexts send messages to contexts outside their own subtree (a
    /// sibling, a cousin). Off by default: a child may only message its
    /// ancestors and its own descendants. Calls and shutdowns still need parent
    /// authority either way.
    pub fn allow_lateral_messages(mut self, on: bool) -> Self {
        self.allow_lateral = on;
        self
    }

    /// How long [`Context::call`](crate::Context::call) and [`CallChain::call`](crate::CallChain::call)
    /// wait for a result before they fail with [`Error::Timeout`] (and cancel
    /// the call); by default they wait until the context goes away.
    /// [`Context::call_timeout`](crate::Context::call_timeout) and [`PendingCall`](crate::PendingCall)'s
    /// own waits are not affected. It applies to the calls this router
    /// makes: contexts it starts do not inherit it (a remote function that
    /// calls onwards chooses its own deadlines).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = Some(timeout);
        self
    }

    /// Starts the router's broker thread.
    pub fn build(self) -> Result<Router> {
        let inner = RouterInner::start(
            MASTER_ID,
            "master".into(),
            Vec::new(),
            None,
            self.max_message_size,
        )
        .map_err(|e| Error::io("starting the broker", e))?;
        inner.install_log_receiver();
        crate::core::route_control::install(&inner);
        crate::service::install(&inner);
        inner.set_allow_lateral(self.allow_lateral);
        for (system, path) in &self.binaries {
            inner.binaries.add(system, path)?;
        }
        if let Some(t) = self.call_timeout {
            let _ = inner.call_timeout.set(t);
        }
        set_current(&inner);
        Ok(Router::owning(inner))
    }
}
