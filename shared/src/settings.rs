//! Building blocks of every subsystem's settings type: the [`Section`] trait, the [`Problems`]
//! collector and the value types settings share ([`ByteSize`]).
//!
//! Each subsystem owns its settings type beside its code (`backup::settings`, `logs::settings`,
//! ...): a serde-derived struct with `deny_unknown_fields`, defaults written once in `Default`,
//! durations through `humantime_serde`, secrets as `secrecy` types. It implements [`Section`] so
//! `config` can compose it: `config` layers the sources, resolves indirect secrets (`KEY_env`,
//! `KEY_file`) for the keys the section declares in [`Section::SECRET_KEYS`], deserializes the
//! section and calls [`Section::validate`]. This module reads no environment and no file, and
//! subsystems never import `config`: the dependency goes one way, from `config` to them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A configuration section owned by a subsystem.
pub trait Section: serde::de::DeserializeOwned + Default {
    /// Keys holding secrets, relative to the section, dotted; a segment ending in `[]` is an
    /// array of tables (`"databases[].url"`). For each, the file may give the value inline
    /// (`url = "…"`), or name an environment variable (`url_env = "VAR"`) or a file
    /// (`url_file = "/run/credentials/…"`, as systemd's `LoadCredential=` provides) that holds
    /// it. `config` resolves the indirect forms before deserializing, so the struct has only the
    /// plain key, and redacts these keys wherever it shows the configuration.
    const SECRET_KEYS: &'static [&'static str] = &[];

    /// Collects range and cross-field problems of an already deserialized section. `path` is the
    /// section's key path (`backups`); every problem names the full path of its key.
    fn validate(&self, path: &str, problems: &mut Problems);
}

/// Test support: parses `toml_text` as section `S` and returns its validation problems as the
/// operator would read them (`path.key: message`).
#[cfg(test)]
pub(crate) fn problems_of<S: Section>(path: &str, toml_text: &str) -> Vec<String> {
    let settings: S = toml::from_str(toml_text).expect("the section deserializes");
    let mut problems = Problems::default();
    settings.validate(path, &mut problems);
    problems
        .into_vec()
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// One invalid setting: where it is and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key path (`queues.reports.concurrency`, `backups.databases[0].url`), with the
    /// environment variable that set it if any, or the named environment variable itself
    /// (`DATABASE_URL`).
    pub key: String,
    /// What is wrong, naming the bad value unless it is a secret, and what is allowed.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// The problems found while checking a configuration, so that one load reports all of them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Problems {
    list: Vec<Problem>,
}

impl Problems {
    /// Records that the setting at `key` is invalid.
    pub fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.list.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    /// Records a problem unless `min <= value <= max`, naming the range and the value.
    pub fn check_range<T: PartialOrd + fmt::Display>(
        &mut self,
        key: impl Into<String>,
        value: T,
        min: T,
        max: T,
    ) {
        if value < min || value > max {
            self.push(key, format!("must be between {min} and {max}, got {value}"));
        }
    }

    /// Records a problem when `value` is empty or only whitespace.
    pub fn check_not_empty(&mut self, key: impl Into<String>, value: &str) {
        if value.trim().is_empty() {
            self.push(key, "must not be empty");
        }
    }

    /// Whether nothing was found.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The problems, in the order they were found.
    #[must_use]
    pub fn into_vec(self) -> Vec<Problem> {
        self.list
    }

    /// The problems found so far.
    #[must_use]
    pub fn as_slice(&self) -> &[Problem] {
        &self.list
    }
}

