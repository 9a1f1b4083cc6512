//! The entry point that decides, before any user code runs, whether this
//! process is the master or a child context.

use std::sync::atomic::Ordering;

use crate::parent::CHILD_ENV;
use crate::router::{Router, ENTERED};

/// True when this process was started as a child context.
pub fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// Runs the program: in a child context, serves calls and exits without
/// returning; in the master, calls `main` with a fresh [`Router`].
///
/// `#[mitogen::main]` expands to this; call it directly from `main` when a macro
/// is not wanted:
///
/// ```no_run
/// fn main() -> mitogen::Result<()> {
///     mitogen::run(|router| {
///         let child = router.local()?;
///         child.shutdown()
///     })
/// }
/// ```
///
/// # Panics
///
/// If the master's broker thread cannot be started (no poller, no threads):
/// nothing works without it.
pub fn run<R>(main: impl FnOnce(Router) -> R) -> R {
    if is_child() {
        crate::child::main();
    }
    ENTERED.store(true, Ordering::Relaxed);
    let router = match Router::new() {
        Ok(r) => r,
        Err(e) => panic!("mitogen: cannot start the router: {e}"),
    };
    main(router)
}
