//! `mandate replay`: what a candidate pack would have decided on a recorded
//! decision log. Each decision line is decided again by the current pack
//! (the baseline: it must still reproduce the logged decision, or the line
//! cannot speak for the candidate) and by the candidate, over the entities
//! the line captured (`logged`) or the store's today (`live`). The log is
//! streamed a line at a time: memory stays constant whatever its length.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::str::FromStr;

use cedar_policy::EntityUid;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::app::{self, StartError};
use crate::config::{Config, StoreKind};
use crate::engine::{Decision, DecisionRequest, Engine, EntityRef, RequestEntities};
use crate::telemetry::LINE_VERSION;

/// The longest line read; a longer one is `malformed`, and skipped.
pub const MAX_LINE: u64 = 16 * 1024 * 1024;

/// Where a replayed decision's entities come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntitySource {
    /// the line's own (`log.capture_entities`): what the decision read
    Logged,
    /// the configured store's, as they are now
    Live,
}

/// What the exit code fails on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOn {
    /// a deny that would become an allow
    Escalation,
    /// any changed decision
    Any,
    /// any line that could not be replayed (a masked withdrawal, a line
    /// without its entities): what was not checked fails the gate
    Unreplayable,
    /// nothing: report only
    None,
}

/// Changed decisions of one action, or of all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    /// allowed in the log, denied by the candidate
    pub allow_to_deny: u64,
    /// denied in the log, allowed by the candidate: an escalation
    pub deny_to_allow: u64,
}

/// What a replay found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// decision lines read
    pub records: u64,
    /// other lines (a search's, a shadow divergence's), not decisions
    pub skipped: u64,
    /// decided again by both packs
    pub replayed: u64,
    /// the candidate decides as the log did
    pub unchanged: u64,
    /// the changes, over all actions
    #[serde(flatten)]
    pub changes: Changes,
    /// lines that could not be replayed, by cause
    pub unreplayable: BTreeMap<&'static str, u64>,
    /// the changes by action
    pub by_action: BTreeMap<String, Changes>,
    /// the changes by the candidate's deciding policies (`(no permit)` for
    /// a deny no forbid decided, `(error in ID)` for a policy that erred)
    pub by_policy: BTreeMap<String, u64>,
}

impl Summary {
    /// Whether any of `fail_on` makes this replay fail.
    pub fn fails(&self, fail_on: &[FailOn]) -> bool {
        fail_on.iter().any(|fail_on| match fail_on {
            FailOn::Escalation => self.changes.deny_to_allow > 0,
            FailOn::Any => self.changes.deny_to_allow + self.changes.allow_to_deny > 0,
            FailOn::Unreplayable => self.unreplayable.values().sum::<u64>() > 0,
            FailOn::None => false,
        })
    }

    fn unreplayable(&mut self, cause: &'static str) {
        *self.unreplayable.entry(cause).or_default() += 1;
    }
}

/// One changed decision, as its JSON line says it.
#[derive(Debug, Clone, Serialize)]
pub struct Changed {
    /// `allow_to_deny` or `deny_to_allow`
    pub change: &'static str,
    /// the logged line's time
    pub time: Option<String>,
    /// the logged line's request id
    pub request_id: Option<String>,
    /// canonical uid, as logged
    pub principal: String,
    /// the action id
    pub action: String,
    /// canonical uid
    pub resource: String,
    /// the candidate's determining policies
    pub candidate_reasons: Vec<String>,
    /// the codes of the candidate's errors (each a deny: fail closed)
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub candidate_errors: Vec<&'static str>,
    /// the baseline's (the logged decision's) determining policies
    pub baseline_reasons: Vec<String>,
}

/// A decision line, as much of it as a replay reads.
#[derive(Deserialize)]
struct Line {
    v: Option<u32>,
    search: Option<Value>,
    shadow: Option<Value>,
    time: Option<String>,
    request_id: Option<String>,
    principal: Option<String>,
    action: Option<String>,
    resource: Option<String>,
    decision: Option<String>,
    context: Option<Value>,
    entities: Option<Vec<Value>>,
}

