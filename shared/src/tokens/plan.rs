//! Refresh planning as pure functions: when a credential is due, how long to back off after a
//! failure, and what a token endpoint's answer means. No IO, no clock: `now` is an argument.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// The credential's state that planning needs (no secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueInput<'a> {
    /// The provider (seeds the jitter, so every worker computes the same due time).
    pub provider: &'a str,
    /// The row's version (a new token gets a new jitter).
    pub token_version: i64,
    /// When the current access token was obtained; `None` before the first refresh.
    pub obtained_at: Option<DateTime<Utc>>,
    /// When it expires; `None` when there is no access token yet, or the endpoint gave no
    /// `expires_in` (then the token is taken not to expire).
    pub expires_at: Option<DateTime<Utc>>,
    /// Backoff after a failed refresh.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// When `input` should next be refreshed: after `refresh_at` of the token's lifetime, minus up
/// to 10% of the lifetime of deterministic jitter (so not every credential of one batch comes
/// due at once), never later than `min_ahead` before expiry and never before `obtained_at`.
/// A credential without an access token is due at once; one whose token has no expiry is never
/// due. A pending backoff pushes the time to `next_attempt_at`.
#[must_use]
pub fn due_at(input: &DueInput<'_>, refresh_at: f64, min_ahead: Duration) -> Option<DateTime<Utc>> {
    let base = match (input.obtained_at, input.expires_at) {
        (_, None) if input.obtained_at.is_some() => return None,
        (Some(obtained), Some(expires)) => {
            let lifetime_ms = (expires - obtained).num_milliseconds().max(0);
            #[expect(
                clippy::cast_precision_loss,
                clippy::cast_possible_truncation,
                reason = "token lifetimes are far below 2^52 ms; the product is rounded to ms"
            )]
            let wanted_ms =
                (lifetime_ms as f64 * (refresh_at - 0.1 * jitter_fraction(input))).round() as i64;
            let wanted = obtained + chrono::Duration::milliseconds(wanted_ms.max(0));
            let latest =
                expires - chrono::Duration::from_std(min_ahead).unwrap_or(chrono::Duration::zero());
            wanted.min(latest).max(obtained)
        }
        // No access token yet (just added, or expiry unknown before any refresh): due now.
        _ => DateTime::<Utc>::MIN_UTC,
    };
    Some(match input.next_attempt_at {
        Some(next) => base.max(next),
        None => base,
    })
}

/// Whether `input` is due at `now`.
#[must_use]
pub fn is_due(
    input: &DueInput<'_>,
    refresh_at: f64,
    min_ahead: Duration,
    now: DateTime<Utc>,
) -> bool {
    due_at(input, refresh_at, min_ahead).is_some_and(|at| at <= now)
}

/// The delay before retrying after `n_failures` consecutive failures: `base * 2^(n-1)` capped
/// at `max`, then scaled by `0.5 + random/2` (`random` in `[0, 1)`) so workers that failed
/// together do not retry together; at least a server's `retry_after` when it sent one.
#[must_use]
pub fn backoff(
    n_failures: u32,
    base: Duration,
    max: Duration,
    random: f64,
    retry_after: Option<Duration>,
) -> Duration {
    let exponent = n_failures.saturating_sub(1).min(20);
    let uncapped = base.saturating_mul(1u32 << exponent);
    let capped = uncapped.min(max);
    let jittered = capped.mul_f64(0.5 + random.clamp(0.0, 1.0) / 2.0);
    match retry_after {
        Some(server) => jittered.max(server.min(max)),
        None => jittered,
    }
}

/// What a failed token request means for the credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The grant is gone (`invalid_grant`): an operator must re-authorise. Never retried.
    NeedsReauth,
    /// The client configuration is wrong (`invalid_client`, `unauthorized_client`,
    /// `invalid_scope`, other 4xx): retried slowly, since the fix is a config change.
    ConfigError,
    /// Worth retrying with backoff (429, 5xx, timeouts, connection errors, garbled bodies).
    Transient,
}

