//! Fixtures the tests of `mitogen` and `mitogen-cli` share, so both crates
//! start sshd, make test users and treat a test that cannot run here the same
//! way (see docs/testing.md). Not published: it exists for those tests only.

pub mod command;
pub mod skip;
pub mod sshd;

pub mod proc;