/// The two packs, each with its own engine over the same entities.
pub struct Replayer {
    baseline: Engine,
    candidate: Engine,
    source: EntitySource,
}

impl Replayer {
    /// The baseline is `config`'s pack, the candidate the pack in
    /// `candidate_dir` over the same schema; with [`EntitySource::Logged`]
    /// neither has a store (each line brings its entities), else both read
    /// `config`'s.
    ///
    /// # Errors
    /// A pack, schema or store that cannot be loaded (with Cedar's
    /// diagnostics).
    pub fn new(
        config: &Config,
        candidate_dir: &Path,
        source: EntitySource,
    ) -> Result<Self, StartError> {
        let mut config = config.clone();
        config.policy.shadow_dir = None;
        if source == EntitySource::Logged {
            config.store.kind = StoreKind::None;
            config.entities.sources.clear();
        }
        let baseline = app::engine(&config)?;
        config.policy.dir = candidate_dir.to_owned();
        let candidate = app::engine(&config)?;
        Ok(Self {
            baseline,
            candidate,
            source,
        })
    }

    /// Replays every line of `log`, writing one JSON line to `out` per
    /// changed decision and counting into `summary`.
    ///
    /// # Errors
    /// The log cannot be read, or `out` written.
    pub async fn replay(
        &self,
        log: &mut impl BufRead,
        out: &mut impl Write,
        summary: &mut Summary,
    ) -> std::io::Result<()> {
        let mut buffer = Vec::new();
        loop {
            buffer.clear();
            let read = std::io::Read::take(&mut *log, MAX_LINE).read_until(b'\n', &mut buffer)?;
            if read == 0 {
                return Ok(());
            }
            if !buffer.ends_with(b"\n") && read as u64 == MAX_LINE {
                // Too long: the rest of it is skipped, a piece at a time.
                summary.records += 1;
                summary.unreplayable("malformed");
                skip_line(log)?;
                continue;
            }
            if buffer.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if let Some(changed) = self.replay_line(&buffer, summary).await {
                serde_json::to_writer(&mut *out, &changed)?;
                out.write_all(b"\n")?;
            }
        }
    }

    /// One line: skipped, unreplayable, unchanged or changed.
    async fn replay_line(&self, text: &[u8], summary: &mut Summary) -> Option<Changed> {
        let Ok(line) = serde_json::from_slice::<Line>(text) else {
            summary.records += 1;
            summary.unreplayable("malformed");
            return None;
        };
        if line.search.is_some() || line.shadow.is_some() {
            summary.skipped += 1;
            return None;
        }
        summary.records += 1;
        let cause = match line.v {
            None => Some("unversioned"),
            Some(v) if v > LINE_VERSION => Some("newer_version"),
            Some(_) => None,
        };
        if let Some(cause) = cause {
            summary.unreplayable(cause);
            return None;
        }
        let (Some(principal), Some(action), Some(resource), Some(logged)) = (
            &line.principal,
            &line.action,
            &line.resource,
            line.decision.as_deref(),
        ) else {
            summary.unreplayable("malformed");
            return None;
        };
        let (Ok(principal_uid), Ok(resource_uid), true) = (
            EntityUid::from_str(principal),
            EntityUid::from_str(resource),
            matches!(logged, "allow" | "deny"),
        ) else {
            summary.unreplayable("malformed");
            return None;
        };
        // A masked context value is gone for good; masked entities only
        // matter when they are what the line is replayed over.
        let masked = line.context.as_ref().is_some_and(holds_masked)
            || (self.source == EntitySource::Logged
                && line.entities.iter().flatten().any(holds_masked));
        if masked {
            summary.unreplayable("masked");
            return None;
        }
        let entities = match (self.source, &line.entities) {
            (EntitySource::Logged, Some(entities)) => RequestEntities::Json(entities),
            (EntitySource::Logged, None) => {
                summary.unreplayable("no_entities");
                return None;
            }
            (EntitySource::Live, _) => RequestEntities::None,
        };
        let (principal_type, resource_type) = (
            principal_uid.type_name().to_string(),
            resource_uid.type_name().to_string(),
        );
        let request = DecisionRequest {
            principal: EntityRef {
                type_name: &principal_type,
                id: principal_uid.id().unescaped(),
                properties: None,
            },
            action,
            resource: EntityRef {
                type_name: &resource_type,
                id: resource_uid.id().unescaped(),
                properties: None,
            },
            context: line.context.as_ref(),
            entities,
            request_id: None,
        };
        let Ok(baseline) = self.baseline.decide_unrecorded(&request).await else {
            summary.unreplayable("refused");
            return None;
        };
        if baseline
            .errors()
            .iter()
            .any(|error| error.code() == "entity_store_unavailable")
        {
            summary.unreplayable("store_unavailable");
            return None;
        }
        if baseline.allowed() != (logged == "allow") {
            summary.unreplayable("baseline_differs");
            return None;
        }
        let Ok(candidate) = self.candidate.decide_unrecorded(&request).await else {
            summary.unreplayable("refused");
            return None;
        };
        summary.replayed += 1;
        if candidate.allowed() == baseline.allowed() {
            summary.unchanged += 1;
            return None;
        }
        Some(changed(
            &line,
            (principal, action, resource),
            (&baseline, &candidate),
            summary,
        ))
    }
}

