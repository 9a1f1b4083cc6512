//! The blocking phase of connecting a child: greeting and configuration.
//!
//! ```text
//! parent                                   child
//!   |  (transport starts the program)        |
//!   |  <------------- "MITOGEN-RS/1\n" ------ |  greeting: the child is running
//!   |  -- frame BOOTSTRAP(ChildConfig) ---->  |  id, name, ancestors, limits
//!   |  <========== framed messages =========> |  the broker takes over
//! ```
//!
//! Anything before the greeting (a login banner, a shell's noise) is discarded
//! and kept for the error message if no greeting comes. Every wait here has a
//! deadline: these helpers are the seed's `discard_until`, `iter_read` and
//! `write_all`.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::core::message::{ContextId, Header, HEADER_LEN};
use crate::parent::prompt::Prompter;

/// The line a child writes when it is ready for its configuration.
pub const GREETING: &[u8] = b"MITOGEN-RS/1\n";

/// Most bytes of noise accepted before the greeting.
const MAX_NOISE: usize = 64 * 1024;

/// Settings a parent sends to a new child.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChildConfig {
    /// The child's context id.
    pub id: ContextId,
    /// The child's name.
    pub name: String,
    /// Parent first, up to the master.
    pub ancestors: Vec<ContextId>,
    /// Largest message body accepted.
    pub max_message_size: u64,
    /// Most verbose level forwarded to the master (0 = trace .. 4 = error, 5 = off).
    pub log_level: u8,
    /// Whether messages may cross between subtrees (the master's choice).
    pub allow_lateral: bool,
    /// Whether the parent is a process on this machine writing to the child's
    /// stream itself (see `Launch::local_peer`).
    pub parent_is_local: bool,
}

/// Why a blocking bootstrap step failed.
#[derive(Debug)]
pub(crate) enum StepError {
    /// The deadline passed.
    Timeout,
    /// The other end closed; what it printed is attached.
    Eof,
    /// An OS error.
    Io(std::io::Error),
    /// The transport's prompt showed a failure (wrong password, …).
    Refused(crate::core::error::TransportFailure, String),
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepError::Timeout => write!(f, "timed out"),
            StepError::Eof => write!(f, "connection closed"),
            StepError::Io(e) => write!(f, "{e}"),
            StepError::Refused(kind, text) => write!(f, "{kind}: {text}"),
        }
    }
}

fn wait_fd(fd: BorrowedFd<'_>, out: bool, deadline: Instant) -> Result<(), StepError> {
    wait_any(fd, out, None, deadline).map(|_| ())
}

/// Waits until `fd` is ready (readable, or writable with `out`) or `pty` is
/// readable; returns which of them are: `(fd, pty)`.
fn wait_any(
    fd: BorrowedFd<'_>,
    out: bool,
    pty: Option<BorrowedFd<'_>>,
    deadline: Instant,
) -> Result<(bool, bool), StepError> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(StepError::Timeout);
        }
        let left = deadline - now;
        let ts = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: left.subsec_nanos() as i64,
        };
        let flags = if out { PollFlags::OUT } else { PollFlags::IN };
        let mut pfds = vec![PollFd::new(&fd, flags)];
        if let Some(p) = &pty {
            pfds.push(PollFd::new(p, PollFlags::IN));
        }
        match poll(&mut pfds, Some(&ts)) {
            Ok(0) => continue,
            Ok(_) => {
                let ready = |i: usize| pfds.get(i).is_some_and(|p| !p.revents().is_empty());
                return Ok((ready(0), ready(1)));
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(StepError::Io(e.into())),
        }
    }
}

/// Whether `fd` has something to read (or an error or hang-up to report)
/// right now.
pub(crate) fn readable_now(fd: BorrowedFd<'_>) -> Result<bool, StepError> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        let mut pfds = [PollFd::new(&fd, PollFlags::IN)];
        match poll(&mut pfds, Some(&zero)) {
            Ok(n) => return Ok(n > 0 && !pfds[0].revents().is_empty()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(StepError::Io(e.into())),
        }
    }
}

