//! Builds and installs the process-wide tracing subscriber.
//!
//! Every binary calls [`init`] once, first thing in `main`. Output is JSON when
//! `UPKEEP_LOG_FORMAT=json` (production) and human-readable otherwise; `RUST_LOG` filters.
//! The format is passed in by the caller: only `config` reads the environment.

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for log shippers.
    Json,
    /// Human-readable lines. Defaults to this.
    #[default]
    Pretty,
}

impl LogFormat {
    /// Parses `json` or `pretty`.
    ///
    /// # Errors
    /// Names the bad value.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            other => Err(format!(
                "UPKEEP_LOG_FORMAT must be json or pretty, got {other:?}"
            )),
        }
    }
}

/// Installs the subscriber. `default_filter` applies when `RUST_LOG` is unset.
/// A second call in the same process is a no-op, so tests can call it freely.
pub fn init(service: &str, default_filter: &str, format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
    if result.is_ok() {
        tracing::debug!(service, "telemetry initialised");
    }
}

/// The `[telemetry]` section.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    /// Log line format. Defaults to `pretty`; `UPKEEP_LOG_FORMAT` overrides it.
    pub format: LogFormat,
    /// Default `tracing` filter when `RUST_LOG` is unset. Defaults to `info`.
    pub filter: String,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            filter: "info".to_owned(),
        }
    }
}

impl crate::settings::Section for TelemetrySettings {
    fn validate(&self, path: &str, problems: &mut crate::settings::Problems) {
        if let Err(e) = EnvFilter::try_new(&self.filter) {
            problems.push(
                format!("{path}.filter"),
                format!("invalid tracing filter {:?}: {e}", self.filter),
            );
        }
    }
}
