//! The dashboard's pages, rendered on the server with maud.
//!
//! - `/`: the checklist first (today, yesterday's leftovers, this week, this month), then
//!   queues with the last hour's chart, dead letters with a retry button, recent failures,
//!   schedules, open findings, the backup catalog and the newest audit entries.
//! - `/failures?before=ID`, `/audit?before=ID`: older pages of those two lists (keyset, never
//!   a count of history); `/jobs/{id}`: every attempt of one job (the evidence links).
//! - `POST /dead/{queue}/{id}/retry`: moves a dead letter back to its queue (operate role,
//!   CSRF token, audited).
//!
//! Every section reads independently, so a Redis outage blanks the queue sections with a
//! message and leaves the checklist readable, and the other way round.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use upkeep_shared::job::Severity;
use upkeep_shared::queue::{JobRecord, QueueStats};
use upkeep_shared::store::{self, findings::OpenFinding, runs::RunRow, tasks::AuditRecord};
use upkeep_shared::store::{backups::BackupRow, health::ScheduleHealth};
use upkeep_shared::tasks::{Period, TaskStatus};

use super::assets;
use super::chart;
use super::session::{SignedIn, audit_with, redirect};
use crate::AppState;
use crate::checklist::{self, Checklist, ItemReport};

/// Rows per page of failures and of the audit trail.
const PAGE_ROWS: i64 = 50;
/// Rows of each list on the overview.
const OVERVIEW_ROWS: i64 = 10;
/// Dead letters shown per queue.
const DEAD_ROWS: usize = 50;

/// Why a page could not be served, as an HTML page with the right status.
#[derive(Debug)]
pub(crate) enum PageError {
    /// The ledger failed; the log has the detail, the page says what could not be read.
    Store(store::Error),
    /// A form's CSRF token or the caller's role was refused.
    Forbidden(String),
    /// A parameter is malformed; the message names it.
    BadRequest(String),
    /// Nothing by that name.
    NotFound(String),
}

impl From<store::Error> for PageError {
    fn from(error: store::Error) -> Self {
        Self::Store(error)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::Store(error) => {
                tracing::error!(error = %error, error.chain = ?error, "dashboard: reading the ledger");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "upkeep's database could not be read; the server log has the detail".to_owned(),
                )
            }
            Self::Forbidden(message) => (StatusCode::FORBIDDEN, message),
            Self::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
            Self::NotFound(message) => (StatusCode::NOT_FOUND, message),
        };
        let page = layout(
            "Error",
            None,
            html! {
                h1 { "Something went wrong" }
                p class="notice notice-error" role="alert" { (message) }
                p { a href="/" { "Back to the dashboard" } }
            },
        );
        (status, Html(page.into_string())).into_response()
    }
}

/// The `?before=` of a paginated list.
#[derive(Debug, Deserialize)]
pub(crate) struct PageQuery {
    before: Option<String>,
}

impl PageQuery {
    fn before(&self) -> Result<Option<i64>, PageError> {
        self.before
            .as_deref()
            .filter(|text| !text.is_empty())
            .map(|text| {
                text.parse::<i64>().map_err(|_| {
                    PageError::BadRequest(format!("before must be a row id, got {text:?}"))
                })
            })
            .transpose()
    }
}

/// Everything the overview shows; each part read on its own.
struct Overview {
    today: Result<Arc<Checklist>, store::Error>,
    yesterday: Result<Arc<Checklist>, store::Error>,
    week: Result<Arc<Checklist>, store::Error>,
    month: Result<Arc<Checklist>, store::Error>,
    queues: Result<Arc<Vec<QueueStats>>, String>,
    dead: Result<Vec<(String, JobRecord)>, String>,
    throughput: Result<Vec<(i64, i64)>, String>,
    failures: Result<Vec<RunRow>, store::Error>,
    schedules: Result<Vec<ScheduleHealth>, store::Error>,
    findings: Result<Vec<OpenFinding>, store::Error>,
    backups: Result<Vec<BackupRow>, store::Error>,
    audit: Result<Vec<AuditRecord>, store::Error>,
}

