//! The `[tokens]` section: when credentials are refreshed, and the `[[tokens.providers]]` the
//! token worker keeps fresh.
//!
//! `config` composes it with `serde_section` and resolves `client_secret_env` /
//! `client_secret_file` before deserializing, so the struct only has `client_secret`.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::settings::{Problems, Section};

/// `[tokens]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenSettings {
    /// Fraction of a token's lifetime after which it is refreshed (minus up to 10% jitter),
    /// 0.1 to 0.95. Defaults to 0.75.
    pub refresh_at: f64,
    /// A token is refreshed at the latest this long before it expires. Defaults to 2m.
    #[serde(with = "humantime_serde")]
    pub min_ahead: Duration,
    /// Timeout of one token request (connect and response). Defaults to 10s.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// First delay after a failed refresh (429, 5xx, timeout); doubles per consecutive failure,
    /// with jitter. Defaults to 30s.
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    /// Upper bound of that delay. Defaults to 10m.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// While refreshes fail, a critical `tokens.expiring` finding is reported once the access
    /// token expires within this. Defaults to 15m.
    #[serde(with = "humantime_serde")]
    pub alert_before: Duration,
    /// The providers, in file order.
    pub providers: Vec<ProviderSettings>,
}

/// One `[[tokens.providers]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    /// Unique name, 1 to 64 characters of `[a-z0-9_.-]`; the credential's key in
    /// `oauth_tokens` and the subject of its findings.
    pub name: String,
    /// The token endpoint (`http://` or `https://`).
    pub token_url: String,
    /// The OAuth2 client id.
    pub client_id: String,
    /// The client secret (`client_secret`, `client_secret_env` or `client_secret_file`);
    /// none for a public client.
    #[serde(default)]
    pub client_secret: Option<SecretString>,
    /// How the client authenticates. Defaults to `client_secret_basic`.
    #[serde(default)]
    pub auth_method: AuthMethod,
    /// Scopes requested on refresh. Defaults to none (the grant's scopes).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Where the current access token is written after each refresh (atomically, mode
    /// `export_mode`). Defaults to none.
    #[serde(default)]
    pub export_file: Option<PathBuf>,
    /// Numeric owner of the export file, `"UID"` or `"UID:GID"`. Defaults to the worker's user.
    #[serde(default)]
    pub export_owner: Option<String>,
    /// Octal mode of the export file. Defaults to `"0600"`.
    #[serde(default = "default_export_mode")]
    pub export_mode: String,
}

/// How the client authenticates at the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// HTTP Basic with the client id and secret.
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            refresh_at: 0.75,
            min_ahead: Duration::from_secs(120),
            request_timeout: Duration::from_secs(10),
            retry_base: Duration::from_secs(30),
            retry_max: Duration::from_secs(600),
            alert_before: Duration::from_secs(900),
            providers: Vec::new(),
        }
    }
}

impl TokenSettings {
    /// The provider named `name`, if configured.
    #[must_use]
    pub fn provider(&self, name: &str) -> Option<&ProviderSettings> {
        self.providers.iter().find(|provider| provider.name == name)
    }
}

impl ProviderSettings {
    /// The export file's mode (validated at load; 0600 if it somehow does not parse).
    #[must_use]
    pub fn export_mode_bits(&self) -> u32 {
        parse_mode(&self.export_mode).unwrap_or(0o600)
    }

    /// The export file's owner as `(uid, gid)` (validated at load).
    #[must_use]
    pub fn export_owner_ids(&self) -> Option<(u32, Option<u32>)> {
        self.export_owner
            .as_deref()
            .and_then(|text| parse_owner(text).ok())
    }
}

