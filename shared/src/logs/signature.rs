//! Line classification (severity and message, per source format) and the signature normaliser
//! that folds the variable parts of a message, so one bad query logged 10,000 times with
//! different ids is one signature, not 10,000.
//!
//! Pure functions over bytes, no IO. The JSON path avoids a full parse for lines below
//! `warning` (most of a log): it looks for the level key with `memchr::memmem` and parses the
//! whole object only for the lines it keeps.

use std::sync::LazyLock;

use memchr::memmem;
use serde::Serialize;

use super::settings::SourceFormat;

/// How bad a log line is, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LineSeverity {
    /// No recognisable level, or trace/debug.
    Debug,
    /// info, notice, log.
    Info,
    /// warn, warning.
    Warning,
    /// error.
    Error,
    /// fatal, critical, alert, emergency.
    Fatal,
    /// panic.
    Panic,
}

impl LineSeverity {
    /// Every severity, in order (index = `self as usize`).
    pub const ALL: [Self; 6] = [
        Self::Debug,
        Self::Info,
        Self::Warning,
        Self::Error,
        Self::Fatal,
        Self::Panic,
    ];

    /// The lowercase name stored in `log_scan_counts.severity`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
            Self::Fatal => "fatal",
            Self::Panic => "panic",
        }
    }

    /// Parses the stored name.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "debug" => Self::Debug,
            "info" => Self::Info,
            "warning" => Self::Warning,
            "error" => Self::Error,
            "fatal" => Self::Fatal,
            "panic" => Self::Panic,
            _ => return None,
        })
    }

    fn from_level(level: &[u8]) -> Self {
        let mut lower = [0_u8; 16];
        let len = level.len().min(16);
        for (dst, src) in lower.iter_mut().zip(&level[..len]) {
            *dst = src.to_ascii_lowercase();
        }
        match &lower[..len] {
            b"panic" => Self::Panic,
            b"fatal" | b"critical" | b"crit" | b"alert" | b"emerg" | b"emergency" => Self::Fatal,
            b"error" | b"err" => Self::Error,
            b"warn" | b"warning" => Self::Warning,
            b"info" | b"notice" | b"log" | b"statement" | b"detail" | b"hint" | b"context" => {
                Self::Info
            }
            _ => Self::Debug,
        }
    }
}

/// Severity of a line, and its message when the severity is warning or worse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// The line's severity.
    pub severity: LineSeverity,
    /// The message (only for warning and worse), unnormalised.
    pub message: Option<String>,
}

/// Classifies one line (without its newline) of a source of `format`.
#[must_use]
pub fn classify(format: SourceFormat, line: &[u8]) -> Classified {
    match format {
        SourceFormat::Json => classify_json(line, &*JSON_LEVEL_KEYS),
        SourceFormat::PostgresJsonlog => classify_json(line, &*JSONLOG_LEVEL_KEYS),
        SourceFormat::Postgres => classify_postgres(line),
        SourceFormat::Redis => classify_redis(line),
        SourceFormat::Text => classify_text(line),
    }
}

