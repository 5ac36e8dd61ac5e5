//! The layers of the configuration, laid one over the other as a table of
//! `section.key` values, remembering where each value was set, so that a
//! mistake says where to fix it and every mistake is reported at once.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;

use super::ConfigError;
use super::settings::{self, Initial, Kind, SETTINGS, Setting, env_name};

/// Where a value was set.
#[derive(Debug, Clone)]
enum Origin {
    Default,
    File { path: String, line: Option<usize> },
    Env(String),
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("(the default)"),
            Self::File {
                path,
                line: Some(line),
            } => write!(f, "(in `{path}`, line {line})"),
            Self::File { path, line: None } => write!(f, "(in `{path}`)"),
            Self::Env(name) => write!(f, "(from `{name}`)"),
            Self::Flag(flag) => write!(f, "(from `{flag}`)"),
        }
    }
}

/// The table being built, where each value came from, and the mistakes
/// found so far.
pub(super) struct Layers {
    table: toml::Table,
    origins: HashMap<&'static str, Origin>,
    mistakes: Vec<String>,
}

impl Layers {
    /// The bottom layer: every setting's default (unset ones absent), and
    /// every section present.
    pub(super) fn defaults() -> Self {
        let mut layers = Self {
            table: toml::Table::new(),
            origins: HashMap::new(),
            mistakes: Vec::new(),
        };
        for setting in SETTINGS {
            let (section, _) = split(setting.key);
            layers
                .table
                .entry(section.to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let Some(value) = default_value(setting) {
                layers.set(setting, value, Origin::Default);
            }
        }
        layers
    }

    /// The file's layer. Its relative paths resolve from its directory.
    ///
    /// # Errors
    /// A file that is not TOML (or JSON, for `*.json`): nothing else can be
    /// read from it.
    pub(super) fn file(&mut self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let name = path.display().to_string();
        let json = path.extension().is_some_and(|e| e == "json");
        let top = if json {
            serde_json::from_str::<toml::Table>(text).map_err(|e| {
                let at = offset(text, e.line(), e.column());
                syntax(&name, "JSON", e.to_string(), text, at)
            })?
        } else {
            toml::from_str::<toml::Table>(text).map_err(|e| {
                let at = e.span().map(|span| span.start);
                syntax(&name, "TOML", e.message().to_owned(), text, at)
            })?
        };
        let base = path.parent().unwrap_or(Path::new(""));
        for (section, value) in top {
            let toml::Value::Table(keys) = value else {
                let origin = Origin::File {
                    path: name.clone(),
                    line: (!json).then(|| line_of(text, "", &section)).flatten(),
                };
                self.mistakes.push(format!(
                    "`{section}` {origin}: not a setting; settings are `section.key`{}",
                    suggestion(&section)
                ));
                continue;
            };
            for (leaf, mut value) in keys {
                let key = format!("{section}.{leaf}");
                let origin = Origin::File {
                    path: name.clone(),
                    line: (!json).then(|| line_of(text, &section, &leaf)).flatten(),
                };
                let Some(setting) = settings::find(&key) else {
                    self.mistakes.push(format!(
                        "`{key}` {origin}: no such setting{}",
                        suggestion(&key)
                    ));
                    continue;
                };
                if let (Kind::Path, toml::Value::String(written)) = (setting.kind, &value) {
                    let written = Path::new(written);
                    if written.is_relative() && !crate::support::embedded::contains(written) {
                        value = toml::Value::String(base.join(written).display().to_string());
                    }
                }
                self.set(setting, value, origin);
            }
        }
        Ok(())
    }

    /// The `MANDATE_…` variables among `env` (others are ignored, and so
    /// are Kubernetes' service-link variables for Services named `mandate…`).
    pub(super) fn env(&mut self, env: impl IntoIterator<Item = (String, String)>) {
        for (name, raw) in env {
            if !name.starts_with("MANDATE_") {
                continue;
            }
            match SETTINGS.iter().find(|s| env_name(s.key) == name) {
                Some(setting) => self.set(setting, env_value(&raw), Origin::Env(name)),
                None if super::service_links::is_service_link(&name, &raw) => {}
                None => {
                    let closest =
                        crate::policy::closest(&name, SETTINGS.iter().map(|s| env_name(s.key)));
                    let hint = closest.map_or_else(
                        || " (`mandate settings` lists them)".to_owned(),
                        |c| format!(" (did you mean `{c}`?)"),
                    );
                    self.mistakes
                        .push(format!("`{name}`: no such setting's variable{hint}"));
                }
            }
        }
    }

    /// The command line's layer.
    pub(super) fn flags(&mut self, flags: &super::Flags) {
        for (key, value) in flags {
            match settings::find(key) {
                Some(setting) => {
                    let origin = Origin::Flag(setting.flag.unwrap_or(setting.key));
                    self.set(setting, value.clone(), origin);
                }
                None => self.mistakes.push(format!("`{key}`: no such setting")),
            }
        }
    }

    fn set(&mut self, setting: &'static Setting, value: toml::Value, origin: Origin) {
        let (section, leaf) = split(setting.key);
        if let Some(toml::Value::Table(keys)) = self.table.get_mut(section) {
            keys.insert(leaf.to_owned(), value);
        }
        self.origins.insert(setting.key, origin);
    }

    fn reset(&mut self, setting: &'static Setting) {
        let (section, leaf) = split(setting.key);
        if let Some(toml::Value::Table(keys)) = self.table.get_mut(section) {
            keys.remove(leaf);
        }
        if let Some(value) = default_value(setting) {
            self.set(setting, value, Origin::Default);
        }
        self.origins.insert(setting.key, Origin::Default);
    }

    /// The typed configuration, or every mistake: a value that does not
    /// fit is noted, set back to its default, and the rest read again, so
    /// one wrong value does not hide the next.
    pub(super) fn build<T: DeserializeOwned>(mut self) -> Result<T, ConfigError> {
        for _ in 0..=SETTINGS.len() {
            let attempt: Result<T, serde_path_to_error::Error<toml::de::Error>> =
                serde_path_to_error::deserialize(toml::Value::Table(self.table.clone()));
            let error = match attempt {
                Ok(config) if self.mistakes.is_empty() => return Ok(config),
                Ok(_) => break,
                Err(error) => error,
            };
            let path = error.path().to_string();
            let message = error.inner().message().to_owned();
            let setting = setting_at(error.path());
            let origin = setting
                .and_then(|s| self.origins.get(s.key).cloned())
                .unwrap_or(Origin::Default);
            let expected = setting.map(|s| s.kind.expected()).unwrap_or_default();
            let mistake = if expected.is_empty() {
                format!("`{path}` {origin}: {message}")
            } else {
                format!("`{path}` {origin}: {message}; {expected}")
            };
            self.mistakes.push(mistake);
            match (setting, origin) {
                (Some(setting), Origin::File { .. } | Origin::Env(_) | Origin::Flag(_)) => {
                    self.reset(setting);
                }
                // A default that does not fit, or no setting to blame: stop.
                _ => break,
            }
        }
        Err(ConfigError::Invalid {
            mistakes: self.mistakes,
        })
    }
}

/// `section.key` → (`section`, `key`).
fn split(key: &str) -> (&str, &str) {
    key.split_once('.').unwrap_or(("", key))
}

/// The setting a deserialization error's path falls in (its first two
/// names: `gateway.routes[0].method` is in `gateway.routes`).
fn setting_at(path: &serde_path_to_error::Path) -> Option<&'static Setting> {
    let mut names = path.iter().filter_map(|segment| match segment {
        serde_path_to_error::Segment::Map { key } => Some(key.as_str()),
        _ => None,
    });
    let key = format!("{}.{}", names.next()?, names.next()?);
    settings::find(&key)
}