impl Section for TokenSettings {
    const SECRET_KEYS: &'static [&'static str] = &["providers[].client_secret"];

    fn validate(&self, path: &str, problems: &mut Problems) {
        if !(0.1..=0.95).contains(&self.refresh_at) {
            problems.push(
                format!("{path}.refresh_at"),
                format!("must be between 0.1 and 0.95, got {}", self.refresh_at),
            );
        }
        if self.request_timeout < Duration::from_millis(100) {
            problems.push(format!("{path}.request_timeout"), "must be at least 100ms");
        }
        if self.retry_base.is_zero() {
            problems.push(format!("{path}.retry_base"), "must be more than 0");
        }
        if self.retry_max < self.retry_base {
            problems.push(
                format!("{path}.retry_max"),
                "must be at least tokens.retry_base",
            );
        }
        for (idx, provider) in self.providers.iter().enumerate() {
            let at = format!("{path}.providers[{idx}]");
            let valid_name = !provider.name.is_empty()
                && provider.name.len() <= 64
                && provider.name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
                });
            if !valid_name {
                problems.push(
                    format!("{at}.name"),
                    format!(
                        "must be 1-64 characters of [a-z0-9_.-], got {:?}",
                        provider.name
                    ),
                );
            }
            if self.providers[..idx]
                .iter()
                .any(|other| other.name == provider.name)
            {
                problems.push(
                    format!("{at}.name"),
                    format!("must be unique, {:?} appears twice", provider.name),
                );
            }
            match url::Url::parse(&provider.token_url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {}
                _ => problems.push(
                    format!("{at}.token_url"),
                    format!(
                        "must be an http:// or https:// URL, got {:?}",
                        provider.token_url
                    ),
                ),
            }
            problems.check_not_empty(format!("{at}.client_id"), &provider.client_id);
            if provider
                .scopes
                .iter()
                .any(|scope| scope.is_empty() || scope.contains(char::is_whitespace))
            {
                problems.push(
                    format!("{at}.scopes"),
                    "each scope must be non-empty and without spaces",
                );
            }
            if let Some(file) = &provider.export_file
                && (!file.is_absolute() || file.file_name().is_none())
            {
                problems.push(
                    format!("{at}.export_file"),
                    format!("must be an absolute file path, got {:?}", file.display()),
                );
            }
            if let Some(owner) = &provider.export_owner
                && let Err(message) = parse_owner(owner)
            {
                problems.push(format!("{at}.export_owner"), message);
            }
            match parse_mode(&provider.export_mode) {
                Some(mode) if mode & 0o077 == 0 || mode & 0o007 == 0 => {}
                Some(_) => problems.push(
                    format!("{at}.export_mode"),
                    format!(
                        "must not give others access to the token, got {:?} (use 0600 or 0640)",
                        provider.export_mode
                    ),
                ),
                None => problems.push(
                    format!("{at}.export_mode"),
                    format!(
                        "must be an octal mode such as \"0600\", got {:?}",
                        provider.export_mode
                    ),
                ),
            }
        }
    }
}

fn default_export_mode() -> String {
    "0600".to_owned()
}

fn parse_mode(text: &str) -> Option<u32> {
    let mode = u32::from_str_radix(text.trim_start_matches("0o"), 8).ok()?;
    (mode <= 0o777).then_some(mode)
}

fn parse_owner(text: &str) -> Result<(u32, Option<u32>), String> {
    let bad = || format!("must be a numeric \"UID\" or \"UID:GID\", got {text:?}");
    let (uid, gid) = match text.split_once(':') {
        Some((uid, gid)) => (uid, Some(gid)),
        None => (text, None),
    };
    let uid = uid.parse().map_err(|_| bad())?;
    let gid = gid.map(str::parse).transpose().map_err(|_| bad())?;
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(toml_text: &str) -> Vec<String> {
        crate::settings::problems_of::<TokenSettings>("tokens", toml_text)
    }

    #[test]
    fn the_defaults_are_the_documented_ones_and_valid() {
        let settings = TokenSettings::default();
        assert!((settings.refresh_at - 0.75).abs() < f64::EPSILON);
        assert_eq!(settings.min_ahead, Duration::from_secs(120));
        assert!(problems_of("").is_empty());
    }

    #[test]
    fn bad_provider_values_are_reported_with_their_key_paths() {
        let problems = problems_of(
            r#"
refresh_at = 1.5
[[providers]]
name = "CRM"
token_url = "ftp://x"
client_id = ""
export_file = "relative/token"
export_owner = "app"
export_mode = "0644"
[[providers]]
name = "CRM"
token_url = "http://127.0.0.1/token"
client_id = "x"
"#,
        );
        let expected = [
            "tokens.refresh_at: must be between 0.1 and 0.95",
            "tokens.providers[0].name: must be 1-64",
            "tokens.providers[0].token_url: must be an http",
            "tokens.providers[0].client_id: must not be empty",
            "tokens.providers[0].export_file: must be an absolute",
            "tokens.providers[0].export_owner: must be a numeric",
            "tokens.providers[0].export_mode: must not give others",
            "tokens.providers[1].name: must be unique",
        ];
        for needle in expected {
            assert!(
                problems.iter().any(|p| p.starts_with(needle)),
                "{needle} missing from {problems:#?}"
            );
        }
    }

    #[test]
    fn owner_and_mode_parse() {
        assert_eq!(parse_owner("1000:1001"), Ok((1000, Some(1001))));
        assert_eq!(parse_owner("0"), Ok((0, None)));
        assert_eq!(parse_mode("0640"), Some(0o640));
        assert_eq!(parse_mode("999"), None);
    }
}
