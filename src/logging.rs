//! Logging: text or JSON lines on stderr, written in batches.
//!
//! Every request decision is logged (the audit trail), so under load the
//! logging itself costs:
//! - one `write(2)` per line is much of a refused request's work, and
//!   waking a writer thread per line is worse on a busy core, so lines are
//!   appended to a buffer, which is written out when it holds [`BATCH`]
//!   bytes, every [`FLUSH_EVERY`] by a timer thread, and at exit. A crash can
//!   lose at most the last [`FLUSH_EVERY`] of lines;
//! - tracing-subscriber's formatters styled every field name and formatted
//!   the time through `fmt` (a third of a refusal's own work), so lines are
//!   formatted here: the time, level, target, message and fields, in the
//!   same shape (`2026-11-28T06:22:22.123456Z  INFO audit: deploy refused
//!   client=127.0.0.1 …`, or one JSON object with `timestamp`, `level`,
//!   `message`, the fields and `target`).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber, span};
use tracing_subscriber::filter::Targets;

use crate::text::{push_json_string, push_number, push_utc};

/// Bytes buffered before they are written at once.
const BATCH: usize = 64 * 1024;
/// The longest a line waits in the buffer.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// The buffer every line goes into.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Sink {
    fn append(&self, line: &[u8]) {
        let full = {
            let mut buffer = self.0.lock().unwrap_or_else(|p| p.into_inner());
            buffer.extend_from_slice(line);
            (buffer.len() >= BATCH).then(|| std::mem::take(&mut *buffer))
        };
        if let Some(batch) = full {
            let _ = std::io::stderr().write_all(&batch);
        }
    }

    fn flush(&self) {
        let batch = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        if !batch.is_empty() {
            let _ = std::io::stderr().write_all(&batch);
        }
    }
}

/// Writes out every line logged so far when dropped; keep it for the
/// life of the program.
pub struct Guard(Sink);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.flush();
    }
}

/// Installs the global subscriber. `DELIVERY_LOG` filters, in the
/// `target=level` syntax (`info` by default).
pub fn init(format: Format) -> Guard {
    let filter: Targets = std::env::var("DELIVERY_LOG")
        .ok()
        .and_then(|f| f.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(Level::INFO));
    let sink = Sink::default();
    let timer = sink.clone();
    let _ = std::thread::Builder::new()
        .name("log-flush".into())
        .spawn(move || {
            loop {
                std::thread::sleep(FLUSH_EVERY);
                timer.flush();
            }
        });
    let lines = Lines {
        filter,
        format,
        sink: sink.clone(),
    };
    let _ = tracing::subscriber::set_global_default(lines);
    Guard(sink)
}

/// The subscriber: filters by target and level, and formats each event as
/// one line into the sink. The gateway opens no spans, so none is enabled
/// and the span calls do nothing.
struct Lines {
    filter: Targets,
    format: Format,
    sink: Sink,
}

impl Subscriber for Lines {
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        !meta.is_span() && self.filter.would_enable(meta.target(), meta.level())
    }

    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        let json = self.format == Format::Json;
        let mut fields = Fields {
            json,
            message: Vec::new(),
            rest: Vec::with_capacity(192),
        };
        event.record(&mut fields);
        let meta = event.metadata();
        let level = level_name(*meta.level());
        let mut line = Vec::with_capacity(64 + fields.message.len() + fields.rest.len());
        if json {
            line.extend_from_slice(b"{\"timestamp\":\"");
            push_time(&mut line, SystemTime::now());
            line.extend_from_slice(b"\",\"level\":\"");
            line.extend_from_slice(level.trim_start().as_bytes());
            line.extend_from_slice(b"\",\"message\":");
            // The message was written as text; quote it now.
            push_json_string(&mut line, &String::from_utf8_lossy(&fields.message));
            line.extend_from_slice(&fields.rest);
            line.extend_from_slice(b",\"target\":");
            push_json_string(&mut line, meta.target());
            line.extend_from_slice(b"}\n");
        } else {
            push_time(&mut line, SystemTime::now());
            line.push(b' ');
            line.extend_from_slice(level.as_bytes());
            line.push(b' ');
            line.extend_from_slice(meta.target().as_bytes());
            line.extend_from_slice(b": ");
            line.extend_from_slice(&fields.message);
            line.extend_from_slice(&fields.rest);
            line.push(b'\n');
        }
        self.sink.append(&line);
    }
}

/// The level, right-aligned in five columns.
fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => " WARN",
        Level::INFO => " INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// An event's message and its other fields, as ` name=value` (text) or
/// `,"name":value` (JSON).
struct Fields {
    json: bool,
    message: Vec<u8>,
    rest: Vec<u8>,
}

impl Fields {
    fn name(&mut self, field: &Field) {
        if self.json {
            self.rest.push(b',');
            push_json_string(&mut self.rest, field.name());
            self.rest.push(b':');
        } else {
            self.rest.push(b' ');
            self.rest.extend_from_slice(field.name().as_bytes());
            self.rest.push(b'=');
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.extend_from_slice(value.as_bytes());
        } else if self.json {
            self.name(field);
            push_json_string(&mut self.rest, value);
        } else {
            self.name(field);
            push_quoted(&mut self.rest, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            debug_into(&mut self.message, value);
        } else if self.json {
            self.name(field);
            let mut text = Vec::with_capacity(64);
            debug_into(&mut text, value);
            push_json_string(&mut self.rest, &String::from_utf8_lossy(&text));
        } else {
            self.name(field);
            debug_into(&mut self.rest, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.name(field);
        push_number(&mut self.rest, value, 1);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.name(field);
        if value < 0 {
            self.rest.push(b'-');
        }
        push_number(&mut self.rest, value.unsigned_abs(), 1);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.name(field);
        self.rest
            .extend_from_slice(if value { b"true" } else { b"false" });
    }
}

/// Appends `value`'s `{:?}` text to `out`, through `fmt::Write`, which
/// costs less per piece than `io::Write`'s adapter.
fn debug_into(out: &mut Vec<u8>, value: &dyn std::fmt::Debug) {
    struct Appender<'a>(&'a mut Vec<u8>);
    impl std::fmt::Write for Appender<'_> {
        fn write_str(&mut self, text: &str) -> std::fmt::Result {
            self.0.extend_from_slice(text.as_bytes());
            Ok(())
        }
    }
    let _ = std::fmt::write(&mut Appender(out), format_args!("{value:?}"));
}

/// `text` quoted and escaped as Rust's `{:?}` does.
fn push_quoted(out: &mut Vec<u8>, text: &str) {
    if text
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        debug_into(out, &text);
    }
}

/// `time` in UTC as `2026-11-28T06:22:22.123456Z`.
fn push_time(out: &mut Vec<u8>, time: SystemTime) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    push_utc(out, since.as_secs(), u64::from(since.subsec_micros()), 6);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(secs: u64, micros: u32) -> String {
        let mut out = Vec::new();
        push_time(
            &mut out,
            UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(u64::from(micros)),
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn times_are_utc_with_microseconds() {
        assert_eq!(time(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(time(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(time(1_795_838_542, 123_456), "2026-11-28T04:02:22.123456Z");
        assert_eq!(time(4_102_444_799, 999_999), "2099-12-31T23:59:59.999999Z");
        assert_eq!(time(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
    }

    #[test]
    fn text_values_are_quoted_as_debug_does() {
        let mut out = Vec::new();
        push_quoted(&mut out, "-");
        push_quoted(&mut out, "a\"b\u{1b}é");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{:?}{:?}", "-", "a\"b\u{1b}é")
        );
    }
}