/// `GET /`: the overview.
pub(crate) async fn overview(
    State(state): State<AppState>,
    signed_in: SignedIn,
) -> Result<Html<String>, PageError> {
    let now = Utc::now();
    let tasks = &state.settings.tasks;
    let today = checklist::today(tasks, now);
    let yesterday = today.pred_opt().unwrap_or(today);
    let db = &state.db;
    let (today_list, yesterday_list, week, month) = tokio::join!(
        state.checklist(Period::Daily, today),
        state.checklist(Period::Daily, yesterday),
        state.checklist(Period::Weekly, today),
        state.checklist(Period::Monthly, today),
    );
    let (queues, dead, failures) = tokio::join!(
        async { state.queue_stats().await.map_err(|error| error.to_string()) },
        dead_letters(&state),
        store::dashboard::failures(db, None, OVERVIEW_ROWS),
    );
    let throughput = queues
        .as_ref()
        .map(|stats| chart::buckets(&chart::minute_counts(stats), now))
        .map_err(Clone::clone);
    let (schedules, findings, backups, audit) = tokio::join!(
        store::health::schedule_health(db, now, None),
        store::dashboard::open_findings(db),
        store::backups::list(db, None),
        store::tasks::audit_trail(db, None, OVERVIEW_ROWS),
    );
    let overview = Overview {
        today: today_list,
        yesterday: yesterday_list,
        week,
        month,
        queues,
        dead,
        throughput,
        failures,
        schedules,
        findings,
        backups,
        audit,
    };
    Ok(Html(
        layout(
            "upkeep",
            Some(&signed_in),
            overview_body(&overview, &signed_in, now),
        )
        .into_string(),
    ))
}

/// `GET /failures`: failed attempts, a page at a time.
pub(crate) async fn failures(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Query(query): Query<PageQuery>,
) -> Result<Html<String>, PageError> {
    let before = query.before()?;
    let rows = store::dashboard::failures(&state.db, before, PAGE_ROWS).await?;
    let next = (i64::try_from(rows.len()).unwrap_or(0) == PAGE_ROWS)
        .then(|| rows.last().map(|row| row.id))
        .flatten();
    let body = html! {
        h1 { "Recent failures" }
        (failures_table(&rows))
        (pager("/failures", next))
    };
    Ok(Html(
        layout("Failures · upkeep", Some(&signed_in), body).into_string(),
    ))
}

/// `GET /audit`: the audit trail, a page at a time.
pub(crate) async fn audit(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Query(query): Query<PageQuery>,
) -> Result<Html<String>, PageError> {
    let before = query.before()?;
    let rows = store::tasks::audit_trail(&state.db, before, PAGE_ROWS).await?;
    let next = (i64::try_from(rows.len()).unwrap_or(0) == PAGE_ROWS)
        .then(|| rows.last().map(|row| row.id))
        .flatten();
    let body = html! {
        h1 { "Audit trail" }
        (audit_table(&rows))
        (pager("/audit", next))
    };
    Ok(Html(
        layout("Audit trail · upkeep", Some(&signed_in), body).into_string(),
    ))
}

