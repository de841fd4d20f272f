//! The `[alerts]` section: where alerts go (`[[alerts.sinks]]`), which events go where
//! (`[[alerts.rules]]`), and the evaluator's and the outbox's timings.
//!
//! `config` composes it with `serde_section` and resolves `url_env`/`url_file` and
//! `password_env`/`password_file` before deserializing, so the structs only have `url` and
//! `password`.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::Event;
use crate::settings::{Problems, Section};

/// `[alerts]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsSettings {
    /// How often every worker daemon evaluates the rules (one evaluator at a time across
    /// workers). Defaults to 30s.
    #[serde(with = "crate::settings::duration")]
    pub evaluate_interval: Duration,
    /// How often every worker daemon looks for due outbox messages. Defaults to 2s.
    #[serde(with = "crate::settings::duration")]
    pub deliver_interval: Duration,
    /// Timeout of one delivery (connect, send, response), for every sink. Defaults to 10s.
    #[serde(with = "crate::settings::duration")]
    pub delivery_timeout: Duration,
    /// How long a worker holds a claimed message; past it the message is in doubt. Must be
    /// more than `delivery_timeout`. Defaults to 60s.
    #[serde(with = "crate::settings::duration")]
    pub lease: Duration,
    /// First delay after a failed delivery; doubles per failure, with jitter. Defaults to 5s.
    #[serde(with = "crate::settings::duration")]
    pub retry_base: Duration,
    /// Upper bound of that delay. Defaults to 5m.
    #[serde(with = "crate::settings::duration")]
    pub retry_max: Duration,
    /// A message still undelivered this long after it was queued is given up (`failed`).
    /// Defaults to 24h.
    #[serde(with = "crate::settings::duration")]
    pub give_up_after: Duration,
    /// Whether a message whose worker died mid-delivery (lease expired while `sending`) is
    /// sent again, with the same message id. Defaults to false: such a message is marked
    /// `in_doubt` and never sent twice.
    pub redeliver_in_doubt: bool,
    /// Added to a schedule's interval before its backup is stale or the schedule silent.
    /// Defaults to 1h.
    #[serde(with = "crate::settings::duration")]
    pub grace: Duration,
    /// Sent messages are deleted after this long. Defaults to 7d.
    #[serde(with = "crate::settings::duration")]
    pub outbox_retention: Duration,
    /// Where alerts go.
    pub sinks: Vec<SinkSettings>,
    /// Which events go to which sinks.
    pub rules: Vec<RuleSettings>,
}

/// One `[[alerts.sinks]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSettings {
    /// Unique name, 1 to 64 characters of `[a-z0-9_.-]`; rules refer to it.
    pub name: String,
    /// `webhook`, `slack` or `email`.
    #[serde(rename = "type")]
    pub kind: SinkKind,
    /// The URL a webhook or Slack message is POSTed to (`url`, `url_env` or `url_file`).
    #[serde(default)]
    pub url: Option<SecretString>,
    /// The SMTP server (email).
    #[serde(default)]
    pub smtp_host: Option<String>,
    /// Its port. Defaults to 587 with `starttls`, 465 with `tls`, 25 with `none`.
    #[serde(default)]
    pub smtp_port: Option<u16>,
    /// `none` (only for a loopback server), `starttls` or `tls`. Defaults to `starttls`.
    #[serde(default)]
    pub tls: SmtpTls,
    /// SMTP user name; none for an unauthenticated relay.
    #[serde(default)]
    pub username: Option<String>,
    /// SMTP password (`password`, `password_env` or `password_file`).
    #[serde(default)]
    pub password: Option<SecretString>,
    /// Sender address.
    #[serde(default)]
    pub from: Option<String>,
    /// Recipient addresses.
    #[serde(default)]
    pub to: Vec<String>,
}

/// What kind of sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// A JSON POST of the documented payload.
    Webhook,
    /// A Slack-compatible incoming webhook (`{"text": …, "blocks": …}`).
    Slack,
    /// Email over SMTP.
    Email,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain text; only allowed to a loopback host.
    None,
    /// Plain connection upgraded with STARTTLS (required).
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
}