fn default_value(setting: &Setting) -> Option<toml::Value> {
    match setting.default {
        Initial::Text(text) => Some(toml::Value::String(text.to_owned())),
        Initial::Toml(text) => Some(env_value(text)),
        Initial::Unset(_) => None,
    }
}

/// Reads an environment value as a TOML value (`8`, `true`, `"x"`, `{a = 1}`),
/// or as a plain string when it is not one.
fn env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

/// " (did you mean `server.listen`?)" when a key is close to `written`.
fn suggestion(written: &str) -> String {
    crate::policy::closest(written, SETTINGS.iter().map(|s| s.key))
        .or_else(|| {
            // A bare key written without its section: `listen` → `server.listen`.
            SETTINGS
                .iter()
                .find(|s| split(s.key).1 == written)
                .map(|s| s.key.to_owned())
        })
        .map(|key| format!(" (did you mean `{key}`?)"))
        .unwrap_or_default()
}

/// The 1-based line where `leaf` is set in `section` of a TOML text (`""`:
/// the top level), found by reading the headers and keys line by line.
fn line_of(text: &str, section: &str, leaf: &str) -> Option<usize> {
    let mut current = String::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            current = header.trim().trim_start_matches('[').to_owned();
            continue;
        }
        let Some((written, _)) = line.split_once('=') else {
            continue;
        };
        let written = written.trim().trim_matches('"');
        let full = if current.is_empty() {
            written.to_owned()
        } else {
            format!("{current}.{written}")
        };
        let wanted = if section.is_empty() {
            leaf.to_owned()
        } else {
            format!("{section}.{leaf}")
        };
        if full == wanted || (current.is_empty() && written == leaf && section.is_empty()) {
            return Some(number + 1);
        }
    }
    None
}

/// The byte offset of a 1-based line and column.
fn offset(text: &str, line: usize, column: usize) -> Option<usize> {
    let start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    Some(start + column.saturating_sub(1)).filter(|at| *at <= text.len())
}

fn syntax(
    path: &str,
    format: &'static str,
    message: String,
    text: &str,
    at: Option<usize>,
) -> ConfigError {
    let message = match at {
        Some(at) => {
            let before = text.get(..at).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    };
    ConfigError::Syntax {
        path: path.to_owned(),
        format,
        message,
        text: miette::NamedSource::new(path, text.to_owned()),
        at: at.map(|at| miette::SourceSpan::from((at, 1))),
    }
}
