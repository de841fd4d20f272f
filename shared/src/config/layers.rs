//! The layering of the configuration sources with figment: the file, then one layer per
//! `UPKEEP__SECTION__KEY` variable, then one per named variable (`DATABASE_URL`, ...), each later
//! layer winning. Every layer carries its own figment metadata, so the merged document knows
//! where each value came from (`config show`), and problems name the variable that set a value.
//!
//! Why figment rather than the `config` crate: figment keeps per-value provenance (a tag on every
//! value, resolved to the provider's metadata), which `config show` and the error messages need,
//! and it lets us feed it an environment given as a map (tests never touch the process
//! environment); `config` reads the process environment itself and keeps no provenance.
//!
//! Arrays of tables have no key to merge on, so a variable naming an entry by its index
//! (`UPKEEP__SCHEDULES__0__ENABLED`) patches the merged entry afterwards.

use std::collections::HashMap;
use std::str::FromStr as _;

use figment::value::{Dict, Map, Value as FigValue};
use figment::{Figment, Metadata, Profile, Provider};
use toml::{Table, Value};

use crate::job;
use crate::settings::key_segment;

/// Prefix of the generic override variables.
pub(super) const GENERIC_PREFIX: &str = "UPKEEP__";

/// The named variables of the public contract and the key path each one sets.
pub(super) const NAMED_VARIABLES: &[(&str, &[&str])] = &[
    ("DATABASE_URL", &["database", "url"]),
    ("REDIS_URL", &["redis", "url"]),
    ("UPKEEP_API_TOKEN", &["api", "token"]),
    ("UPKEEP_API_ADDR", &["api", "addr"]),
    ("UPKEEP_LOG_FORMAT", &["telemetry", "format"]),
    ("UPKEEP_SECRET_KEY", &["secret_key"]),
    ("UPKEEP_SECRET_KEY_PREVIOUS", &["secret_key_previous"]),
];

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The built-in default of its section.
    Default,
    /// The config file, at this 1-based line (0 when unknown).
    File {
        /// The file as given (`upkeep.toml`, `<string>`).
        file: String,
        /// 1-based line of the key.
        line: usize,
    },
    /// A `UPKEEP__…` variable: problems name the key path and the variable.
    Generic(String),
    /// A contract variable such as `DATABASE_URL`: problems are reported under its name.
    Named(&'static str),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::File { file, line } if *line > 0 => write!(f, "{file}:{line}"),
            Self::File { file, .. } => f.write_str(file),
            Self::Generic(var) => write!(f, "env {var}"),
            Self::Named(var) => write!(f, "env {var}"),
        }
    }
}

/// The merged document and where each overridden key came from.
pub(super) struct Layered {
    /// File, then variables, merged.
    pub(super) doc: Table,
    /// Key path (as in problems: `queues.reports.concurrency`, `schedules[0].enabled`) of each
    /// value a variable set, and the variable.
    pub(super) origins: HashMap<String, Source>,
    /// Key path of each key written in the file, and its line.
    pub(super) lines: HashMap<String, usize>,
    /// Variables that could not be applied, and why.
    pub(super) env_problems: Vec<(String, String)>,
}