/// One `[[alerts.rules]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSettings {
    /// Unique name, 1 to 64 characters of `[a-z0-9_.-]`; part of each incident's identity.
    pub name: String,
    /// The events it covers (at least one).
    pub events: Vec<Event>,
    /// The sinks its messages go to (at least one, each a configured sink).
    pub sinks: Vec<String>,
    /// A still-open incident is announced again after this long. Defaults to 4h.
    #[serde(default = "default_repeat", with = "crate::settings::duration")]
    pub repeat_interval: Duration,
    /// Only findings with these codes (a trailing `*` matches a prefix). Defaults to all.
    #[serde(default)]
    pub codes: Vec<String>,
    /// Only dead letters of these queues. Defaults to all.
    #[serde(default)]
    pub queues: Vec<String>,
    /// Only these schedules (missed ticks, silent schedules) or backup databases (stale
    /// backups). Defaults to all.
    #[serde(default)]
    pub subjects: Vec<String>,
}

fn default_repeat() -> Duration {
    Duration::from_secs(4 * 3600)
}

impl Default for AlertsSettings {
    fn default() -> Self {
        Self {
            evaluate_interval: Duration::from_secs(30),
            deliver_interval: Duration::from_secs(2),
            delivery_timeout: Duration::from_secs(10),
            lease: Duration::from_secs(60),
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(300),
            give_up_after: Duration::from_secs(24 * 3600),
            redeliver_in_doubt: false,
            grace: Duration::from_secs(3600),
            outbox_retention: Duration::from_secs(7 * 24 * 3600),
            sinks: Vec::new(),
            rules: Vec::new(),
        }
    }
}

impl AlertsSettings {
    /// The sink named `name`, if configured.
    #[must_use]
    pub fn sink(&self, name: &str) -> Option<&SinkSettings> {
        self.sinks.iter().find(|sink| sink.name == name)
    }

    /// Whether any rule is configured (the evaluator has something to do).
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        !self.rules.is_empty()
    }
}

impl RuleSettings {
    /// Whether a finding code passes the rule's `codes` filter.
    #[must_use]
    pub fn matches_code(&self, code: &str) -> bool {
        self.codes.is_empty()
            || self
                .codes
                .iter()
                .any(|pattern| match pattern.strip_suffix('*') {
                    Some(prefix) => code.starts_with(prefix),
                    None => code == pattern,
                })
    }

    /// Whether a queue passes the rule's `queues` filter.
    #[must_use]
    pub fn matches_queue(&self, queue: &str) -> bool {
        self.queues.is_empty() || self.queues.iter().any(|q| q == queue)
    }

