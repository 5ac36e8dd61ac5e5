//! Policy test suites: a declarative YAML format (JSON is YAML too) and its runner,
//! behind `mandate test`. Shaped after `opa test` and Cerbos's test suites:
//! entities, then cases — principal, action, resource, context, the expected
//! decision and, where it matters, the expected rule ids. The whole format
//! is documented in `docs/testing-policies.md`.
//!
//! ```yaml
//! name: sub-user roles
//! entities: ../../examples/demo/entities.json   # a file, relative to this one; or inline Cedar JSON
//! context: {side: buy}                          # optional: every case's context starts from this
//! cases:
//!   - name: a trader places an order
//!     rule: S2                                   # the rule this case exercises
//!     principal: user:carol                      # or Brokerage::User::"carol"
//!     action: place_order
//!     resource: account:alice-personal
//!     context: {side: buy, instrument: AAPL}
//!     resource_properties: {ownerID: alice}        # for a request-described resource
//!     entities: [...]                            # optional: more entities, for this case only
//!     expect: allow                              # allow | deny
//!     reasons: [S2]                              # optional: exactly these @ids
//!     errors: [entity_not_found]                 # optional: exactly these error codes
//! ```
//!
//! No case may pass while testing nothing: one naming an action, a type or
//! an entity the schema or the entities lack fails with the name meant,
//! and one whose decision errs fails, unless it lists the error under
//! `errors:` (then the error is the point).

mod coverage;
mod fixture;
mod hollow;
mod report;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::app::StartError;
use crate::config::Config;
use crate::engine::{DecisionRequest, EntityRef};

pub use coverage::Coverage;
pub use fixture::Fixture;
pub use report::{Format, Report};

/// One suite file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    /// What the suite covers.
    pub name: String,
    /// The entities: a Cedar JSON file relative to the suite file, or the
    /// entities themselves (none when absent).
    #[serde(default)]
    pub entities: Fixture,
    /// The context every case starts from; a case's own keys win.
    #[serde(default)]
    pub context: Option<serde_json::Map<String, Value>>,
    /// The cases, run in order.
    pub cases: Vec<Case>,
}

/// The expected decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// the action is allowed
    Allow,
    /// the action is denied
    Deny,
}

/// One question and its expected answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// A sentence saying what is checked.
    pub name: String,
    /// The rule of domain.md this case exercises (`S2`, `U1`, …).
    #[serde(default)]
    pub rule: Option<String>,
    /// `type:id` or a Cedar uid.
    pub principal: String,
    /// The action id.
    pub action: String,
    /// `type:id` or a Cedar uid.
    pub resource: String,
    /// Attributes of a request-described resource (AuthZEN `properties`).
    #[serde(default)]
    pub resource_properties: Option<serde_json::Map<String, Value>>,
    /// The context, as Cedar JSON.
    #[serde(default)]
    pub context: Option<Value>,
    /// More entities (Cedar JSON) for this case alone, over the suite's:
    /// one with the uid of a suite entity replaces it.
    #[serde(default)]
    pub entities: Option<Vec<Value>>,
    /// The expected decision.
    pub expect: Expect,
    /// Exactly these determining policies, when given.
    #[serde(default)]
    pub reasons: Option<Vec<String>>,
    /// Exactly these error codes, when given.
    #[serde(default)]
    pub errors: Option<Vec<String>>,
}

impl Case {
    /// Whether the case is about the error `code` (lists it under `errors:`).
    fn expects_error(&self, code: &str) -> bool {
        self.errors
            .as_ref()
            .is_some_and(|errors| errors.iter().any(|e| e == code))
    }
}

/// Why a suite could not run at all.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SuiteError {
    /// The suite file could not be read.
    #[error("cannot read suite `{path}`: {source}")]
    Io {
        /// the file
        path: PathBuf,
        /// why
        source: std::io::Error,
    },
    /// The suite file is not valid YAML of this format.
    #[error("invalid suite `{path}`: {message}")]
    Format {
        /// the file
        path: PathBuf,
        /// what is wrong
        message: String,
    },
    /// Policies, schema or fixture could not be loaded.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Start(#[from] StartError),
}

/// The outcome of one case.
#[derive(Debug)]
pub struct CaseResult {
    /// the suite's name
    pub suite: String,
    /// the case's name
    pub name: String,
    /// the suite file
    pub file: PathBuf,
    /// the line of the case in it (its `- ` item), 1-based
    pub line: usize,
    /// the rule the case exercises
    pub rule: Option<String>,
    /// the expected decision
    pub expect: Expect,
    /// `None` when it passed; what differed otherwise
    pub failure: Option<String>,
    /// the policies that determined the decision (for coverage)
    pub determined: Vec<String>,
    /// the policies whose condition was evaluated: their scope matched
    /// (for coverage; empty unless asked for)
    pub evaluated: Vec<String>,
}

