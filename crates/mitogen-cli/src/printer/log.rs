//! Log lines on stderr, with what a context put in them made visible.
//!
//! Contexts forward their log records (their own, and every line their
//! stderr gets) to the master, which prints them at `warn` and above by
//! default: a hostile target chooses that text. The `tracing` formatter
//! already escapes the escape character, BEL, backspace, form feed, DEL and
//! C1 in a record's message and fields, but not a carriage return, a
//! newline, the other C0 characters or Unicode direction controls, with
//! which a record could draw over its own prefix, start a line that looks
//! like a report line, or reverse one. This writer sits under the formatter
//! and shows those as the text printer does (`^M`, `^J`, `<U+202E>`). The
//! formatter itself writes none of them (it writes the escape character of
//! its colours, kept, and the newline that ends the record, kept), so only
//! what came from a record is changed.

use std::io::{self, Write};

use super::invisible::is_invisible;

/// A writer of whole log records (the formatter writes each record with one
/// `write_all`) that shows a record's control and invisible characters.
pub struct VisibleLog<W>(pub W);

impl<W: Write> Write for VisibleLog<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (body, end) = match buf.strip_suffix(b"\n") {
            Some(body) => (body, &b"\n"[..]),
            None => (buf, &b""[..]),
        };
        let plain = |b: &u8| (*b >= 0x20 || *b == b'\t' || *b == 0x1b) && *b < 0x7f;
        if body.iter().all(plain) {
            self.0.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut out = Vec::with_capacity(buf.len() + 16);
        for chunk in body.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c as u32 {
                    0x09 | 0x1b => out.push(c as u8),
                    n @ 0..=0x1f => out.extend([b'^', n as u8 + 0x40]),
                    n if is_invisible(c) => out.extend(format!("<U+{n:04X}>").bytes()),
                    _ => out.extend(c.encode_utf8(&mut [0; 4]).bytes()),
                }
            }
            out.extend(chunk.invalid());
        }
        out.extend(end);
        self.0.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_records_breaks_and_direction_controls_are_shown() {
        let mut out = Vec::new();
        let record = "\x1b[33m WARN\x1b[0m context=web1: oops\r[web2] exit 0\n[web3] \u{202e}0 tixe\u{2069} é 漢\n";
        VisibleLog(&mut out).write_all(record.as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\x1b[33m WARN\x1b[0m context=web1: oops^M[web2] exit 0^J[web3] <U+202E>0 tixe<U+2069> é 漢\n"
        );
        let mut out = Vec::new();
        VisibleLog(&mut out).write_all(b"plain\n").unwrap();
        assert_eq!(out, b"plain\n");
    }
}
