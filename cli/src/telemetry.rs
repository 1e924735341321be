//! One telemetry init for every command: `tracing` to stderr, text or JSON,
//! filtered by `IMGATE_LOG` (default `info`), with hyper, h2 and rustls quiet.
//!
//! The webhook writes its lines from a background thread: a review formats
//! its decision line and hands it over through a bounded queue, so a slow
//! reader of stderr (a busy container runtime) never stalls a review, and
//! lines written in bursts leave in one write. The queue is lossless: when
//! it is full the logging task waits, since a decision line is the audit
//! record and must not be dropped; the bound keeps memory finite.

use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (Loki, Elasticsearch, ...).
    Json,
}

/// Lines that may wait for the writer thread (a few MiB at most).
const QUEUE_LINES: usize = 8192;

/// How long the writer lets lines gather after a write (the queue holds
/// far more than arrives meanwhile).
const GATHER: Duration = Duration::from_millis(5);

/// How long exiting waits for queued lines to be written.
const FLUSH_PATIENCE: Duration = Duration::from_secs(2);

enum Message {
    Line(Vec<u8>),
    Flush(SyncSender<()>),
}

/// Hands formatted lines to the writer thread.
#[derive(Clone)]
struct Background {
    queue: SyncSender<Message>,
}

/// One event's line: collected by the formatter, queued when dropped.
struct Line {
    bytes: Vec<u8>,
    queue: SyncSender<Message>,
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if !self.bytes.is_empty() {
            // Waits when the queue is full (lossless); fails only once the
            // writer thread is gone, when there is nowhere to write anyway.
            let _ = self
                .queue
                .send(Message::Line(std::mem::take(&mut self.bytes)));
        }
    }
}

impl<'a> MakeWriter<'a> for Background {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            bytes: Vec::new(),
            queue: self.queue.clone(),
        }
    }
}

/// Writes queued lines to stderr, a burst at a time.
fn write_lines(queue: Receiver<Message>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr());
    while let Ok(first) = queue.recv() {
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Line(bytes) => {
                    let _ = out.write_all(&bytes);
                }
                Message::Flush(done) => {
                    let _ = out.flush();
                    let _ = done.send(());
                }
            }
            next = queue.try_recv().ok();
        }
        let _ = out.flush();
        // Let lines gather rather than wake up for each one: under load a
        // handful of writes per second instead of one per review.
        std::thread::sleep(GATHER);
    }
}

/// Keeps the log writer alive; dropping it writes out what is queued.
#[must_use = "dropping the guard at once stops background logging"]
pub struct LogGuard {
    queue: Option<SyncSender<Message>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let Some(queue) = self.queue.take() else {
            return;
        };
        let (done, wait) = sync_channel(1);
        if queue.send(Message::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(FLUSH_PATIENCE);
        }
    }
}

/// Starts logging. `background` writes from a thread (the webhook); other
/// commands write in place so their log lines and output stay in order.
pub fn init(format: LogFormat, background: bool) -> LogGuard {
    let filter = EnvFilter::try_from_env("IMGATE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info"))
        .add_directive("hyper=warn".parse().unwrap_or_default())
        .add_directive("h2=warn".parse().unwrap_or_default())
        .add_directive("rustls=warn".parse().unwrap_or_default())
        .add_directive("reqwest=warn".parse().unwrap_or_default());
    let mut guard = LogGuard { queue: None };
    let writer = if background {
        let (queue, lines) = sync_channel(QUEUE_LINES);
        match std::thread::Builder::new()
            .name("imgate-log".to_string())
            .spawn(move || write_lines(lines))
        {
            Ok(_) => {
                guard.queue = Some(queue.clone());
                tracing_subscriber::fmt::writer::BoxMakeWriter::new(Background { queue })
            }
            // No thread: write in place, as the other commands do.
            Err(_) => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
        }
    } else {
        tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr)
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    // A second init (tests calling in-process) is harmless: keep the first.
    let _ = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder
            .fmt_fields(crate::jsonlog::JsonSpanFields)
            .event_format(crate::jsonlog::JsonLines)
            .try_init(),
    };
    guard
}