/// A number of bytes, written in config as an integer or a string with a unit: `"512"`,
/// `"1KiB"`, `"100MiB"`, `"1.5GiB"`, `"10MB"` (SI units are powers of 1000, IEC ones of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size in bytes.
    #[must_use]
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let unit = unit.trim();
        let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            "t" | "tb" => 1_000_000_000_000,
            "tib" => 1 << 40,
            _ => {
                return Err(format!(
                    "unknown unit {unit:?} in {text:?} (expected B, KB, KiB, MB, MiB, GB, GiB, TB or TiB)"
                ));
            }
        };
        let value: f64 = number
            .parse()
            .map_err(|_| format!("expected a size such as \"100MiB\", got {text:?}"))?;
        #[expect(
            clippy::cast_precision_loss,
            reason = "multipliers are powers of two or ten up to 2^40, exact in an f64"
        )]
        let bytes = value * multiplier as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(format!("size {text:?} is out of range"));
        }
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "checked finite, non-negative and in range above"
        )]
        Ok(Self(bytes.round() as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (unit, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Int(bytes) => Ok(Self(bytes)),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

/// Serde for a [`Duration`] written as text: `"250ms"`, `"30s"`, `"5m"`, `"1h"`, `"7d"`, or a
/// combination (`"1h 30m"`). Use it as `#[serde(with = "crate::settings::duration")]`. It reads
/// what `humantime_serde` reads, and its errors name the bad value and the accepted form.
pub mod duration {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    /// Writes the duration in its largest exact unit (`"90d"`, `"5m"`, `"250ms"`).
    ///
    /// # Errors
    /// Only the serializer's own.
    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(*value))
    }

    /// The duration in its largest exact unit: `90d`, `2h`, `5m`, `30s`, `250ms`; other
    /// values in humantime's combined form (`1h 30m`).
    #[must_use]
    pub fn format(value: Duration) -> String {
        let secs = value.as_secs();
        let nanos = value.subsec_nanos();
        if nanos == 0 {
            for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
                if secs.is_multiple_of(size) && (secs > 0 || unit == "s") {
                    return format!("{}{unit}", secs / size);
                }
            }
        }
        if secs < 60 && nanos.is_multiple_of(1_000_000) {
            return format!("{}ms", value.as_millis());
        }
        humantime::format_duration(value).to_string()
    }

    /// Reads humantime text.
    ///
    /// # Errors
    /// When the value is not a string or not a duration; the message names the value.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_any(DurationVisitor)
    }

    pub(crate) struct DurationVisitor;

    fn refuse<E: de::Error>(got: impl fmt::Display) -> E {
        E::custom(format!(
            "expected a duration such as \"250ms\", \"30s\", \"5m\" or \"7d\", got {got}"
        ))
    }

    impl<'de> Visitor<'de> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"30s\"")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            humantime::parse_duration(text.trim()).map_err(|_| refuse(format!("{text:?}")))
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Duration, E> {
            Err(refuse(n))
        }

        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Duration, E> {
            Err(refuse(n))
        }

        fn visit_f64<E: de::Error>(self, x: f64) -> Result<Duration, E> {
            Err(refuse(x))
        }

        fn visit_bool<E: de::Error>(self, b: bool) -> Result<Duration, E> {
            Err(refuse(b))
        }

        fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Duration, A::Error> {
            Err(refuse("a table"))
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Duration, A::Error> {
            Err(refuse("an array"))
        }
    }

    /// The same for an `Option<Duration>` (absent or a duration):
    /// `#[serde(default, with = "crate::settings::duration::option")]`.
    pub mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        /// Writes the duration, or nothing.
        ///
        /// # Errors
        /// Only the serializer's own.
        pub fn serialize<S: Serializer>(
            value: &Option<Duration>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match value {
                Some(value) => super::serialize(value, serializer),
                None => serializer.serialize_none(),
            }
        }

        /// Reads a duration.
        ///
        /// # Errors
        /// As [`super::deserialize`].
        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<Duration>, D::Error> {
            #[derive(Deserialize)]
            struct Wrapped(#[serde(with = "super")] Duration);
            Option::<Wrapped>::deserialize(deserializer).map(|w| w.map(|Wrapped(d)| d))
        }
    }
}

/// Serializes a secret as `"***"` (`None` stays absent), for showing settings: the value is
/// never written anywhere. Use `#[serde(serialize_with = "crate::settings::redacted")]`.
///
/// # Errors
/// Only the serializer's own.
pub fn redacted<T, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error>
where
    T: RedactedShape,
{
    value.serialize_redacted(serializer)
}

/// Serializes a URL secret with its credentials hidden by [`redact_url`] (host and path stay
/// visible), for showing settings.
///
/// # Errors
/// Only the serializer's own.
pub fn redacted_url<T, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error>
where
    T: RedactedShape,
{
    value.serialize_redacted_url(serializer)
}

/// The shapes a secret setting comes in: one secret, an optional one, or a list.
pub trait RedactedShape {
    /// Writes `***` in place of each secret.
    ///
    /// # Errors
    /// Only the serializer's own.
    fn serialize_redacted<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error>;
    /// Writes each secret as a URL with its credentials hidden.
    ///
    /// # Errors
    /// Only the serializer's own.
    fn serialize_redacted_url<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error>;
}

impl RedactedShape for secrecy::SecretString {
    fn serialize_redacted<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }

    fn serialize_redacted_url<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use secrecy::ExposeSecret as _;
        serializer.serialize_str(&redact_url(self.expose_secret()))
    }
}

impl<T: RedactedShape> RedactedShape for Option<T> {
    fn serialize_redacted<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Some(value) => value.serialize_redacted(serializer),
            None => serializer.serialize_none(),
        }
    }

    fn serialize_redacted_url<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Some(value) => value.serialize_redacted_url(serializer),
            None => serializer.serialize_none(),
        }
    }
}

impl<T: RedactedShape> RedactedShape for Vec<T> {
    fn serialize_redacted<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq as _;
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for item in self {
            seq.serialize_element(&Redacted(item, false))?;
        }
        seq.end()
    }

    fn serialize_redacted_url<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq as _;
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for item in self {
            seq.serialize_element(&Redacted(item, true))?;
        }
        seq.end()
    }
}