/// Reads once (waiting for readability until `deadline`) into `out`,
/// answering the transport's prompts on `prompter`'s pty meanwhile.
///
/// The data stream always goes first: a prompt read from the pty is judged
/// only after the stream has been found empty, so a first-stage status line
/// written before a (hostile) prompt has disarmed the prompter by then.
pub(crate) fn read_some(
    fd: BorrowedFd<'_>,
    out: &mut Vec<u8>,
    deadline: Instant,
    mut prompter: Option<&mut Prompter>,
) -> Result<(), StepError> {
    let mut buf = [MaybeUninit::<u8>::uninit(); 16 * 1024];
    loop {
        if let Some(p) = prompter.as_deref_mut() {
            if p.pending() && !readable_now(fd)? {
                p.check()?;
            }
        }
        let pty = prompter.as_deref().and_then(Prompter::fd);
        let (data, pty) = wait_any(fd, false, pty, deadline)?;
        if pty && !data {
            if let Some(p) = prompter.as_deref_mut() {
                // Judged at the top of the loop, once the stream is empty.
                p.read_pty()?;
            }
            continue;
        }
        match rustix::io::read(fd, &mut buf) {
            Ok(([], _)) => {
                // The tool may have said why on the pty before it exited.
                if let Some(p) = prompter.as_deref_mut() {
                    p.closing()?;
                }
                return Err(StepError::Eof);
            }
            Ok((init, _)) => {
                out.extend_from_slice(init);
                // The stage's status line disarms the prompter; on a full pty
                // the prompts come in the stream itself.
                if let Some(p) = prompter.as_deref_mut() {
                    p.stream_data(init)?;
                }
                return Ok(());
            }
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::IO) | Err(rustix::io::Errno::CONNRESET) => {
                return Err(StepError::Eof)
            }
            Err(e) => return Err(StepError::Io(e.into())),
        }
    }
}

/// What [`discard_until`] returns: (discarded noise, bytes after the marker), or
/// the failure with everything read so far.
pub(crate) type Discarded = Result<(Vec<u8>, Vec<u8>), (StepError, Vec<u8>)>;

/// Reads until `marker`, starting with bytes already read (`seen`).
pub(crate) fn discard_until(
    fd: BorrowedFd<'_>,
    mut seen: Vec<u8>,
    marker: &[u8],
    deadline: Instant,
    mut prompter: Option<&mut Prompter>,
) -> Discarded {
    loop {
        if let Some(pos) = seen.windows(marker.len()).position(|w| w == marker) {
            let rest = seen.split_off(pos + marker.len());
            seen.truncate(pos);
            return Ok((seen, rest));
        }
        if seen.len() > MAX_NOISE {
            return Err((
                StepError::Io(std::io::Error::other("no greeting in 64 KiB of output")),
                seen,
            ));
        }
        if let Err(e) = read_some(fd, &mut seen, deadline, prompter.as_deref_mut()) {
            return Err((e, seen));
        }
    }
}

/// Writes all of `data`, waiting for writability until `deadline`.
pub(crate) fn write_all(
    fd: BorrowedFd<'_>,
    mut data: &[u8],
    deadline: Instant,
) -> Result<(), StepError> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(rustix::io::Errno::AGAIN) => wait_fd(fd, true, deadline)?,
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::PIPE) | Err(rustix::io::Errno::CONNRESET) => {
                return Err(StepError::Eof)
            }
            Err(e) => return Err(StepError::Io(e.into())),
        }
    }
    Ok(())
}

/// Reads exactly one frame (header and body) from a blocking or non-blocking
/// descriptor; used by the child for its configuration.
pub(crate) fn read_frame(
    fd: impl AsFd,
    max: usize,
    deadline: Instant,
) -> Result<(Header, Vec<u8>), StepError> {
    let fd = fd.as_fd();
    let mut buf = Vec::new();
    let header = loop {
        if buf.len() >= HEADER_LEN {
            break Header::parse(&buf[..HEADER_LEN], max)
                .map_err(|e| StepError::Io(std::io::Error::other(e.to_string())))?;
        }
        read_exact_more(fd, &mut buf, HEADER_LEN, deadline)?;
    };
    let total = HEADER_LEN + header.len;
    while buf.len() < total {
        read_exact_more(fd, &mut buf, total, deadline)?;
    }
    buf.drain(..HEADER_LEN);
    Ok((header, buf))
}

