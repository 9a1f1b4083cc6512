//! Connection methods: how a child context is started.
//!
//! `local` is here now; `ssh`, `sudo`, `su`, `doas` and the container methods
//! build on the same bootstrap in [`crate::parent`].

pub mod local;