/// Searchers built once: constructing a `memmem::Finder` per line would cost more than the
/// search itself.
static JSON_LEVEL_KEYS: LazyLock<[memmem::Finder<'static>; 3]> = LazyLock::new(|| {
    [
        memmem::Finder::new(b"\"level\""),
        memmem::Finder::new(b"\"severity\""),
        memmem::Finder::new(b"\"lvl\""),
    ]
});
static JSONLOG_LEVEL_KEYS: LazyLock<[memmem::Finder<'static>; 1]> =
    LazyLock::new(|| [memmem::Finder::new(b"\"error_severity\"")]);

fn classify_json(line: &[u8], keys: &[memmem::Finder<'static>]) -> Classified {
    let level = keys.iter().find_map(|key| json_string_after(line, key));
    let severity = level.map_or(LineSeverity::Debug, LineSeverity::from_level);
    let message = (severity >= LineSeverity::Warning).then(|| json_message(line));
    Classified { severity, message }
}

/// The string value after `"key"` (and `:`), without a full parse. Only plain values (no
/// escapes) are recognised, which every level name is.
fn json_string_after<'a>(line: &'a [u8], key: &memmem::Finder<'static>) -> Option<&'a [u8]> {
    let at = key.find(line)? + key.needle().len();
    let rest = &line[at..];
    let mut idx = 0;
    while idx < rest.len() && (rest[idx] == b' ' || rest[idx] == b':' || rest[idx] == b'\t') {
        idx += 1;
    }
    let rest = rest.get(idx..)?.strip_prefix(b"\"")?;
    let end = memchr::memchr(b'"', rest)?;
    Some(&rest[..end])
}

/// The message of a JSON line: `message`, `msg`, `fields.message`, with `error` appended when
/// present (tracing's `error = %e` field); the whole line when it is not an object.
fn json_message(line: &[u8]) -> String {
    let Ok(serde_json::Value::Object(object)) = serde_json::from_slice::<serde_json::Value>(line)
    else {
        return String::from_utf8_lossy(line).into_owned();
    };
    let text = |value: Option<&serde_json::Value>| {
        value.and_then(|v| match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        })
    };
    let fields = object.get("fields").and_then(serde_json::Value::as_object);
    let message = text(object.get("message"))
        .or_else(|| text(object.get("msg")))
        .or_else(|| fields.and_then(|f| text(f.get("message"))))
        .unwrap_or_else(|| String::from_utf8_lossy(line).into_owned());
    match text(object.get("error")).or_else(|| fields.and_then(|f| text(f.get("error")))) {
        Some(error) => format!("{message}: {error}"),
        None => message,
    }
}

const POSTGRES_LEVELS: &[(&[u8], LineSeverity)] = &[
    (b"PANIC:  ", LineSeverity::Panic),
    (b"FATAL:  ", LineSeverity::Fatal),
    (b"ERROR:  ", LineSeverity::Error),
    (b"WARNING:  ", LineSeverity::Warning),
    (b"LOG:  ", LineSeverity::Info),
];

fn classify_postgres(line: &[u8]) -> Classified {
    let found = POSTGRES_LEVELS
        .iter()
        .filter_map(|(tag, severity)| memmem::find(line, tag).map(|at| (at, tag.len(), *severity)))
        .min_by_key(|(at, _, _)| *at);
    match found {
        Some((at, len, severity)) => Classified {
            severity,
            message: (severity >= LineSeverity::Warning)
                .then(|| String::from_utf8_lossy(&line[at + len..]).into_owned()),
        },
        None => Classified {
            severity: LineSeverity::Debug,
            message: None,
        },
    }
}

fn classify_redis(line: &[u8]) -> Classified {
    // `pid:role dd Mon yyyy hh:mm:ss.mmm <level> message`: `.` debug, `-` verbose, `*` notice,
    // `#` warning (Redis has no error level).
    let level = line
        .windows(3)
        .position(|w| w[0] == b' ' && matches!(w[1], b'.' | b'-' | b'*' | b'#') && w[2] == b' ');
    match level {
        Some(at) if line[at + 1] == b'#' => Classified {
            severity: LineSeverity::Warning,
            message: Some(String::from_utf8_lossy(&line[at + 3..]).into_owned()),
        },
        Some(at) if line[at + 1] == b'*' => Classified {
            severity: LineSeverity::Info,
            message: None,
        },
        _ => Classified {
            severity: LineSeverity::Debug,
            message: None,
        },
    }
}

fn classify_text(line: &[u8]) -> Classified {
    const WORDS: &[(&[u8], LineSeverity)] = &[
        (b"PANIC", LineSeverity::Panic),
        (b"FATAL", LineSeverity::Fatal),
        (b"CRITICAL", LineSeverity::Fatal),
        (b"ERROR", LineSeverity::Error),
        (b"WARN", LineSeverity::Warning),
        (b"INFO", LineSeverity::Info),
    ];
    let severity = WORDS
        .iter()
        .find(|(word, _)| memmem::find(line, word).is_some())
        .map_or(LineSeverity::Debug, |(_, severity)| *severity);
    Classified {
        severity,
        message: (severity >= LineSeverity::Warning)
            .then(|| String::from_utf8_lossy(line).into_owned()),
    }
}

/// Most characters a signature keeps.
pub const SIGNATURE_MAX_CHARS: usize = 200;

/// Folds the variable parts of `message`: timestamps → `<ts>`, UUIDs → `<uuid>`, `0x…` and
/// long hex runs → `<hex>`, quoted literals → `<str>`, numbers → `<n>`; whitespace runs become
/// one space; the result is cut at [`SIGNATURE_MAX_CHARS`].
#[must_use]
pub fn normalise(message: &str) -> String {
    let chars: Vec<char> = message.chars().collect();
    let mut out = String::with_capacity(message.len().min(SIGNATURE_MAX_CHARS + 8));
    let mut idx = 0;
    while idx < chars.len() && out.chars().count() < SIGNATURE_MAX_CHARS {
        let c = chars[idx];
        let word_start = idx == 0 || !chars[idx - 1].is_ascii_alphanumeric();
        if word_start && let Some(len) = timestamp_len(&chars[idx..]) {
            out.push_str("<ts>");
            idx += len;
        } else if word_start && let Some(len) = uuid_len(&chars[idx..]) {
            out.push_str("<uuid>");
            idx += len;
        } else if word_start && let Some(len) = hex_len(&chars[idx..]) {
            out.push_str("<hex>");
            idx += len;
        } else if (c == '"' || c == '\'' || c == '`')
            && let Some(end) = chars[idx + 1..].iter().position(|q| *q == c)
        {
            out.push_str("<str>");
            idx += end + 2;
        } else if c.is_ascii_digit() {
            // A number, with its decimals, and any letters glued to it (`12ms`, `3rd`).
            while idx < chars.len() && (chars[idx].is_ascii_alphanumeric() || chars[idx] == '.') {
                idx += 1;
            }
            out.push_str("<n>");
        } else if c.is_whitespace() {
            while idx < chars.len() && chars[idx].is_whitespace() {
                idx += 1;
            }
            if !out.is_empty() {
                out.push(' ');
            }
        } else {
            out.push(c);
            idx += 1;
        }
    }
    out.trim_end().to_owned()
}

/// `YYYY-MM-DD[T ]HH:MM:SS[.fff][Z|±HH[:]MM]` or a bare date.
fn timestamp_len(chars: &[char]) -> Option<usize> {
    let digits = |range: std::ops::Range<usize>| {
        chars
            .get(range.clone())
            .is_some_and(|s| s.iter().all(char::is_ascii_digit))
    };
    if !(digits(0..4)
        && chars.get(4) == Some(&'-')
        && digits(5..7)
        && chars.get(7) == Some(&'-')
        && digits(8..10))
    {
        return None;
    }
    let mut len = 10;
    if matches!(chars.get(10), Some('T' | ' '))
        && digits(11..13)
        && chars.get(13) == Some(&':')
        && digits(14..16)
        && chars.get(16) == Some(&':')
        && digits(17..19)
    {
        len = 19;
        if matches!(chars.get(19), Some('.' | ',')) {
            len = 20;
            while chars.get(len).is_some_and(char::is_ascii_digit) {
                len += 1;
            }
        }
        if chars.get(len) == Some(&'Z') {
            len += 1;
        } else if matches!(chars.get(len), Some('+' | '-')) && digits(len + 1..len + 3) {
            len += 3;
            if chars.get(len) == Some(&':') {
                len += 1;
            }
            if digits(len..len + 2) {
                len += 2;
            }
        }
    }
    Some(len)
}

fn uuid_len(chars: &[char]) -> Option<usize> {
    const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    let mut idx = 0;
    for (group_idx, group) in GROUPS.iter().enumerate() {
        if !chars
            .get(idx..idx + group)?
            .iter()
            .all(char::is_ascii_hexdigit)
        {
            return None;
        }
        idx += group;
        if group_idx < 4 {
            if chars.get(idx) != Some(&'-') {
                return None;
            }
            idx += 1;
        }
    }
    (!chars.get(idx).is_some_and(char::is_ascii_alphanumeric)).then_some(idx)
}

/// `0x` followed by hex digits, or a run of at least 8 hex digits holding a digit and a letter
/// (a hash, an address), ending at a word boundary.
fn hex_len(chars: &[char]) -> Option<usize> {
    if chars.first() == Some(&'0') && matches!(chars.get(1), Some('x' | 'X')) {
        let len = 2 + chars[2..]
            .iter()
            .take_while(|c| c.is_ascii_hexdigit())
            .count();
        return (len > 2).then_some(len);
    }
    let len = chars.iter().take_while(|c| c.is_ascii_hexdigit()).count();
    let run = &chars[..len];
    let boundary = !chars.get(len).is_some_and(char::is_ascii_alphanumeric);
    (len >= 8
        && boundary
        && run.iter().any(char::is_ascii_digit)
        && run.iter().any(char::is_ascii_alphabetic))
    .then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_fold_numbers_ids_hex_quotes_and_timestamps() {
        assert_eq!(
            normalise(
                "job 0190a6f2-1c2b-7def-8a9b-0123456789ab failed after 1532ms at 2026-11-29T06:00:01.123Z"
            ),
            "job <uuid> failed after <n> at <ts>"
        );
        assert_eq!(
            normalise("duplicate key value violates unique constraint \"orders_pkey\" (id=42)"),
            "duplicate key value violates unique constraint <str> (id=<n>)"
        );
        assert_eq!(
            normalise("segfault at 0x7ffd3 sha deadbeef1234"),
            "segfault at <hex> sha <hex>"
        );
        assert_eq!(
            normalise("user 'alice'   connected"),
            normalise("user 'bob' connected")
        );
        assert_ne!(normalise("disk full"), normalise("connection refused"));
    }

    #[test]
    fn json_lines_are_classified_without_a_full_parse_and_keep_their_message() {
        let line = br#"{"timestamp":"2026-11-29T06:00:00Z","level":"ERROR","message":"ledger write failed","error":"timeout"}"#;
        let classified = classify(SourceFormat::Json, line);
        assert_eq!(classified.severity, LineSeverity::Error);
        assert_eq!(
            classified.message.as_deref(),
            Some("ledger write failed: timeout")
        );
        let info = classify(SourceFormat::Json, br#"{"level": "info","msg":"ok"}"#);
        assert_eq!(info.severity, LineSeverity::Info);
        assert_eq!(info.message, None);
    }

    #[test]
    fn postgres_and_redis_lines_are_classified() {
        let pg = classify(
            SourceFormat::Postgres,
            b"2026-11-29 06:00:00.123 UTC [4242] FATAL:  password authentication failed for user \"app\"",
        );
        assert_eq!(pg.severity, LineSeverity::Fatal);
        assert_eq!(
            pg.message.as_deref(),
            Some("password authentication failed for user \"app\"")
        );
        let jsonlog = classify(
            SourceFormat::PostgresJsonlog,
            br#"{"timestamp":"2026-11-29 06:00:00 UTC","error_severity":"PANIC","message":"could not write"}"#,
        );
        assert_eq!(jsonlog.severity, LineSeverity::Panic);
        let redis = classify(
            SourceFormat::Redis,
            b"1:M 29 Nov 2026 06:00:00.000 # WARNING overcommit_memory is set to 0",
        );
        assert_eq!(redis.severity, LineSeverity::Warning);
    }
}