    /// Whether a schedule or database name passes the rule's `subjects` filter.
    #[must_use]
    pub fn matches_subject(&self, subject: &str) -> bool {
        self.subjects.is_empty() || self.subjects.iter().any(|s| s == subject)
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Section for AlertsSettings {
    const SECRET_KEYS: &'static [&'static str] = &["sinks[].url", "sinks[].password"];

    fn validate(&self, path: &str, problems: &mut Problems) {
        for (key, value) in [
            ("evaluate_interval", self.evaluate_interval),
            ("deliver_interval", self.deliver_interval),
            ("retry_base", self.retry_base),
        ] {
            if value < Duration::from_millis(100) {
                problems.push(format!("{path}.{key}"), "must be at least 100ms");
            }
        }
        if self.delivery_timeout < Duration::from_millis(100) {
            problems.push(format!("{path}.delivery_timeout"), "must be at least 100ms");
        }
        if self.lease <= self.delivery_timeout + Duration::from_secs(1) {
            problems.push(
                format!("{path}.lease"),
                "must be more than alerts.delivery_timeout plus 1s",
            );
        }
        if self.retry_max < self.retry_base {
            problems.push(
                format!("{path}.retry_max"),
                "must be at least alerts.retry_base",
            );
        }
        for (idx, sink) in self.sinks.iter().enumerate() {
            let at = format!("{path}.sinks[{idx}]");
            if !valid_name(&sink.name) {
                problems.push(
                    format!("{at}.name"),
                    format!(
                        "must be 1-64 characters of [a-z0-9_.-], got {:?}",
                        sink.name
                    ),
                );
            }
            if self.sinks[..idx]
                .iter()
                .any(|other| other.name == sink.name)
            {
                problems.push(
                    format!("{at}.name"),
                    format!("must be unique, {:?} appears twice", sink.name),
                );
            }
            validate_sink(&at, sink, problems);
        }
        for (idx, rule) in self.rules.iter().enumerate() {
            let at = format!("{path}.rules[{idx}]");
            if !valid_name(&rule.name) {
                problems.push(
                    format!("{at}.name"),
                    format!(
                        "must be 1-64 characters of [a-z0-9_.-], got {:?}",
                        rule.name
                    ),
                );
            }
            if self.rules[..idx]
                .iter()
                .any(|other| other.name == rule.name)
            {
                problems.push(
                    format!("{at}.name"),
                    format!("must be unique, {:?} appears twice", rule.name),
                );
            }
            if rule.events.is_empty() {
                problems.push(
                    format!("{at}.events"),
                    format!("must name at least one event ({})", Event::ALL_NAMES),
                );
            }
            if rule.sinks.is_empty() {
                problems.push(format!("{at}.sinks"), "must name at least one sink");
            }
            for sink in &rule.sinks {
                if self.sink(sink).is_none() {
                    let known: Vec<&str> = self.sinks.iter().map(|s| s.name.as_str()).collect();
                    problems.push(
                        format!("{at}.sinks"),
                        format!(
                            "unknown sink {sink:?} (configured: {})",
                            if known.is_empty() {
                                "none".to_owned()
                            } else {
                                known.join(", ")
                            }
                        ),
                    );
                }
            }
            if rule.repeat_interval < Duration::from_secs(1) {
                problems.push(format!("{at}.repeat_interval"), "must be at least 1s");
            }
            if rule.codes.iter().any(|code| code.trim().is_empty()) {
                problems.push(format!("{at}.codes"), "codes must not be empty");
            }
        }
    }
}

fn validate_sink(at: &str, sink: &SinkSettings, problems: &mut Problems) {
    let has_email_keys = sink.smtp_host.is_some()
        || sink.smtp_port.is_some()
        || sink.username.is_some()
        || sink.password.is_some()
        || sink.from.is_some()
        || !sink.to.is_empty();
    match sink.kind {
        SinkKind::Webhook | SinkKind::Slack => {
            match &sink.url {
                None => problems.push(
                    format!("{at}.url"),
                    "is required for a webhook or slack sink (url, url_env or url_file)",
                ),
                Some(url) => match url::Url::parse(url.expose_secret()) {
                    Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {}
                    // The URL may hold a token: never shown.
                    _ => problems.push(
                        format!("{at}.url"),
                        "must be an http:// or https:// URL (value not shown)",
                    ),
                },
            }
            if has_email_keys {
                problems.push(
                    at.to_owned(),
                    "smtp_host, smtp_port, username, password, from and to are for email sinks",
                );
            }
        }
        SinkKind::Email => {
            if sink.url.is_some() {
                problems.push(format!("{at}.url"), "is for webhook and slack sinks");
            }
            match sink.smtp_host.as_deref() {
                None | Some("") => {
                    problems.push(format!("{at}.smtp_host"), "is required for an email sink")
                }
                Some(host) => {
                    if sink.tls == SmtpTls::None && !is_loopback(host) {
                        problems.push(
                            format!("{at}.tls"),
                            format!(
                                "\"none\" is only allowed to a loopback host, got smtp_host {host:?}"
                            ),
                        );
                    }
                }
            }
            if sink.smtp_port == Some(0) {
                problems.push(format!("{at}.smtp_port"), "must be between 1 and 65535");
            }
            if sink.password.is_some() && sink.username.is_none() {
                problems.push(format!("{at}.username"), "is required with a password");
            }
            match sink.from.as_deref() {
                None => problems.push(format!("{at}.from"), "is required for an email sink"),
                Some(from) => {
                    if from.parse::<lettre::message::Mailbox>().is_err() {
                        problems.push(
                            format!("{at}.from"),
                            format!("must be an email address, got {from:?}"),
                        );
                    }
                }
            }
            if sink.to.is_empty() {
                problems.push(format!("{at}.to"), "must list at least one recipient");
            }
            for (idx, to) in sink.to.iter().enumerate() {
                if to.parse::<lettre::message::Mailbox>().is_err() {
                    problems.push(
                        format!("{at}.to[{idx}]"),
                        format!("must be an email address, got {to:?}"),
                    );
                }
            }
        }
    }
}

impl SinkSettings {
    /// The SMTP port: the configured one, or the default of the TLS mode.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.smtp_port.unwrap_or(match self.tls {
            SmtpTls::None => 25,
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::config::Settings;

