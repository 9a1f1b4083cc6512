//! Text for people: output lines prefixed with the target (as pssh and
//! ansible do, so output from many targets can be told apart and grepped),
//! then a status line per target, and a summary across targets.
//!
//! What a target sends is written with its control characters made visible
//! ([`write_visible`]): a carriage return, an escape sequence or a
//! backspace from a hostile target could otherwise move the cursor back
//! over its own label and draw another target's, erase the progress line or
//! a summary, or retitle the terminal; Unicode direction controls and
//! invisible format characters are shown as `<U+202E>`, since they could
//! make a line read as something it is not (see [`super::invisible`]).
//! `--json` carries the text itself (JSON escapes control characters, and
//! our JSON writer those characters too).

use std::io::{self, Write};
use std::time::Duration;

use super::invisible::is_invisible;
use super::Printer;
use crate::bench::files::FilesReport;
use crate::bench::BenchReport;
use crate::run::{Outcome, TargetReport};

/// Writes command output and statuses to `out`, a command's stderr and
/// failures to `err`.
pub struct HumanPrinter<O, E> {
    pub(super) out: O,
    pub(super) err: E,
}

impl<O: Write, E: Write> HumanPrinter<O, E> {
    /// A printer writing to `out` and `err`.
    pub fn new(out: O, err: E) -> HumanPrinter<O, E> {
        HumanPrinter { out, err }
    }
}

/// Writes every line of `data` as `label: line`; a last line without a
/// newline still gets one, so the next target's output starts on its own line.
/// A line's control characters are made visible (a `\r` just before its
/// newline, harmless, is dropped).
fn prefixed(w: &mut impl Write, label: &str, data: &[u8]) -> io::Result<()> {
    for line in data.split_inclusive(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        write!(w, "{label}: ")?;
        write_visible(w, line)?;
        w.write_all(b"\n")?;
    }
    Ok(())
}

/// Writes `data` with every control character but the tab made visible, so
/// that nothing in it can move the cursor or change the terminal: C0
/// characters and DEL in `cat -v`'s caret notation (`^M`, `^[`, `^?`), C1
/// characters (U+0080 to U+009F, and such bytes that are not UTF-8) as
/// `\x9b`; and Unicode's direction controls and invisible format
/// characters ([`is_invisible`]) as `<U+202E>`, so that nothing in it can
/// reorder or hide what is shown either. Everything else, other non-ASCII
/// text and invalid UTF-8 included, is written as it is.
pub fn write_visible(w: &mut impl Write, data: &[u8]) -> io::Result<()> {
    let plain = |b: &u8| (*b >= 0x20 || *b == b'\t') && *b < 0x7f;
    if data.iter().all(plain) {
        return w.write_all(data);
    }
    let mut out = Vec::with_capacity(data.len() + 16);
    for chunk in data.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c as u32 {
                0x09 => out.push(b'\t'),
                n @ 0..=0x1f => out.extend([b'^', n as u8 + 0x40]),
                0x7f => out.extend(b"^?"),
                n @ 0x80..=0x9f => out.extend(format!("\\x{n:02x}").bytes()),
                n if is_invisible(c) => out.extend(format!("<U+{n:04X}>").bytes()),
                _ => out.extend(c.encode_utf8(&mut [0; 4]).bytes()),
            }
        }
        for &b in chunk.invalid() {
            match b {
                0x80..=0x9f => out.extend(format!("\\x{b:02x}").bytes()),
                b => out.push(b),
            }
        }
    }
    w.write_all(&out)
}