/// Reads more bytes without reading past `limit` in total (so nothing that
/// belongs to the next frame is consumed).
fn read_exact_more(
    fd: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    limit: usize,
    deadline: Instant,
) -> Result<(), StepError> {
    let mut tmp = vec![MaybeUninit::<u8>::uninit(); limit - buf.len()];
    loop {
        wait_fd(fd, false, deadline)?;
        match rustix::io::read(fd, &mut tmp[..]) {
            Ok(([], _)) => return Err(StepError::Eof),
            Ok((init, _)) => {
                buf.extend_from_slice(init);
                return Ok(());
            }
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(StepError::Io(e.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::error::TransportFailure;
    use crate::parent::prompt::PromptStyle;
    use crate::parent::PromptSpec;

    /// A status line on the stream and a prompt on the pty, both waiting: the
    /// stream is read first, so the prompt is never answered.
    #[test]
    fn the_stream_is_read_before_the_pty() {
        let (master, slave) = crate::parent::pty::open_pty().unwrap();
        let tty = slave.try_clone().unwrap();
        let spec = PromptSpec {
            password: Some("bait".into()),
            style: PromptStyle {
                prompts: &["password:"],
                failures: &[("sorry", TransportFailure::AuthenticationFailed)],
            },
            ..Default::default()
        };
        let mut prompter = Prompter::new(master, Some(slave), &spec, false);
        let (ours, theirs) = crate::core::side::socketpair().unwrap();
        rustix::io::write(&theirs, b"MITOGEN-STAGE cached\n").unwrap();
        rustix::io::write(&tty, b"Password: ").unwrap();
        // The pty's line discipline hands the bytes over asynchronously.
        let deadline = Instant::now() + std::time::Duration::from_secs(2);
        while !readable_now(prompter.fd().unwrap()).unwrap() {
            assert!(Instant::now() < deadline, "the pty never became readable");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut out = Vec::new();
        read_some(ours.as_fd(), &mut out, deadline, Some(&mut prompter)).unwrap();
        assert_eq!(out, b"MITOGEN-STAGE cached\n");
        assert!(!prompter.armed());
        // More reads answer nothing either.
        rustix::io::write(&theirs, b"MITOGEN-RS/1\n").unwrap();
        read_some(ours.as_fd(), &mut out, deadline, Some(&mut prompter)).unwrap();
        crate::core::side::set_nonblock(tty.as_fd(), true).unwrap();
        let mut buf = [0u8; 64];
        let got = rustix::io::read(&tty, &mut buf);
        assert!(
            matches!(got, Err(rustix::io::Errno::AGAIN)),
            "something was typed into the terminal: {got:?}"
        );
    }

    /// Without a status line, the same prompt is answered once.
    #[test]
    fn a_prompt_before_the_status_line_is_answered() {
        let (master, slave) = crate::parent::pty::open_pty().unwrap();
        let tty = slave.try_clone().unwrap();
        let spec = PromptSpec {
            password: Some("right".into()),
            style: PromptStyle {
                prompts: &["password:"],
                failures: &[],
            },
            ..Default::default()
        };
        let mut prompter = Prompter::new(master, Some(slave), &spec, false);
        let (ours, theirs) = crate::core::side::socketpair().unwrap();
        rustix::io::write(&tty, b"Password: ").unwrap();
        let answerer = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let n = rustix::io::read(&tty, &mut buf).unwrap();
            rustix::io::write(&theirs, b"MITOGEN-STAGE cached\n").unwrap();
            (buf[..n].to_vec(), theirs)
        });
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let mut out = Vec::new();
        read_some(ours.as_fd(), &mut out, deadline, Some(&mut prompter)).unwrap();
        let (typed, _theirs) = answerer.join().unwrap();
        assert_eq!(typed, b"right\n");
        assert!(!prompter.armed());
    }
}
