//! How `mitogen facts` reports each target: a few lines of text, each
//! starting with `[TARGET]` so that they can be grepped per target, or one
//! JSON object per target per line (`--json`).
//!
//! Every string of the facts comes from the target, and a hostile one can
//! put anything in its host name, its os-release, a mount point or an
//! interface name: the text output shows their control characters visibly
//! ([`visible`]), as `mitogen run` shows a target's output; JSON escapes
//! them by itself.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::time::Duration;

use mitogen::builtins::{Facts, Mount};
use serde::Serialize;

use super::human::{visible, write_unfinished};
use crate::run::{Outcome, TargetReport};

/// Writes the reports of `mitogen facts`.
pub trait FactsPrinter {
    /// Writes one target's facts (or why there are none), as soon as known.
    fn target(&mut self, report: &TargetReport<Facts>) -> io::Result<()>;

    /// Writes the summary after the last target (text only, for more than
    /// one target).
    fn summary(&mut self, _reports: &[TargetReport<Facts>], _elapsed: Duration) -> io::Result<()> {
        Ok(())
    }

    /// Called once after the last report, e.g. to flush.
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The printer chosen by `--json`.
pub fn new(json: bool) -> Box<dyn FactsPrinter> {
    if json {
        Box::new(Json(io::stdout()))
    } else {
        Box::new(Text {
            out: io::stdout(),
            err: io::stderr(),
        })
    }
}

/// Text: facts on `out`, failures and the summary on `err`.
pub struct Text<O, E> {
    /// Where the facts go.
    pub out: O,
    /// Where failures and the summary go.
    pub err: E,
}

/// `n` bytes in GiB, one decimal.
fn gib(n: u64) -> String {
    format!("{:.1}", n as f64 / (1u64 << 30) as f64)
}

/// An uptime the way people say it: `10 d 3 h`, `3 h 12 min`, `5 min`.
fn uptime(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    let (d, h, m) = (s / 86_400, s / 3600 % 24, s / 60 % 60);
    match (d, h) {
        (0, 0) => format!("{m} min"),
        (0, _) => format!("{h} h {m} min"),
        _ => format!("{d} d {h} h"),
    }
}

/// The first line's summary of `f`, parts that are unknown left out.
fn headline(f: &Facts) -> String {
    let mut parts: Vec<String> = Vec::new();
    let os = f.os.pretty_name.clone().or_else(|| {
        let id = f.os.id.clone()?;
        Some(match &f.os.version_id {
            Some(v) => format!("{id} {v}"),
            None => id,
        })
    });
    parts.extend(os);
    let kernel: Vec<&str> = [&f.kernel.name, &f.kernel.release, &f.kernel.arch]
        .into_iter()
        .filter_map(|s| s.as_deref())
        .collect();
    if !kernel.is_empty() {
        parts.push(kernel.join(" "));
    }
    if let Some(n) = f.cpu.online {
        parts.push(format!("{n} CPU{}", if n == 1 { "" } else { "s" }));
    }
    if let (Some(avail), Some(total)) = (f.memory.available_bytes, f.memory.total_bytes) {
        parts.push(format!("{}/{} GiB free", gib(avail), gib(total)));
    }
    if let Some(u) = f.uptime_secs {
        parts.push(format!("up {}", uptime(u)));
    }
    if let Some([one, five, fifteen]) = f.load {
        parts.push(format!("load {one:.2} {five:.2} {fifteen:.2}"));
    }
    let host = f.hostname.as_deref().unwrap_or("?");
    format!("{host}: {}", parts.join(", "))
}

/// The indented lines: user, each mount, each interface with addresses.
fn details(f: &Facts) -> Vec<String> {
    let mut lines = Vec::new();
    let u = &f.user;
    let mut user = format!(
        "user {} (uid {}, gid {})",
        u.name.as_deref().unwrap_or("?"),
        u.uid,
        u.gid
    );
    let groups: Vec<String> = u
        .groups
        .iter()
        .map(|g| g.name.clone().unwrap_or_else(|| g.gid.to_string()))
        .collect();
    if !groups.is_empty() {
        let _ = write!(user, ", groups {}", groups.join(","));
    }
    if let Some(tz) = &f.timezone {
        let _ = write!(user, "; time zone {tz}");
    }
    if let Some(c) = &f.container {
        let _ = write!(user, "; in a {c} container");
    }
    lines.push(user);
    // One line per file system: its bind mounts (same source and type,
    // same sizes) are named on the first one's line.
    let mut shown: Vec<(&Mount, Vec<&str>)> = Vec::new();
    for m in &f.mounts {
        let key = |m: &Mount| {
            (
                m.source.clone(),
                m.fstype.clone(),
                m.size_bytes,
                m.available_bytes,
            )
        };
        match shown.iter_mut().find(|(first, _)| key(first) == key(m)) {
            Some((_, also)) => also.push(&m.mountpoint),
            None => shown.push((m, Vec::new())),
        }
    }
    for (m, also) in shown {
        let size = match (m.available_bytes, m.size_bytes) {
            (Some(a), Some(s)) => format!("{}/{} GiB free", gib(a), gib(s)),
            _ => "size unknown".to_owned(),
        };
        let mut line = format!("disk {} {} {}: {size}", m.mountpoint, m.fstype, m.source);
        if !also.is_empty() {
            let _ = write!(line, " (also at {})", also.join(" "));
        }
        lines.push(line);
    }
    for i in &f.interfaces {
        let loopback = i.addresses.iter().all(|a| a.ip.is_loopback());
        if i.addresses.is_empty() || loopback {
            continue;
        }
        let addrs: Vec<String> = i
            .addresses
            .iter()
            .map(|a| format!("{}/{}", a.ip, a.prefix))
            .collect();
        let mut line = format!("net {} {}", i.name, addrs.join(" "));
        if let Some(mac) = &i.mac {
            let _ = write!(line, " ({mac})");
        }
        if !i.up {
            line.push_str(" down");
        }
        lines.push(line);
    }
    lines
}

impl<O: Write, E: Write> FactsPrinter for Text<O, E> {
    fn target(&mut self, r: &TargetReport<Facts>) -> io::Result<()> {
        let label = visible(&r.target);
        match &r.outcome {
            Outcome::Ran(f) => {
                writeln!(self.out, "[{label}] {}", visible(&headline(f)))?;
                for line in details(f) {
                    writeln!(self.out, "[{label}]   {}", visible(&line))?;
                }
                self.out.flush()
            }
            _ => write_unfinished(&mut self.err, &label, r),
        }
    }

