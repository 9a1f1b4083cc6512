//! The first stage: a short POSIX `sh` script that gets the program running on
//! a host where nothing of ours is installed.
//!
//! The transport (`ssh host`, `sudo -u bob`, …) runs `sh -c 'SCRIPT'`. The
//! script needs only `sh`, `uname`, `mkdir`, `head`, `chmod` and `mv` (and
//! `gzip`, if present, to take a compressed upload):
//!
//! 1. It knows the hash of the master's own build. If that build is in one of
//!    the cache directories, it prints `MITOGEN-STAGE cached` and `exec`s it at
//!    once: no round trip, and not even a `uname`. (Should the cached build not
//!    run here, say a home directory shared with hosts of another architecture,
//!    the `exec` fails, and the master connects again forcing step 2, which
//!    reports the system and gets the matching build.)
//!    A master with builds for other systems also has, after the `uname`, a
//!    `case` on the system that looks for that system's build the same way.
//! 2. Otherwise it finds a private cache directory (`$XDG_CACHE_HOME/mitogen` or
//!    `~/.cache/mitogen`, else `$TMPDIR/mitogen-$USER` or `/dev/shm/mitogen-$USER`;
//!    made 0700, owned by the user, writable, and not mounted `noexec`, which it
//!    checks by running a tiny script there) and prints
//!    `MITOGEN-STAGE need GZIP DIR SYSTEM`.
//! 3. The master answers with one line `HASH SIZE COMPRESSED` for the build that
//!    matches SYSTEM, then exactly SIZE bytes. The script stores them under a
//!    temporary name, makes them executable, renames them into place (atomic:
//!    two connections filling one cache both succeed) and `exec`s. An upload
//!    that fails half-way leaves no temporary file behind.
//!
//! The master sends nothing beyond those bytes until the child greets, so no
//! tool in the script can read something meant for the child. The child is
//! started with `MITOGEN_HASH`, hashes its own executable before it greets, and
//! reports `MITOGEN-RS/BADHASH` if the file is corrupt or truncated; the master
//! then connects once more forcing a fresh upload. The script is one line with
//! no `'` or `!`, so every login shell (sh, bash, zsh, fish, csh) passes it on
//! unchanged.

use std::os::fd::BorrowedFd;
use std::time::Instant;

use super::bootstrap::{discard_until, read_some, write_all, StepError};
use super::prompt::Prompter;
use crate::core::error::TransportFailure;
use crate::master::binary::Binaries;

/// Marker that starts the stage's status line.
pub const STAGE_MARKER: &[u8] = b"MITOGEN-STAGE ";

/// What a child prints instead of its greeting when its own hash is wrong.
pub const BAD_HASH: &[u8] = b"MITOGEN-RS/BADHASH";

const SCRIPT: &str = concat!(
    "H=@H@; F=@F@; U=\"${USER:-${LOGNAME:-user}}\"; ",
    "set -- \"${XDG_CACHE_HOME:-${HOME:-/nonexistent}/.cache}/mitogen\" \"${TMPDIR:-/tmp}/mitogen-$U\" \"/dev/shm/mitogen-$U\"; ",
    "k() { if [ \"$F\" = 0 ]; then for d do ",
    "if [ -f \"$d/$H\" ] && [ -x \"$d/$H\" ] && [ -O \"$d\" ]; then ",
    "echo \"MITOGEN-STAGE cached\"; MITOGEN_CHILD=1 MITOGEN_HASH=$H exec \"$d/$H\"; fi; done; fi; }; k \"$@\"; ",
    "u=$(uname -sm); @O@w=; for d do ",
    "if mkdir -p \"$d\" 2>/dev/null && chmod 700 \"$d\" 2>/dev/null && [ -O \"$d\" ] && [ -w \"$d\" ]; then ",
    "if [ -x \"$d/.probe\" ] || { echo \"exit 0\" > \"$d/.probe\" && chmod 700 \"$d/.probe\"; }; then ",
    "if \"$d/.probe\" 2>/dev/null; then w=\"$d\"; break; fi; fi; fi; done; ",
    "z=0; command -v gzip >/dev/null 2>&1 && z=1; ",
    "echo \"MITOGEN-STAGE need $z ${w:-none} $u\"; ",
    "[ -n \"$w\" ] || exit 1; ",
    "read -r h s c || exit 1; [ \"$h\" = none ] && exit 1; ",
    "t=\"$w/.$h.$$\"; trap \"rm -f \\\"\\$t\\\"\" EXIT; trap \"exit 1\" HUP INT TERM PIPE; ",
    "if [ \"$c\" = 1 ]; then head -c \"$s\" | gzip -dc > \"$t\"; else head -c \"$s\" > \"$t\"; fi || exit 1; ",
    "chmod 700 \"$t\" && mv -f \"$t\" \"$w/$h\" && MITOGEN_CHILD=1 MITOGEN_HASH=$h exec \"$w/$h\""
);

/// The script for a master whose own build has `hash`, optionally forcing a
/// fresh upload.
pub fn script(hash: &str, force: bool) -> String {
    script_with(hash, &[], force)
}

/// [`script`] for a master that also has builds for other systems: `others`
/// holds `(system, hash)` pairs, the system as `uname -sm` prints it. A remote
/// that reports one of them runs that build from its cache, if there, without
/// an upload. Systems with characters that would need quoting are left out
/// (such a remote still gets its build, through an upload).
pub fn script_with(hash: &str, others: &[(String, String)], force: bool) -> String {
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b" _.,:+-/=@".contains(&b))
    };
    let mut table = String::new();
    for (system, h) in others {
        if plain(system) && h.bytes().all(|b| b.is_ascii_hexdigit()) {
            table.push_str(&format!("\"{system}\") H={h}; k \"$@\";; "));
        }
    }
    if !table.is_empty() {
        table = format!("case \"$u\" in {table}esac; ");
    }
    SCRIPT
        .replace("@H@", hash)
        .replace("@F@", if force { "1" } else { "0" })
        .replace("@O@", &table)
}

