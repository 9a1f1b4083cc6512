//! A hop's password goes only down the path to the context that types it: a
//! sibling subtree never reads it (watched with `strace`).

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use mitogen::{Local, Router};

use crate::calls::add;

/// Everything a process reads while it is tapped, as `strace` shows it: the
/// tool that a hostile account on that process could run itself. Read
/// syscalls only, each with a full dump of the bytes read.
struct Tap {
    strace: std::process::Child,
    out: std::path::PathBuf,
}

/// What a tapped process read: the capture, and the bytes of each read.
struct Reads {
    /// The capture as strace wrote it.
    text: String,
    /// `(thread id, bytes)` per read syscall, from its hex dump, in order.
    by_thread: Vec<(u32, Vec<u8>)>,
}

impl Tap {
    /// Attaches to `pid` and all its threads, and with `follow` to every
    /// process it forks from now on (without, to the threads it has now
    /// only), and returns once every thread is traced.
    fn start(pid: u32, tag: &str, follow: bool) -> Result<Tap> {
        let out =
            std::env::temp_dir().join(format!("mitogen-tap-{tag}-{}-{pid}", std::process::id()));
        let _ = std::fs::remove_file(&out);
        let mut strace = std::process::Command::new("strace");
        if follow {
            strace.args(["-f", "-p", &pid.to_string()]);
        } else {
            for tid in threads_of(pid)? {
                strace.args(["-p", &tid.to_string()]);
            }
        }
        let strace = strace
            .args(["-qq", "-e", "trace=read,readv,recvfrom,recvmsg,splice"])
            .args(["-e", "read=all", "-s", "1000000", "-o"])
            .arg(&out)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("strace (is it installed?)")?;
        let mut tap = Tap { strace, out };
        let me = tap.strace.id();
        let traced = || -> bool {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                return false;
            };
            tasks.filter_map(|t| t.ok()).all(|t| {
                std::fs::read_to_string(t.path().join("status")).is_ok_and(|s| {
                    s.lines().any(|l| {
                        l.strip_prefix("TracerPid:").map(str::trim) == Some(&me.to_string())
                    })
                })
            })
        };
        let started = Instant::now();
        while !traced() {
            if let Some(status) = tap.strace.try_wait()? {
                bail!("strace on {pid} ended with {status} before it attached");
            }
            ensure!(
                started.elapsed() < Duration::from_secs(10),
                "strace did not attach to {pid} in 10 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(tap)
    }

    /// Detaches (strace lets go of every thread on SIGTERM) and returns the
    /// capture.
    fn stop(mut self) -> Result<Reads> {
        // SAFETY: plain kill(2) on the strace process this tap started.
        unsafe { libc::kill(self.strace.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.strace.try_wait()?.is_none() {
            ensure!(Instant::now() < deadline, "strace did not stop in 10 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        let text = std::fs::read_to_string(&self.out)?;
        Ok(Reads::parse(text))
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = self.strace.kill();
        let _ = self.strace.wait();
        let _ = std::fs::remove_file(&self.out);
    }
}

impl Reads {
    /// Splits the capture into syscalls (`TID name(...)` lines, each with
    /// its dump below it: ` | 00000  hh hh ...  ascii |`).
    fn parse(text: String) -> Reads {
        let mut by_thread: Vec<(u32, Vec<u8>)> = Vec::new();
        for line in text.lines() {
            if let Some(dump) = line.strip_prefix(" | ") {
                // Five digits of offset, two spaces, then 16 bytes in 49
                // columns (a space more after the eighth).
                let hex = dump.get(7..56).or_else(|| dump.get(7..)).unwrap_or("");
                if let Some((_, bytes)) = by_thread.last_mut() {
                    bytes.extend(
                        hex.split_whitespace()
                            .filter_map(|b| u8::from_str_radix(b, 16).ok()),
                    );
                }
            } else if let Some(tid) = line.split(' ').next().and_then(|t| t.parse().ok()) {
                by_thread.push((tid, Vec::new()));
            }
        }
        Reads { text, by_thread }
    }

    /// Whether `needle` was read, by a thread in `threads` (any thread:
    /// `None`): in the dumps' bytes, or anywhere in the capture as text or
    /// in the hex forms strace prints (`\x70\x77`, `70 77`).
    fn saw(&self, needle: &[u8], threads: Option<&[u32]>) -> bool {
        let in_dumps = self.by_thread.iter().any(|(tid, bytes)| {
            threads.is_none_or(|t| t.contains(tid))
                && bytes.windows(needle.len()).any(|w| w == needle)
        });
        if threads.is_some() {
            return in_dumps;
        }
        let escaped: String = needle.iter().map(|b| format!("\\x{b:02x}")).collect();
        let spaced: Vec<String> = needle.iter().map(|b| format!("{b:02x}")).collect();
        in_dumps
            || std::str::from_utf8(needle).is_ok_and(|s| self.text.contains(s))
            || self.text.contains(&escaped)
            || self.text.contains(&spaced.join(" "))
    }
}

/// The threads of `pid` now.
fn threads_of(pid: u32) -> Result<Vec<u32>> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/task"))?
        .filter_map(|t| t.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

/// A sudo hop with a password, started through an intermediate: the
/// password travels master → mid only. Two sibling subtrees of mid watch
/// everything they read while the hop connects and is used: a leaf, and an
/// intermediate with a child of its own (which relays its child's traffic).
/// Neither ever reads the password, while each reads the markers sent to it
/// (the tap works), and mid itself, tapped the same way, reads the password
/// (the tap would have caught it).
///
/// ```text
/// master ─┬─ mid (sudo to a user whose sudo asks its password)
///         │    └─ sudo:app with that password, typed by mid
///         ├─ leaf sibling
///         └─ sibling ─ below
/// ```
pub fn hop_password_never_reaches_a_sibling_subtree(router: &Router) -> Result<()> {
    use crate::switch_user::{echo_bytes, fixture, APP_USER, PW_USER, PW_USER_PASSWORD};
    use crate::util::{pid_of, Guard};
    use mitogen::Sudo;

    fixture()?;
    let t = Duration::from_secs(30);
    let leaf = Guard(router.start(None, Local::new().name("ht-pw-leaf"))?);
    let sibling = Guard(router.start(None, Local::new().name("ht-pw-sibling"))?);
    let below = Guard(router.start(Some(&sibling), Local::new().name("ht-pw-below"))?);
    // Root needs no password to become the password user.
    let mid = Guard(router.start(None, Sudo::new().user(PW_USER).connect_timeout(t))?);
    for c in [&leaf, &sibling, &below, &mid] {
        ensure!(c.call_timeout(add, (1, 2), t)? == 3);
    }
    // The pid of mid's own process (the one the master started is sudo's).
    let mid_pid = mid.call_timeout(crate::calls::pid, (), t)?;
    let (leaf_pid, sibling_pid) = (pid_of(&leaf)?, pid_of(&sibling)?);

    // The app user's copy of the program is cached before the taps start:
    // mid's tap sees its own threads only (not sudo's, which read the
    // password from the pty, nor the copy mid would ship).
    let password = PW_USER_PASSWORD.as_bytes();
    let hop = || {
        Sudo::new()
            .user(APP_USER)
            .password(PW_USER_PASSWORD)
            .connect_timeout(t)
    };
    drop(Guard(router.start(Some(&mid), hop())?));
    let taps = [
        ("leaf", Tap::start(leaf_pid, "leaf", true)?),
        ("sibling", Tap::start(sibling_pid, "sibling", true)?),
    ];
    let mid_tap = Tap::start(mid_pid, "mid", false)?;
    let marker = |who: &str| format!("tap-marker-{who}-{}", std::process::id()).into_bytes();
    let app = (|| -> Result<Guard> {
        for (ctx, who) in [(&leaf, "leaf"), (&sibling, "sibling"), (&below, "below")] {
            ensure!(ctx.call_timeout(echo_bytes, (marker(who),), t)? == marker(who));
        }
        let app = Guard(router.start(Some(&mid), hop())?);
        for _ in 0..3 {
            ensure!(app.call_timeout(add, (2, 2), t)? == 4);
            for ctx in [&leaf, &sibling, &below] {
                ensure!(ctx.call_timeout(add, (3, 3), t)? == 6);
            }
        }
        Ok(app)
    })();
    let mid_threads = threads_of(mid_pid)?;
    let mid_reads = mid_tap.stop()?;
    let mut reads = Vec::new();
    for (who, tap) in taps {
        reads.push((who, tap.stop()?));
    }
    let app = app?;

    ensure!(
        mid_reads.saw(password, Some(&mid_threads)),
        "mid itself never read the password it types: the tap does not work"
    );
    for (who, r) in &reads {
        ensure!(
            r.saw(&marker(who), None),
            "the {who}'s tap missed the marker sent to it"
        );
        ensure!(
            !r.saw(password, None),
            "the {who} read the password of a hop outside its subtree"
        );
    }
    let (_, sibling_reads) = &reads[1];
    ensure!(
        sibling_reads.saw(&marker("below"), None),
        "the sibling's tap missed the marker it relayed to its child"
    );
    drop(app);
    Ok(())
}

crate::tests! {
    hop_password_never_reaches_a_sibling_subtree => 120,
}
