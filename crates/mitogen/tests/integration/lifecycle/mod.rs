//! Shutdown, router drop, parent death, killed children, reaping.
//!
//! This module holds the intermediate master (this binary run again with
//! [`INTERMEDIATE_ENV`]). The tests are in the parts: `shutdown` (shutdowns,
//! router drop, reaping), `deaths` (parent death, killed children and hops)
//! and `detach` (detached children).

pub mod deaths;
pub mod detach;
pub mod shutdown;

pub use detach::{detach_main, DETACH_ENV};

use std::io::Write;
use std::time::Duration;

use mitogen::Router;

use crate::calls::add;

/// Set in the environment of a copy of this program that acts as an
/// intermediate master: it starts one context, prints its pid and sleeps.
pub const INTERMEDIATE_ENV: &str = "MITOGEN_TEST_INTERMEDIATE";

/// `main` of the intermediate master.
pub fn intermediate_main(router: &Router) -> usize {
    match router.local() {
        Ok(ctx) => {
            let pid = ctx.pid().unwrap_or(0);
            let ok = ctx.call(add, (1, 1)).is_ok();
            println!("grandchild {pid} {ok}");
            let _ = std::io::stdout().flush();
            std::thread::sleep(Duration::from_secs(120));
            0
        }
        Err(e) => {
            println!("error {e}");
            1
        }
    }
}