struct Redacted<'a, T>(&'a T, bool);

impl<T: RedactedShape> Serialize for Redacted<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.1 {
            self.0.serialize_redacted_url(serializer)
        } else {
            self.0.serialize_redacted(serializer)
        }
    }
}

/// What a redacted secret is shown as.
pub const REDACTED: &str = "***";

/// A TOML key as written in a dotted path: bare when it can be (`reports`), quoted otherwise
/// (`"system.ping"`), so problem paths can be pasted back into the file.
#[must_use]
pub fn key_segment(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

/// `url` with its userinfo replaced by `***` and secret query parameters (`password`,
/// `sslpassword`, `sentinel_password`) masked, for logs and error messages. A URL with several
/// hosts (`redis+sentinel://:pw@a:26379,b:26379/m`) is redacted the same way. Text that does
/// not parse as a URL but might hold a secret is replaced by its length.
#[must_use]
pub fn redact_url(url: &str) -> String {
    let opaque = || format!("<{} characters, not shown>", url.chars().count());
    let Ok(mut parsed) = url::Url::parse(url) else {
        if let Some(redacted) = redact_host_list_url(url) {
            return redacted;
        }
        let suspicious = url.contains('@') || url.to_ascii_lowercase().contains("password");
        return if suspicious { opaque() } else { url.to_owned() };
    };
    if parsed.cannot_be_a_base() {
        return if url.contains('@') {
            opaque()
        } else {
            url.to_owned()
        };
    }
    let mut changed = false;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        if parsed.set_password(None).is_err() || parsed.set_username("***").is_err() {
            return opaque();
        }
        changed = true;
    }
    let secret_params = parsed.query_pairs().any(|(name, _)| is_secret_param(&name));
    if secret_params {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let value = if is_secret_param(&name) {
                    "***".to_owned()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
        changed = true;
    }
    if parsed.fragment().is_some() {
        parsed.set_fragment(None);
        changed = true;
    }
    if changed {
        parsed.to_string()
    } else {
        url.to_owned()
    }
}

/// Redacts `scheme://[userinfo@]authority[/path][?query]` by hand, for URLs the `url` crate
/// refuses because their authority is a host list. `None` when the text is not shaped like
/// that, or when an `@` after the authority leaves unclear where the userinfo ends.
fn redact_host_list_url(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return None;
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    if tail.contains('@') {
        return None;
    }
    let hosts = match authority.rfind('@') {
        Some(at) => format!("***@{}", &authority[at + 1..]),
        None => authority.to_owned(),
    };
    let tail = tail.split('#').next().unwrap_or("");
    let redacted_tail = match tail.split_once('?') {
        None => tail.to_owned(),
        Some((path, query)) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if is_secret_param(name) => format!("{name}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", pairs.join("&"))
        }
    };
    Some(format!("{scheme}://{hosts}{redacted_tail}"))
}

fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    // "pass" also covers `passwd` and misspellings such as `sentinel_pass`.
    name.contains("pass") || name.contains("secret") || name.contains("token")
}

/// Records a problem at `key` when `value` is shorter than `min`, naming both.
pub fn check_min_duration(
    problems: &mut Problems,
    key: String,
    value: std::time::Duration,
    min: std::time::Duration,
) {
    if value < min {
        problems.push(
            key,
            format!(
                "must be at least {}, got {}",
                duration::format(min),
                duration::format(value)
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_with_iec_and_si_units() {
        assert_eq!("1KiB".parse::<ByteSize>(), Ok(ByteSize(1024)));
        assert_eq!("100MiB".parse::<ByteSize>(), Ok(ByteSize(100 << 20)));
        assert_eq!("1.5GiB".parse::<ByteSize>(), Ok(ByteSize(3 << 29)));
        assert_eq!("10MB".parse::<ByteSize>(), Ok(ByteSize(10_000_000)));
        assert_eq!("512".parse::<ByteSize>(), Ok(ByteSize(512)));
        assert!("12 parsecs".parse::<ByteSize>().is_err());
        assert!("MiB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn byte_sizes_display_in_the_largest_exact_unit() {
        assert_eq!(ByteSize(100 << 20).to_string(), "100MiB");
        assert_eq!(ByteSize(1500).to_string(), "1500B");
    }

    #[test]
    fn range_problems_name_the_range_and_the_value() {
        let mut problems = Problems::default();
        problems.check_range("backups.retention.keep_last", 0, 1, 1000);
        problems.check_range("backups.retention.keep_daily", 7, 0, 1000);
        assert_eq!(
            problems.into_vec(),
            vec![Problem {
                key: "backups.retention.keep_last".to_owned(),
                message: "must be between 1 and 1000, got 0".to_owned(),
            }]
        );
    }
}
