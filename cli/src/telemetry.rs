//! One telemetry init for every command: `tracing` to stderr, text or JSON,
//! filtered by `IMGATE_LOG` (default `info`), with hyper, h2 and rustls quiet.

use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (Loki, Elasticsearch, ...).
    Json,
}

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("IMGATE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info"))
        .add_directive("hyper=warn".parse().unwrap_or_default())
        .add_directive("h2=warn".parse().unwrap_or_default())
        .add_directive("rustls=warn".parse().unwrap_or_default())
        .add_directive("reqwest=warn".parse().unwrap_or_default());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests calling in-process) is harmless: keep the first.
    let _ = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            // The review's one span once, not again in a span list.
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}