/// Splits `user:alice` or `Brokerage::User::"alice"` into (type, id).
pub fn split_uid(text: &str) -> Option<(&str, &str)> {
    if let Some((ty, quoted)) = text.rsplit_once("::\"") {
        return Some((ty, quoted.strip_suffix('"')?));
    }
    text.split_once(':')
        .filter(|(ty, id)| !ty.is_empty() && !id.is_empty() && !id.starts_with(':'))
}

/// Every suite file (`*.yaml`, `*.yml`) under `path`, sorted; or
/// `path` itself when it is a file.
///
/// # Errors
/// When a directory cannot be read.
pub fn discover(path: &Path) -> Result<Vec<PathBuf>, SuiteError> {
    if !path.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let io = |source| SuiteError::Io {
        path: path.to_owned(),
        source,
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io)? {
        let entry = entry.map_err(io)?.path();
        if entry.is_dir() {
            found.extend(discover(&entry)?);
        } else if entry.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            found.push(entry);
        }
    }
    found.sort();
    Ok(found)
}

/// Reads one suite file.
///
/// # Errors
/// An unreadable file or one not in the suite format.
pub fn read(path: &Path) -> Result<Suite, SuiteError> {
    parse(path, &read_text(path)?)
}

fn read_text(path: &Path) -> Result<String, SuiteError> {
    std::fs::read_to_string(path).map_err(|source| SuiteError::Io {
        path: path.to_owned(),
        source,
    })
}

