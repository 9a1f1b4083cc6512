//! The first stage: a short POSIX `sh` script that gets the program running on
//! a host where nothing of ours is installed.
//!
//! The transport (`ssh host`, `sudo -u bob`, …) runs `sh -c 'SCRIPT'`. The
//! script needs only `sh`, `uname`, `id`, `ls`, `mkdir`, `head`, `chmod`,
//! `rm` and `mv` (busybox is enough; and `gzip`, if present, to take a
//! compressed upload). The cache directories it tries, in order, are
//! `$XDG_CACHE_HOME/mitogen` (else `~/.cache/mitogen`), `$TMPDIR/mitogen-UID`
//! (else `/tmp/mitogen-UID`) and `/dev/shm/mitogen-UID`, UID being `id -u`:
//! never `$USER`, which `su` to root leaves as the caller's.
//!
//! 1. It knows the hash of the master's own build. If that build is in one of
//!    the cache directories (a trusted one, below, and a file the user owns),
//!    it prints `MITOGEN-STAGE cached` and `exec`s it at once: no round trip,
//!    and not even a `uname`. (Should the cached build not run here, say a
//!    home directory shared with hosts of another architecture, the `exec`
//!    fails, and the master connects again forcing step 2, which reports the
//!    system and gets the matching build.)
//!    A master with builds for other systems also has, after the `uname`, a
//!    `case` on the system that looks for that system's build the same way.
//! 2. Otherwise it prints `MITOGEN-STAGE need GZIP SYSTEM` at once, so that
//!    the master's answer travels while the stage takes the first cache
//!    directory that it can make (or find) trusted, writable and not
//!    mounted `noexec` (which it checks by running there a tiny script
//!    under the upload's temporary name); the programs of that search run
//!    with `/dev/null` as their stdin, so none reads a byte of the answer.
//!    If there is none, it prints `MITOGEN-STAGE nodir` and, for each
//!    directory, why it was refused, and exits without reading its stdin
//!    (the master then reports that line, not the upload's broken pipe).
//! 3. Before any of this, the master has written its prelude line (the
//!    child's configuration and maybe its first call, in hexadecimal:
//!    `core::handshake::encode_prelude`) without waiting: a build started in
//!    step 1 finds it first on its stdin (`MITOGEN_PIPED=1` says so), and
//!    once a directory is found the stage takes it with `read -r p` (a
//!    builtin that reads no further than the newline) before anything else,
//!    and hands it to the build it uploads in `MITOGEN_PRELUDE`.
//!    The master answers `need` with one line `HASH SIZE COMPRESSED` for the build that
//!    matches SYSTEM, then exactly SIZE bytes. The script stores them over
//!    that temporary file (already mode 0700, so nothing is `chmod`ed after
//!    the transfer), renames it into place (atomic: two connections filling
//!    one cache both succeed) and `exec`s. An upload that fails half-way
//!    leaves no temporary file behind.
//!
//! # Why the cache can be trusted
//!
//! What the stage runs is whatever file the cache holds under the hash; the
//! child's own hash check (below) runs only once that file is running, so it
//! finds damage but proves nothing against a replacement. The guarantee is
//! the directory: the stage `cd`s into it once and checks it from inside,
//! where no rename or link of the path can change what is checked:
//!
//! * it is the directory the path names, not one a symbolic link leads to
//!   (`cd -P`, then `$PWD` must be the parent's physical path plus the name:
//!   another user's link in `/tmp` is refused, not followed);
//! * it is owned by the user (`-O .`), and its mode is then exactly 0700
//!   (`ls -ld .`). A directory it makes is made 0700 (`mkdir -m 700`); one
//!   it finds with a looser mode is `chmod`ed only after the checks above,
//!   so no other user's directory is ever changed. A directory of another
//!   user's, squatting the name, is refused.
//!
//! From then on it names files only relatively (`./HASH`, `./.HASH.PID`), so
//! they are looked up in that directory, whatever happens to its path. Only
//! the user (and root) can add, swap or remove files in a directory the user
//! owns with mode 0700, so nobody else can put a file under `./HASH` between
//! the check and the `exec`. Files that were there before the directory
//! became private are not trusted either: a cached build runs only if the
//! user owns it, and whatever stands under the temporary name (a file or a
//! link) is removed before the stage writes its own there. Between
//! candidates it goes back to `/`, so a tool (`id`, `ls`, `mkdir`, …) never
//! runs with another user's directory as its working directory, where a
//! `PATH` holding `.` would find that user's file of the same name. With no
//! trusted candidate left, the connection fails with an error that names
//! each directory tried and why it was refused. The build then runs with its
//! working directory back where the stage started (`MITOGEN_CWD`), and keeps
//! the cache directory open as a descriptor for its own upkeep
//! (`child/cache.rs`).
//!
//! Beyond the prelude line and those bytes the master sends nothing until the
//! child greets, so no tool in the script can read something meant for the
//! child (the noexec check runs with `/dev/null` as its stdin). The child is
//! started with `MITOGEN_HASH`, hashes its own executable before it greets, and
//! reports `MITOGEN-RS/BADHASH` if the file is corrupt or truncated; the master
//! then connects once more forcing a fresh upload. The script is one line with
//! no `'` or `!`, so every login shell (sh, bash, zsh, fish, csh) passes it on
//! unchanged. The `need` line holds no path (the cache directory is the
//! script's working directory), so a home with spaces works.