/// `text` with its control characters made visible, as [`write_visible`]
/// (for messages that may carry what a target said, such as a failure).
pub fn visible(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    // Writing to a Vec cannot fail.
    let _ = write_visible(&mut out, text.as_bytes());
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes, on `err`, the line of a target that has no result: it failed or
/// timed out (nothing for one that has a result, which each command shows
/// its own way).
pub(super) fn write_unfinished<T>(
    err: &mut impl Write,
    label: &str,
    r: &TargetReport<T>,
) -> io::Result<()> {
    match &r.outcome {
        Outcome::Failed(e) => writeln!(err, "[{label}] failed: {}", visible(e))?,
        Outcome::TimedOut => writeln!(err, "[{label}] timed out after {}", millis(r.duration))?,
        Outcome::Ran(_) => return Ok(()),
    }
    err.flush()
}

pub(super) fn millis(d: std::time::Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

impl<O: Write, E: Write> Printer for HumanPrinter<O, E> {
    fn target(&mut self, r: &TargetReport) -> io::Result<()> {
        let label = &visible(&r.target);
        match &r.outcome {
            Outcome::Ran(out) => {
                prefixed(&mut self.out, label, &out.stdout)?;
                self.out.flush()?;
                prefixed(&mut self.err, label, &out.stderr)?;
                self.err.flush()?;
                match (out.code, out.signal) {
                    (Some(code), _) => {
                        writeln!(self.out, "[{label}] exit {code} in {}", millis(r.duration))?
                    }
                    (None, Some(sig)) => writeln!(
                        self.out,
                        "[{label}] killed by signal {sig} in {}",
                        millis(r.duration)
                    )?,
                    (None, None) => writeln!(
                        self.out,
                        "[{label}] ended without a status in {}",
                        millis(r.duration)
                    )?,
                }
                self.out.flush()
            }
            _ => write_unfinished(&mut self.err, label, r),
        }
    }

    fn summary(&mut self, reports: &[TargetReport], elapsed: Duration) -> io::Result<()> {
        if reports.len() < 2 {
            return Ok(());
        }
        let (mut zero, mut nonzero, mut failed) = (0, 0, 0);
        for r in reports {
            match &r.outcome {
                Outcome::Ran(out) if out.success() => zero += 1,
                Outcome::Ran(_) => nonzero += 1,
                Outcome::Failed(_) | Outcome::TimedOut => failed += 1,
            }
        }
        writeln!(
            self.err,
            "{} targets: {zero} exit 0, {nonzero} exit non-zero, {failed} failed ({:.2} s)",
            reports.len(),
            elapsed.as_secs_f64()
        )?;
        self.err.flush()
    }

    fn bench(&mut self, target: &str, r: &BenchReport) -> io::Result<()> {
        let ms = |v: f64| format!("{v:.3} ms");
        let mib_s = |v: f64| format!("{v:.1} MiB/s");
        // More than one hop without the single sudo hop's floor: a chain,
        // whose floor is the sum of its hops' (see `bench::chain`).
        let chain = r.floor_ms.is_some()
            && target.parse::<mitogen::Target>().is_ok_and(|t| {
                t.hops().len() > 1 && crate::bench::sudo::SudoFloor::for_target(&t).is_none()
            });
        let connect_what = if r.ssh_floor_ms.is_some() {
            "start a context (program cached), first call"
        } else if chain {
            "start every hop (programs cached), first call"
        } else {
            "start a context, get its first call's result"
        };
        let mut rows = vec![("connect_ms", ms(r.connect_ms), connect_what)];
        if let Some(v) = r.connect_cold_ms {
            rows.push((
                "connect_cold_ms",
                ms(v),
                "the same with the remote cache empty",
            ));
        }
        if let Some(v) = r.ssh_floor_ms {
            rows.push(("ssh_floor_ms", ms(v), "plain `ssh HOST true`, same options"));
        }
        if let Some(v) = r.floor_ms {
            let container = target
                .parse::<mitogen::Target>()
                .is_ok_and(|t| crate::bench::container::ContainerFloor::for_target(&t).is_some());
            let what = if chain {
                "each hop's `ssh HOST true` / `sudo -n -u USER true`, summed"
            } else if container {
                "the hop's own command running `true` (docker exec … C true)"
            } else {
                "plain `sudo -n -u USER true`"
            };
            rows.push(("floor_ms", ms(v), what));
        }
        rows.extend([
            (
                "rtt_us",
                format!("{:.2} µs", r.rtt_us),
                "one sequential no-op call",
            ),
            (
                "pipelined_calls_per_s",
                format!("{:.0} /s", r.pipelined_calls_per_s),
                "no-op calls issued at once, then collected",
            ),
            (
                "throughput_mib_s",
                mib_s(r.throughput_mib_s),
                "streamed child to master in 1 MiB chunks",
            ),
        ]);
        if let Some(v) = r.cat_mib_s {
            rows.push(("cat_mib_s", mib_s(v), "plain `ssh HOST 'cat > /dev/null'`"));
        }
        if let Some(v) = r.pull_mib_s {
            rows.push(("pull_mib_s", mib_s(v), "plain ssh, remote to master"));
        }
        rows.push((
            "child_rss_kib",
            format!("{} KiB", r.child_rss_kib),
            "child's VmRSS after the calls",
        ));
        if let Some(v) = &r.cpu_ms_per_gib {
            let each: Vec<String> = v.iter().map(|ms| format!("{ms:.0}")).collect();
            rows.push((
                "cpu_ms_per_gib",
                each.join(" / "),
                "CPU ms per GiB streamed: this process / each hop",
            ));
        }
        if let Some(f) = &r.files {
            rows.extend(file_rows(f));
        }
        self.rows(target, rows)
    }

    fn bench_files(&mut self, target: &str, r: &FilesReport) -> io::Result<()> {
        self.rows(target, file_rows(r))
    }
}

impl<O: Write, E: Write> HumanPrinter<O, E> {
    fn rows(&mut self, target: &str, rows: Vec<(&str, String, &str)>) -> io::Result<()> {
        writeln!(self.out, "mitogen bench, target {target} (medians)")?;
        for (key, value, what) in rows {
            writeln!(self.out, "  {key:<22} {value:>14}   {what}")?;
        }
        self.out.flush()
    }
}

/// The rows of the file-transfer figures.
fn file_rows(r: &FilesReport) -> Vec<(&'static str, String, &'static str)> {
    let peaks: Vec<String> = r.peak_rss_kib.iter().map(|k| k.to_string()).collect();
    let mut rows = vec![
        (
            "push_mib_s",
            format!("{:.1} MiB/s", r.push_mib_s),
            "push a large file into the target",
        ),
        (
            "fetch_mib_s",
            format!("{:.1} MiB/s", r.fetch_mib_s),
            "fetch it back",
        ),
        (
            "small_files_per_s",
            format!("{:.0} /s", r.small_files_per_s),
            "push a tree of 1 KiB files",
        ),
        (
            "repush_ms",
            format!("{:.3} ms", r.repush_ms),
            "push the same tree again, unchanged",
        ),
        (
            "repush_skipped",
            r.repush_skipped.to_string(),
            "files the re-pushes left alone",
        ),
        (
            "repush_warm_ms",
            format!("{:.3} ms", r.repush_warm_ms),
            "and again, once both sides know it",
        ),
        (
            "peak_rss_kib",
            peaks.join(" / "),
            "VmHWM KiB: this process / each hop",
        ),
    ];
    let each = |v: &[f64]| {
        v.iter()
            .map(|ms| format!("{ms:.0}"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    if let Some(v) = &r.push_cpu_ms_per_gib {
        rows.push((
            "push_cpu_ms_per_gib",
            each(v),
            "CPU ms per GiB pushed: this process / each hop",
        ));
    }
    if let Some(v) = &r.fetch_cpu_ms_per_gib {
        rows.push(("fetch_cpu_ms_per_gib", each(v), "the same per GiB fetched"));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use mitogen::builtins::CommandOutput;
    use std::time::Duration;

    #[test]
    fn prefixes_every_line_and_ends_the_last() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let report = TargetReport {
            target: "local".into(),
            outcome: Outcome::Ran(CommandOutput {
                code: Some(3),
                signal: None,
                stdout: b"a\n\nb".to_vec(),
                stderr: b"oops\n".to_vec(),
            }),
            duration: Duration::from_millis(2),
        };
        HumanPrinter::new(&mut out, &mut err)
            .target(&report)
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "local: a\nlocal: \nlocal: b\n[local] exit 3 in 2.0 ms\n"
        );
        assert_eq!(String::from_utf8(err).unwrap(), "local: oops\n");
    }

    #[test]
    fn control_characters_from_a_target_are_made_visible() {
        let mut out = Vec::new();
        let data = "ok\r\nx\rweb2: forged\x1b[2K\x08\x7f\u{9b}31m\t\u{e9}\n".as_bytes();
        prefixed(&mut out, "web1", data).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "web1: ok\nweb1: x^Mweb2: forged^[[2K^H^?\\x9b31m\t\u{e9}\n"
        );
        let mut out = Vec::new();
        write_visible(&mut out, b"\xff\x9b\xc3").unwrap();
        assert_eq!(out, b"\xff\\x9b\xc3");
        assert_eq!(visible("a\nb"), "a^Jb");
    }

    #[test]
    fn direction_controls_and_invisible_characters_are_shown() {
        // An override that would show `[web1] exit 1` reversed after it,
        // an isolate, marks, a zero-width space and a tag character.
        let data = "ok \u{202e}1 tixe ]1bew[\u{202c} \u{2067}x\u{2069}\u{200f}\u{200b}\u{e0041}\n";
        let mut out = Vec::new();
        prefixed(&mut out, "web1", data.as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "web1: ok <U+202E>1 tixe ]1bew[<U+202C> <U+2067>x<U+2069><U+200F><U+200B><U+E0041>\n"
        );
        // Ordinary non-ASCII text is written as it is.
        let text =
            "café naïve Straße 漢字 한국어 العربية עברית 🎉 👨\u{200d}👩\u{200d}👧 ❤\u{fe0f}";
        assert_eq!(visible(text), text);
    }

    #[test]
    fn summary_counts_each_kind_and_only_for_several_targets() {
        let ran = |code| TargetReport {
            target: "t".into(),
            outcome: Outcome::Ran(CommandOutput {
                code: Some(code),
                signal: None,
                stdout: vec![],
                stderr: vec![],
            }),
            duration: Duration::ZERO,
        };
        let failed = TargetReport {
            target: "u".into(),
            outcome: Outcome::TimedOut,
            duration: Duration::ZERO,
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut p = HumanPrinter::new(&mut out, &mut err);
        p.summary(&[ran(0)], Duration::ZERO).unwrap();
        p.summary(
            &[ran(0), ran(2), ran(0), failed],
            Duration::from_millis(1500),
        )
        .unwrap();
        assert!(out.is_empty());
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "4 targets: 2 exit 0, 1 exit non-zero, 1 failed (1.50 s)\n"
        );
    }
}