/// Counts a changed decision and says it as its line.
fn changed(
    line: &Line,
    (principal, action, resource): (&str, &str, &str),
    (baseline, candidate): (&Decision, &Decision),
    summary: &mut Summary,
) -> Changed {
    let escalation = candidate.allowed();
    let by_action = summary.by_action.entry(action.to_owned()).or_default();
    for changes in [&mut summary.changes, by_action] {
        if escalation {
            changes.deny_to_allow += 1;
        } else {
            changes.allow_to_deny += 1;
        }
    }
    let candidate_reasons: Vec<String> = candidate.reasons().map(str::to_owned).collect();
    let mut deciding: Vec<String> = candidate_reasons.clone();
    deciding.extend(
        candidate
            .errors()
            .iter()
            .map(|error| format!("(error in {})", error.policy().unwrap_or(error.code()))),
    );
    if deciding.is_empty() {
        deciding.push("(no permit)".to_owned());
    }
    for policy in deciding {
        *summary.by_policy.entry(policy).or_default() += 1;
    }
    Changed {
        change: if escalation {
            "deny_to_allow"
        } else {
            "allow_to_deny"
        },
        time: line.time.clone(),
        request_id: line.request_id.clone(),
        principal: principal.to_owned(),
        action: action.to_owned(),
        resource: resource.to_owned(),
        candidate_reasons,
        candidate_errors: candidate
            .errors()
            .iter()
            .map(|error| error.code())
            .collect(),
        baseline_reasons: baseline.reasons().map(str::to_owned).collect(),
    }
}

/// Whether a value holds one the log masked (`"***"`): the decision
/// cannot be made again without it.
fn holds_masked(value: &Value) -> bool {
    match value {
        Value::String(text) => text == "***",
        Value::Array(items) => items.iter().any(holds_masked),
        Value::Object(object) => object.values().any(holds_masked),
        _ => false,
    }
}

/// Reads past the end of the current line, a bounded piece at a time.
fn skip_line(log: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let buffer = log.fill_buf()?;
        if buffer.is_empty() {
            return Ok(());
        }
        match buffer.iter().position(|&b| b == b'\n') {
            Some(end) => {
                log.consume(end + 1);
                return Ok(());
            }
            None => {
                let all = buffer.len();
                log.consume(all);
            }
        }
    }
}