/// `GET /jobs/{id}`: every attempt of a job.
pub(crate) async fn job(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
) -> Result<Html<String>, PageError> {
    let job_id = id
        .parse::<uuid::Uuid>()
        .map_err(|_| PageError::BadRequest(format!("not a job id: {id:?}")))?;
    let runs = store::runs::runs_for_job(&state.db, upkeep_shared::JobId(job_id)).await?;
    if runs.is_empty() {
        return Err(PageError::NotFound(format!(
            "the ledger has no attempt of job {job_id}"
        )));
    }
    let body = html! {
        h1 { "Job " code { (job_id.to_string()) } }
        div class="table-wrap" {
            table {
                caption { "Every attempt, first to last" }
                thead { tr {
                    th scope="col" { "Attempt" } th scope="col" { "Status" }
                    th scope="col" { "Kind" } th scope="col" { "Started" }
                    th scope="col" { "Took" } th scope="col" { "Summary or error" }
                } }
                tbody {
                    @for run in &runs {
                        tr {
                            td { (run.attempt) }
                            td { span class=(format!("status status-{}", run.status.as_str())) { (run.status.as_str()) } }
                            td { code { (run.kind) } }
                            td { (time(run.started_at)) }
                            td { (run.duration_ms.map_or_else(|| "–".to_owned(), |ms| format!("{ms} ms"))) }
                            td {
                                @if let Some(error) = &run.error { span class="error-text" { (error) } }
                                @else if let Some(outcome) = &run.outcome { (outcome.summary) }
                            }
                        }
                    }
                }
            }
        }
        @let findings: Vec<_> = runs.iter().filter_map(|run| run.outcome.as_ref()).flat_map(|outcome| outcome.findings.iter()).collect();
        @if !findings.is_empty() {
            h2 { "Findings" }
            ul class="plain" {
                @for finding in findings {
                    li { (severity_badge(finding.severity)) " " code { (finding.code) } " " (finding.message) }
                }
            }
        }
    };
    Ok(Html(
        layout("Job · upkeep", Some(&signed_in), body).into_string(),
    ))
}

/// The form of the retry button.
#[derive(Debug, Deserialize)]
pub(crate) struct RetryForm {
    csrf: Option<String>,
}

/// `POST /dead/{queue}/{id}/retry`: moves a dead letter back to its queue.
pub(crate) async fn retry(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    signed_in: SignedIn,
    Path((queue_name, id)): Path<(String, String)>,
    Form(form): Form<RetryForm>,
) -> Result<Response, PageError> {
    signed_in.check_csrf(form.csrf.as_deref())?;
    let target = format!("{queue_name}/{id}");
    if !signed_in.can_operate {
        audit_with(
            &state,
            &signed_in.actor,
            "dead.retry",
            &target,
            client,
            "refused: read role",
        )
        .await?;
        return Err(PageError::Forbidden(
            "retrying a dead letter needs a token with the operate role".to_owned(),
        ));
    }
    let Some(queue) = state
        .queues
        .iter()
        .find(|queue| queue.name().as_str() == queue_name)
    else {
        return Err(PageError::NotFound(format!(
            "no configured queue {queue_name:?}"
        )));
    };
    let result = match queue.requeue_dead(&id).await {
        Ok(true) => "ok".to_owned(),
        Ok(false) => "refused: not a dead letter".to_owned(),
        Err(error) => {
            tracing::warn!(error = %error, queue = %queue_name, job_id = %id, "dashboard: retrying a dead letter");
            format!("failed: {error}")
        }
    };
    audit_with(
        &state,
        &signed_in.actor,
        "dead.retry",
        &target,
        client,
        &result,
    )
    .await?;
    match result.as_str() {
        "ok" => Ok(redirect("/#dead-letters")),
        "refused: not a dead letter" => Err(PageError::NotFound(format!(
            "job {id} is not a dead letter of queue {queue_name} (retried already?)"
        ))),
        _ => Err(PageError::BadRequest(format!(
            "Redis refused the retry of {id}; the server log has the detail"
        ))),
    }
}

/// The sign-in page.
pub(crate) fn login_page(csrf: &str, error: Option<&str>) -> Html<String> {
    let body = html! {
        div class="login" {
            h1 { "Sign in to upkeep" }
            p { "Paste an API token (" code { "UPKEEP_API_TOKEN" } " or a named token). The session lasts 12 hours." }
            @if let Some(error) = error {
                p class="notice notice-error" role="alert" id="login-error" { (error) }
            }
            form method="post" action="/login" {
                input type="hidden" name="csrf" value=(csrf);
                label for="token" { "API token" }
                input type="password" id="token" name="token" required autocomplete="current-password"
                    autofocus aria-describedby=[error.map(|_| "login-error")];
                button type="submit" { "Sign in" }
            }
        }
    };
    Html(layout("Sign in · upkeep", None, body).into_string())
}