/// Classifies a failed token request from the HTTP status (if a response arrived) and the
/// OAuth2 `error` code (if the body had one).
#[must_use]
pub fn classify(status: Option<u16>, error_code: Option<&str>) -> Verdict {
    match (status, error_code) {
        (_, Some("invalid_grant")) => Verdict::NeedsReauth,
        (Some(429 | 500..=599) | None, _) => Verdict::Transient,
        (_, Some("invalid_client" | "unauthorized_client" | "invalid_scope")) => {
            Verdict::ConfigError
        }
        (Some(400..=499), _) => Verdict::ConfigError,
        _ => Verdict::Transient,
    }
}

/// A stable number in `[0, 1)` from the provider and version (FNV-1a), so every worker agrees
/// on the jitter of one token.
fn jitter_fraction(input: &DueInput<'_>) -> f64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in input
        .provider
        .bytes()
        .chain(input.token_version.to_le_bytes())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    #[expect(
        clippy::cast_precision_loss,
        reason = "only the top 53 bits matter for a fraction"
    )]
    let fraction = (hash >> 11) as f64 / (1u64 << 53) as f64;
    fraction
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn input(obtained: Option<i64>, expires: Option<i64>) -> DueInput<'static> {
        DueInput {
            provider: "crm",
            token_version: 3,
            obtained_at: obtained.map(at),
            expires_at: expires.map(at),
            next_attempt_at: None,
        }
    }

    #[test]
    fn a_one_hour_token_is_due_between_65_and_75_percent_of_its_life() {
        let due = due_at(&input(Some(0), Some(3600)), 0.75, Duration::from_secs(120)).unwrap();
        assert!(due >= at(2340) && due <= at(2700), "{due}");
    }

    #[test]
    fn a_short_token_is_refreshed_no_later_than_min_ahead_before_expiry() {
        let due = due_at(&input(Some(0), Some(300)), 0.95, Duration::from_secs(120)).unwrap();
        assert!(due <= at(180), "{due}");
        let tiny = due_at(&input(Some(0), Some(60)), 0.75, Duration::from_secs(120)).unwrap();
        assert_eq!(tiny, at(0), "never before it was obtained");
    }

    #[test]
    fn a_credential_without_access_token_is_due_now_and_one_without_expiry_never() {
        assert!(is_due(&input(None, None), 0.75, Duration::ZERO, at(0)));
        assert_eq!(due_at(&input(Some(0), None), 0.75, Duration::ZERO), None);
    }

    #[test]
    fn a_pending_backoff_postpones_the_refresh() {
        let mut backing_off = input(None, None);
        backing_off.next_attempt_at = Some(at(30));
        assert!(!is_due(&backing_off, 0.75, Duration::ZERO, at(29)));
        assert!(is_due(&backing_off, 0.75, Duration::ZERO, at(30)));
    }

    #[test]
    fn backoff_doubles_is_capped_jittered_and_honours_retry_after() {
        let base = Duration::from_secs(10);
        let max = Duration::from_secs(300);
        assert_eq!(backoff(1, base, max, 1.0, None), Duration::from_secs(10));
        assert_eq!(backoff(3, base, max, 1.0, None), Duration::from_secs(40));
        assert_eq!(backoff(30, base, max, 1.0, None), max);
        assert_eq!(backoff(1, base, max, 0.0, None), Duration::from_secs(5));
        assert_eq!(
            backoff(1, base, max, 0.0, Some(Duration::from_secs(60))),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn invalid_grant_is_terminal_and_429_5xx_and_timeouts_are_transient() {
        assert_eq!(
            classify(Some(400), Some("invalid_grant")),
            Verdict::NeedsReauth
        );
        assert_eq!(classify(Some(429), None), Verdict::Transient);
        assert_eq!(classify(Some(503), None), Verdict::Transient);
        assert_eq!(classify(None, None), Verdict::Transient);
        assert_eq!(
            classify(Some(401), Some("invalid_client")),
            Verdict::ConfigError
        );
        assert_eq!(classify(Some(404), None), Verdict::ConfigError);
    }
}
