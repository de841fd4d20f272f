//! `[tasks]`: the checklist's time zone and `[[tasks.items]]`, which add items, override
//! built-in ones or switch them off.
//!
//! TOML cannot hold both a `[tasks]` table and a `[[tasks]]` array, so the items live under
//! `[[tasks.items]]` beside `[tasks] timezone`.

use serde::Deserialize;

use super::{Period, builtin_items};
use crate::job::CATALOG;
use crate::schedule::parse_time_zone;
use crate::settings::{Problems, Section};

/// The `[tasks]` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TasksSettings {
    /// IANA zone whose days, ISO weeks and months are the windows. Defaults to `UTC`.
    pub timezone: String,
    /// Added, overridden or disabled items. Defaults to none (the built-in checklist).
    pub items: Vec<TaskItemSettings>,
}

impl Default for TasksSettings {
    fn default() -> Self {
        Self {
            timezone: "UTC".to_owned(),
            items: Vec::new(),
        }
    }
}

/// One `[[tasks.items]]` entry. With the name of a built-in item it overrides the fields it
/// gives (or removes the item with `enabled = false`); with a new name it adds an item, which
/// then needs a `period` and either a `kind` or `manual = true`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TaskItemSettings {
    /// The item's name, `[a-z0-9_]+`.
    pub name: String,
    /// `daily`, `weekly` or `monthly`.
    #[serde(default)]
    pub period: Option<Period>,
    /// The job kind whose succeeded run satisfies it.
    #[serde(default)]
    pub kind: Option<String>,
    /// A JSON object the satisfying run's args must contain (`{ mode = "restore" }`).
    #[serde(default)]
    pub args: Option<serde_json::Value>,
    /// Satisfied by an operator's acknowledgement alone.
    #[serde(default)]
    pub manual: bool,
    /// What the checklist says.
    #[serde(default)]
    pub description: Option<String>,
    /// `false` removes a built-in item. Defaults to true.
    #[serde(default = "enabled_default")]
    pub enabled: bool,
}

fn enabled_default() -> bool {
    true
}

impl TasksSettings {
    /// The zone of the windows; UTC when the configured name is invalid (validation reports
    /// it, so a loaded configuration always has a valid one).
    #[must_use]
    pub fn zone(&self) -> chrono_tz::Tz {
        parse_time_zone(&self.timezone).unwrap_or(chrono_tz::UTC)
    }
}

impl Section for TasksSettings {
    fn validate(&self, path: &str, problems: &mut Problems) {
        if let Err(error) = parse_time_zone(&self.timezone) {
            problems.push(format!("{path}.timezone"), error.to_string());
        }
        let builtin = builtin_items();
        for (idx, item) in self.items.iter().enumerate() {
            let at = format!("{path}.items[{idx}]");
            if item.name.is_empty()
                || !item
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                problems.push(
                    format!("{at}.name"),
                    format!("must be [a-z0-9_]+, got {:?}", item.name),
                );
            }
            if let Some(kind) = &item.kind
                && !CATALOG.iter().any(|spec| spec.name == kind)
            {
                let known: Vec<&str> = CATALOG.iter().map(|spec| spec.name).collect();
                problems.push(
                    format!("{at}.kind"),
                    format!("unknown job kind {kind:?} (known: {})", known.join(", ")),
                );
            }
            if item.kind.is_some() && item.manual {
                problems.push(
                    format!("{at}.manual"),
                    "give either kind or manual = true, not both",
                );
            }
            if let Some(args) = &item.args
                && !args.is_object()
            {
                problems.push(format!("{at}.args"), "must be a table");
            }
            let is_builtin = builtin.iter().any(|b| b.name == item.name);
            if !is_builtin && item.enabled {
                if item.period.is_none() {
                    problems.push(
                        format!("{at}.period"),
                        "a new item needs a period (daily, weekly or monthly)",
                    );
                }
                if item.kind.is_none() && !item.manual {
                    problems.push(
                        format!("{at}.kind"),
                        "a new item needs a kind or manual = true",
                    );
                }
            }
            if self.items[..idx]
                .iter()
                .any(|earlier| earlier.name == item.name)
            {
                problems.push(
                    format!("{at}.name"),
                    format!("{:?} appears twice", item.name),
                );
            }
        }
    }
}