fn layout(title: &str, signed_in: Option<&SignedIn>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                link rel="stylesheet" href=(assets::url("dashboard.css"));
                @if signed_in.is_some() {
                    script src=(assets::url("refresh.js")) defer {}
                }
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    a class="brand" href="/" { "upkeep" }
                    @if let Some(signed_in) = signed_in {
                        nav aria-label="Sections" {
                            a href="/#tasks" { "Tasks" }
                            a href="/#queues" { "Queues" }
                            a href="/#dead-letters" { "Dead letters" }
                            a href="/#schedules" { "Schedules" }
                            a href="/#findings" { "Findings" }
                            a href="/#backups" { "Backups" }
                            a href="/audit" { "Audit" }
                        }
                        form class="logout" method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(signed_in.csrf_token);
                            span class="who" { "Signed in as " strong { (signed_in.actor) } }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" data-refresh=[signed_in.map(|_| "30")] { (body) }
            }
        }
    }
}

fn overview_body(view: &Overview, signed_in: &SignedIn, now: DateTime<Utc>) -> Markup {
    html! {
        h1 class="visually-hidden" { "upkeep dashboard" }
        p class="generated" { "As of " (time(now)) " · refreshes every 30 s" }
        section id="tasks" aria-labelledby="tasks-h" {
            h2 id="tasks-h" { "Checklist" }
            (checklist_section("today", "Today", &view.today))
            (leftovers_section(&view.yesterday))
            (checklist_section("week", "This week", &view.week))
            (checklist_section("month", "This month", &view.month))
        }
        section id="queues" aria-labelledby="queues-h" {
            h2 id="queues-h" { "Queues" }
            @match &view.throughput {
                Ok(bars) => figure class="chart-box" {
                    (chart::throughput_svg(bars))
                    figcaption { "Attempts finished per minute, last hour (" span class="key key-ok" { "succeeded" } ", " span class="key key-failed" { "failed" } ")" }
                },
                // Unavailable with the queue stats, which say why just below.
                Err(_) => p class="notice notice-error" { "The throughput chart is unavailable." },
            }
            @match &view.queues {
                Ok(queues) => (queues_table(queues)),
                Err(error) => p class="notice notice-error" { "Queue stats are unavailable: " (error) },
            }
        }
        section id="dead-letters" aria-labelledby="dead-h" {
            h2 id="dead-h" { "Dead letters" }
            @match &view.dead {
                Ok(dead) => (dead_table(dead, signed_in)),
                Err(error) => p class="notice notice-error" { "Dead letters are unavailable: " (error) },
            }
        }
        section id="failures" aria-labelledby="failures-h" {
            h2 id="failures-h" { "Recent failures" }
            @match &view.failures {
                Ok(rows) => {
                    (failures_table(rows))
                    @if let Some(last) = rows.last() {
                        p { a href=(format!("/failures?before={}", last.id)) { "Older failures →" } }
                    }
                },
                Err(error) => (section_error("failures", error)),
            }
        }
        section id="schedules" aria-labelledby="schedules-h" {
            h2 id="schedules-h" { "Schedules" }
            @match &view.schedules {
                Ok(rows) => (schedules_table(rows, now)),
                Err(error) => (section_error("schedules", error)),
            }
        }
        section id="findings" aria-labelledby="findings-h" {
            h2 id="findings-h" { "Open findings" }
            @match &view.findings {
                Ok(rows) => (findings_list(rows)),
                Err(error) => (section_error("findings", error)),
            }
        }
        section id="backups" aria-labelledby="backups-h" {
            h2 id="backups-h" { "Backups" }
            @match &view.backups {
                Ok(rows) => (backups_table(rows)),
                Err(error) => (section_error("backups", error)),
            }
        }
        section id="audit" aria-labelledby="audit-h" {
            h2 id="audit-h" { "Audit trail" }
            @match &view.audit {
                Ok(rows) => {
                    (audit_table(rows))
                    @if let Some(last) = rows.last() {
                        p { a href=(format!("/audit?before={}", last.id)) { "Older entries →" } }
                    }
                },
                Err(error) => (section_error("audit trail", error)),
            }
        }
    }
}

