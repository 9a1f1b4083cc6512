//! Master-side services: watching the processes a router started.

pub(crate) mod process_monitor;
