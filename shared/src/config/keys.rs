//! The set of keys the settings types accept, derived from the types themselves so that the
//! documentation test (`upkeep.example.toml` documents exactly these) picks up every section,
//! including ones added later, without a list to maintain.
//!
//! How: for each key path, a probe document puts an unknown key (`zz_probe`) there and runs
//! the real validation. A struct refuses it with serde's "unknown field `zz_probe`, expected
//! one of `a`, `b`", which lists its keys; a map of structs or an array of tables is found the
//! same way one level down. Anything else is a leaf.

use std::collections::{BTreeSet, HashMap};

use toml::{Table, Value};

use super::{Ctx, TOP_KEYS, validate};
use crate::settings::key_segment;

const PROBE_KEY: &str = "zz_probe";
const PROBE_NAME: &str = "zz_probe_name";

/// One step of a key path.
#[derive(Debug, Clone)]
enum Step {
    /// A named key.
    Key(String),
    /// Any key of a map (`queues.<name>`), written `*`.
    AnyKey,
    /// Any entry of an array of tables, written `[]`.
    Entry,
}

/// Every key path the settings accept, normalised: map keys as `*` (`queues.*.lease`), array
/// entries as `[]` (`schedules[].cron`). Containers are not listed, only their leaves; a
/// free-form table (`schedules[].args`) is a leaf.
#[must_use]
pub fn accepted_keys() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for top in TOP_KEYS {
        probe(&[Step::Key((*top).to_owned())], &mut keys);
    }
    keys
}

/// The normalised key paths under which the settings hold maps of tables (`queues`, `kinds`).
#[must_use]
pub fn map_keys(accepted: &BTreeSet<String>) -> BTreeSet<String> {
    accepted
        .iter()
        .filter_map(|key| key.split_once(".*").map(|(map, _)| map.to_owned()))
        .collect()
}

fn probe(path: &[Step], keys: &mut BTreeSet<String>) {
    // A struct: its fields are listed.
    if let Some(fields) = fields_at(path) {
        for field in fields {
            let mut inner = path.to_vec();
            inner.push(Step::Key(field));
            probe(&inner, keys);
        }
        return;
    }
    for container in [Step::AnyKey, Step::Entry] {
        let mut inner = path.to_vec();
        inner.push(container);
        if let Some(fields) = fields_at(&inner) {
            for field in fields {
                let mut leaf = inner.clone();
                leaf.push(Step::Key(field));
                probe(&leaf, keys);
            }
            return;
        }
    }
    keys.insert(normalised(path));
}

/// The fields of the struct at `path`, when a table there is a struct with unknown keys
/// refused.
fn fields_at(path: &[Step]) -> Option<Vec<String>> {
    let mut value = Value::Table(Table::from_iter([(
        PROBE_KEY.to_owned(),
        Value::Integer(1),
    )]));
    for step in path.iter().rev() {
        value = match step {
            Step::Key(name) => Value::Table(Table::from_iter([(name.clone(), value)])),
            Step::AnyKey => Value::Table(Table::from_iter([(PROBE_NAME.to_owned(), value)])),
            Step::Entry => Value::Array(vec![value]),
        };
    }
    let Value::Table(doc) = value else {
        return None;
    };
    let mut ctx = Ctx::default();
    let _ = validate(&doc, &mut ctx, None, &HashMap::new());
    let expected_key = format!("{}.{PROBE_KEY}", written(path));
    let unknown = format!("unknown field `{PROBE_KEY}`");
    ctx.problems
        .iter()
        .find(|p| p.key == expected_key && p.message.starts_with(&unknown))
        .map(|p| {
            let listed = p
                .message
                .split_once("expected")
                .map_or("", |(_, rest)| rest);
            listed
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect()
        })
}

/// The path as problems write it (`queues.zz_probe_name`, `schedules[0]`).
fn written(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(name) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&key_segment(name));
            }
            Step::AnyKey => {
                out.push('.');
                out.push_str(PROBE_NAME);
            }
            Step::Entry => out.push_str("[0]"),
        }
    }
    out
}

fn normalised(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(name) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(name);
            }
            Step::AnyKey => out.push_str(".*"),
            Step::Entry => out.push_str("[]"),
        }
    }
    out
}

/// The normalised key paths a documented TOML file sets or shows in a commented-out
/// `# key = value` line (one space at most after `#`, and the rest parses as TOML on its own;
/// anything else is prose).
/// `maps` are the paths holding maps of tables, whose keys are names (`*`); `accepted` stops
/// the walk at free-form leaves.
///
/// # Errors
/// When the text, with those lines uncommented, is not TOML.
pub fn documented_keys(
    text: &str,
    maps: &BTreeSet<String>,
    accepted: &BTreeSet<String>,
) -> Result<BTreeSet<String>, String> {
    let uncommented: String = text
        .lines()
        .map(|line| {
            let body = line
                .strip_prefix("# ")
                .or_else(|| line.strip_prefix('#'))
                // Commented-out TOML, not prose: the line parses on its own.
                .filter(|body| {
                    !body.starts_with(' ') && !body.is_empty() && body.parse::<Table>().is_ok()
                });
            body.unwrap_or(line)
        })
        .collect::<Vec<_>>()
        .join("\n");
    let doc: Table = uncommented
        .parse()
        .map_err(|e| format!("the example with its `# key = value` lines uncommented: {e}"))?;
    let mut keys = BTreeSet::new();
    walk(&Value::Table(doc), "", maps, accepted, &mut keys);
    Ok(keys)
}

fn walk(
    value: &Value,
    path: &str,
    maps: &BTreeSet<String>,
    accepted: &BTreeSet<String>,
    out: &mut BTreeSet<String>,
) {
    if accepted.contains(path) {
        out.insert(path.to_owned());
        return;
    }
    match value {
        Value::Table(table) => {
            for (key, inner) in table {
                let child = if maps.contains(path) {
                    format!("{path}.*")
                } else if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                walk(inner, &child, maps, accepted, out);
            }
        }
        Value::Array(items) if items.iter().all(Value::is_table) && !items.is_empty() => {
            for item in items {
                walk(item, &format!("{path}[]"), maps, accepted, out);
            }
        }
        _ => {
            out.insert(path.to_owned());
        }
    }
}