/// The script as one shell word for a login shell: `sh -c '…'`.
pub fn command_line(hash: &str, force: bool) -> String {
    command_line_with(hash, &[], force)
}

/// [`script_with`] as one shell word for a login shell.
pub fn command_line_with(hash: &str, others: &[(String, String)], force: bool) -> String {
    format!("sh -c '{}'", script_with(hash, others, force))
}

/// How to upload, when the stage asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Compression {
    /// gzip when the remote has `gzip`, unless the method knows the link is
    /// faster than gunzip (ssh to a loopback address, a local user switch).
    #[default]
    Auto,
    /// gzip whenever the remote has `gzip`.
    Gzip,
    /// Never compress.
    Never,
}

/// What the stage dialog did.
#[derive(Debug)]
pub(crate) struct StageOutcome {
    /// Bytes of the program sent (0 when cached).
    pub uploaded: usize,
    /// Bytes read after the status line (the start of the child's output).
    pub rest: Vec<u8>,
}

/// Runs the master's side of the dialog on `fd` (the transport's stdout and
/// stdin, a socket) until the child has been started.
pub(crate) fn run(
    fd: BorrowedFd<'_>,
    binaries: &Binaries,
    compression: Compression,
    deadline: Instant,
    mut prompter: Option<&mut Prompter>,
) -> Result<StageOutcome, StageError> {
    let fail = |e: &StepError, why: String, noise: Vec<u8>| StageError {
        refused: match e {
            StepError::Refused(kind, _) => Some(*kind),
            _ => None,
        },
        why,
        noise,
    };
    let (_noise, mut rest) = discard_until(
        fd,
        Vec::new(),
        STAGE_MARKER,
        deadline,
        prompter.as_deref_mut(),
    )
    .map_err(|(e, noise)| {
        let why = match &e {
            StepError::Eof => "the transport ended before the first stage started".to_owned(),
            StepError::Timeout => "no answer from the first stage".to_owned(),
            e => format!("first stage: {e}"),
        };
        fail(&e, why, noise)
    })?;
    while !rest.contains(&b'\n') {
        if let Err(e) = read_some(fd, &mut rest, deadline, prompter.as_deref_mut()) {
            return Err(fail(&e, format!("first stage: {e}"), rest));
        }
    }
    let nl = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let line = String::from_utf8_lossy(&rest[..nl]).into_owned();
    let after = rest[nl + 1..].to_vec();
    let plain = |why: String, noise: Vec<u8>| StageError {
        refused: None,
        why,
        noise,
    };
    let mut words = line.splitn(4, ' ');
    match words.next() {
        Some("cached") => Ok(StageOutcome {
            uploaded: 0,
            rest: after,
        }),
        Some("need") => {
            let gzip = words.next() == Some("1");
            let dir = words.next().unwrap_or("none");
            let system = words.next().unwrap_or("").trim().to_owned();
            if dir == "none" {
                return Err(plain(
                    "no writable, executable cache directory (tried ~/.cache, $TMPDIR, /dev/shm)"
                        .to_owned(),
                    after,
                ));
            }
            let binary = match binaries.for_system(&system) {
                Ok(b) => b,
                Err(why) => {
                    let _ = write_all(fd, b"none 0 0\n", deadline);
                    return Err(plain(why, after));
                }
            };
            let compress = gzip && compression != Compression::Never;
            let data = if compress {
                binary.gzipped()
            } else {
                binary.bytes.clone()
            };
            let head = format!("{} {} {}\n", binary.hash, data.len(), u8::from(compress));
            write_all(fd, head.as_bytes(), deadline)
                .and_then(|()| write_all(fd, &data, deadline))
                .map_err(|e| plain(format!("uploading the program: {e}"), Vec::new()))?;
            Ok(StageOutcome {
                uploaded: data.len(),
                rest: after,
            })
        }
        _ => Err(plain(
            format!("unexpected first-stage status {line:?}"),
            after,
        )),
    }
}

/// Why the stage dialog failed.
#[derive(Debug)]
pub(crate) struct StageError {
    /// Set when a prompt showed how the transport refused us.
    pub refused: Option<TransportFailure>,
    /// What went wrong.
    pub why: String,
    /// What the transport printed meanwhile.
    pub noise: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_is_safe_for_any_login_shell() {
        let others = [
            (
                "Linux aarch64".to_owned(),
                "fedcba9876543210fedcba9876543210".to_owned(),
            ),
            ("it's!".to_owned(), "00".to_owned()),
        ];
        let s = command_line_with("0123456789abcdef0123456789abcdef", &others, false);
        assert!(s.contains("\"Linux aarch64\") H=fedcba"), "{s}");
        let inner = &s["sh -c '".len()..s.len() - 1];
        assert!(!inner.contains('\''), "single quote inside the script");
        assert!(!inner.contains('!'), "csh history expansion");
        assert!(!inner.contains('\n'), "csh cannot take newlines in quotes");
    }

    #[test]
    fn script_parses_in_sh() {
        let out = std::process::Command::new("sh")
            .arg("-n")
            .arg("-c")
            .arg(script_with(
                "0123456789abcdef0123456789abcdef",
                &[(
                    "Linux aarch64".into(),
                    "fedcba9876543210fedcba9876543210".into(),
                )],
                true,
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
