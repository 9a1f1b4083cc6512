//! A `tracing` layer that keeps every event of the master, so tests can assert
//! on what was logged (including events forwarded from children).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// One recorded event.
#[derive(Clone, Debug)]
pub struct Captured {
    pub level: Level,
    pub target: String,
    pub message: String,
    pub fields: BTreeMap<String, String>,
}

impl Captured {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

impl std::fmt::Display for Captured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.level, self.target, self.message)?;
        for (k, v) in &self.fields {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}

static EVENTS: Mutex<Vec<Captured>> = Mutex::new(Vec::new());

fn events() -> std::sync::MutexGuard<'static, Vec<Captured>> {
    EVENTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The layer to install in the master's subscriber.
pub struct CaptureLayer {
    echo: bool,
}

impl CaptureLayer {
    /// Echoes events to stderr when `MITOGEN_TEST_LOG` is set.
    pub fn new() -> CaptureLayer {
        CaptureLayer {
            echo: std::env::var_os("MITOGEN_TEST_LOG").is_some(),
        }
    }
}

struct Visitor<'a> {
    message: &'a mut String,
    fields: &'a mut BTreeMap<String, String>,
}

impl Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.fields
                .insert(field.name().to_owned(), format!("{value:?}"));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.fields
                .insert(field.name().to_owned(), value.to_owned());
        }
    }
}

impl<S: Subscriber> Layer<S> for CaptureLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut message = String::new();
        let mut fields = BTreeMap::new();
        event.record(&mut Visitor {
            message: &mut message,
            fields: &mut fields,
        });
        let c = Captured {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            message,
            fields,
        };
        if self.echo {
            eprintln!("[log] {c}");
        }
        events().push(c);
    }
}

/// Position in the record, to look only at later events.
pub fn mark() -> usize {
    events().len()
}

/// Events recorded since `mark`.
pub fn since(mark: usize) -> Vec<Captured> {
    events().get(mark..).map(<[_]>::to_vec).unwrap_or_default()
}

/// Warnings and errors since `mark` (at most `max`), for failure reports.
pub fn warnings_since(mark: usize, max: usize) -> Vec<String> {
    since(mark)
        .into_iter()
        .filter(|e| e.level <= Level::WARN)
        .take(max)
        .map(|e| e.to_string())
        .collect()
}

/// Waits up to `timeout` for an event after `mark` that satisfies `pred`.
pub fn wait_for(
    mark: usize,
    timeout: Duration,
    pred: impl Fn(&Captured) -> bool,
) -> Option<Captured> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(e) = since(mark).into_iter().find(|e| pred(e)) {
            return Some(e);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