fn section_error(what: &str, error: &store::Error) -> Markup {
    tracing::error!(error = %error, error.chain = ?error, section = what, "dashboard: reading the ledger");
    html! { p class="notice notice-error" { "The " (what) " could not be read; the server log has the detail." } }
}

fn checklist_section(
    id: &str,
    heading: &str,
    list: &Result<Arc<Checklist>, store::Error>,
) -> Markup {
    html! {
        section class="checklist" id=(format!("tasks-{id}")) aria-labelledby=(format!("tasks-{id}-h")) {
            @match list {
                Ok(list) => {
                    h3 id=(format!("tasks-{id}-h")) { (heading) " " span class="muted" { "(" (window_label(list)) ")" } }
                    (summary_line(list))
                    (items_list(&list.items))
                },
                Err(error) => {
                    h3 id=(format!("tasks-{id}-h")) { (heading) }
                    (section_error("checklist", error))
                },
            }
        }
    }
}

/// Yesterday's daily items that ended badly: a closed window is where `missed` shows, and the
/// morning's first question is what slipped overnight.
fn leftovers_section(list: &Result<Arc<Checklist>, store::Error>) -> Markup {
    let Ok(list) = list else {
        return html! {};
    };
    let leftovers: Vec<ItemReport> = list
        .items
        .iter()
        .filter(|item| {
            matches!(
                item.status,
                TaskStatus::Missed | TaskStatus::Failed | TaskStatus::Attention
            )
        })
        .cloned()
        .collect();
    html! {
        section class="checklist" id="tasks-yesterday" aria-labelledby="tasks-yesterday-h" {
            h3 id="tasks-yesterday-h" { "Left over from yesterday " span class="muted" { "(" (list.date.to_string()) ")" } }
            @if leftovers.is_empty() {
                p class="muted" { "Nothing: every item of yesterday was done or not applicable." }
            } @else {
                (items_list(&leftovers))
            }
        }
    }
}

fn window_label(list: &Checklist) -> String {
    match list.period {
        Period::Daily => list.date.to_string(),
        Period::Weekly => format!("week of {}", list.date),
        Period::Monthly => list.date.format("%B %Y").to_string(),
    }
}

fn summary_line(list: &Checklist) -> Markup {
    html! {
        p class="summary" {
            @for (status, n) in &list.summary {
                span class=(format!("status status-{status}")) { (n) " " (status.replace('_', " ")) }
                " "
            }
        }
    }
}

fn items_list(items: &[ItemReport]) -> Markup {
    html! {
        ul class="items" {
            @for item in items {
                li class="item" data-item=(item.id) data-status=(item.status.as_str()) {
                    span class=(format!("status status-{}", item.status.as_str())) { (status_label(item.status)) }
                    div class="item-body" {
                        strong { (item.description) }
                        " " span class="muted" { (item.name) }
                        (evidence(item))
                    }
                }
            }
        }
    }
}

fn status_label(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::Done => "done",
        TaskStatus::Attention => "attention",
        TaskStatus::Failed => "failed",
        TaskStatus::Missed => "missed",
        TaskStatus::Pending => "pending",
        TaskStatus::NotAvailable => "not available",
    }
}