    fn summary(&mut self, reports: &[TargetReport<Facts>], elapsed: Duration) -> io::Result<()> {
        if reports.len() < 2 {
            return Ok(());
        }
        let ok = reports
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Ran(_)))
            .count();
        writeln!(
            self.err,
            "{} targets: {ok} answered, {} failed ({:.2} s)",
            reports.len(),
            reports.len() - ok,
            elapsed.as_secs_f64()
        )?;
        self.err.flush()
    }
}

/// JSON lines on the inner writer.
pub struct Json<W>(pub W);

/// The JSON record of one target; field names are part of the CLI's
/// interface (docs/cli.md), the envelope that of `mitogen run --json`.
#[derive(Serialize)]
struct Record<'a> {
    target: &'a str,
    facts: Option<&'a Facts>,
    error: Option<String>,
    duration_ms: f64,
}

impl<W: Write> FactsPrinter for Json<W> {
    fn target(&mut self, r: &TargetReport<Facts>) -> io::Result<()> {
        let record = Record {
            target: &r.target,
            facts: match &r.outcome {
                Outcome::Ran(f) => Some(f),
                _ => None,
            },
            error: r.outcome.error(),
            duration_ms: (r.duration.as_secs_f64() * 1e6).round() / 1e3,
        };
        // Escaped as run's records are: a target's strings reach no
        // terminal as raw C1 or direction controls.
        super::json::write_line(&mut self.0, &record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mitogen::builtins::{Address, Interface};

    fn report(f: Facts) -> TargetReport<Facts> {
        TargetReport {
            target: "web1\x1b]0;owned\x07".into(),
            outcome: Outcome::Ran(f),
            duration: Duration::from_millis(3),
        }
    }

    /// Facts as a hostile target would send them: control characters in
    /// every string that reaches the screen.
    fn hostile() -> Facts {
        let mut f = Facts::default();
        f.hostname = Some("web1\r[web2] forged\x1b[2K".into());
        f.os.pretty_name = Some("Debian\x1b]0;title\x07 12\n[web3] x".into());
        f.kernel.release = Some("6.1\x08\x08 \u{202e}0 tixe".into());
        f.cpu.online = Some(2);
        f.user.name = Some("root\x1b[8m".into());
        f.timezone = Some("UTC\u{9b}31m".into());
        f.container = Some("docker\x7f".into());
        let mut m = Mount::default();
        m.mountpoint = "/mnt/\x1b[1A".into();
        m.fstype = "ext4".into();
        m.source = "/dev/sda1\r".into();
        m.size_bytes = Some(2 << 30);
        m.available_bytes = Some(1 << 30);
        f.mounts.push(m.clone());
        m.mountpoint = "/srv".into();
        f.mounts.push(m);
        let mut i = Interface::default();
        i.name = "eth0\x1bc".into();
        i.up = true;
        i.mac = Some("02:42\x1b[H".into());
        i.addresses
            .push(Address::new("10.0.0.5".parse().unwrap(), 24));
        f.interfaces.push(i);
        f
    }

    #[test]
    fn text_shows_a_hostile_targets_control_characters_visibly() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut p = Text {
            out: &mut out,
            err: &mut err,
        };
        p.target(&report(hostile())).unwrap();
        let text = String::from_utf8(out).unwrap();
        for c in text.chars() {
            assert!(
                c == '\n' || !(c.is_control()),
                "control character {c:?} in {text:?}"
            );
        }
        assert!(
            text.contains("<U+202E>0 tixe") && !text.contains('\u{202e}'),
            "{text}"
        );
        // One line per part, each with the (escaped) label: nothing the
        // target said starts a line of its own.
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines.iter().all(|l| l.starts_with("[web1^[]0;owned^G] ")),
            "{text}"
        );
        assert!(lines[0].contains("web1^M[web2] forged^[[2K: Debian^[]0;title^G 12^J[web3] x"));
        assert!(lines[1].contains("user root^[[8m") && lines[1].contains("UTC\\x9b31m"));
        assert!(lines[1].contains("docker^?"));
        assert!(
            lines[2].contains("disk /mnt/^[[1A ext4 /dev/sda1^M: 1.0/2.0 GiB free (also at /srv)")
        );
        assert!(lines[3].contains("net eth0^[c 10.0.0.5/24 (02:42^[[H)"));
        assert!(err.is_empty());
    }

