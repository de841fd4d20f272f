//! Logs: rotation of `[[logs.targets]]` (`logs.rotate`) and the error scan of
//! `[[logs.sources]]` (`logs.scan_errors`).
//!
//! - [`settings`]: the `[logs]` section and its validation (patterns stay inside their
//!   directory).
//! - [`rotate`]: rename/reopen, copytruncate and PostgreSQL-collector targets; delayed
//!   compression through a partial file; pruning by count and age.
//! - [`signature`]: per-format line classification and the signature normaliser (pure).
//! - [`reader`]: the rotation-aware reader that resumes from a cursor.
//! - [`retention`]: pruning of scan batches and report snapshots with the ledger's retention.
//!
//! Nothing here issues SQL: the cursors and counts go through `store::log_cursors`.

pub mod reader;
pub mod retention;
pub mod rotate;
pub mod settings;
pub mod signature;

pub use settings::LogsSettings;

use serde::Deserialize;

use crate::job::JobError;

/// Arguments of `logs.rotate`: one target by name, or every target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateArgs {
    /// The target's name; all targets when absent.
    #[serde(default)]
    pub target: Option<String>,
}

/// Arguments of `logs.scan_errors`: one source by name, or every source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanArgs {
    /// The source's name; all sources when absent.
    #[serde(default)]
    pub source: Option<String>,
}

/// Arguments of `system.disk`: none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskArgs {}

/// Decodes a job's arguments (`null` means all defaults; only an object otherwise).
///
/// # Errors
/// `Invalid`, naming the kind and the bad field.
pub fn decode_args<T: serde::de::DeserializeOwned + Default>(
    kind: &str,
    args: &serde_json::Value,
) -> Result<T, JobError> {
    if args.is_null() {
        return Ok(T::default());
    }
    if !args.is_object() {
        return Err(JobError::Invalid(format!(
            "bad args for {kind}: must be a JSON object"
        )));
    }
    serde_json::from_value(args.clone())
        .map_err(|e| JobError::Invalid(format!("bad args for {kind}: {e}")))
}
