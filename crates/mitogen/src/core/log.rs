//! Logging across contexts.
//!
//! A child context installs a `tracing` layer that turns each event into a
//! [`LogRecord`] and sends it to the master, where [`emit_remote`] re-emits it as
//! an event with target `mitogen::remote` and a `context` field naming where it
//! happened. Lines a child writes to stdout/stderr travel the same way (see
//! the `IoLogger`). Setting `MITOGEN_LOG_DIR` also gives every
//! process its own log file there, `mitogen.<pid>.log` (the seed's
//! `PidfulStreamHandler`), for debugging many contexts at once.

use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock, Weak};

use serde::{Deserialize, Serialize};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context as LayerContext, Layer};

use super::router::RouterInner;

/// One log event on its way to the master.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// 0 = trace, 1 = debug, 2 = info, 3 = warn, 4 = error.
    pub level: u8,
    /// Where it came from: the event's target, or `stdout`/`stderr`.
    pub target: String,
    /// The formatted message and fields.
    pub message: String,
}

impl LogRecord {
    /// A record at `level`.
    pub fn new(level: Level, target: &str, message: &str) -> LogRecord {
        LogRecord {
            level: level_to_u8(level),
            target: target.to_owned(),
            message: message.to_owned(),
        }
    }
}

/// Longest record forwarded or re-emitted, in bytes of target and message;
/// the rest of a longer one is cut (and the cut said).
pub const MAX_RECORD: usize = 64 * 1024;

impl LogRecord {
    /// Cuts the record to at most `max` bytes of target and message (on
    /// character boundaries), saying how much was cut.
    pub fn truncate(&mut self, max: usize) {
        fn cut(s: &mut String, max: usize) -> usize {
            if s.len() <= max {
                return 0;
            }
            let mut at = max;
            while !s.is_char_boundary(at) {
                at -= 1;
            }
            let cut = s.len() - at;
            s.truncate(at);
            cut
        }
        cut(&mut self.target, 256);
        let room = max.saturating_sub(self.target.len() + 64);
        let n = cut(&mut self.message, room);
        if n > 0 {
            use std::fmt::Write as _;
            let _ = write!(self.message, "… ({n} more bytes cut)");
        }
    }
}

fn level_to_u8(l: Level) -> u8 {
    match l {
        Level::TRACE => 0,
        Level::DEBUG => 1,
        Level::INFO => 2,
        Level::WARN => 3,
        Level::ERROR => 4,
    }
}

/// Re-emits a record received from context `context` as a local `tracing` event
/// with target `mitogen::remote`.
pub fn emit_remote(context: &str, rec: &LogRecord) {
    macro_rules! emit {
        ($lvl:expr) => {
            tracing::event!(target: "mitogen::remote", $lvl, context = %context, origin = %rec.target, "{}", rec.message)
        };
    }
    match rec.level {
        0 => emit!(Level::TRACE),
        1 => emit!(Level::DEBUG),
        2 => emit!(Level::INFO),
        3 => emit!(Level::WARN),
        _ => emit!(Level::ERROR),
    }
}

static FORWARD_TO: OnceLock<Weak<RouterInner>> = OnceLock::new();

thread_local! {
    /// Set while a record is being forwarded, so events raised by the sending
    /// path itself are not forwarded again (which would recurse).
    static FORWARDING: Cell<bool> = const { Cell::new(false) };
}

/// The child's layer that sends events to the master.
pub(crate) struct ForwardLayer {
    max: Level,
}

impl ForwardLayer {
    pub(crate) fn new(router: &Arc<RouterInner>, max: Level) -> ForwardLayer {
        let _ = FORWARD_TO.set(Arc::downgrade(router));
        ForwardLayer { max }
    }
}

struct MessageVisitor<'a>(&'a mut String);

impl Visit for MessageVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for ForwardLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: LayerContext<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > self.max {
            return;
        }
        if FORWARDING.with(|f| f.replace(true)) {
            return;
        }
        let mut message = String::new();
        event.record(&mut MessageVisitor(&mut message));
        let rec = LogRecord::new(*meta.level(), meta.target(), &message);
        if let Some(router) = FORWARD_TO.get().and_then(Weak::upgrade) {
            router.forward_log(&rec);
        }
        FORWARDING.with(|f| f.set(false));
    }
}

/// A layer writing this process's events to `$MITOGEN_LOG_DIR/mitogen.<pid>.log`
/// at `$MITOGEN_LOG_LEVEL` (default `debug`), or `None` when the variable is unset
/// or the file cannot be created.
///
/// Masters that want the same per-process files add it to their subscriber:
///
/// ```no_run
/// use tracing_subscriber::prelude::*;
/// tracing_subscriber::registry()
///     .with(mitogen::log_dir_layer())
///     .init();
/// ```
pub fn log_dir_layer<S>() -> Option<Box<dyn Layer<S> + Send + Sync>>
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let dir = std::env::var_os("MITOGEN_LOG_DIR")?;
    let path = std::path::Path::new(&dir).join(format!("mitogen.{}.log", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .ok()?;
    let level = std::env::var("MITOGEN_LOG_LEVEL")
        .ok()
        .and_then(|l| l.parse::<tracing_subscriber::filter::LevelFilter>().ok())
        .unwrap_or(tracing_subscriber::filter::LevelFilter::DEBUG);
    Some(Box::new(
        tracing_subscriber::fmt::layer()
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .with_thread_names(true)
            .with_filter(level),
    ))
}

pub(crate) fn level_from_u8(l: u8) -> Option<Level> {
    Some(match l {
        0 => Level::TRACE,
        1 => Level::DEBUG,
        2 => Level::INFO,
        3 => Level::WARN,
        4 => Level::ERROR,
        _ => return None,
    })
}

/// The most verbose level the current subscriber of this process wants, encoded
/// for a child's configuration (5 = off).
pub(crate) fn current_max_level() -> u8 {
    use tracing::level_filters::LevelFilter;
    match LevelFilter::current() {
        LevelFilter::OFF => 5,
        f => f.into_level().map(level_to_u8).unwrap_or(5),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_record_is_cut_on_a_character_boundary_and_says_so() {
        let mut rec = LogRecord::new(Level::INFO, &"t".repeat(1000), &"é".repeat(100_000));
        rec.truncate(MAX_RECORD);
        assert!(rec.target.len() <= 256);
        assert!(rec.target.len() + rec.message.len() <= MAX_RECORD);
        assert!(
            rec.message.ends_with("bytes cut)"),
            "{}",
            &rec.message[rec.message.len() - 40..]
        );
        let mut short = LogRecord::new(Level::INFO, "t", "hello");
        short.truncate(MAX_RECORD);
        assert_eq!(short.message, "hello");
    }
}
