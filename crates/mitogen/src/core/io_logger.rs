//! [`IoLogger`]: a context's own stdout and stderr, turned into log records.
//!
//! A child context points its fds 1 and 2 at pipes whose read ends the broker
//! watches. Each line written there (by the program, a library, or a subprocess
//! that inherited the fds) becomes a log record for the master, tagged with the
//! context's name, instead of corrupting the message stream or vanishing.

use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use super::router::RouterInner;
use super::side::{IoStatus, Side};

/// Longest line forwarded as one record; longer lines are split.
const MAX_LINE: usize = 8 * 1024;

/// Line-splitting forwarder of one pipe.
pub(crate) struct IoLogger {
    side: Side,
    name: &'static str,
    partial: Vec<u8>,
}

impl IoLogger {
    /// Watches `fd`; `name` is `"stdout"` or `"stderr"`.
    pub(crate) fn new(fd: OwnedFd, name: &'static str) -> std::io::Result<IoLogger> {
        Ok(IoLogger {
            side: Side::new(fd)?,
            name,
            partial: Vec::new(),
        })
    }

    /// Reads what is there and forwards complete lines. Returns `true` at EOF.
    pub(crate) fn on_readable(&mut self, router: &Arc<RouterInner>) -> bool {
        let mut buf = [MaybeUninit::<u8>::uninit(); 16 * 1024];
        loop {
            match self.side.read(&mut buf) {
                Ok(IoStatus::Done(n)) => {
                    // SAFETY: `read` initialised the first `n` bytes.
                    let data = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
                    self.partial.extend_from_slice(data);
                    self.emit_lines(router, false);
                }
                Ok(IoStatus::WouldBlock) => return false,
                Ok(IoStatus::Disconnected) | Err(_) => {
                    self.emit_lines(router, true);
                    return true;
                }
            }
        }
    }

    fn emit_lines(&mut self, router: &Arc<RouterInner>, eof: bool) {
        let mut start = 0;
        while let Some(pos) = self.partial[start..].iter().position(|&b| b == b'\n') {
            self.emit(router, start, start + pos);
            start += pos + 1;
        }
        while self.partial.len() - start >= MAX_LINE {
            self.emit(router, start, start + MAX_LINE);
            start += MAX_LINE;
        }
        if eof && start < self.partial.len() {
            self.emit(router, start, self.partial.len());
            start = self.partial.len();
        }
        self.partial.drain(..start);
    }

    fn emit(&self, router: &Arc<RouterInner>, from: usize, to: usize) {
        let line = String::from_utf8_lossy(&self.partial[from..to]);
        let line = line.trim_end_matches('\r');
        let level = if self.name == "stderr" {
            tracing::Level::WARN
        } else {
            tracing::Level::INFO
        };
        router.forward_output(self.name, level, line);
    }
}

impl AsRawFd for IoLogger {
    fn as_raw_fd(&self) -> RawFd {
        self.side.as_raw_fd()
    }
}
