//! The ssh tests' sshd and users: the fixture both crates' tests share
//! (`mitogen_testkit::sshd`, described in docs/testing.md), plus the
//! [`Ssh`] options that reach it and what the tests read of its sessions.
//!
//! This needs root (sshd, `useradd`, `mount`) and openssh-server; without them
//! the ssh tests fail with a message saying so (or are reported as skipped
//! where `MITOGEN_TEST_ALLOW_SKIP=1`, see `harness`), they never pass silently.

use anyhow::Result;
use mitogen::HostKeyPolicy;
use mitogen::Ssh;

pub use mitogen_testkit::sshd::{
    closed_port, require_root_and_sshd, root, user, user_with_password, User,
};

/// A running sshd and the keys to reach it ([`mitogen_testkit::sshd::Sshd`],
/// whose fields and methods it has), with the [`Ssh`] options for it.
pub struct Sshd(mitogen_testkit::sshd::Sshd);

impl std::ops::Deref for Sshd {
    type Target = mitogen_testkit::sshd::Sshd;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Sshd {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Sshd {
    /// Starts a fresh sshd; fails with a clear message when that is impossible.
    pub fn start() -> Result<Sshd> {
        mitogen_testkit::sshd::Sshd::start().map(Sshd)
    }

    /// [`start`](Self::start) with more `sshd_config` lines, which override
    /// the fixture's own.
    pub fn start_with(config: &[&str]) -> Result<Sshd> {
        mitogen_testkit::sshd::Sshd::start_with(config).map(Sshd)
    }

    /// [`start_with`](Self::start_with) in the network namespace `netns`,
    /// listening on `address` there.
    pub fn start_in_netns(netns: &str, address: &str, config: &[&str]) -> Result<Sshd> {
        mitogen_testkit::sshd::Sshd::start_in_netns(netns, address, config).map(Sshd)
    }

    /// ssh options for `user` at this server: the client key, no host key
    /// checks, no user or system ssh configuration.
    pub fn ssh(&self, user: &str) -> Result<Ssh> {
        self.authorize(user)?;
        Ok(self.ssh_without_key(user).identity_file(&self.client_key))
    }

    /// [`ssh`](Self::ssh) without a client key (for password logins): ssh
    /// may offer root's own keys, which no test user accepts.
    pub fn ssh_without_key(&self, user: &str) -> Ssh {
        Ssh::new(self.address.as_str())
            .user(user)
            .port(self.port)
            .config_file("/dev/null")
            .host_key_policy(HostKeyPolicy::Ignore)
            // The compressed path a remote host gets, whatever the
            // default.
            .upload_compression(mitogen::Compression::Gzip)
    }
}

/// sshd's per-connection processes above the process `pid` that a login
/// started (such as "sshd: root@notty" and "sshd: root [priv]"), nearest
/// first, up to the listener ("sshd: /usr/sbin/sshd -D … [listener] …"),
/// which is not included. Why: the tests that take a hop down check that
/// these go too, and must find them while the process tree still joins them.
pub fn sessions_above(pid: u32) -> Vec<u32> {
    let mut session = Vec::new();
    let mut up = crate::util::proc_ppid(pid);
    while let Some(pid) = up.filter(|&p| p > 1) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !cmdline.starts_with(b"sshd: ") || cmdline.starts_with(b"sshd: /") {
            break;
        }
        session.push(pid);
        up = crate::util::proc_ppid(pid);
    }
    session
}
