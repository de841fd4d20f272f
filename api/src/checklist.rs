//! The task lists of a period with each item's status and evidence, and acknowledgements.
//! `GET /api/v1/tasks`, `POST /api/v1/tasks/{id}/ack` and `upkeepctl tasks` all go through
//! here.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::PgPool;
use upkeep_shared::store::{self, tasks::AuditEntry};
use upkeep_shared::tasks::{
    Evidence, Period, TaskStatus, TasksSettings, Window, effective_items, evaluate, parse_item_id,
};

/// One period's checklist.
#[derive(Debug, Clone, Serialize)]
pub struct Checklist {
    /// `daily`, `weekly` or `monthly`.
    pub period: Period,
    /// The window's first local day.
    pub date: NaiveDate,
    /// The window's first instant.
    pub window_start: DateTime<Utc>,
    /// The first instant after the window.
    pub window_end: DateTime<Utc>,
    /// The zone of the window.
    pub timezone: String,
    /// When this answer was computed.
    pub generated_at: DateTime<Utc>,
    /// How many items have each status.
    pub summary: BTreeMap<&'static str, usize>,
    /// The items in checklist order.
    pub items: Vec<ItemReport>,
}

/// One item of a checklist.
#[derive(Debug, Clone, Serialize)]
pub struct ItemReport {
    /// `daily.backups.2026-11-29`: what `ack` takes.
    pub id: String,
    /// The item's name.
    pub name: String,
    /// What the checklist says.
    pub description: String,
    /// Its status in the window.
    pub status: TaskStatus,
    /// The job kind that satisfies it; none for a manual item.
    pub kind: Option<String>,
    /// Runs, findings and the acknowledgement behind the status.
    pub evidence: Evidence,
}

/// The checklist of `period` for the window containing the local `date`, at `now`.
///
/// # Errors
/// When the ledger cannot be read.
pub async fn checklist(
    db: &PgPool,
    settings: &TasksSettings,
    period: Period,
    date: NaiveDate,
    now: DateTime<Utc>,
) -> Result<Checklist, store::Error> {
    let zone = settings.zone();
    let window = Window::containing(period, date, zone);
    let items: Vec<_> = effective_items(settings)
        .into_iter()
        .filter(|item| item.period == period)
        .collect();
    let evidence = store::tasks::evidence(db, &items, &window).await?;
    let mut summary = BTreeMap::new();
    let reports: Vec<ItemReport> = items
        .into_iter()
        .zip(evidence)
        .map(|(item, evidence)| {
            let status = evaluate(&item, &window, &evidence, now);
            *summary.entry(status.as_str()).or_insert(0) += 1;
            ItemReport {
                id: item.id(&window),
                kind: item.kind().map(str::to_owned),
                name: item.name,
                description: item.description,
                status,
                evidence,
            }
        })
        .collect();
    Ok(Checklist {
        period,
        date: window.first_day,
        window_start: window.start,
        window_end: window.end,
        timezone: settings.timezone.clone(),
        generated_at: now,
        summary,
        items: reports,
    })
}

/// The local date of `now` in the checklist's zone: the default `date` of a request.
#[must_use]
pub fn today(settings: &TasksSettings, now: DateTime<Utc>) -> NaiveDate {
    now.with_timezone(&settings.zone()).date_naive()
}

/// Why an acknowledgement was refused.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    /// The id is malformed or names no window start.
    #[error("{0}")]
    BadId(String),
    /// The id's item is not in the checklist.
    #[error("no {period} task item {name:?}")]
    UnknownItem {
        /// The period named.
        period: &'static str,
        /// The item named.
        name: String,
    },
    /// The note is empty or too long.
    #[error("{0}")]
    BadNote(String),
    /// The window has not started yet.
    #[error("the window of {0} has not started yet")]
    Future(String),
    /// The ledger refused the write.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// The longest note accepted, in characters.
pub const MAX_NOTE_CHARS: usize = 2000;

/// Records `actor`'s acknowledgement of the item `id` with `note`, and the audit entry.
///
/// # Errors
/// [`AckError`] naming what is wrong; nothing is written then, except the audit entry of a
/// refused request.
pub async fn acknowledge(
    db: &PgPool,
    settings: &TasksSettings,
    id: &str,
    note: &str,
    actor: &str,
    client_addr: Option<String>,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, AckError> {
    let result = try_acknowledge(db, settings, id, note, actor, now).await;
    let entry = AuditEntry {
        actor: actor.to_owned(),
        action: "tasks.ack".to_owned(),
        target: id.to_owned(),
        client_addr,
        result: match &result {
            Ok(_) => "ok".to_owned(),
            Err(error) => error.to_string(),
        },
        detail: Some(serde_json::json!({ "note": note })),
    };
    store::tasks::audit(db, &entry).await?;
    result
}

async fn try_acknowledge(
    db: &PgPool,
    settings: &TasksSettings,
    id: &str,
    note: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, AckError> {
    let (period, name, day) = parse_item_id(id).map_err(AckError::BadId)?;
    let window = Window::containing(period, day, settings.zone());
    if window.first_day != day {
        return Err(AckError::BadId(format!(
            "task id {id:?}: the {} window containing {day} starts on {}",
            period.as_str(),
            window.first_day
        )));
    }
    if !effective_items(settings)
        .iter()
        .any(|item| item.period == period && item.name == name)
    {
        return Err(AckError::UnknownItem {
            period: period.as_str(),
            name,
        });
    }
    if now < window.start {
        return Err(AckError::Future(id.to_owned()));
    }
    let note = note.trim();
    if note.is_empty() {
        return Err(AckError::BadNote("note must not be empty".to_owned()));
    }
    if note.contains('\0') {
        return Err(AckError::BadNote(
            "note must not contain NUL characters".to_owned(),
        ));
    }
    if note.chars().count() > MAX_NOTE_CHARS {
        return Err(AckError::BadNote(format!(
            "note is longer than {MAX_NOTE_CHARS} characters"
        )));
    }
    Ok(store::tasks::acknowledge(db, period.as_str(), &name, day, note, actor).await?)
}