/// One figment provider: a document fragment with the name of where it came from.
struct Layer {
    name: String,
    dict: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// `segments` = `value` as nested dictionaries.
fn nest(segments: &[String], value: FigValue) -> Dict {
    let mut value = value;
    for segment in segments.iter().skip(1).rev() {
        let mut dict = Dict::new();
        dict.insert(segment.clone(), value);
        value = FigValue::from(dict);
    }
    let mut root = Dict::new();
    if let Some(first) = segments.first() {
        root.insert(first.clone(), value);
    }
    root
}

fn dotted(segments: &[String]) -> String {
    let parts: Vec<String> = segments.iter().map(|s| key_segment(s)).collect();
    parts.join(".")
}

/// Merges `file` (named `origin`, its text `text` for line numbers) with the overrides in
/// `env`. `top_keys` are the accepted sections, for refusing `UPKEEP__NOPE`.
pub(super) fn layer(
    text: &str,
    file: Table,
    origin: &str,
    env: &HashMap<String, String>,
    top_keys: &[&str],
) -> Layered {
    let mut origins = HashMap::new();
    let mut env_problems = Vec::new();
    let file_dict = FigValue::serialize(&file)
        .ok()
        .and_then(|value| value.into_dict())
        .unwrap_or_default();
    let mut figment = Figment::new().merge(Layer {
        name: origin.to_owned(),
        dict: file_dict,
    });

    let mut vars: Vec<(&String, &String)> = env
        .iter()
        .filter(|(name, _)| name.starts_with(GENERIC_PREFIX))
        .collect();
    vars.sort();
    let mut indexed = Vec::new();
    // Every key a variable set, to drop the file's indirect forms of it below.
    let mut overridden: Vec<Vec<String>> = Vec::new();
    for (var, value) in vars {
        let mut segments: Vec<String> = var[GENERIC_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if !top_keys.contains(&segments[0].as_str()) || segments.iter().any(String::is_empty) {
            env_problems.push((
                var.clone(),
                format!(
                    "unknown setting (expected UPKEEP__SECTION__KEY with a section of {}, or \
                     UPKEEP__SECTION__<index>__KEY for an entry of an array of tables)",
                    top_keys.join(", ")
                ),
            ));
            continue;
        }
        if segments[0] == "kinds"
            && let Some(kind) = segments.get_mut(1)
            && let Some(spec) = job::CATALOG
                .iter()
                .find(|spec| spec.name == *kind || spec.name.replace('.', "_") == *kind)
        {
            // Environment variable names cannot hold dots, so `SYSTEM_PING` names `system.ping`.
            spec.name.clone_into(kind);
        }
        let typed = FigValue::from_str(value).unwrap_or_else(|_| FigValue::from(value.clone()));
        if segments.iter().any(|s| s.parse::<usize>().is_ok()) {
            indexed.push((var.clone(), segments, typed));
            continue;
        }
        origins.insert(dotted(&segments), Source::Generic(var.clone()));
        overridden.push(segments.clone());
        figment = figment.merge(Layer {
            name: var.clone(),
            dict: nest(&segments, typed),
        });
    }

    for (var, path) in NAMED_VARIABLES {
        // An empty variable counts as unset: compose files often pass `${VAR:-}`.
        let Some(value) = env.get(*var).filter(|value| !value.is_empty()) else {
            continue;
        };
        let segments: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
        origins.insert(dotted(&segments), Source::Named(var));
        overridden.push(segments.clone());
        figment = figment.merge(Layer {
            name: (*var).to_owned(),
            dict: nest(&segments, FigValue::from(value.clone())),
        });
    }

    let mut doc: Table = match figment.extract() {
        Ok(doc) => doc,
        Err(error) => {
            // Only a value TOML cannot hold (figment values are a subset) lands here.
            env_problems.push(("environment".to_owned(), error.to_string()));
            file
        }
    };
    for (var, segments, value) in indexed {
        let value = Value::try_from(value).unwrap_or_else(|_| Value::String(String::new()));
        match set_path(&mut doc, &segments, value) {
            Ok(path) => {
                origins.insert(path, Source::Generic(var));
                overridden.push(segments);
            }
            Err(message) => env_problems.push((var, message)),
        }
    }
    // A variable that sets a secret (`DATABASE_URL`) wins over the file's indirect form of it
    // (`url_file = …`) as it wins over an inline value, instead of making two sources.
    for segments in overridden {
        if let Some((last, parents)) = segments.split_last()
            && let Some(table) = table_at(&mut doc, parents)
        {
            table.remove(&format!("{last}_env"));
            table.remove(&format!("{last}_file"));
        }
    }
    Layered {
        doc,
        origins,
        lines: key_lines(text),
        env_problems,
    }
}

/// Sets the value at `segments` under `doc`. A numeric segment indexes an existing array of
/// tables (`schedules`, `0`, `enabled`). Returns the key path set, or why it cannot be set.
fn set_path(doc: &mut Table, segments: &[String], value: Value) -> Result<String, String> {
    let mut path = String::new();
    let mut table = doc;
    let (last, parents) = segments.split_last().ok_or("no key given")?;
    let mut i = 0;
    while i < parents.len() {
        let name = &parents[i];
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(&key_segment(name));
        let index = parents.get(i + 1).and_then(|s| s.parse::<usize>().ok());
        if let (false, Some(index)) = (table.contains_key(name.as_str()), index) {
            return Err(format!(
                "{path}[{index}] does not exist in the file (0 entries); the environment \
                 can change entries, not add them"
            ));
        }
        let entry = table
            .entry(name.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        table = match (entry, index) {
            (Value::Table(inner), _) => inner,
            (Value::Array(items), Some(index)) => {
                let n_items = items.len();
                let Some(Value::Table(inner)) = items.get_mut(index) else {
                    return Err(format!(
                        "{path}[{index}] does not exist in the file ({n_items} entries); the \
                         environment can change entries, not add them"
                    ));
                };
                path.push_str(&format!("[{index}]"));
                i += 1;
                inner
            }
            (Value::Array(_), None) => {
                return Err(format!(
                    "{path} is an array of tables: name the entry by its index, as in \
                     UPKEEP__{}__0__KEY",
                    name.to_ascii_uppercase()
                ));
            }
            _ => return Err(format!("{path} is not a table")),
        };
        i += 1;
    }
    if last.parse::<usize>().is_ok() {
        return Err(format!("{path}: name a key after the index"));
    }
    table.insert(last.clone(), value);
    Ok(if path.is_empty() {
        key_segment(last)
    } else {
        format!("{path}.{}", key_segment(last))
    })
}

/// The table at `segments` (numeric segments index arrays of tables), if there is one.
fn table_at<'t>(doc: &'t mut Table, segments: &[String]) -> Option<&'t mut Table> {
    let mut current = doc;
    let mut i = 0;
    while i < segments.len() {
        current = match current.get_mut(&segments[i])? {
            Value::Table(inner) => inner,
            Value::Array(items) => {
                i += 1;
                let index: usize = segments.get(i)?.parse().ok()?;
                items.get_mut(index)?.as_table_mut()?
            }
            _ => return None,
        };
        i += 1;
    }
    Some(current)
}

/// The 1-based line of every key written in `text`, by key path (`queues.reports.lease`,
/// `schedules[1].cron`).
fn key_lines(text: &str) -> HashMap<String, usize> {
    let mut lines = HashMap::new();
    if let Ok(root) = toml::de::DeTable::parse(text) {
        walk_table(text, "", root.get_ref(), &mut lines);
    }
    lines
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn walk_table(
    text: &str,
    prefix: &str,
    table: &toml::de::DeTable<'_>,
    out: &mut HashMap<String, usize>,
) {
    for (key, value) in table {
        let segment = key_segment(key.get_ref());
        let path = if prefix.is_empty() {
            segment
        } else {
            format!("{prefix}.{segment}")
        };
        out.entry(path.clone())
            .or_insert_with(|| line_of(text, key.span().start));
        walk_value(text, &path, value.get_ref(), out);
    }
}

fn walk_value(
    text: &str,
    path: &str,
    value: &toml::de::DeValue<'_>,
    out: &mut HashMap<String, usize>,
) {
    match value {
        toml::de::DeValue::Table(table) => walk_table(text, path, table, out),
        toml::de::DeValue::Array(items) => {
            for (idx, item) in items.iter().enumerate() {
                let at = format!("{path}[{idx}]");
                out.entry(at.clone())
                    .or_insert_with(|| line_of(text, item.span().start));
                walk_value(text, &at, item.get_ref(), out);
            }
        }
        _ => {}
    }
}
