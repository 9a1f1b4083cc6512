//! Entry points for the fuzz targets in `fuzz/`: each runs one of the
//! library's own decoders of what arrives from outside the process on
//! arbitrary bytes. They are thin on purpose (the real function, the real
//! types), so that what is fuzzed is what runs. Not a public API: nothing
//! here is stable.
//!
//! The frame decoder ([`stream::FrameReader`]) and the target parser
//! ([`Target`](crate::Target)'s `FromStr`) are fuzzed directly.
//!
//! It also opens the internals that the integration tests in
//! `crates/mitogen/tests/` and the fuzz targets build messages, frames and
//! builds with: the public API has no use for them.

use std::os::fd::AsFd;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::core::binary::Binaries;
use crate::core::call::{decode_reply, CallHead};
use crate::core::error::CallError;
use crate::core::handshake::ChildConfig;
use crate::core::log::emit_remote;
use crate::core::message::handles;
use crate::core::payload::{Blob, Payload};
use crate::core::remote::{decode_args, lookup};
use crate::core::route_control::{AddRoute, DelRoute};
use crate::parent::first_stage::{self, Compression};
use crate::parent::prompt::{Matcher, PromptStyle, Verdict};
use crate::parent::PromptSpec;
use crate::TransportFailure;

pub use crate::core::binary::{self, content_hash, own_system, Binary};
pub use crate::core::handshake::{CHILD_ENV, PARENT_PID_ENV};
pub use crate::core::latch::{Latch, LatchError};
pub use crate::core::log::{self, LogRecord};
pub use crate::core::message;
pub use crate::core::side;
pub use crate::core::signals::Signal;
pub use crate::core::stream;

/// Decodes `body` as a message to the built-in handle `handle` would be
/// decoded where it arrives; any other handle is decoded as a reply and as
/// channel payloads. Returns whether the head of the body decoded.
pub fn handle_body(handle: u32, body: &[u8]) -> bool {
    match handle {
        handles::CALL_FUNCTION => call_function(body),
        handles::FORWARD_LOG => match postcard::from_bytes::<LogRecord>(body) {
            // As the master's log receiver does; with no subscriber this
            // formats nothing, but the record's fields are all looked at.
            Ok(rec) => {
                emit_remote("fuzz", &rec);
                true
            }
            Err(_) => false,
        },
        handles::BOOTSTRAP => {
            // A child's configuration from its parent, and a unix client's
            // handshake from the master.
            let child = postcard::from_bytes::<ChildConfig>(body).is_ok();
            crate::unix::decode_config_for_fuzzing(body) || child
        }
        handles::ADD_ROUTE => postcard::from_bytes::<AddRoute>(body).is_ok(),
        handles::DEL_ROUTE => postcard::from_bytes::<DelRoute>(body).is_ok(),
        // SHUTDOWN's body is not read.
        handles::SHUTDOWN => true,
        handles::CANCEL_CALL => crate::core::cancel::decode_cancel(body).is_some(),
        _ => reply(body),
    }
}

/// A `CALL_FUNCTION` body as a child's dispatcher reads it: the head, the
/// function looked up by name, and the arguments of every built-in remote
/// function (the body is not run: the functions themselves are not under
/// test, and `run_command` would run whatever came).
fn call_function(body: &[u8]) -> bool {
    let Ok((head, args)) = postcard::take_from_bytes::<CallHead>(body) else {
        return false;
    };
    let _ = lookup(head.function);
    let _ = decode_args::<()>("noop", args);
    let _ = decode_args::<(Vec<String>,)>("run_command", args);
    true
}

/// A reply body decoded as the built-in functions' results, and a channel
/// message as the payload types the library itself sends.
fn reply(body: &[u8]) -> bool {
    let ok = decode_reply::<()>(body).is_ok();
    let _ = decode_reply::<u32>(body);
    let _ = decode_reply::<u64>(body);
    let _ = decode_reply::<crate::builtins::CommandOutput>(body);
    let _ = decode_reply::<Result<u64, CallError>>(body);
    let bytes = Bytes::copy_from_slice(body);
    let _ = <Blob as Payload>::decode(bytes.clone());
    let _ = <String as Payload>::decode(bytes.clone());
    let _ = <Vec<u8> as Payload>::decode(bytes.clone());
    // A DEAD message's reason.
    let dead = crate::core::message::Message {
        body: bytes,
        ..Default::default()
    };
    let _ = dead.dead_reason();
    ok
}

