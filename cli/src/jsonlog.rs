//! The JSON log line, written straight into the line buffer.
//!
//! The same shape as `tracing_subscriber`'s flattened JSON format (one
//! object per line: `timestamp`, `level`, the event's fields, `target`, and
//! the current span as `span: {fields…, name}`), at a fraction of the cost:
//! that format keeps each span's fields as a JSON text and parses it back
//! into a map for every event logged inside the span, and routes every value
//! through serde. Here a span's fields are rendered once, when the span is
//! opened, as the members of an object, and pasted into each event's line.
//! The webhook logs one decision line per review, so this is on its warm path.
//!
//! Every string is JSON-escaped, control characters included, so a value
//! an object's author chose (a name, an image) cannot forge a line or
//! smuggle terminal escapes into a log viewer.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats events as JSON lines (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

/// Renders a span's fields as JSON object members (`"a":1,"b":"x"`).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonSpanFields;

impl<'w> FormatFields<'w> for JsonSpanFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut members = String::new();
        fields.record(&mut Members::new(&mut members, false));
        writer.write_str(&members)
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let comma = !current.fields.is_empty();
        fields.record(&mut Members::new(&mut current.fields, comma));
        Ok(())
    }
}

impl<S> FormatEvent<S, JsonSpanFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonSpanFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = String::with_capacity(512);
        line.push_str("{\"timestamp\":\"");
        SystemTime.format_time(&mut Writer::new(&mut line))?;
        line.push_str("\",\"level\":\"");
        line.push_str(meta.level().as_str());
        line.push('"');
        event.record(&mut Members::new(&mut line, true));
        line.push_str(",\"target\":");
        push_str(&mut line, meta.target());
        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            line.push_str(",\"span\":{");
            let extensions = span.extensions();
            if let Some(fields) = extensions.get::<FormattedFields<JsonSpanFields>>() {
                if !fields.fields.is_empty() {
                    line.push_str(&fields.fields);
                    line.push(',');
                }
            }
            line.push_str("\"name\":");
            push_str(&mut line, span.name());
            line.push('}');
        }
        line.push_str("}\n");
        writer.write_str(&line)
    }
}

/// Appends `"name":value` members, comma-separated.
struct Members<'a> {
    out: &'a mut String,
    comma: bool,
}

impl<'a> Members<'a> {
    /// `comma`: a member is already there, so the first one needs a comma.
    fn new(out: &'a mut String, comma: bool) -> Self {
        Members { out, comma }
    }

    fn key(&mut self, field: &Field) {
        if self.comma {
            self.out.push(',');
        }
        self.comma = true;
        push_str(self.out, field.name());
        self.out.push(':');
    }
}

impl Visit for Members<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        push_str(self.out, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.out.push_str(if value { "true" } else { "false" });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        // Rust prints finite floats without an exponent: a valid JSON number.
        if value.is_finite() {
            let _ = write!(self.out, "{value}");
        } else {
            self.out.push_str("null");
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.key(field);
        self.out.push('"');
        let _ = write!(Escaping(self.out), "{value}");
        self.out.push('"');
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        self.out.push('"');
        let _ = write!(Escaping(self.out), "{value:?}");
        self.out.push('"');
    }
}

/// Appends `value` as a JSON string.
fn push_str(out: &mut String, value: &str) {
    out.push('"');
    let _ = Escaping(out).write_str(value);
    out.push('"');
}

/// Escapes what is written through it for the inside of a JSON string.
struct Escaping<'a>(&'a mut String);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let out = &mut *self.0;
        let mut plain = 0;
        for (at, byte) in text.bytes().enumerate() {
            let escaped = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f | 0x7f => "",
                _ => continue,
            };
            out.push_str(&text[plain..at]);
            if escaped.is_empty() {
                let _ = write!(out, "\\u{byte:04x}");
            } else {
                out.push_str(escaped);
            }
            plain = at + 1;
        }
        out.push_str(&text[plain..]);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    /// The lines `log` writes, each parsed by serde_json.
    fn lines(log: impl FnOnce()) -> Vec<serde_json::Value> {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .fmt_fields(JsonSpanFields)
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }

    #[test]
    fn an_event_in_a_span_is_one_json_object_with_every_field() {
        let hostile = "evil\"}\n{\"allowed\":true \\ \u{1b}[31m\u{7f}";
        let lines = lines(|| {
            let span = tracing::info_span!("admission", uid = "u-1", namespace = hostile);
            let _entered = span.enter();
            span.record("uid", "u-2");
            tracing::info!(
                target: "imgate::decision",
                user = hostile,
                dry_run = false,
                count = 3u64,
                delta = -2i64,
                latency_ms = 0.25,
                ratio = f64::NAN,
                shown = %format_args!("{}:{}", "a", 1),
                debugged = ?Some("x"),
                "admission decision"
            );
        });
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "admission decision");
        assert_eq!(line["target"], "imgate::decision");
        assert_eq!(line["user"], hostile);
        assert_eq!(line["dry_run"], false);
        assert_eq!(line["count"], 3);
        assert_eq!(line["delta"], -2);
        assert_eq!(line["latency_ms"], 0.25);
        assert!(line["ratio"].is_null());
        assert_eq!(line["shown"], "a:1");
        assert_eq!(line["debugged"], "Some(\"x\")");
        assert_eq!(line["span"]["name"], "admission");
        assert_eq!(line["span"]["namespace"], hostile);
        // A field recorded later is appended; the later value wins when
        // the line is read (serde_json keeps the last duplicate).
        assert_eq!(line["span"]["uid"], "u-2");
        let timestamp = line["timestamp"].as_str().unwrap();
        assert!(
            timestamp.len() >= 20 && timestamp.ends_with('Z') && timestamp.contains('T'),
            "{timestamp}"
        );
    }

    #[test]
    fn an_event_outside_a_span_has_no_span_and_escapes_errors() {
        let err = std::io::Error::other("disk \"full\"\n");
        let lines = lines(|| {
            tracing::warn!(
                error = &err as &(dyn std::error::Error + 'static),
                "cannot write"
            );
            let empty = tracing::info_span!("bare");
            empty.in_scope(|| tracing::error!("inside"));
        });
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["level"], "WARN");
        assert_eq!(lines[0]["error"], "disk \"full\"\n");
        assert!(lines[0].get("span").is_none());
        assert_eq!(lines[1]["span"], serde_json::json!({"name": "bare"}));
    }

    #[test]
    fn escaping_matches_a_json_parser_for_every_ascii_byte() {
        let all: String = (0u8..=127).map(char::from).collect::<String>() + "é€😀";
        let mut out = String::new();
        push_str(&mut out, &all);
        assert_eq!(serde_json::from_str::<String>(&out).unwrap(), all);
        assert!(!out.bytes().any(|b| b < 0x20 || b == 0x7f), "{out:?}");
    }
}
