//! The Linux implementation of the contract in `sys/mod.rs`.

mod enter;
mod exe;
mod foreign_fd;
mod fs;
mod memory;
mod peer;
mod process;
mod random;
mod splice;
mod tty;
mod unnamed;

pub(crate) use enter::{
    open_leader, open_tree, sealed_own_exe, Entry, Leader, Mount, MountKind, Namespace,
    REPORT_PREFIX,
};
pub(crate) use exe::{open_own_exe, read_own_exe};
pub(crate) use foreign_fd::{
    find_in_pid_namespace, is_unix_stream, own_pid_namespace, peek, take_fd,
};
pub(crate) use fs::{open_for_stat, path_through_fd, SUN_PATH_MAX};
pub(crate) use memory::{release_free_memory, resident_set_kib, tune_allocator};
pub(crate) use peer::{peer_credentials, PeerCredentials};
pub(crate) use process::{die_with_parent, outlive_parent, started_privileged, ProcessHandle};
pub(crate) use random::random_bytes;
pub(crate) use splice::{can_splice, pipe, relay_pipe, splice, widen_stream_pipe};
pub(crate) use tty::set_controlling_terminal;
pub(crate) use unnamed::{link_unnamed, open_unnamed};
