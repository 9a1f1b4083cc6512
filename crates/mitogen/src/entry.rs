//! The entry point that decides, before any user code runs, whether this
//! process is the master or a child context.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::api::Router;
use crate::core::handshake::CHILD_ENV;

/// Set by [`run`]: children can only be started by a program whose `main`
/// goes through the entry point, or the child would run `main` again.
pub(crate) static ENTERED: AtomicBool = AtomicBool::new(false);

/// True when this process was started as a child context.
pub fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// True when the kernel raised this program's privileges as it started it
/// (set-user-ID, set-group-ID, file capabilities; `AT_SECURE` in the
/// auxiliary vector): whoever started it is less privileged than it is.
fn started_privileged() -> bool {
    crate::sys::started_privileged()
}

/// Refuses child mode in a program the kernel started with raised
/// privileges. Child mode is chosen by the environment alone, and a child
/// serves whatever calls arrive on its stdin: if a set-user-ID (or
/// set-group-ID, or capability-raising) program built on this crate honoured
/// `MITOGEN_CHILD`, any user allowed to run it could make it run any of its
/// `#[mitogen::remote]` functions with its privileges. Contexts are never
/// started that way (`sudo`, `su` and `doas` start them as an ordinary
/// program of the target user, without `AT_SECURE`).
fn refuse_privileged_child() -> ! {
    eprintln!(
        "mitogen: refusing child mode: this program was started with raised privileges \
         (set-user-ID, set-group-ID or file capabilities), so {CHILD_ENV} in its \
         environment cannot be trusted"
    );
    std::process::exit(126);
}

/// Runs the program: in a child context, serves calls and exits without
/// returning; in the master, calls `main` with a fresh [`Router`].
///
/// It also sets two of glibc's allocator thresholds (large buffers from the
/// heap, free memory kept up to 16 MiB), without which moving files and
/// streams maps and unmaps memory for every frame; a program using another
/// global allocator is not affected.
///
/// A program that the kernel started with raised privileges (set-user-ID,
/// set-group-ID, file capabilities) never enters child mode: it prints why
/// and exits with status 126.
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
    // Before the first large buffer, in the master and in every context:
    // see sys::tune_allocator.
    crate::sys::tune_allocator();
    if is_child() {
        if started_privileged() {
            refuse_privileged_child();
        }
        crate::child::main();
    }
    ENTERED.store(true, Ordering::Relaxed);
    let router = match Router::new() {
        Ok(r) => r,
        Err(e) => panic!("mitogen: cannot start the router: {e}"),
    };
    main(router)
}