fn evidence(item: &ItemReport) -> Markup {
    let evidence = &item.evidence;
    html! {
        ul class="evidence" {
            @if let Some(run) = &evidence.last_success {
                li { "Succeeded " (time(run.finished_at)) " · " a href=(format!("/jobs/{}", run.job_id)) { "run " (run.run_id) } }
            }
            @if let Some(run) = &evidence.last_failure {
                li { "Failed " (time(run.finished_at)) " · " a href=(format!("/jobs/{}", run.job_id)) { "run " (run.run_id) }
                    @if let Some(error) = &run.error { ": " span class="error-text" { (truncate(error, 160)) } } }
            }
            @for finding in &evidence.findings {
                li { (severity_badge(finding.severity)) " " code { (finding.code) } " " (finding.message) }
            }
            @if let Some(ack) = &evidence.acknowledgement {
                li { "Acknowledged by " (ack.actor) " " (time(ack.at)) ": " (ack.note) }
            }
        }
    }
}

fn queues_table(queues: &[QueueStats]) -> Markup {
    html! {
        div class="table-wrap" {
            table {
                caption { "Jobs per queue now" }
                thead { tr {
                    th scope="col" { "Queue" } th scope="col" class="num" { "Pending" }
                    th scope="col" class="num" { "Scheduled" } th scope="col" class="num" { "Running" }
                    th scope="col" class="num" { "Retrying" } th scope="col" class="num" { "Dead" }
                    th scope="col" class="num" { "Workers" } th scope="col" class="num" { "Oldest pending" }
                } }
                tbody {
                    @for queue in queues {
                        tr {
                            th scope="row" { (queue.name) }
                            td class="num" { (queue.pending) } td class="num" { (queue.scheduled) }
                            td class="num" { (queue.running) } td class="num" { (queue.retrying) }
                            td class="num" { (queue.dead) } td class="num" { (queue.workers) }
                            td class="num" { (queue.oldest_pending_age_seconds.map_or_else(|| "–".to_owned(), |age| format!("{age:.0} s"))) }
                        }
                    }
                }
            }
        }
    }
}

