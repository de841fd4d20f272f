//! The job an attempt runs, named on every log line written while it runs.
//!
//! A tracing span per attempt did this before, at a price: the fmt layer formats a span's fields
//! when the span is created, so every attempt paid for a JSON object of its job's fields (about
//! 2 us of worker CPU per job at full speed, a twentieth of the whole per-job cost) although
//! nearly every attempt logs nothing at the default level. Here the fields go into a task-local
//! for the attempt ([`in_attempt`], a copy and two clones), and [`WithAttempt`], the event
//! formatter of both output formats, adds them to the lines that are written: the cost moves
//! from every attempt to every line.
//!
//! Fields: `job_id`, `job_kind`, `queue`, `attempt`, at the top level of a JSON line (beside the
//! event's own fields; a field the event sets itself is not repeated), or as `key=value` at the
//! end of a human-readable line. A task the attempt spawns does not inherit them.

use std::fmt::{self, Write as _};
use std::future::Future;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::JobId;

/// What names an attempt on its log lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptFields {
    /// The job's id.
    pub job_id: JobId,
    /// Its kind, as stored.
    pub job_kind: String,
    /// The queue it was fetched from.
    pub queue: String,
    /// The attempt number (1 for the first delivery).
    pub attempt: u32,
}

tokio::task_local! {
    static ATTEMPT: AttemptFields;
}

/// Runs `future` as the attempt `fields` names: every line it logs (on this task) carries them.
pub async fn in_attempt<F: Future>(fields: AttemptFields, future: F) -> F::Output {
    ATTEMPT.scope(fields, future).await
}

/// An event formatter that adds the current attempt's fields to the line `inner` writes.
#[derive(Debug, Clone)]
pub struct WithAttempt<E> {
    inner: E,
    json: bool,
}

impl<E> WithAttempt<E> {
    /// Around a JSON formatter (one object per line).
    pub fn json(inner: E) -> Self {
        Self { inner, json: true }
    }

    /// Around a human-readable formatter (`key=value` fields).
    pub fn text(inner: E) -> Self {
        Self { inner, json: false }
    }
}

impl<S, N, E> FormatEvent<S, N> for WithAttempt<E>
where
    E: FormatEvent<S, N>,
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let outcome = ATTEMPT.try_with(|fields| {
            // Formatted into a buffer to splice the fields in. Writer::new has no colours, so a
            // terminal shows an attempt's lines uncoloured (JSON has none anyway).
            let mut line = String::with_capacity(256);
            self.inner
                .format_event(ctx, Writer::new(&mut line), event)?;
            let line = if self.json {
                splice_json(&line, fields)
            } else {
                splice_text(&line, fields)
            };
            writer.write_str(&line)
        });
        match outcome {
            Ok(result) => result,
            Err(_) => self.inner.format_event(ctx, writer, event),
        }
    }
}

/// The fields after the opening brace of a JSON line, each unless the line has it already.
fn splice_json(line: &str, fields: &AttemptFields) -> String {
    let Some(open) = line.find('{') else {
        return line.to_owned();
    };
    let mut added = String::with_capacity(160);
    let mut add = |key: &str, value: &dyn fmt::Display, quoted: bool| {
        // An escaped quote inside a string value is `\"`, so `"key":` only matches a key.
        if line.contains(&format!("\"{key}\":")) {
            return;
        }
        let value = value.to_string();
        let value = if quoted {
            serde_json::to_string(&value).unwrap_or_else(|_| "\"\"".to_owned())
        } else {
            value
        };
        let _ = write!(added, "\"{key}\":{value},");
    };
    add("job_id", &fields.job_id, true);
    add("job_kind", &fields.job_kind, true);
    add("queue", &fields.queue, true);
    add("attempt", &fields.attempt, false);
    let mut out = String::with_capacity(line.len() + added.len());
    out.push_str(&line[..=open]);
    out.push_str(&added);
    let rest = &line[open + 1..];
    if added.is_empty() || !rest.trim_start().starts_with('}') {
        out.push_str(rest);
    } else {
        // An object with no fields of its own: no comma before its closing brace.
        out.pop();
        out.push_str(rest);
    }
    out
}

/// The fields as `key=value` before the line's end, each unless the line has it already.
fn splice_text(line: &str, fields: &AttemptFields) -> String {
    let body = line.trim_end_matches('\n');
    let mut out = String::with_capacity(line.len() + 120);
    out.push_str(body);
    let mut add = |key: &str, value: &dyn fmt::Display| {
        if !body.contains(&format!(" {key}=")) {
            let _ = write!(out, " {key}={value}");
        }
    };
    add("job_id", &fields.job_id);
    add("job_kind", &format!("{:?}", fields.job_kind));
    add("queue", &fields.queue);
    add("attempt", &fields.attempt);
    out.push_str(&line[body.len()..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> AttemptFields {
        AttemptFields {
            job_id: JobId::parse("01a22b77-5edf-711c-8000-000000000001").expect("a job id"),
            job_kind: "backup.run".to_owned(),
            queue: "backups".to_owned(),
            attempt: 2,
        }
    }

    #[test]
    fn a_json_line_gets_the_fields_first_and_keeps_its_own() {
        let line = "{\"timestamp\":\"t\",\"level\":\"WARN\",\"message\":\"dump \\\"queue\\\": slow\",\"queue\":\"mine\"}\n";

        let spliced = splice_json(line, &fields());

        let value: serde_json::Value =
            serde_json::from_str(spliced.trim_end()).expect("still one JSON object");
        assert_eq!(value["job_id"], "01a22b77-5edf-711c-8000-000000000001");
        assert_eq!(value["job_kind"], "backup.run");
        assert_eq!(value["attempt"], 2);
        assert_eq!(value["queue"], "mine", "the event's own field wins");
        assert_eq!(value["message"], "dump \"queue\": slow");
        assert_eq!(spliced.matches("\"queue\":").count(), 1, "{spliced}");
        assert!(spliced.ends_with("}\n"), "{spliced:?}");
    }

    #[test]
    fn a_kind_with_quotes_is_escaped_and_an_empty_object_gets_no_trailing_comma() {
        let mut fields = fields();
        fields.job_kind = "bad\"kind".to_owned();

        let spliced = splice_json("{}\n", &fields);

        let value: serde_json::Value =
            serde_json::from_str(spliced.trim_end()).expect("still one JSON object");
        assert_eq!(value["job_kind"], "bad\"kind");
    }

    #[test]
    fn a_text_line_gets_the_fields_before_its_newline() {
        let line = "2026-11-30T08:00:00Z  WARN upkeep_workers: dump slow attempt=2\n";

        let spliced = splice_text(line, &fields());

        assert_eq!(
            spliced,
            "2026-11-30T08:00:00Z  WARN upkeep_workers: dump slow attempt=2 \
             job_id=01a22b77-5edf-711c-8000-000000000001 job_kind=\"backup.run\" queue=backups\n"
        );
    }
}
