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
//! Behind a first stage the configuration goes the other way round: the
//! parent sends it at once, as the prelude line ([`encode_prelude`]), and a
//! child the stage started from its cache reads it after greeting
//! ([`read_prelude`]); see docs/protocol.md, "No round trip of its own".
//!
//! Anything before the greeting (a login banner, a shell's noise) is discarded
//! and kept for the error message if no greeting comes. Every wait here has a
//! deadline: these helpers are the seed's `discard_until`, `iter_read` and
//! `write_all`.
//!
//! Both ends use it (the parent in `parent/`, the child in `child/`, a unix
//! client in `unix.rs`), so it lives in core, below all three; the prompts a
//! parent answers meanwhile reach it through [`Prompts`].

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::core::message::{ContextId, Header, HEADER_LEN};

/// The line a child writes when it is ready for its configuration.
pub const GREETING: &[u8] = b"MITOGEN-RS/1\n";

/// What a child prints instead of its greeting when its own hash is wrong.
pub const BAD_HASH: &[u8] = b"MITOGEN-RS/BADHASH";

/// Environment variable that starts the program in child mode.
pub const CHILD_ENV: &str = "MITOGEN_CHILD";

/// Environment variable naming the parent's pid, so the child can arm its
/// parent-death signal without a race.
pub const PARENT_PID_ENV: &str = "MITOGEN_PARENT_PID";

/// Environment variable with the hash a child started by the first stage must
/// have; it checks its own executable against it before greeting.
pub const HASH_ENV: &str = "MITOGEN_HASH";

/// Environment variable the first stage sets when it starts a cached build
/// at once: the build's configuration (and perhaps its first call) is then
/// already on its stdin, as the prelude line ([`encode_prelude`]).
pub const PIPED_ENV: &str = "MITOGEN_PIPED";

/// Environment variable in which the first stage hands the prelude line it
/// skipped to the build it has just uploaded and starts: the configuration
/// and first call then need no round trip after an upload either.
pub const PRELUDE_ENV: &str = "MITOGEN_PRELUDE";

/// Longest prelude line accepted (hexadecimal digits and the newline): the
/// configuration and a small first call fit many times over; a parent keeps
/// larger first calls out of it.
pub const MAX_PRELUDE: usize = 64 * 1024;

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
    /// The parent would take a direct socket to the child (see
    /// [`DIRECT_REPORT`]): the secret the child writes into it first.
    pub direct: Option<[u8; DIRECT_TOKEN_LEN]>,
}

/// Length of the secret that proves a direct socket is the child's.
pub const DIRECT_TOKEN_LEN: usize = 16;

/// How a child asked for a direct socket reports one, right after reading
/// its configuration (behind the greeting, on the transport):
/// `MITOGEN-RS/DIRECT PID NS FD\n`, its pid and pid namespace inode as it
/// sees them and the descriptor the parent may take (one end of a
/// socketpair holding the secret), or `MITOGEN-RS/DIRECT -\n` when it has
/// none. The parent answers one byte, [`DIRECT_USE`] or [`DIRECT_STAY`],
/// and the stream runs over the socket or the transport accordingly.
pub const DIRECT_REPORT: &[u8] = b"MITOGEN-RS/DIRECT ";

/// The parent's answer: the stream runs over the direct socket.
pub const DIRECT_USE: u8 = b'S';

/// The parent's answer: the stream stays on the transport.
pub const DIRECT_STAY: u8 = b'P';

/// Longest report line accepted.
pub const MAX_DIRECT_REPORT: usize = 128;

/// What a child reports it offers: `(pid, pid namespace inode, fd)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectOffer {
    /// Its pid, in its own pid namespace.
    pub pid: u32,
    /// The inode of its pid namespace.
    pub ns: u64,
    /// The descriptor to take.
    pub fd: i32,
}

/// The report line for `offer`.
pub fn encode_direct_report(offer: Option<DirectOffer>) -> Vec<u8> {
    let mut line = DIRECT_REPORT.to_vec();
    match offer {
        Some(o) => line.extend_from_slice(format!("{} {} {}\n", o.pid, o.ns, o.fd).as_bytes()),
        None => line.extend_from_slice(b"-\n"),
    }
    line
}

