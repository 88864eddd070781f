//! Logging: text or JSON lines on stderr, written in batches.
//!
//! Every request decision is logged (the audit trail), so under load the
//! writes themselves cost: one `write(2)` per line is much of a refused
//! request's work, and waking a writer thread per line is worse on a busy
//! core. Lines are appended to a buffer instead, which is written out when
//! it holds [`BATCH`] bytes, every [`FLUSH_EVERY`] by a timer thread, and at
//! exit. A crash can lose at most the last [`FLUSH_EVERY`] of lines.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

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

/// One line being formatted; appended when dropped.
struct Line<'a> {
    text: Vec<u8>,
    sink: &'a Sink,
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        self.sink.append(&self.text);
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            text: Vec::with_capacity(256),
            sink: self,
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
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
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
    let builder = tracing_subscriber::fmt()
        .with_writer(sink.clone())
        .with_ansi(std::io::stderr().is_terminal())
        .with_max_level(tracing::Level::TRACE);
    let _ = match format {
        Format::Text => builder.finish().with(filter).try_init(),
        Format::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .finish()
            .with(filter)
            .try_init(),
    };
    Guard(sink)
}