fn dead_table(dead: &[(String, JobRecord)], signed_in: &SignedIn) -> Markup {
    html! {
        @if dead.is_empty() {
            p class="muted" id="no-dead" { "No dead letters." }
        } @else {
            div class="table-wrap" {
                table id="dead-table" {
                    caption { "Jobs that used up their attempts" }
                    thead { tr {
                        th scope="col" { "Queue" } th scope="col" { "Job" } th scope="col" { "Kind" }
                        th scope="col" class="num" { "Attempts" } th scope="col" { "Last error" }
                        th scope="col" { span class="visually-hidden" { "Action" } }
                    } }
                    tbody {
                        @for (queue, record) in dead {
                            tr data-job=(record.id) {
                                td { (queue) }
                                td { a href=(format!("/jobs/{}", record.id)) { code { (record.id) } } }
                                td { code { (record.fields.get("kind").map_or("", String::as_str)) } }
                                td class="num" { (record.fields.get("attempt").map_or("", String::as_str)) }
                                td class="error-text" { (truncate(record.fields.get("err").map_or("", String::as_str), 200)) }
                                td {
                                    @if signed_in.can_operate {
                                        form method="post" action=(format!("/dead/{queue}/{}/retry", record.id)) {
                                            input type="hidden" name="csrf" value=(signed_in.csrf_token);
                                            button type="submit" aria-label=(format!("Retry job {}", record.id)) { "Retry" }
                                        }
                                    } @else {
                                        span class="muted" { "operate role needed" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn failures_table(rows: &[RunRow]) -> Markup {
    html! {
        @if rows.is_empty() {
            p class="muted" { "No failed attempts." }
        } @else {
            div class="table-wrap" {
                table {
                    caption { "Failed and abandoned attempts, newest first" }
                    thead { tr {
                        th scope="col" { "Finished" } th scope="col" { "Kind" } th scope="col" { "Queue" }
                        th scope="col" class="num" { "Attempt" } th scope="col" { "Then" } th scope="col" { "Error" }
                    } }
                    tbody {
                        @for run in rows {
                            tr {
                                td { (maybe_time(run.finished_at, "–")) }
                                td { a href=(format!("/jobs/{}", run.job_id)) { code { (run.kind) } } }
                                td { (run.queue) }
                                td class="num" { (run.attempt) }
                                td { (run.next_state.as_deref().unwrap_or("–")) }
                                td class="error-text" { (truncate(run.error.as_deref().unwrap_or(run.status.as_str()), 200)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn schedule_health_label(schedule: &ScheduleHealth, now: DateTime<Utc>) -> (&'static str, String) {
    if !schedule.in_config {
        return ("muted", "removed from config".to_owned());
    }
    if !schedule.enabled {
        return ("muted", "disabled".to_owned());
    }
    if schedule.paused {
        return (
            "warn",
            format!(
                "paused by {}",
                schedule.paused_by.as_deref().unwrap_or("someone")
            ),
        );
    }
    match &schedule.last_tick {
        Some(tick) if tick.decision == "missed" => ("bad", "last tick missed".to_owned()),
        Some(tick)
            if now - tick.fire_at > TimeDelta::minutes(5)
                && schedule
                    .next_fire_at
                    .is_some_and(|next| next < now - TimeDelta::minutes(5)) =>
        {
            ("bad", "silent: a tick is overdue".to_owned())
        }
        _ if schedule.n_missed > 0 => ("warn", format!("{} missed ticks", schedule.n_missed)),
        None => ("muted", "no tick yet".to_owned()),
        Some(_) => ("ok", "ok".to_owned()),
    }
}

fn schedules_table(rows: &[ScheduleHealth], now: DateTime<Utc>) -> Markup {
    html! {
        @if rows.is_empty() {
            p class="muted" { "No schedules yet (the scheduler writes them when it starts)." }
        } @else {
            div class="table-wrap" {
                table {
                    caption { "Every schedule the ledger knows" }
                    thead { tr {
                        th scope="col" { "Schedule" } th scope="col" { "Kind" } th scope="col" { "Cron" }
                        th scope="col" { "Next fire" } th scope="col" { "Last success" } th scope="col" { "Health" }
                    } }
                    tbody {
                        @for schedule in rows {
                            @let (class, label) = schedule_health_label(schedule, now);
                            tr {
                                th scope="row" { (schedule.name) }
                                td { code { (schedule.kind) } }
                                td { code { (schedule.cron) } " " span class="muted" { (schedule.timezone) } }
                                td { (maybe_time(schedule.next_fire_at, "–")) }
                                td { (maybe_time(schedule.last_success_at, "never")) }
                                td { span class=(format!("health health-{class}")) { (label) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn findings_list(rows: &[OpenFinding]) -> Markup {
    let n_critical = rows
        .iter()
        .filter(|finding| finding.severity == Severity::Critical)
        .count();
    html! {
        @if rows.is_empty() {
            p class="muted" { "No open findings." }
        } @else {
            p class="summary" {
                span class="status status-failed" { (n_critical) " critical" } " "
                span class="status status-attention" { (rows.len() - n_critical) " warn" }
            }
            div class="table-wrap" {
                table {
                    caption { "Conditions whose newest finding is warn or critical" }
                    thead { tr {
                        th scope="col" { "Severity" } th scope="col" { "Code" } th scope="col" { "Subject" }
                        th scope="col" { "Message" } th scope="col" { "Seen" }
                    } }
                    tbody {
                        @for finding in rows {
                            tr {
                                td { (severity_badge(finding.severity)) }
                                td { code { (finding.code) } }
                                td { (finding.subject.as_deref().unwrap_or("–")) }
                                td { (finding.message) }
                                td { a href=(format!("/jobs/{}", finding.job_id)) { (time(finding.created_at)) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn backups_table(rows: &[BackupRow]) -> Markup {
    html! {
        @if rows.is_empty() {
            p class="muted" { "No backups in the catalog." }
        } @else {
            div class="table-wrap" {
                table {
                    caption { "The backup catalog, newest first per database" }
                    thead { tr {
                        th scope="col" { "Id" } th scope="col" { "Database" } th scope="col" { "Finished" }
                        th scope="col" class="num" { "Size" } th scope="col" { "Verification" }
                        th scope="col" { "Restore test" }
                    } }
                    tbody {
                        @for backup in rows.iter().take(100) {
                            tr {
                                td { (backup.id) }
                                td { (backup.database) }
                                td { (time(backup.finished_at)) }
                                td class="num" { (human_bytes(backup.size_bytes)) }
                                td { span class=(format!("verification verification-{}", backup.verification)) { (backup.verification.replace('_', " ")) } }
                                td {
                                    @match (backup.restore_ok, backup.restore_tested_at) {
                                        (Some(true), Some(at)) => { "passed " (time(at)) },
                                        (Some(false), _) => span class="error-text" { "failed: " (backup.restore_error.as_deref().unwrap_or("")) },
                                        _ => span class="muted" { "not tested" },
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn audit_table(rows: &[AuditRecord]) -> Markup {
    html! {
        @if rows.is_empty() {
            p class="muted" { "No audit entries." }
        } @else {
            div class="table-wrap" {
                table {
                    caption { "Operator actions, newest first" }
                    thead { tr {
                        th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "Action" }
                        th scope="col" { "Target" } th scope="col" { "Result" } th scope="col" { "From" }
                    } }
                    tbody {
                        @for entry in rows {
                            tr {
                                td { (time(entry.created_at)) }
                                td { (entry.actor) }
                                td { code { (entry.action) } }
                                td { (entry.target) }
                                td { (entry.result) }
                                td { (entry.client_addr.as_deref().unwrap_or("–")) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn pager(path: &str, next: Option<i64>) -> Markup {
    html! {
        nav class="pager" aria-label="Pages" {
            a href=(path) { "Newest" }
            @if let Some(before) = next {
                " · " a href=(format!("{path}?before={before}")) rel="next" { "Older →" }
            }
        }
    }
}

fn severity_badge(severity: Severity) -> Markup {
    let (class, label) = match severity {
        Severity::Ok => ("done", "ok"),
        Severity::Warn => ("attention", "warn"),
        Severity::Critical => ("failed", "critical"),
    };
    html! { span class=(format!("status status-{class}")) { (label) } }
}

fn maybe_time(at: Option<DateTime<Utc>>, none: &str) -> Markup {
    match at {
        Some(at) => time(at),
        None => html! { (none) },
    }
}

fn time(at: DateTime<Utc>) -> Markup {
    html! { time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M:%S UTC")) } }
}

fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(max_chars).collect();
        cut.push('…');
        cut
    }
}

fn human_bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    #[expect(clippy::cast_precision_loss, reason = "a size shown to one decimal")]
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

async fn dead_letters(state: &AppState) -> Result<Vec<(String, JobRecord)>, String> {
    let mut all = Vec::new();
    for queue in state.queues.iter() {
        let records = queue
            .dead_letters(DEAD_ROWS)
            .await
            .map_err(|error| error.to_string())?;
        all.extend(
            records
                .into_iter()
                .map(|record| (queue.name().as_str().to_owned(), record)),
        );
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    #[test]
    fn long_errors_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("héllo", 3), "hél…");
        assert_eq!(truncate("ok", 3), "ok");
    }

    #[test]
    fn the_login_page_escapes_what_it_is_given() {
        let page = login_page("abc", Some("<script>")).0;
        assert!(page.contains("&lt;script&gt;"), "{page}");
        assert!(page.contains("name=\"csrf\" value=\"abc\""), "{page}");
        assert!(
            !page.contains("<script"),
            "no script on the login page: {page}"
        );
    }
}
