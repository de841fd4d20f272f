//! `[[api.tokens]]` and the API's access settings: named bearer tokens with a role each, the
//! per-token rate limit of mutating routes, and the CORS origins. Part of `[api]`
//! ([`crate::daemons::ApiSettings`]); `upkeep-api` enforces them.
//!
//! A token is given either as the hex SHA-256 digest of the secret (`sha256 = "…"`, nothing
//! secret in the file) or as the secret itself through `token_env` / `token_file`. The API
//! compares digests in constant time either way.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::settings::Problems;

/// What a token may do. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiRole {
    /// Read task lists, stats, runs, findings, schedules, backups, dead letters.
    Read,
    /// Also act: enqueue, acknowledge items, retry dead letters, pause/resume/trigger
    /// schedules.
    Operate,
    /// Also read the access tokens `upkeepctl tokens` manages (the only role that may).
    Tokens,
}

impl ApiRole {
    /// The role's name as configuration and errors spell it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Operate => "operate",
            Self::Tokens => "tokens",
        }
    }
}

/// One `[[api.tokens]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// The token's name, recorded in the audit trail and keyed by the rate limit.
    pub name: String,
    /// What it may do.
    pub role: ApiRole,
    /// Hex SHA-256 digest of the secret (64 hex digits). Give this or `token_env`/`token_file`.
    #[serde(default)]
    pub sha256: Option<String>,
    /// The secret itself, from `token_env = "VAR"` or `token_file = "PATH"`.
    #[serde(default, serialize_with = "crate::settings::redacted")]
    pub token: Option<SecretString>,
}

/// The name of the token `UPKEEP_API_TOKEN` (`api.token`) defines, with the `operate` role.
pub const ENV_TOKEN_NAME: &str = "env";

/// The audit actor of a call refused before it was authenticated; no token may take it.
pub const ANONYMOUS_ACTOR: &str = "anonymous";

/// Problems of the `tokens`, `mutating_rate_per_minute` and `cors_origins` keys of `[api]`.
pub fn validate(
    tokens: &[ApiToken],
    rate_per_minute: u32,
    cors_origins: &[String],
    path: &str,
    problems: &mut Problems,
) {
    let mut names = std::collections::HashSet::new();
    for (idx, token) in tokens.iter().enumerate() {
        let at = format!("{path}.tokens[{idx}]");
        let name = token.name.trim();
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
        {
            problems.push(
                format!("{at}.name"),
                format!(
                    "must be 1 to 64 characters of letters, digits, '-', '_', '.', '@', got {:?}",
                    token.name
                ),
            );
        } else if name == ENV_TOKEN_NAME {
            problems.push(
                format!("{at}.name"),
                format!("{ENV_TOKEN_NAME:?} is the name of UPKEEP_API_TOKEN's token; pick another"),
            );
        } else if name == ANONYMOUS_ACTOR {
            problems.push(
                format!("{at}.name"),
                format!(
                    "{ANONYMOUS_ACTOR:?} is how the audit trail names refused, unauthenticated \
                     calls; pick another"
                ),
            );
        } else if !names.insert(name.to_owned()) {
            problems.push(
                format!("{at}.name"),
                format!("duplicate token name {name:?}"),
            );
        }
        match (&token.sha256, &token.token) {
            (Some(_), Some(_)) => problems.push(
                format!("{at}.sha256"),
                "give either sha256 or token_env/token_file, not both",
            ),
            (None, None) => problems.push(
                format!("{at}.sha256"),
                "missing: give sha256 (hex SHA-256 of the token) or token_env/token_file",
            ),
            (Some(digest), None) => {
                if decode_digest(digest).is_none() {
                    problems.push(
                        format!("{at}.sha256"),
                        "must be 64 hex digits (sha256sum of the token)",
                    );
                }
            }
            (None, Some(secret)) => {
                if secret.expose_secret().trim().is_empty() {
                    problems.push(format!("{at}.token"), "must not be blank");
                }
            }
        }
    }
    problems.check_range(
        format!("{path}.mutating_rate_per_minute"),
        rate_per_minute,
        1,
        1_000_000,
    );
    for (idx, origin) in cors_origins.iter().enumerate() {
        let valid = origin == "*"
            || ((origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin.ends_with('/')
                && origin.parse::<http_origin::Origin>().is_ok());
        if !valid {
            problems.push(
                format!("{path}.cors_origins[{idx}]"),
                format!("expected an origin such as https://ops.example.com, got {origin:?}"),
            );
        }
    }
}

/// The 32 bytes of a hex SHA-256 digest, or `None` when it is not 64 hex digits.
#[must_use]
pub fn decode_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (idx, pair) in hex.as_bytes().chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[idx] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

mod http_origin {
    //! Just enough of an origin's syntax to refuse a path or a space.

    /// `scheme://host[:port]` without path, query or whitespace.
    pub(super) struct Origin;

    impl std::str::FromStr for Origin {
        type Err = ();

        fn from_str(text: &str) -> Result<Self, ()> {
            let rest = text
                .strip_prefix("https://")
                .or_else(|| text.strip_prefix("http://"))
                .ok_or(())?;
            let ok = !rest.is_empty()
                && rest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '[' | ']'));
            if ok { Ok(Self) } else { Err(()) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_decode_only_from_64_hex_digits() {
        let hex = "ab".repeat(32);
        assert_eq!(decode_digest(&hex), Some([0xab; 32]));
        assert_eq!(decode_digest("abc"), None);
        assert_eq!(decode_digest(&"zz".repeat(32)), None);
    }

    #[test]
    fn the_env_and_anonymous_names_are_reserved() {
        for reserved in [ENV_TOKEN_NAME, ANONYMOUS_ACTOR, "ok-name"] {
            let token = ApiToken {
                name: reserved.to_owned(),
                role: ApiRole::Read,
                sha256: Some("ab".repeat(32)),
                token: None,
            };
            let mut problems = Problems::default();
            validate(&[token], 60, &[], "api", &mut problems);
            let keys: Vec<String> = problems.into_vec().into_iter().map(|p| p.key).collect();
            let named = keys.iter().any(|key| key == "api.tokens[0].name");
            assert_eq!(named, reserved != "ok-name", "{reserved}: {keys:?}");
        }
    }

    #[test]
    fn roles_are_ordered_read_operate_tokens() {
        assert!(ApiRole::Read < ApiRole::Operate);
        assert!(ApiRole::Operate < ApiRole::Tokens);
    }
}
