//! Master-side services: the program's own binary for shipping, and watching the
//! processes a router started.

pub mod binary;
pub(crate) mod process_monitor;
