//! JSON lines: one object per target of `mitogen run`, one object for
//! `mitogen bench`. Each object is written and flushed whole, so a consumer
//! reading line by line sees complete records as they happen.

use std::io::{self, Write};

use serde::Serialize;

use super::invisible::is_invisible;
use super::Printer;
use crate::bench::files::FilesReport;
use crate::bench::BenchReport;
use crate::run::{Outcome, TargetReport};

/// The JSON record of one target; field names are part of the CLI's interface
/// (documented in docs/cli.md).
#[derive(Debug, Serialize)]
struct TargetRecord<'a> {
    target: &'a str,
    exit_code: Option<i32>,
    signal: Option<i32>,
    /// Output as text; bytes that are not UTF-8 become U+FFFD.
    stdout: Option<String>,
    stderr: Option<String>,
    error: Option<String>,
    duration_ms: f64,
}

impl<'a> From<&'a TargetReport> for TargetRecord<'a> {
    fn from(r: &'a TargetReport) -> TargetRecord<'a> {
        let text = |b: &[u8]| Some(String::from_utf8_lossy(b).into_owned());
        let (exit_code, signal, stdout, stderr) = match &r.outcome {
            Outcome::Ran(out) => (out.code, out.signal, text(&out.stdout), text(&out.stderr)),
            _ => (None, None, None, None),
        };
        TargetRecord {
            target: &r.target,
            exit_code,
            signal,
            stdout,
            stderr,
            error: r.outcome.error(),
            duration_ms: (r.duration.as_secs_f64() * 1e6).round() / 1e3,
        }
    }
}

/// serde_json's compact output, except that in strings DEL, the C1
/// controls and the characters the text printer shows as `<U+XXXX>`
/// ([`is_invisible`]) are written as `\\uXXXX` escapes. JSON needs only C0
/// escaped (serde_json does), but a terminal showing the output would act
/// on a raw C1 CSI or reorder text at a direction override; the escapes are
/// the same string to every JSON reader, so the data stays exact.
struct Escaping;

impl serde_json::ser::Formatter for Escaping {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let hidden = |c: char| matches!(c as u32, 0x7f..=0x9f) || is_invisible(c);
        let mut plain = 0;
        for (i, c) in fragment.char_indices() {
            if hidden(c) {
                w.write_all(&fragment.as_bytes()[plain..i])?;
                for unit in c.encode_utf16(&mut [0; 2]) {
                    write!(w, "\\u{unit:04x}")?;
                }
                plain = i + c.len_utf8();
            }
        }
        w.write_all(&fragment.as_bytes()[plain..])
    }
}

/// Writes `value` to `out` as one JSON line, escaped as [`Escaping`] says,
/// and flushes it: every JSON printer's records go through here.
pub(super) fn write_line(out: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    let mut ser = serde_json::Serializer::with_formatter(&mut *out, Escaping);
    value.serialize(&mut ser)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Writes JSON lines to `out`.
pub struct JsonPrinter<W> {
    out: W,
}

impl<W: Write> JsonPrinter<W> {
    /// A printer writing to `out`.
    pub fn new(out: W) -> JsonPrinter<W> {
        JsonPrinter { out }
    }

    pub(super) fn line(&mut self, value: &impl Serialize) -> io::Result<()> {
        write_line(&mut self.out, value)
    }
}

impl<W: Write> Printer for JsonPrinter<W> {
    fn target(&mut self, report: &TargetReport) -> io::Result<()> {
        self.line(&TargetRecord::from(report))
    }

    fn bench(&mut self, _target: &str, report: &BenchReport) -> io::Result<()> {
        self.line(report)
    }

    fn bench_files(&mut self, _target: &str, report: &FilesReport) -> io::Result<()> {
        self.line(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mitogen::builtins::CommandOutput;
    use std::time::Duration;

    #[test]
    fn target_record_has_every_field() {
        let mut buf = Vec::new();
        let report = TargetReport {
            target: "local".into(),
            outcome: Outcome::Ran(CommandOutput {
                code: Some(0),
                signal: None,
                stdout: b"hi\n".to_vec(),
                stderr: vec![0xff],
            }),
            duration: Duration::from_micros(1500),
        };
        JsonPrinter::new(&mut buf).target(&report).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["target"], "local");
        assert_eq!(v["exit_code"], 0);
        assert!(v["signal"].is_null());
        assert_eq!(v["stdout"], "hi\n");
        assert_eq!(v["stderr"], "\u{fffd}");
        assert!(v["error"].is_null());
        assert_eq!(v["duration_ms"], 1.5);
        assert!(buf.ends_with(b"}\n"));
    }

    #[test]
    fn hidden_characters_are_escaped_and_read_back_the_same() {
        let mut buf = Vec::new();
        let text = "a\u{202e}b\u{9b}c\u{7f}\u{e0041}\n\u{1b}é漢🎉";
        let report = TargetReport {
            target: "local".into(),
            outcome: Outcome::Ran(CommandOutput {
                code: Some(0),
                signal: None,
                stdout: text.as_bytes().to_vec(),
                stderr: vec![],
            }),
            duration: Duration::ZERO,
        };
        JsonPrinter::new(&mut buf).target(&report).unwrap();
        let line = String::from_utf8(buf.clone()).unwrap();
        assert!(
            line.contains(r#""stdout":"a\u202eb\u009bc\u007f\udb40\udc41\n\u001bé漢🎉""#),
            "{line}"
        );
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["stdout"], text);
    }
}