    fn problems(toml: &str, env: &[(&str, &str)]) -> String {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        match Settings::from_toml_str(toml, &env) {
            Ok(_) => String::new(),
            Err(error) => error.to_string(),
        }
    }

    const SINKS: &str = r#"
[[alerts.sinks]]
name = "hook"
type = "webhook"
url_env = "HOOK_URL"

[[alerts.sinks]]
name = "mail"
type = "email"
smtp_host = "smtp.example.com"
username = "u"
password_env = "SMTP_PASSWORD"
from = "upkeep@example.com"
to = ["ops@example.com"]
"#;

    #[test]
    fn a_complete_alerts_section_loads_with_its_secrets_resolved() {
        let env: HashMap<String, String> = [
            ("HOOK_URL", "https://hooks.example.com/T0/secret-path"),
            ("SMTP_PASSWORD", "hunter2"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let toml = format!(
            "{SINKS}\n[[alerts.rules]]\nname = \"pager\"\nevents = [\"finding_critical\", \"dead_letter\"]\nsinks = [\"hook\", \"mail\"]\ncodes = [\"backup.*\"]\n"
        );
        let settings = Settings::from_toml_str(&toml, &env).expect("valid");
        let alerts = &settings.alerts;
        assert_eq!(alerts.sinks.len(), 2);
        assert_eq!(alerts.rules[0].repeat_interval.as_secs(), 4 * 3600);
        assert!(alerts.rules[0].matches_code("backup.stale"));
        assert!(!alerts.rules[0].matches_code("disk.used_pct"));
        assert_eq!(
            alerts.sink("mail").map(super::SinkSettings::port),
            Some(587)
        );
        assert!(!format!("{settings:?}").contains("hunter2"));
        assert!(!format!("{settings:?}").contains("secret-path"));
    }

    #[test]
    fn bad_rules_and_sinks_are_refused_naming_the_key() {
        let env = [("HOOK_URL", "not a url"), ("SMTP_PASSWORD", "x")];
        let text = problems(
            &format!("{SINKS}\n[[alerts.rules]]\nname = \"r\"\nevents = []\nsinks = [\"nope\"]\n"),
            &env,
        );
        assert!(text.contains("alerts.sinks[0].url"), "{text}");
        assert!(!text.contains("not a url"), "the URL is not shown: {text}");
        assert!(text.contains("alerts.rules[0].events"), "{text}");
        assert!(text.contains("alerts.rules[0].sinks"), "{text}");
        assert!(text.contains("unknown sink \"nope\""), "{text}");
    }

    #[test]
    fn an_unknown_event_is_refused_naming_the_key_and_the_value() {
        let text = problems(
            "[[alerts.sinks]]\nname = \"m\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/h\"\n\n[[alerts.rules]]\nname = \"r\"\nevents = [\"finding_bad\"]\nsinks = [\"m\"]\n",
            &[],
        );
        assert!(text.contains("alerts.rules[0].events"), "{text}");
        assert!(text.contains("finding_bad"), "{text}");
    }

    #[test]
    fn plain_smtp_to_a_remote_host_is_refused() {
        let text = problems(
            "[[alerts.sinks]]\nname = \"m\"\ntype = \"email\"\nsmtp_host = \"smtp.example.com\"\ntls = \"none\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\n",
            &[],
        );
        assert!(text.contains("alerts.sinks[0].tls"), "{text}");
    }

    #[test]
    fn a_lease_shorter_than_the_delivery_timeout_is_refused() {
        let text = problems(
            "[alerts]\ndelivery_timeout = \"30s\"\nlease = \"10s\"\n",
            &[],
        );
        assert!(text.contains("alerts.lease"), "{text}");
    }

    #[test]
    fn a_bad_ping_url_is_refused_without_showing_it() {
        let text = problems(
            "[[schedules]]\nname = \"p\"\ncron = \"* * * * *\"\nkind = \"system.ping\"\nping_url = \"ftp://x/secret-uuid\"\n",
            &[],
        );
        assert!(text.contains("ping_url"), "{text}");
        assert!(!text.contains("secret-uuid"), "{text}");
    }
}