fn parse(path: &Path, text: &str) -> Result<Suite, SuiteError> {
    serde_norway::from_str(text).map_err(|e| SuiteError::Format {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Which cases to run: those whose name, suite name or rule contains the
/// text (case-insensitively); every case when `None`.
#[derive(Debug, Clone, Default)]
pub struct Filter(Option<String>);

impl Filter {
    /// A filter on `text`, or none.
    pub fn new(text: Option<&str>) -> Self {
        Self(text.map(str::to_lowercase))
    }

    fn admits(&self, suite: &Suite, case: &Case) -> bool {
        let Some(text) = &self.0 else {
            return true;
        };
        [Some(&suite.name), Some(&case.name), case.rule.as_ref()]
            .into_iter()
            .flatten()
            .any(|field| field.to_lowercase().contains(text))
    }
}

/// What a run records beyond pass and fail.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// trace each case, to say which policies' conditions were evaluated
    pub coverage: bool,
}

/// Runs the cases of one suite that `filter` admits against the policies
/// of `config`, over the suite's entities (see [`Fixture`]).
///
/// # Errors
/// When the suite, the policies or the suite's entities cannot be loaded.
pub async fn run(
    path: &Path,
    config: &Config,
    filter: &Filter,
    options: Options,
) -> Result<Vec<CaseResult>, SuiteError> {
    let text = read_text(path)?;
    let suite = parse(path, &text)?;
    if !suite.cases.iter().any(|case| filter.admits(&suite, case)) {
        return Ok(Vec::new());
    }
    let lines = case_lines(&text);
    let world = fixture::World::open(&suite.entities, path, config)?;
    let mut results = Vec::with_capacity(suite.cases.len());
    for (index, case) in suite.cases.iter().enumerate() {
        if !filter.admits(&suite, case) {
            continue;
        }
        let mut result = CaseResult {
            suite: suite.name.clone(),
            name: case.name.clone(),
            file: path.to_owned(),
            line: lines.get(index).copied().unwrap_or(1),
            rule: case.rule.clone(),
            expect: case.expect,
            failure: None,
            determined: Vec::new(),
            evaluated: Vec::new(),
        };
        let own_engine;
        let engine = match &case.entities {
            None => world.engine(),
            Some(extra) => match world.with(extra, path, config) {
                Ok(engine) => {
                    own_engine = engine;
                    &own_engine
                }
                Err(error) => {
                    result.failure = Some(format!("    entities: {error}\n"));
                    results.push(result);
                    continue;
                }
            },
        };
        let context = merged_context(suite.context.as_ref(), case.context.as_ref());
        decide(engine, case, context.as_ref(), options, &mut result).await;
        results.push(result);
    }
    Ok(results)
}

/// The suite's context under the case's (the case's keys win).
fn merged_context(
    defaults: Option<&serde_json::Map<String, Value>>,
    case: Option<&Value>,
) -> Option<Value> {
    match (defaults, case) {
        (None, case) => case.cloned(),
        (Some(defaults), None) => Some(Value::Object(defaults.clone())),
        (Some(defaults), Some(Value::Object(own))) => {
            let mut merged = defaults.clone();
            merged.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
            Some(Value::Object(merged))
        }
        (Some(_), Some(other)) => Some(other.clone()),
    }
}

/// Decides one case and fills in its outcome.
async fn decide(
    engine: &crate::engine::Engine,
    case: &Case,
    context: Option<&Value>,
    options: Options,
    result: &mut CaseResult,
) {
    let (Some(principal), Some(resource)) = (split_uid(&case.principal), split_uid(&case.resource))
    else {
        result.failure =
            Some("    `principal` and `resource` take `type:id` or `Type::\"id\"`\n".to_owned());
        return;
    };
    if let Some(unknown) = hollow::unknown_names(engine, case, principal, resource, context) {
        result.failure = Some(unknown);
        return;
    }
    let request = DecisionRequest {
        principal: EntityRef {
            type_name: principal.0,
            id: principal.1,
            properties: None,
        },
        action: &case.action,
        resource: EntityRef {
            type_name: resource.0,
            id: resource.1,
            properties: case.resource_properties.as_ref(),
        },
        context,
        entities: crate::engine::RequestEntities::None,
        request_id: None,
    };
    match engine.decide(&request).await {
        Ok(decision) => {
            let got_reasons: Vec<&str> = decision.reasons().collect();
            let got_errors: Vec<&str> = decision.errors().iter().map(|e| e.code()).collect();
            result.failure = compare(
                case,
                decision.allowed(),
                &got_reasons,
                &got_errors,
                &decision.summary().to_string(),
            )
            .or_else(|| hollow::erred(case, &decision));
            result.determined = got_reasons.iter().map(|r| (*r).to_owned()).collect();
        }
        Err(error) => {
            result.failure = Some(format!(
                "    refused as malformed input: {}: {}\n",
                error.code, error.message
            ));
        }
    }
    if options.coverage
        && let Some(traces) = engine.trace(&request).await
    {
        result.evaluated = traces
            .into_iter()
            .filter(|trace| trace.scope_matched)
            .map(|trace| trace.policy)
            .collect();
    }
}

/// The 1-based line of each item of the top-level `cases:` sequence, in
/// order: the lines at the first item's indentation that start a `- `
/// item. (A suite written in flow style gets the line of `cases:`.)
fn case_lines(text: &str) -> Vec<usize> {
    let mut lines = text.lines().enumerate();
    let Some((cases_at, _)) = lines.by_ref().find(|(_, line)| line.starts_with("cases:")) else {
        return Vec::new();
    };
    let mut indent = None;
    let mut found = Vec::new();
    for (number, line) in lines {
        let trimmed = line.trim_start();
        let depth = line.len() - trimmed.len();
        if !trimmed.is_empty()
            && !trimmed.starts_with('#')
            && depth == 0
            && !trimmed.starts_with('-')
        {
            break; // the next top-level key
        }
        let item = trimmed.starts_with("- ") || trimmed == "-";
        if item && *indent.get_or_insert(depth) == depth {
            found.push(number + 1);
        }
    }
    if found.is_empty() {
        found.push(cases_at + 1);
    }
    found
}

fn compare(
    case: &Case,
    allowed: bool,
    reasons: &[&str],
    errors: &[&str],
    summary: &str,
) -> Option<String> {
    let decision = if allowed { Expect::Allow } else { Expect::Deny };
    let mut diff = String::new();
    if decision != case.expect {
        let _ = writeln!(
            diff,
            "    decision: expected {:?}, got {decision:?} ({summary})",
            case.expect
        );
    }
    if let Some(expected) = case.reasons.as_ref().filter(|e| !same_set(e, reasons)) {
        let _ = writeln!(diff, "    reasons:  expected {expected:?}, got {reasons:?}");
    }
    if let Some(expected) = case.errors.as_ref().filter(|e| !same_set(e, errors)) {
        let _ = writeln!(diff, "    errors:   expected {expected:?}, got {errors:?}");
    }
    (!diff.is_empty()).then_some(diff)
}

fn same_set(expected: &[String], got: &[&str]) -> bool {
    let mut expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    let mut got = got.to_vec();
    expected.sort_unstable();
    got.sort_unstable();
    expected == got
}
