//! What the user-switching methods (sudo, su, doas) share: starting the first
//! stage as the target user, keeping the caller's cache location out of it,
//! naming the hop, and reading refusals.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::core::context::Context;
use crate::core::error::{Result, TransportFailure};
use crate::core::message::ContextId;
use crate::core::router::RouterInner;
use crate::parent::first_stage::Compression;
use crate::parent::PromptSpec;

/// How one user-switching method starts its hop.
pub(crate) struct Switch<'a> {
    /// The id the master chose, if any.
    pub id: Option<ContextId>,
    /// Context name.
    pub name: &'a str,
    /// Time allowed to authenticate and start.
    pub timeout: Duration,
    /// Upload compression (the program goes into the target user's cache).
    pub upload: Compression,
    /// Reads the tool's refusals.
    pub classify: &'a dyn Fn(&str) -> TransportFailure,
    /// The tool's prompt; always a pty, so `requiretty` policies are met.
    pub prompt: PromptSpec,
}

/// Starts the hop: `build(hash, force)` makes the tool's command running the
/// first stage for the program with `hash`.
pub(crate) fn connect(
    router: &Arc<RouterInner>,
    switch: Switch<'_>,
    build: &dyn Fn(&str, bool) -> Command,
) -> Result<Context> {
    let hash = router.binaries.own()?.hash.clone();
    let command = |force: bool| {
        let mut cmd = build(&hash, force);
        scrub_env(&mut cmd);
        cmd
    };
    crate::parent::connect(
        router,
        &crate::parent::Launch {
            command: &command,
            name: switch.name,
            timeout: switch.timeout,
            stage: Some(switch.upload),
            id: switch.id,
            classify: switch.classify,
            prompt: Some(switch.prompt),
            // The data stream is a socketpair to the new context itself (su's
            // is a terminal, which cut-through relaying skips anyway).
            local_peer: true,
            direct: false,
        },
    )
}

/// `METHOD` for root, `METHOD:USER` otherwise, as in a target string.
pub(crate) fn switch_name(method: &str, user: &str) -> String {
    if user == "root" {
        method.to_owned()
    } else {
        format!("{method}:{user}")
    }
}

/// Keeps the caller's cache location out of the switched user's first stage:
/// it looks for its program in its *own* cache (the stage also checks that a
/// cache directory belongs to the user it runs as).
pub(crate) fn scrub_env(cmd: &mut Command) {
    cmd.env_remove("XDG_CACHE_HOME")
        .env_remove("TMPDIR")
        .env_remove(crate::parent::CHILD_ENV)
        .env_remove(crate::parent::HASH_ENV);
}

/// The first failure whose phrase `text` contains, else what ssh's reader
/// makes of it (a missing shell, …).
pub(crate) fn classify_with(text: &str, table: &[(&str, TransportFailure)]) -> TransportFailure {
    let lower = text.to_lowercase();
    for (phrase, kind) in table {
        if lower.contains(phrase) {
            return *kind;
        }
    }
    crate::methods::ssh::classify(text)
}
