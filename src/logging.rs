//! Logging: text or JSON lines on stderr, through tracing-subscriber's `fmt`
//! layer, handed to a writer thread (tracing-appender's non-blocking
//! writer) so that a request never waits on `write(2)`.
//!
//! Text lines read `2026-11-28T06:22:22.123456Z  INFO audit: deploy refused
//! client=127.0.0.1 …`; JSON lines are one object with `timestamp`, `level`,
//! `message`, the fields and `target`. Control and escape characters in
//! messages and fields are escaped by the formatter, whatever their source.
//! If the writer falls behind by more than its buffer of lines, lines are
//! dropped rather than requests slowed.

use tracing::{Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Lines waiting for the writer thread; past it, new lines are dropped
/// rather than requests slowed. The queue's slots (32 bytes each) are
/// allocated and written whole at start, so each line of room is idle
/// memory: 2,048 lines are 64 KB, a burst the writer drains in
/// milliseconds unless stderr itself blocks.
const QUEUED_LINES: usize = 2048;

/// Writes out every line logged so far when dropped; keep it for the
/// life of the program.
pub struct Guard(#[allow(dead_code)] tracing_appender::non_blocking::WorkerGuard);

/// The line format, writing to `writer`.
fn lines<S, W>(format: Format, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(false);
    match format {
        Format::Text => layer.boxed(),
        Format::Json => layer.json().flatten_event(true).boxed(),
    }
}

/// The `DELIVERY_LOG` filter, in the `target=level` syntax (`info` by default).
fn filter() -> Targets {
    std::env::var("DELIVERY_LOG")
        .ok()
        .and_then(|f| f.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(Level::INFO))
}

/// Installs the global subscriber.
pub fn init(format: Format) -> Guard {
    // The writer's queue is allocated whole at start; the default (128,000
    // lines) would cost 4 MB of an idle gateway's memory.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(QUEUED_LINES)
        .finish(std::io::stderr());
    let _ = tracing_subscriber::registry()
        .with(lines(format, writer))
        .with(filter())
        .try_init();
    Guard(guard)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(format: Format) -> String {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::registry().with(lines(format, move || sink.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                target: "audit",
                client = "127.0.0.1",
                container = "web\u{1b}[2J\u{9b}31m\r\nforged line",
                "deploy refused"
            );
        });
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn text_lines_keep_their_layout_and_escape_control_characters() {
        let text = logged(Format::Text);
        assert_eq!(text.lines().count(), 1, "{text:?}");
        assert!(
            text.contains(" INFO audit: deploy refused client=\"127.0.0.1\""),
            "{text:?}"
        );
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{9b}') && !text.contains('\r'),
            "{text:?}"
        );
    }

    #[test]
    fn json_lines_are_one_object_with_the_fields_at_the_top() {
        let text = logged(Format::Json);
        assert_eq!(text.lines().count(), 1, "{text:?}");
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["message"], "deploy refused");
        assert_eq!(line["target"], "audit");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["container"], "web\u{1b}[2J\u{9b}31m\r\nforged line");
        assert!(line["timestamp"].is_string());
        assert!(
            !text.contains('\u{1b}'),
            "escaped in the JSON text: {text:?}"
        );
    }
}