/// Reads a report line (without its newline): `Ok(None)` for "none".
pub fn parse_direct_report(line: &[u8]) -> Result<Option<DirectOffer>, String> {
    let bad = || {
        format!(
            "bad direct-socket report {:?}",
            String::from_utf8_lossy(line)
        )
    };
    let rest = line.strip_prefix(DIRECT_REPORT).ok_or_else(bad)?;
    if rest == b"-" {
        return Ok(None);
    }
    let text = std::str::from_utf8(rest).map_err(|_| bad())?;
    let mut it = text.split(' ');
    let (Some(pid), Some(ns), Some(fd), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(bad());
    };
    Ok(Some(DirectOffer {
        pid: pid.parse().map_err(|_| bad())?,
        ns: ns.parse().map_err(|_| bad())?,
        fd: fd
            .parse()
            .ok()
            .filter(|&fd: &i32| fd >= 0)
            .ok_or_else(bad)?,
    }))
}

/// Reads exactly one byte (nothing after it is consumed).
pub(crate) fn read_byte(fd: BorrowedFd<'_>, deadline: Instant) -> Result<u8, StepError> {
    let mut buf = Vec::new();
    read_exact_more(fd, &mut buf, 1, deadline)?;
    buf.first().copied().ok_or(StepError::Eof)
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

/// What answers a transport's password prompts while the handshake reads (the
/// parent's `Prompter`, on the pty of sudo, su, doas or ssh). The handshake
/// only drives it: the prompts, the password and the verdicts stay above core.
pub(crate) trait Prompts {
    /// A prompt has been read and awaits judgement.
    fn pending(&self) -> bool;
    /// Judges the prompt read so far (answers it, or fails).
    fn check(&mut self) -> Result<(), StepError>;
    /// The pty to watch besides the data stream, if any.
    fn fd(&self) -> Option<BorrowedFd<'_>>;
    /// Reads what the pty has.
    fn read_pty(&mut self) -> Result<(), StepError>;
    /// The data stream closed: a last look at the pty for the reason.
    fn closing(&mut self) -> Result<(), StepError>;
    /// Bytes arrived on the data stream.
    fn stream_data(&mut self, data: &[u8]) -> Result<(), StepError>;
}

/// Reads once (waiting for readability until `deadline`) into `out`,
/// answering the transport's prompts on `prompter`'s pty meanwhile.
///
/// The data stream always goes first: a prompt read from the pty is judged
/// only after the stream has been found empty, so a first-stage status line
/// written before a (hostile) prompt has disarmed the prompter by then.
pub(crate) fn read_some<P: Prompts + ?Sized>(
    fd: BorrowedFd<'_>,
    out: &mut Vec<u8>,
    deadline: Instant,
    mut prompter: Option<&mut P>,
) -> Result<(), StepError> {
    let mut buf = [MaybeUninit::<u8>::uninit(); 16 * 1024];
    loop {
        if let Some(p) = prompter.as_deref_mut() {
            if p.pending() && !readable_now(fd)? {
                p.check()?;
            }
        }
        let pty = prompter.as_deref().and_then(|p| p.fd());
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
pub(crate) fn discard_until<P: Prompts + ?Sized>(
    fd: BorrowedFd<'_>,
    mut seen: Vec<u8>,
    marker: &[u8],
    deadline: Instant,
    mut prompter: Option<&mut P>,
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

/// The prelude: frames a parent sends behind the first stage before it has
/// heard anything back, as one line of lowercase hexadecimal digits. A line
/// is what the stage's shell can skip with its `read` builtin when it has to
/// upload first (so no tool of the stage ever sees these bytes, and no
/// over-reading `head` can swallow them), and what a build the stage starts
/// from its cache finds first on its stdin.
pub(crate) fn encode_prelude(frames: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut line = Vec::with_capacity(frames.len() * 2 + 1);
    for &b in frames {
        line.push(HEX[usize::from(b >> 4)]);
        line.push(HEX[usize::from(b & 15)]);
    }
    line.push(b'\n');
    line
}

/// Reads the prelude line from `fd` (see [`encode_prelude`]); returns the
/// frames it holds and whatever was read after the line (the start of the
/// frames that follow it).
pub(crate) fn read_prelude(
    fd: BorrowedFd<'_>,
    deadline: Instant,
) -> Result<(Vec<u8>, Vec<u8>), StepError> {
    let bad = |why: &str| StepError::Io(std::io::Error::other(format!("prelude: {why}")));
    let mut line = Vec::new();
    let mut scratch = [MaybeUninit::<u8>::uninit(); 16 * 1024];
    let nl = loop {
        if let Some(nl) = line.iter().position(|&b| b == b'\n') {
            break nl;
        }
        if line.len() > MAX_PRELUDE {
            return Err(bad("line too long"));
        }
        wait_fd(fd, false, deadline)?;
        match rustix::io::read(fd, &mut scratch) {
            Ok(([], _)) => return Err(StepError::Eof),
            Ok((init, _)) => line.extend_from_slice(init),
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(StepError::Io(e.into())),
        }
    };
    let rest = line.split_off(nl + 1);
    line.pop();
    Ok((decode_prelude(&line)?, rest))
}

/// The frames of a prelude line (without its newline): from stdin
/// ([`read_prelude`]) or, after an upload, from [`PRELUDE_ENV`].
pub(crate) fn decode_prelude(line: &[u8]) -> Result<Vec<u8>, StepError> {
    let bad = |why: &str| StepError::Io(std::io::Error::other(format!("prelude: {why}")));
    if line.len() > MAX_PRELUDE {
        return Err(bad("line too long"));
    }
    if !line.len().is_multiple_of(2) {
        return Err(bad("odd number of digits"));
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    line.chunks_exact(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| bad("not hexadecimal"))
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
mod prelude_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_direct_report_reads_back() {
        let o = DirectOffer {
            pid: 7,
            ns: 4026532000,
            fd: 5,
        };
        for offer in [Some(o), None] {
            let line = encode_direct_report(offer);
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(parse_direct_report(&line[..line.len() - 1]), Ok(offer));
        }
        for bad in [
            &b"MITOGEN-RS/DIRECT 1 2"[..],
            b"MITOGEN-RS/DIRECT 1 2 -3",
            b"MITOGEN-RS/DIRECT 1 2 3 4",
            b"MITOGEN-RS/DIRECT x 2 3",
            b"DIRECT 1 2 3",
        ] {
            assert!(parse_direct_report(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_prelude_reads_back_with_what_follows_it() {
        let (a, b) = crate::core::side::socketpair().unwrap();
        let frames: Vec<u8> = (0..=255u8).chain([0, 10, 13]).collect();
        let mut sent = encode_prelude(&frames);
        assert!(sent[..sent.len() - 1].iter().all(u8::is_ascii_hexdigit));
        sent.extend_from_slice(b"GM raw frames");
        let deadline = Instant::now() + Duration::from_secs(5);
        write_all(a.as_fd(), &sent, deadline).unwrap();
        let (got, rest) = read_prelude(b.as_fd(), deadline).unwrap();
        assert_eq!(got, frames);
        assert_eq!(rest, b"GM raw frames");
    }

    #[test]
    fn a_bad_prelude_is_an_error() {
        let deadline = Instant::now() + Duration::from_secs(5);
        for bad in [&b"abc\n"[..], b"zz\n", b"AB\n"] {
            let (a, b) = crate::core::side::socketpair().unwrap();
            write_all(a.as_fd(), bad, deadline).unwrap();
            assert!(read_prelude(b.as_fd(), deadline).is_err(), "{bad:?}");
        }
        let (a, b) = crate::core::side::socketpair().unwrap();
        drop(a);
        assert!(matches!(
            read_prelude(b.as_fd(), deadline),
            Err(StepError::Eof)
        ));
    }
}
