//! Per-schedule policies ([`CatchUp`], [`Overlap`]) and the catch-up decision of a tick.
//!
//! Plain vocabulary shared by the configuration, the scheduler and the ledger; the strings are
//! the ones written in `upkeep.toml` and in `schedule_ticks.decision`. No IO.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ScheduleError;

/// What the scheduler does with ticks that fell due while no scheduler was running.
///
/// Written `skip`, `latest` or `all`. Defaults to `latest`: one missed backup is worth running
/// late, a night's worth of missed every-minute ticks is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Record every missed tick as `missed`; run none of them.
    Skip,
    /// Run the most recent missed tick (if it is within the window); record the others as
    /// `missed`.
    #[default]
    Latest,
    /// Run every missed tick within the window, newest first up to the cap; record the older ones
    /// as `missed`.
    All,
}

/// What the scheduler does with a tick while the previous run of the same schedule is unfinished.
///
/// Written `allow`, `skip` or `queue_one`. Defaults to `skip`: maintenance jobs (backups, scans)
/// should not pile up behind a slow run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Enqueue regardless: runs of the schedule may overlap.
    Allow,
    /// Do not enqueue; record the tick as `skipped_overlap`.
    #[default]
    Skip,
    /// Keep at most one tick waiting behind the running one; further ticks are
    /// `skipped_overlap`.
    QueueOne,
}

/// The decision recorded for a tick that fell due while no scheduler was running.
///
/// The strings are the `schedule_ticks.decision` values of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TickDecision {
    /// The tick is recorded and not run.
    Missed,
    /// The tick is run late.
    CaughtUp,
}

impl CatchUp {
    /// Parses `skip`, `latest` or `all`.
    ///
    /// # Errors
    /// [`ScheduleError::UnknownCatchUp`], naming the input, for anything else.
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        match text {
            "skip" => Ok(Self::Skip),
            "latest" => Ok(Self::Latest),
            "all" => Ok(Self::All),
            _ => Err(ScheduleError::UnknownCatchUp {
                value: text.to_owned(),
            }),
        }
    }

    /// The configuration spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::Latest => "latest",
            Self::All => "all",
        }
    }
}

impl Overlap {
    /// Parses `allow`, `skip` or `queue_one`.
    ///
    /// # Errors
    /// [`ScheduleError::UnknownOverlap`], naming the input, for anything else.
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        match text {
            "allow" => Ok(Self::Allow),
            "skip" => Ok(Self::Skip),
            "queue_one" => Ok(Self::QueueOne),
            _ => Err(ScheduleError::UnknownOverlap {
                value: text.to_owned(),
            }),
        }
    }

    /// The configuration spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Skip => "skip",
            Self::QueueOne => "queue_one",
        }
    }
}

impl TickDecision {
    /// The ledger spelling (`schedule_ticks.decision`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missed => "missed",
            Self::CaughtUp => "caught_up",
        }
    }
}

impl FromStr for CatchUp {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl FromStr for Overlap {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for CatchUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for TickDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catch_up_policy_parses_from_its_own_spelling() {
        for policy in [CatchUp::Skip, CatchUp::Latest, CatchUp::All] {
            assert_eq!(CatchUp::parse(policy.as_str()), Ok(policy));
            let json = serde_json::to_string(&policy).expect("serialises");
            assert_eq!(json, format!("\"{policy}\""));
            assert_eq!(serde_json::from_str::<CatchUp>(&json).ok(), Some(policy));
        }
    }

    #[test]
    fn every_overlap_policy_parses_from_its_own_spelling() {
        for policy in [Overlap::Allow, Overlap::Skip, Overlap::QueueOne] {
            assert_eq!(Overlap::parse(policy.as_str()), Ok(policy));
            let json = serde_json::to_string(&policy).expect("serialises");
            assert_eq!(json, format!("\"{policy}\""));
            assert_eq!(serde_json::from_str::<Overlap>(&json).ok(), Some(policy));
        }
        assert_eq!(Overlap::QueueOne.as_str(), "queue_one");
    }

    #[test]
    fn an_unknown_catch_up_policy_is_an_error_naming_it() {
        let error = CatchUp::parse("Latest").expect_err("case matters");
        assert_eq!(
            error.to_string(),
            "unknown catch-up policy \"Latest\" (expected \"skip\", \"latest\" or \"all\")"
        );
        assert!(serde_json::from_str::<CatchUp>("\"sometimes\"").is_err());
    }

    #[test]
    fn an_unknown_overlap_policy_is_an_error_naming_it() {
        let error = Overlap::parse("queue-one").expect_err("underscore, not dash");
        assert!(error.to_string().contains("\"queue-one\""), "{error}");
        assert!(serde_json::from_str::<Overlap>("\"queue-one\"").is_err());
    }

    #[test]
    fn tick_decisions_use_the_ledger_spelling() {
        assert_eq!(TickDecision::Missed.to_string(), "missed");
        assert_eq!(
            serde_json::to_string(&TickDecision::CaughtUp).expect("serialises"),
            "\"caught_up\""
        );
    }
}
