//! `upkeepctl reports`: read the health reports of the `[[reports.databases]]` targets live
//! (`show`), and create the report views in a target database (`install-views`, opt-in since
//! it writes there). The queries are `store::reports`'; this file only parses and prints.

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use upkeep_shared::config::Settings;
use upkeep_shared::reports::{ReportDatabase, SlowQueries};
use upkeep_shared::store::reports::{self as store, Timeouts};

/// `upkeepctl reports …`
#[derive(Debug, Args)]
pub(crate) struct ReportsArgs {
    #[command(subcommand)]
    action: ReportsAction,
}

#[derive(Debug, Subcommand)]
enum ReportsAction {
    /// Run a report now against one or every report database (read-only).
    Show {
        /// Which report.
        report: Which,
        /// A `[[reports.databases]]` name; every configured database when absent.
        #[arg(long)]
        db: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create (or replace) the views slow_queries, table_bloat_stats, index_usage_stats and
    /// connection_stats in a report database. Needs a role allowed to create there.
    InstallViews {
        /// A `[[reports.databases]]` name.
        #[arg(long)]
        db: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Which {
    SlowQueries,
    Bloat,
    IndexUsage,
    Connections,
}

/// Runs a `reports` subcommand.
pub(crate) async fn run(settings: &Settings, args: ReportsArgs) -> anyhow::Result<()> {
    let reports = &settings.reports;
    let timeouts = Timeouts {
        statement: reports.statement_timeout,
        lock: reports.lock_timeout,
    };
    match args.action {
        ReportsAction::InstallViews { db } => {
            let target = pick(settings, Some(&db))?.remove(0);
            let pool = store::connect_target(&target.url, reports.connect_timeout)
                .await
                .with_context(|| format!("connecting to report database {}", target.name))?;
            store::install_views(&pool, timeouts)
                .await
                .with_context(|| format!("installing the report views in {}", target.name))?;
            println!(
                "views {} installed in {}",
                upkeep_shared::reports::views::VIEW_NAMES.join(", "),
                target.name
            );
            Ok(())
        }
        ReportsAction::Show { report, db, json } => {
            let mut sections = Vec::new();
            for target in pick(settings, db.as_deref())? {
                let pool = store::connect_target(&target.url, reports.connect_timeout)
                    .await
                    .with_context(|| format!("connecting to report database {}", target.name))?;
                let limit = i64::from(reports.top_n);
                let section = match report {
                    Which::SlowQueries => {
                        match store::slow_queries(&pool, timeouts, limit).await? {
                            SlowQueries::Available {
                                report,
                                stats_reset,
                            } => json!({
                                "database": target.name, "report": "slow_queries", "status": "ok",
                                "stats_reset": stats_reset, "total_count": report.total_count,
                                "rows": report.rows,
                            }),
                            SlowQueries::Unavailable { reason } => json!({
                                "database": target.name, "report": "slow_queries",
                                "status": "unavailable", "reason": reason, "rows": [],
                            }),
                        }
                    }
                    Which::Bloat => {
                        let report = store::table_bloat(&pool, timeouts, limit).await?;
                        json!({"database": target.name, "report": "table_bloat_stats", "status": "ok",
                               "total_count": report.total_count, "rows": report.rows})
                    }
                    Which::IndexUsage => {
                        let report = store::index_usage(&pool, timeouts, limit).await?;
                        json!({"database": target.name, "report": "index_usage_stats", "status": "ok",
                               "total_count": report.total_count, "rows": report.rows})
                    }
                    Which::Connections => {
                        let row = store::connections(&pool, timeouts).await?;
                        json!({"database": target.name, "report": "connection_stats", "status": "ok",
                               "total_count": 1, "rows": [row]})
                    }
                };
                pool.close().await;
                sections.push(section);
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({ "reports": sections }))?
                );
            } else {
                for section in &sections {
                    print_section(section, report);
                }
            }
            Ok(())
        }
    }
}

fn pick<'a>(settings: &'a Settings, name: Option<&str>) -> anyhow::Result<Vec<&'a ReportDatabase>> {
    let reports = &settings.reports;
    match name {
        Some(name) => reports.database(name).map(|db| vec![db]).with_context(|| {
            let known: Vec<&str> = reports
                .databases
                .iter()
                .map(|db| db.name.as_str())
                .collect();
            format!(
                "unknown report database {name:?} (configured: {})",
                known.join(", ")
            )
        }),
        None if reports.databases.is_empty() => {
            anyhow::bail!("no report databases configured: add [[reports.databases]] entries")
        }
        None => Ok(reports.databases.iter().collect()),
    }
}

fn print_section(section: &Value, which: Which) {
    let columns: &[&str] = match which {
        Which::SlowQueries => &["calls", "mean_ms", "total_ms", "pct_total_time", "query"],
        Which::Bloat => &[
            "schemaname",
            "relname",
            "n_live_tup",
            "n_dead_tup",
            "dead_tuple_percent",
            "est_bloat_pct",
            "last_analyze",
        ],
        Which::IndexUsage => &[
            "schemaname",
            "indexrelname",
            "relname",
            "index_scans",
            "index_bytes",
            "is_unique",
            "backs_constraint",
        ],
        Which::Connections => &[
            "total",
            "active",
            "idle",
            "idle_in_transaction",
            "waiting",
            "max_connections",
            "used_pct",
        ],
    };
    let database = section["database"].as_str().unwrap_or("?");
    let report = section["report"].as_str().unwrap_or("?");
    if section["status"] == "unavailable" {
        println!(
            "{database}: {report} unavailable: {}",
            section["reason"].as_str().unwrap_or("")
        );
        return;
    }
    let rows = section["rows"].as_array().cloned().unwrap_or_default();
    println!(
        "{database}: {report} ({} of {} rows)",
        rows.len(),
        section["total_count"]
    );
    let cell = |value: &Value| -> String {
        let text = match value {
            Value::String(text) => text.split_whitespace().collect::<Vec<_>>().join(" "),
            Value::Number(n) => n
                .as_f64()
                .filter(|f| f.fract() != 0.0)
                .map_or_else(|| n.to_string(), |f| format!("{f:.2}")),
            Value::Null => "-".to_owned(),
            other => other.to_string(),
        };
        text.chars().take(60).collect()
    };
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|row| columns.iter().map(|column| cell(&row[*column])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(idx, column)| {
            table
                .iter()
                .map(|r| r[idx].len())
                .chain([column.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!(
        "{}",
        line(columns.iter().map(|c| (*c).to_owned()).collect())
    );
    for row in table {
        println!("{}", line(row));
    }
}
