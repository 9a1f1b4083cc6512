//! Detaching a context from its parent (the seed's `ExternalContext` detach).
//!
//! Normally a child exits the moment its parent stream closes, and a local
//! child is also killed by the kernel when its parent process dies
//! (`PR_SET_PDEATHSIG`): no orphans. A detached child gives both up, so that it
//! and its own children outlive the master. It finishes the calls already
//! queued when its parent goes, then exits (its children follow as usual):
//! a detached context lives exactly as long as the work it was given.

use std::sync::atomic::{AtomicBool, Ordering};

static DETACHED: AtomicBool = AtomicBool::new(false);

/// True once this process has been asked to outlive its parent.
pub(crate) fn is_detached() -> bool {
    DETACHED.load(Ordering::Acquire)
}

/// Runs in the context being detached: disarms the parent-death signal,
/// leaves the master's session (so a terminal's hang-up or Ctrl-C aimed at the
/// master's process group does not reach it), and marks the process so that
/// losing its parent stream no longer ends it.
#[crate::remote]
pub fn detach_self() -> std::io::Result<()> {
    crate::sys::outlive_parent()?;
    // Fails only if we already lead a process group: then we are on our own
    // already.
    let _ = rustix::process::setsid();
    DETACHED.store(true, Ordering::Release);
    Ok(())
}
