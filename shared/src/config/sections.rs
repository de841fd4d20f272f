//! How one section is read from the merged document: indirect secrets resolved
//! (`KEY_env`, `KEY_file`), deserialized with its nested key path on error (never showing a
//! secret), then validated by the section itself. Every problem goes to the caller's `Ctx`.

use std::collections::HashMap;

use toml::{Table, Value};

use super::{Ctx, describe};
use crate::settings::{Problems, Section, key_segment};

/// Deserializes `value` (a table) into `T`, recording a type error (or unknown key) under
/// `path` and its nested key. A problem at a secret key never shows the value.
pub(super) fn deserialize_at<T: serde::de::DeserializeOwned>(
    ctx: &mut Ctx,
    value: &Value,
    path: &str,
    secret_keys: &[&str],
) -> Option<T> {
    if !value.is_table() {
        ctx.problem(
            path,
            format!("expected a table, got {}", describe(value, false)),
        );
        return None;
    }
    match serde_path_to_error::deserialize::<_, T>(value.clone()) {
        Ok(section) => Some(section),
        Err(error) => {
            let at = format_path(error.path());
            let key = format!("{path}{at}");
            let at = at.trim_start_matches('.');
            let normalized = normalize_indexes(at);
            let secret = secret_keys.iter().any(|pattern| {
                normalized == *pattern
                    || normalized
                        .strip_prefix(pattern)
                        .is_some_and(|rest| rest.starts_with(['.', '[']))
            });
            let message = if secret {
                let got = value_at(value, error.path())
                    .map_or_else(|| "a value (not shown)".to_owned(), |v| describe(v, true));
                format!("expected a string, got {got}")
            } else {
                error.inner().message().trim_end().to_owned()
            };
            ctx.problem(&key, message);
            None
        }
    }
}

/// A deserialization path as written in problems: `.targets[0].url`, `."system.ping".timeout`.
fn format_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Map { key } => {
                out.push('.');
                out.push_str(&key_segment(key));
            }
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    out
}

/// `targets[3].url` as `targets[].url`, to compare with [`Section::SECRET_KEYS`] patterns.
pub(super) fn normalize_indexes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

/// The value at a deserialization error's path, to describe it without showing it.
fn value_at<'v>(value: &'v Value, path: &serde_path_to_error::Path) -> Option<&'v Value> {
    use serde_path_to_error::Segment;
    let mut current = value;
    for segment in path {
        current = match segment {
            Segment::Map { key } => current.get(key.as_str())?,
            Segment::Seq { index } => current.get(*index)?,
            Segment::Enum { .. } | Segment::Unknown => return Some(current),
        };
    }
    Some(current)
}

/// Deserializes the optional table `doc[name]` into a subsystem's [`Section`] (its defaults
/// when absent), after resolving the indirect forms of its secret keys, then runs its
/// `validate`. Every problem lands in `ctx` with its full key path; on a type error the
/// section's defaults stand in so the other sections are still checked.
pub(super) fn serde_section<T: Section>(
    ctx: &mut Ctx,
    doc: &Table,
    name: &str,
    env: &HashMap<String, String>,
) -> T {
    let section = match doc.get(name) {
        None => T::default(),
        Some(value) => {
            let mut value = value.clone();
            for pattern in T::SECRET_KEYS {
                ctx.secret_keys.push(format!("{name}.{pattern}"));
                let segments: Vec<&str> = pattern.split('.').collect();
                resolve_secret(ctx, &mut value, name, &segments, env);
            }
            match deserialize_at::<T>(ctx, &value, name, T::SECRET_KEYS) {
                Some(section) => section,
                None => return T::default(),
            }
        }
    };
    let mut problems = Problems::default();
    section.validate(name, &mut problems);
    for problem in problems.into_vec() {
        ctx.problem(&problem.key, problem.message);
    }
    section
}

/// Replaces `KEY_env = "VAR"` and `KEY_file = "PATH"` by `KEY = <the secret>` at the key that
/// `segments` (a [`Section::SECRET_KEYS`] entry, split on `.`) names under `value`. Problems
/// name the key and the variable or file, never the secret.
fn resolve_secret(
    ctx: &mut Ctx,
    value: &mut Value,
    path: &str,
    segments: &[&str],
    env: &HashMap<String, String>,
) {
    let Some(table) = value.as_table_mut() else {
        return;
    };
    let [segment, rest @ ..] = segments else {
        return;
    };
    if !rest.is_empty() {
        if let Some(array_key) = segment.strip_suffix("[]") {
            if let Some(Value::Array(items)) = table.get_mut(array_key) {
                for (idx, item) in items.iter_mut().enumerate() {
                    resolve_secret(ctx, item, &format!("{path}.{array_key}[{idx}]"), rest, env);
                }
            }
        } else if let Some(inner) = table.get_mut(*segment) {
            resolve_secret(ctx, inner, &format!("{path}.{segment}"), rest, env);
        }
        return;
    }
    let key = *segment;
    let env_key = format!("{key}_env");
    let file_key = format!("{key}_file");
    let n_given = [key, env_key.as_str(), file_key.as_str()]
        .iter()
        .filter(|k| table.contains_key(**k))
        .count();
    if n_given > 1 {
        ctx.problem(
            &format!("{path}.{key}"),
            format!("give only one of {key}, {env_key} and {file_key}"),
        );
        table.remove(&env_key);
        table.remove(&file_key);
        return;
    }
    if let Some(var) = table.remove(&env_key) {
        let at = format!("{path}.{env_key}");
        let Some(var) = var.as_str() else {
            ctx.problem(&at, "expected the name of an environment variable");
            return;
        };
        match env.get(var) {
            Some(secret) => {
                table.insert(key.to_owned(), Value::String(secret.clone()));
            }
            None => ctx.problem(&at, format!("environment variable {var} is not set")),
        }
    } else if let Some(file) = table.remove(&file_key) {
        let at = format!("{path}.{file_key}");
        let Some(file) = file.as_str() else {
            ctx.problem(&at, "expected a file path");
            return;
        };
        match std::fs::read_to_string(file) {
            Ok(text) => {
                // Credential files usually end with a newline that is not part of the secret.
                let secret = text
                    .strip_suffix('\n')
                    .map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
                table.insert(key.to_owned(), Value::String(secret.to_owned()));
            }
            Err(error) => ctx.problem(&at, format!("cannot read {file}: {error}")),
        }
    }
}
