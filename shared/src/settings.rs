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
