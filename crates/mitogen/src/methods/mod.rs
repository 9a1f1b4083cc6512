//! Connection methods: how a child context is started.
//!
//! `local` starts the program itself; `ssh` runs the first stage through the
//! system ssh client. `sudo`, `su`, `doas` and the container methods build on
//! the same bootstrap in [`crate::parent`].

pub mod local;
pub mod ssh;