    #[test]
    fn a_failure_goes_to_stderr_escaped() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut p = Text {
            out: &mut out,
            err: &mut err,
        };
        let r = TargetReport::<Facts> {
            target: "web1".into(),
            outcome: Outcome::Failed("ssh said \x1b[31mno".into()),
            duration: Duration::ZERO,
        };
        p.target(&r).unwrap();
        assert!(out.is_empty());
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "[web1] failed: ssh said ^[[31mno\n"
        );
    }

    #[test]
    fn json_has_the_envelope_and_every_fact() {
        let mut buf = Vec::new();
        Json(&mut buf).target(&report(hostile())).unwrap();
        assert!(buf.ends_with(b"}\n") && !buf[..buf.len() - 1].contains(&b'\n'));
        assert!(!buf.contains(&0x1b), "raw escape in JSON");
        let raw = String::from_utf8_lossy(&buf);
        assert!(
            !raw.contains(['\u{9b}', '\u{202e}']),
            "raw C1 or override in {raw}"
        );
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["target"], "web1\x1b]0;owned\x07");
        assert!(v["error"].is_null());
        assert_eq!(v["duration_ms"], 3.0);
        let f = &v["facts"];
        assert_eq!(f["hostname"], "web1\r[web2] forged\x1b[2K");
        assert_eq!(f["cpu"]["online"], 2);
        assert_eq!(f["interfaces"][0]["addresses"][0]["ip"], "10.0.0.5");
        for key in [
            "os",
            "kernel",
            "memory",
            "uptime_secs",
            "load",
            "user",
            "mounts",
            "timezone",
            "container",
        ] {
            assert!(f.get(key).is_some(), "no {key} in {f}");
        }
        let back: Facts = serde_json::from_value(f.clone()).unwrap();
        assert_eq!(back, hostile());
    }

    #[test]
    fn uptimes_read_as_people_say_them() {
        assert_eq!(uptime(59.0), "0 min");
        assert_eq!(uptime(3.0 * 3600.0 + 720.0), "3 h 12 min");
        assert_eq!(uptime(10.0 * 86_400.0 + 3.0 * 3600.0 + 5.0), "10 d 3 h");
    }
}