use std::os::fd::BorrowedFd;
use std::time::Instant;

use super::prompt::Prompter;
use crate::core::binary::Binaries;
use crate::core::error::TransportFailure;
use crate::core::handshake::{discard_until, read_some, write_all, StepError};

/// Marker that starts the stage's status line.
pub const STAGE_MARKER: &[u8] = b"MITOGEN-STAGE ";

pub(crate) use crate::core::handshake::BAD_HASH;

const SCRIPT: &str = concat!(
    "H=@H@; F=@F@; o=$PWD; i=; r=; ",
    "set -- \"${XDG_CACHE_HOME:-${HOME:-/nonexistent}/.cache}\" mitogen \"${TMPDIR:-/tmp}\" mitogen- /dev/shm mitogen-; ",
    // g PARENT NAME MAKE: enter the directory PARENT/NAME (NAME-UID for the
    // fallbacks) and check it from inside; with MAKE=1, create it and fix its
    // mode once it is known to be ours (a `mkdir -m 700` that made it has
    // set it already: one program fewer). On failure, the reason goes into $r.
    // Tools run only from `/` or from a directory found to be ours, so that
    // not even a PATH holding `.` can run a file of another user's.
    // Programs cost a fork and an exec each (about 1 ms), so the uid is
    // asked for (`id -u`) only once it is needed: to look up a fallback
    // (MAKE=0) only if PARENT holds any directory named `NAME*` at all (a
    // glob, no program), and `mkdir -p` runs only if PARENT is missing.
    "g() { cd /; n=$2; case $n in *-) if [ -z \"$i\" ]; then if [ \"$3\" = 1 ]; then :; else ",
    "for x in \"$1/$n\"*; do [ -d \"$x\" ] && break; x=; done; [ -n \"$x\" ] || return 1; fi; i=$(id -u); fi; n=$n$i;; esac; d=\"$1/$n\"; ",
    "case $1 in /*) ;; *) r=\"$r $d: not an absolute path;\"; return 1;; esac; ",
    "if [ \"$3\" = 1 ]; then [ -d \"$1\" ] || mkdir -p \"$1\" 2>/dev/null; fi; ",
    "cd -P \"$1\" 2>/dev/null || { r=\"$r $d: $1 cannot be made or entered;\"; return 1; }; q=${PWD%/}; ",
    "m=; if [ \"$3\" = 1 ] && mkdir -m 700 \"./$n\" 2>/dev/null; then m=1; fi; ",
    "cd -P \"./$n\" 2>/dev/null || { r=\"$r $d: cannot be made or entered;\"; return 1; }; ",
    "[ \"$PWD\" = \"$q/$n\" ] || { r=\"$r $d: a symbolic link;\"; return 1; }; ",
    "[ -O . ] || { r=\"$r $d: owned by another user;\"; return 1; }; ",
    "if [ \"$3\" = 1 ] && [ -z \"$m\" ]; then chmod 700 . 2>/dev/null; fi; ",
    "case $(ls -ld .) in \"drwx------ \"* | \"drwx------.\"*) ;; *) r=\"$r $d: not mode 0700;\"; return 1;; esac; }; ",
    "k() { if [ \"$F\" = 0 ]; then while [ $# -gt 1 ]; do ",
    "if g \"$1\" \"$2\" 0 && [ -f \"./$H\" ] && [ -x \"./$H\" ] && [ -O \"./$H\" ]; then ",
    "echo \"MITOGEN-STAGE cached\"; MITOGEN_CHILD=1 MITOGEN_PIPED=1 MITOGEN_HASH=$H MITOGEN_CWD=\"$o\" exec \"./$H\"; fi; shift 2; done; fi; }; k \"$@\"; ",
    // `need` goes out before the directory search: the master's answer
    // is on its way while the search runs its programs (their stdin
    // `/dev/null`, so none can read a byte of it), and the stage reads it
    // only once a directory is found. With none, `nodir` follows `need`.
    "cd /; u=$(uname -sm); @O@z=0; command -v gzip >/dev/null 2>&1 && z=1; echo \"MITOGEN-STAGE need $z $u\"; ",
    // The noexec check runs the upload's own temporary file, made 0700 and
    // holding `exit 0` (its stdin `/dev/null`): the upload then overwrites
    // it in place, mode kept, so no `chmod` follows the transfer. Anything
    // already under that name (a file or link of before the directory was
    // private) is removed first; the traps remove the file on every exit,
    // a hang-up or a signal included.
    "r=; w=; t=\"./.$H.$$\"; while [ $# -gt 1 ]; do if g \"$1\" \"$2\" 1; then ",
    "if [ -w . ] && { trap \"rm -f \\\"\\$t\\\"\" EXIT; trap \"exit 1\" HUP INT TERM PIPE; { [ -e \"$t\" ] || [ -L \"$t\" ]; } && rm -f \"$t\"; ",
    "echo \"exit 0\" > \"$t\" && chmod 700 \"$t\" && \"$t\" </dev/null 2>/dev/null; }; then w=1; break; fi; ",
    "{ [ -e \"$t\" ] || [ -L \"$t\" ]; } && rm -f \"$t\"; trap - EXIT; r=\"$r $d: not writable or mounted noexec;\"; fi; shift 2; done </dev/null; ",
    "if [ -z \"$w\" ]; then echo \"MITOGEN-STAGE nodir$r\"; exit 1; fi; ",
    "read -r p || exit 1; ",
    "read -r h s c || exit 1; [ \"$h\" = none ] && exit 1; ",
    "if [ \"$c\" = 1 ]; then head -c \"$s\" | gzip -dc > \"$t\"; else head -c \"$s\" > \"$t\"; fi || exit 1; ",
    "mv -f \"$t\" \"./$h\" && MITOGEN_CHILD=1 MITOGEN_PRELUDE=\"$p\" MITOGEN_HASH=$h MITOGEN_CWD=\"$o\" exec \"./$h\""
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
    /// gzip when the remote has `gzip`, unless the method knows the bytes
    /// cross no link that is slower than gunzip (a local user switch, a
    /// container engine on this machine). ssh compresses even to a
    /// loopback address: sshd's buffering of the upload costs more per byte
    /// than gunzip does. The compressed build is made once per build and
    /// kept on this machine's disk (`core/packed.rs`).
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
/// stdin, a socket) until the child has been started. `prelude` is the
/// prelude line when it has not been sent yet (a transport whose stdin is
/// the terminal it prompts on): it goes out as soon as the status line is in,
/// before anything else the stage reads.
pub(crate) fn run(
    fd: BorrowedFd<'_>,
    binaries: &Binaries,
    compression: Compression,
    deadline: Instant,
    mut prompter: Option<&mut Prompter>,
    prelude: Option<&[u8]>,
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
    let (status, args) = line.split_once(' ').unwrap_or((line.as_str(), ""));
    if let (Some(p), "cached" | "need") = (prelude, status) {
        write_all(fd, p, deadline)
            .map_err(|e| plain(format!("sending the configuration: {e}"), Vec::new()))?;
    }
    match status {
        "cached" => Ok(StageOutcome {
            uploaded: 0,
            rest: after,
        }),
        "nodir" => Err(plain(nodir_reason(args), after)),
        "need" => {
            // `need GZIP SYSTEM`: the directory is the stage's working
            // directory, never named here, so no path can break the line.
            let (gzip, system) = args.split_once(' ').unwrap_or((args, ""));
            let gzip = gzip == "1";
            let system = system.trim().to_owned();
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
            if let Err(e) = write_all(fd, head.as_bytes(), deadline)
                .and_then(|()| write_all(fd, &data, deadline))
            {
                // The stage may have found no directory after asking, and
                // left: its `nodir` line says why, not the broken pipe.
                let mut rest = after;
                let soon = deadline.min(Instant::now() + NODIR_WAIT);
                while read_some(fd, &mut rest, soon, None::<&mut Prompter>).is_ok() {}
                return Err(match nodir_in(&rest) {
                    Some((why, rest)) => plain(why, rest),
                    None => plain(format!("uploading the program: {e}"), rest),
                });
            }
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

/// How long a master whose upload broke waits for the stage's `nodir` line.
const NODIR_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The error for a stage's `nodir` line, `args` being what follows `nodir`.
fn nodir_reason(args: &str) -> String {
    format!(
        "no usable cache directory; tried: {}",
        args.trim().trim_end_matches(';')
    )
}

/// The error for a `MITOGEN-STAGE nodir` line in `output` (what the
/// transport printed after `need`), if there is one: the stage found no
/// directory after asking for the upload. Also `output` without that line,
/// as the rest of what was printed.
pub(crate) fn nodir_in(output: &[u8]) -> Option<(String, Vec<u8>)> {
    let marker = b"MITOGEN-STAGE nodir";
    let at = output.windows(marker.len()).position(|w| w == marker)?;
    let line = &output[at + marker.len()..];
    let end = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
    let why = nodir_reason(&String::from_utf8_lossy(&line[..end]));
    let past = (at + marker.len() + end + 1).min(output.len());
    Some((why, [&output[..at], &output[past..]].concat()))
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
    fn nodir_after_need_is_found_in_the_output() {
        let out = b"MITOGEN-STAGE need 1 Linux x86_64\nMITOGEN-STAGE nodir /a/mitogen: owned by another user; /b/mitogen-0: a symbolic link;\n";
        let (why, rest) = nodir_in(out).unwrap();
        assert_eq!(
            why,
            "no usable cache directory; tried: /a/mitogen: owned by another user; \
             /b/mitogen-0: a symbolic link"
        );
        assert_eq!(rest, b"MITOGEN-STAGE need 1 Linux x86_64\n");
        assert_eq!(
            nodir_in(b"MITOGEN-STAGE need 1 Linux x86_64\nbanner\n"),
            None
        );
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

/// The script run for real, by each shell there is, in directories of this
/// test's own (the tests with other users, against sshd, are in
/// `tests/integration/ssh/cache_trust.rs`).
#[cfg(test)]
mod runs {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    const HASH: &str = "0123456789abcdef0123456789abcdef";

    /// What the "build" does: say where it runs and with what, and what it
    /// finds on its stdin (the prelude, when started from the cache).
    const BUILD: &str = "#!/bin/sh\nread -r l; echo \"ran $MITOGEN_HASH in $(pwd -P) from $MITOGEN_CWD piped=$MITOGEN_PIPED stdin=$l handed=$MITOGEN_PRELUDE\"\n";

    /// A prelude line, as the master sends it before anything comes back.
    const PRELUDE: &str = "00ff10\n";

    /// The shells installed here, `sh` always.
    fn shells() -> Vec<Vec<&'static str>> {
        let mut v = vec![vec!["sh"]];
        for (sh, probe) in [(vec!["dash"], "dash"), (vec!["busybox", "sh"], "busybox")] {
            if Command::new(probe)
                .args(if probe == "busybox" {
                    &["true"][..]
                } else {
                    &["-c", "true"][..]
                })
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
            {
                v.push(sh);
            }
        }
        // CI installs both (`.ci/run`): there, a missing shell is a failure,
        // not a case quietly left out.
        assert!(
            std::env::var_os("CI").is_none() || v.len() == 3,
            "CI must have dash and busybox: {v:?}"
        );
        v
    }

    /// A directory of this test's own, removed at the end; `name` may hold
    /// spaces.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let p = std::env::temp_dir()
                .join(format!("mitogen-stage-test-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(p.join("home dir")).unwrap();
            std::fs::create_dir_all(p.join("tmp")).unwrap();
            Scratch(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Runs the stage with `HOME` and `TMPDIR` in `scratch`, answering an
    /// upload request with [`BUILD`]; its output.
    fn stage(shell: &[&str], scratch: &Path, force: bool) -> String {
        stage_with(
            shell,
            scratch,
            force,
            &std::env::var("PATH").unwrap_or_default(),
            PRELUDE,
        )
    }

    /// [`stage`] with `PATH` set to `path`.
    fn stage_with_path(shell: &[&str], scratch: &Path, force: bool, path: &str) -> String {
        stage_with(shell, scratch, force, path, PRELUDE)
    }

    /// [`stage`] with `PATH` set to `path` and `prelude` sent first.
    fn stage_with(
        shell: &[&str],
        scratch: &Path,
        force: bool,
        path: &str,
        prelude: &str,
    ) -> String {
        stage_planted(shell, scratch, force, path, prelude, None)
    }

    /// [`stage_with`], calling `plant` with the stage's process id (its
    /// `$$`) before the stage starts: the shell first waits for a line on
    /// its stdin, then `exec`s the stage in the same process.
    fn stage_planted(
        shell: &[&str],
        scratch: &Path,
        force: bool,
        path: &str,
        prelude: &str,
        plant: Option<&dyn Fn(u32)>,
    ) -> String {
        let mut cmd = Command::new(shell[0]);
        cmd.args(&shell[1..]).arg("-c");
        if plant.is_some() {
            cmd.arg("read -r x; exec \"$@\"")
                .arg("wait")
                .args(shell)
                .arg("-c");
        }
        let mut child = cmd
            .arg(script(HASH, force))
            .current_dir(scratch)
            .env("HOME", scratch.join("home dir"))
            .env("TMPDIR", scratch.join("tmp"))
            .env_remove("XDG_CACHE_HOME")
            .env("PATH", path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        // All at once, as the master does over a slow link: the prelude
        // before the status line is known, then the upload.
        let mut answer = prelude.as_bytes().to_vec();
        if let Some(plant) = plant {
            plant(child.id());
            answer.splice(0..0, *b"go\n");
        }
        answer.extend_from_slice(format!("{HASH} {} 0\n", BUILD.len()).as_bytes());
        answer.extend_from_slice(BUILD.as_bytes());
        // A cached start reads nothing: the pipe may be closed.
        let _ = child.stdin.take().unwrap().write_all(&answer);
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn stage_uploads_then_starts_from_the_cache() {
        for shell in shells() {
            let s = Scratch::new(&format!("plain-{}", shell[0]));
            let cache = s.0.join("home dir/.cache/mitogen");
            let first = stage(&shell, &s.0, false);
            let ran = format!("ran {HASH} in {} from {}", cache.display(), s.0.display());
            // Uploaded: the stage skipped the prelude, and the build sees
            // none of it on its stdin (nor anything of the upload), but is
            // handed it in its environment.
            assert!(
                first.starts_with("MITOGEN-STAGE need ")
                    && first.contains(&format!(
                        "{ran} piped= stdin= handed={}\n",
                        PRELUDE.trim_end()
                    )),
                "{shell:?}: {first}"
            );
            assert_eq!(mode(&cache), 0o700, "{shell:?}");
            // Cached: started at once, and the prelude is the first thing on
            // its stdin.
            let second = stage(&shell, &s.0, false);
            assert_eq!(
                second,
                format!(
                    "MITOGEN-STAGE cached\n{ran} piped=1 stdin={} handed=\n",
                    PRELUDE.trim_end()
                ),
                "{shell:?}"
            );
            let forced = stage(&shell, &s.0, true);
            assert!(
                forced.starts_with("MITOGEN-STAGE need "),
                "{shell:?}: {forced}"
            );

            // A cache directory left open to others is not run from, and is
            // made private again by the upload that follows.
            std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
            let loose = stage(&shell, &s.0, false);
            assert!(
                loose.starts_with("MITOGEN-STAGE need "),
                "{shell:?}: {loose}"
            );
            assert_eq!(mode(&cache), 0o700, "{shell:?}");
        }
    }

    #[test]
    fn stage_never_follows_a_link_to_the_cache() {
        for shell in shells() {
            let s = Scratch::new(&format!("link-{}", shell[0]));
            // ~/.cache/mitogen is a link to a directory holding the build,
            // private and of this user's: neither run from nor written.
            let elsewhere = s.0.join("elsewhere");
            std::fs::create_dir(&elsewhere).unwrap();
            std::fs::write(elsewhere.join(HASH), BUILD).unwrap();
            std::fs::set_permissions(elsewhere.join(HASH), std::fs::Permissions::from_mode(0o700))
                .unwrap();
            std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::create_dir(s.0.join("home dir/.cache")).unwrap();
            std::os::unix::fs::symlink(&elsewhere, s.0.join("home dir/.cache/mitogen")).unwrap();
            // Tools of the same names there, for a PATH that holds `.`:
            // never run either.
            let marker = s.0.join("a tool ran");
            for tool in ["id", "ls", "mkdir", "chmod", "uname", "rm", "head", "mv"] {
                let t = elsewhere.join(tool);
                std::fs::write(&t, format!("#!/bin/sh\ntouch \"{}\"\n", marker.display())).unwrap();
                std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            let path = format!(".:{}", std::env::var("PATH").unwrap_or_default());
            let out = stage_with_path(&shell, &s.0, false, &path);
            assert!(
                !marker.exists(),
                "{shell:?}: a tool in the linked directory ran"
            );
            let uid = rustix::process::geteuid().as_raw();
            let fallback = s.0.join(format!("tmp/mitogen-{uid}"));
            assert!(
                out.starts_with("MITOGEN-STAGE need ")
                    && out.contains(&format!("in {} ", fallback.display())),
                "{shell:?}: {out}"
            );
            assert_eq!(mode(&elsewhere), 0o755, "{shell:?}");
            // Nothing written there either (no file of the noexec check).
            assert_eq!(
                std::fs::read_dir(&elsewhere).unwrap().count(),
                9,
                "{shell:?}"
            );
        }
    }

    #[test]
    fn stage_removes_a_link_under_its_temporary_name() {
        for shell in shells() {
            let s = Scratch::new(&format!("templink-{}", shell[0]));
            // The cache directory is the user's and private, but a link
            // stands under the upload's temporary name (left from a time the
            // directory was open to others), leading to a file of the
            // user's: the stage neither writes through it nor runs it.
            let cache = s.0.join("home dir/.cache/mitogen");
            std::fs::create_dir_all(&cache).unwrap();
            std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
            let victim = s.0.join("a file of the user's");
            std::fs::write(&victim, "kept\n").unwrap();
            let plant = |pid: u32| {
                std::os::unix::fs::symlink(&victim, cache.join(format!(".{HASH}.{pid}"))).unwrap();
            };
            let path = std::env::var("PATH").unwrap_or_default();
            let out = stage_planted(&shell, &s.0, false, &path, PRELUDE, Some(&plant));
            assert!(
                out.starts_with("MITOGEN-STAGE need ") && out.contains(&format!("ran {HASH} in ")),
                "{shell:?}: {out}"
            );
            assert_eq!(
                std::fs::read_to_string(&victim).unwrap(),
                "kept\n",
                "{shell:?}"
            );
            assert_eq!(mode(&victim), 0o644 & !umask(), "{shell:?}");
            // Only the build is left in the directory.
            let names: Vec<_> = std::fs::read_dir(&cache)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(names, [HASH], "{shell:?}");
        }
    }

    /// This process's umask (read without changing it for long).
    fn umask() -> u32 {
        let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
        rustix::process::umask(old);
        old.bits()
    }

    #[test]
    fn stage_skips_a_long_prelude_before_an_upload() {
        // A first call of a few KiB rides in the prelude: each shell's
        // `read` takes the whole line, so the upload after it is intact.
        let long = format!("{}\n", "0123456789abcdef".repeat(3500));
        assert!(long.len() < crate::core::handshake::MAX_PRELUDE);
        for shell in shells() {
            let s = Scratch::new(&format!("long-{}", shell[0]));
            let path = std::env::var("PATH").unwrap_or_default();
            let out = stage_with(&shell, &s.0, false, &path, &long);
            assert!(
                out.starts_with("MITOGEN-STAGE need ")
                    && out.contains(&format!(" piped= stdin= handed={}\n", long.trim_end())),
                "{shell:?}: {out}"
            );
            let out = stage_with(&shell, &s.0, false, &path, &long);
            assert_eq!(
                out.lines()
                    .nth(1)
                    .map(|l| l.ends_with(&format!("stdin={} handed=", long.trim_end()))),
                Some(true),
                "{shell:?}: {}",
                &out[..out.len().min(300)]
            );
        }
    }
}