/// Runs the master's side of the first-stage dialog against `said` (what a
/// remote shell printed, then end of file) over a real socket pair, with a
/// small stand-in for this program as the build to upload. Returns the
/// dialog's error, if any.
pub fn first_stage(said: &[u8]) -> Result<usize, String> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    static BINARIES: OnceLock<Binaries> = OnceLock::new();
    let binaries = BINARIES.get_or_init(|| Binaries::with_own_bytes(b"\x7fELF fuzz".to_vec()));
    // Within what a socket buffer holds, so writing it never blocks.
    let said = &said[..said.len().min(64 * 1024)];
    let (ours, theirs) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(5);
    crate::core::handshake::write_all(theirs.as_fd(), said, deadline).map_err(|e| e.to_string())?;
    rustix::net::shutdown(&theirs, rustix::net::Shutdown::Write).map_err(|e| e.to_string())?;
    first_stage::run(ours.as_fd(), binaries, Compression::Auto, deadline, None)
        .map(|outcome| outcome.uploaded)
        .map_err(|e| e.why)
}

/// Feeds `chunks` (a transport's output on its pty) to the prompt matcher
/// that looks for `prompts` and `failures` besides a `password:` style of its
/// own (with a password, the first of `prompts` is the exact one answered),
/// keeping its transcript as the prompter does, until it reports a failure
/// or a prompt not its own. Returns how many chunks it took.
pub fn prompt(
    prompts: &[String],
    failures: &[String],
    with_password: bool,
    chunks: &[&[u8]],
) -> usize {
    const STYLE: PromptStyle = PromptStyle {
        prompts: &["password:", "passphrase for key"],
        failures: &[
            ("permission denied", TransportFailure::AuthenticationFailed),
            (
                "host key verification failed",
                TransportFailure::HostKeyMismatch,
            ),
        ],
    };
    // Fields added to the spec later keep their defaults here.
    #[allow(clippy::needless_update)]
    let spec = PromptSpec {
        password: with_password.then(|| crate::Secret::new("fuzz")),
        style: STYLE,
        extra_prompts: prompts.to_vec(),
        exact_prompt: if with_password {
            prompts.first().cloned()
        } else {
            None
        },
        extra_failures: failures
            .iter()
            .map(|f| (f.clone(), TransportFailure::Other))
            .collect(),
        full_pty: true,
        ..PromptSpec::default()
    };
    // As the prompter keeps it: the pty's output since the last answer, its
    // last 4 KiB.
    let matcher = Matcher::new(&spec);
    let mut transcript = Vec::new();
    for (n, chunk) in chunks.iter().enumerate() {
        transcript.extend_from_slice(chunk);
        if transcript.len() > 4096 {
            transcript.drain(..transcript.len() - 4096);
        }
        match matcher.judge(&transcript) {
            Verdict::Nothing => {}
            Verdict::Prompt => transcript.clear(),
            Verdict::Foreign(_) | Verdict::Failed(..) => return n + 1,
        }
    }
    chunks.len()
}

/// [`Context::fetch`](crate::Context::fetch) whose listing, hashes and file
/// streams are asked of the remote functions named `scan`, `hash` and `send`
/// (same arguments and answers as the library's own) instead: a test's
/// hostile child answers through them as a compromised one would, and what
/// runs here is the fetch's real receiving side.
pub fn fetch_from_impostor(
    ctx: &crate::Context,
    (scan, hash, send): (&str, &str, &str),
    src: &std::path::Path,
    dst: &std::path::Path,
    opts: &crate::files::FileOptions,
) -> crate::Result<crate::files::Transfer> {
    let fns = crate::files::transfer::Remotes { scan, hash, send };
    crate::files::transfer::fetch(ctx, src, dst, opts, &fns)
}

/// [`Context::push`](crate::Context::push) whose listing goes to the remote
/// function named `apply` (same arguments and answer as the library's own):
/// a test's hostile receiver answers through it, and what runs here is the
/// push's real sending side.
pub fn push_to_impostor(
    ctx: &crate::Context,
    apply: &str,
    src: &std::path::Path,
    dst: &std::path::Path,
) -> crate::Result<crate::files::Transfer> {
    let opts = crate::files::FileOptions::default();
    crate::files::transfer::push_asking(ctx, src, dst, &opts, None, apply)
}
