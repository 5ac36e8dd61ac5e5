//! `mandate verify`: proofs of a pack's invariants for every well-typed
//! request and every entity store, by Cedar's symbolic compiler
//! (`cedar-policy-symcc`) and the cvc5 SMT solver, not samples.
//!
//! An invariant names a situation the pack must never allow, as a Cedar
//! `permit` policy that matches it; it holds when no request is allowed by
//! both the pack and that policy (SymCC's disjointness), checked for each
//! request type (principal, action, resource) the invariant's action scope
//! can match. Two checks are built in: no policy of the pack can error on a
//! well-typed request, and every `forbid` can match some request (no dead
//! rule). A violation comes with a counterexample (a request and entities)
//! that Cedar's authorizer re-decides to confirm.
//!
//! Mandate denies on any evaluation error where Cedar skips the policy, so
//! Mandate allows no more than Cedar: a "never allowed" proof made under
//! Cedar's semantics holds for Mandate as it is.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use cedar_policy::{
    ActionConstraint, Authorizer, Effect, Entities, Policy, PolicySet, RequestEnv, Schema,
};
use cedar_policy_symcc::solver::LocalSolver;
use cedar_policy_symcc::{CedarSymCompiler, CompiledPolicy, CompiledPolicySet, Env};
use serde::{Deserialize, Serialize};

use crate::engine::judge;

/// The invariants file: built-in checks and the named invariants.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invariants {
    /// prove that no policy of the pack can error on a well-typed request
    #[serde(default = "yes")]
    pub never_errors: bool,
    /// prove that every `forbid` of the pack matches some request
    #[serde(default = "yes")]
    pub forbids_reachable: bool,
    /// the named invariants
    #[serde(default, rename = "invariant")]
    pub invariants: Vec<Invariant>,
}

fn yes() -> bool {
    true
}

/// One invariant: a situation the pack never allows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invariant {
    /// a stable name
    pub id: String,
    /// the rule of `domain.md` it guards
    pub rule: String,
    /// what it says, for a person
    pub says: String,
    /// a Cedar `permit` policy matching the requests the pack must never
    /// allow
    pub never: String,
}

/// How one check ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// holds for every request of every request type checked
    Proved,
    /// a counterexample exists
    Violated,
    /// the solver gave up (time limit)
    Unknown,
}

/// A counterexample: what was allowed, and whether Cedar's authorizer
/// agrees when it decides it.
#[derive(Debug, Clone, Serialize)]
pub struct Counterexample {
    /// the principal, Cedar's uid
    pub principal: String,
    /// the action, Cedar's uid
    pub action: String,
    /// the resource, Cedar's uid
    pub resource: String,
    /// the context, as Cedar JSON
    pub context: serde_json::Value,
    /// the entities, as Cedar JSON
    pub entities: serde_json::Value,
    /// Cedar's authorizer allows it over the pack (it should deny)
    pub confirmed: bool,
    /// the policy that errors, for a `never_errors` counterexample
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// the invariant's id, or `never-errors`, `forbid-reachable:<id>`
    pub id: String,
    /// the rule it guards
    pub rule: String,
    /// what it says
    pub says: String,
    /// how it ended
    pub outcome: Outcome,
    /// request types checked
    pub request_types: usize,
    /// time taken
    pub millis: u128,
    /// for a violation
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counterexample: Option<Counterexample>,
    /// why the solver could not answer, for `unknown`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Why verification could not run: a usage error, not a result.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The invariants file cannot be read or parsed.
    #[error("{path}: {message}")]
    Invariants {
        /// the file
        path: PathBuf,
        /// what is wrong
        message: String,
    },
    /// An invariant's policy is not Cedar, not a permit, or not valid for
    /// the schema.
    #[error("invariant `{id}`: {message}")]
    BadInvariant {
        /// the invariant
        id: String,
        /// what is wrong
        message: String,
    },
    /// No solver: verification cannot pass silently.
    #[error(
        "cannot start the cvc5 SMT solver ({0}); install it (Debian: `apt-get install cvc5`) or set `CVC5` to its path"
    )]
    NoSolver(String),
    /// The pack uses a feature symbolic analysis does not cover.
    #[error("the pack cannot be analysed symbolically: {0}")]
    Unsupported(String),
}

impl Invariants {
    /// Reads an invariants file.
    ///
    /// # Errors
    /// An unreadable or malformed file.
    pub fn read(path: &Path) -> Result<Self, VerifyError> {
        let text = crate::support::embedded::read_to_string(path).map_err(|e| {
            VerifyError::Invariants {
                path: path.to_owned(),
                message: e.to_string(),
            }
        })?;
        toml::from_str(&text).map_err(|e| VerifyError::Invariants {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }
}

/// The solver for one check: cvc5 with a per-query time limit, so one
/// hard query answers `unknown` rather than stopping the run.
fn solver(per_query: Duration) -> Result<CedarSymCompiler<LocalSolver>, VerifyError> {
    let limit = format!("--tlimit-per={}", per_query.as_millis());
    let solver = LocalSolver::cvc5_with_args([limit.as_str()])
        .map_err(|e| VerifyError::NoSolver(e.to_string()))?;
    CedarSymCompiler::new(solver).map_err(|e| VerifyError::NoSolver(e.to_string()))
}

/// Checks that cvc5 starts and answers, before any proof is attempted.
///
/// # Errors
/// [`VerifyError::NoSolver`].
pub async fn solver_available() -> Result<(), VerifyError> {
    let path = std::env::var("CVC5").unwrap_or_else(|_| "cvc5".to_owned());
    let output = tokio::process::Command::new(&path)
        .arg("--version")
        .output()
        .await
        .map_err(|e| VerifyError::NoSolver(format!("`{path}`: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(VerifyError::NoSolver(format!("`{path} --version` failed")))
    }
}

/// Proves every check of `invariants` over `policies` and `schema`.
///
/// # Errors
/// A usage error: a bad invariant, no solver, a pack SymCC cannot take.
pub async fn verify(
    policies: &PolicySet,
    schema: &Schema,
    invariants: &Invariants,
    per_query: Duration,
) -> Result<Vec<Report>, VerifyError> {
    solver_available().await?;
    let envs: Vec<RequestEnv> = schema.request_envs().collect();
    let mut compiled = Vec::with_capacity(envs.len());
    for env in &envs {
        let pack = CompiledPolicySet::compile(policies, env, schema)
            .map_err(|e| VerifyError::Unsupported(e.to_string()))?;
        compiled.push(pack);
    }
    let mut reports = Vec::new();
    if invariants.never_errors {
        reports.push(never_errors(policies, schema, &envs, per_query).await?);
    }
    if invariants.forbids_reachable {
        for policy in policies.policies().filter(|p| p.effect() == Effect::Forbid) {
            reports.push(reachable(policy, schema, &envs, per_query).await?);
        }
    }
    for invariant in &invariants.invariants {
        reports.push(never(invariant, policies, schema, &envs, &compiled, per_query).await?);
    }
    Ok(reports)
}

/// The request types a policy's action scope can match (`action in` a
/// group counts the group's members, through the schema's hierarchy).
fn in_scope<'e>(
    policy: &Policy,
    schema: &Schema,
    envs: &'e [RequestEnv],
) -> Vec<(usize, &'e RequestEnv)> {
    let actions = schema.action_entities().ok();
    let within = |action: &cedar_policy::EntityUid, groups: &[cedar_policy::EntityUid]| {
        groups.contains(action)
            || actions
                .as_ref()
                .and_then(|actions| actions.ancestors(action))
                .is_some_and(|mut ancestors| ancestors.any(|a| groups.contains(a)))
    };
    envs.iter()
        .enumerate()
        .filter(|(_, env)| match policy.action_constraint() {
            ActionConstraint::Any => true,
            ActionConstraint::Eq(action) => &action == env.action(),
            ActionConstraint::In(groups) => within(env.action(), &groups),
        })
        .collect()
}

async fn never(
    invariant: &Invariant,
    policies: &PolicySet,
    schema: &Schema,
    envs: &[RequestEnv],
    compiled: &[CompiledPolicySet],
    per_query: Duration,
) -> Result<Report, VerifyError> {
    let started = Instant::now();
    let bad = |message: String| VerifyError::BadInvariant {
        id: invariant.id.clone(),
        message,
    };
    let policy = Policy::from_str(&invariant.never).map_err(|e| bad(e.to_string()))?;
    if policy.effect() != Effect::Permit {
        return Err(bad(
            "`never` is a `permit` policy matching what the pack must never allow".to_owned(),
        ));
    }
    let scoped = in_scope(&policy, schema, envs);
    if scoped.is_empty() {
        return Err(bad(
            "its action scope matches no action of the schema".to_owned()
        ));
    }
    let mut report = Report {
        id: invariant.id.clone(),
        rule: invariant.rule.clone(),
        says: invariant.says.clone(),
        outcome: Outcome::Proved,
        request_types: scoped.len(),
        millis: 0,
        counterexample: None,
        reason: None,
    };
    let mut symcc = solver(per_query)?;
    for (index, env) in scoped {
        let Some(pack) = compiled.get(index) else {
            continue;
        };
        let situation = CompiledPolicy::compile(&policy, env, schema)
            .map_err(|e| bad(format!("for {}: {e}", describe_env(env))))?
            .into_compiled_policyset();
        match symcc
            .check_disjoint_with_counterexample_opt(pack, &situation)
            .await
        {
            Ok(None) => {}
            Ok(Some(found)) => {
                report.outcome = Outcome::Violated;
                let mut example = counterexample(&found, policies, None);
                readable(&mut example, &[policies], schema);
                report.counterexample = Some(example);
                break;
            }
            Err(error) => {
                report.outcome = Outcome::Unknown;
                report.reason = Some(format!("{}: {error}", describe_env(env)));
            }
        }
    }
    report.millis = started.elapsed().as_millis();
    Ok(report)
}

async fn never_errors(
    policies: &PolicySet,
    schema: &Schema,
    envs: &[RequestEnv],
    per_query: Duration,
) -> Result<Report, VerifyError> {
    let started = Instant::now();
    let mut report = Report {
        id: "never-errors".to_owned(),
        rule: "fail closed".to_owned(),
        says: "no policy of the pack can error on a well-typed request (so Mandate's deny-on-error never changes an answer)".to_owned(),
        outcome: Outcome::Proved,
        request_types: envs.len(),
        millis: 0,
        counterexample: None,
        reason: None,
    };
    let mut symcc = solver(per_query)?;
    'all: for env in envs {
        for policy in policies.policies() {
            let compiled = CompiledPolicy::compile(policy, env, schema)
                .map_err(|e| VerifyError::Unsupported(format!("{}: {e}", policy.id())))?;
            match symcc
                .check_never_errors_with_counterexample_opt(&compiled)
                .await
            {
                Ok(None) => {}
                Ok(Some(found)) => {
                    report.outcome = Outcome::Violated;
                    let mut example =
                        counterexample(&found, policies, Some(policy.id().to_string()));
                    readable(&mut example, &[policies], schema);
                    report.counterexample = Some(example);
                    break 'all;
                }
                Err(error) => {
                    report.outcome = Outcome::Unknown;
                    report.reason = Some(format!("{} {}: {error}", policy.id(), describe_env(env)));
                }
            }
        }
    }
    report.millis = started.elapsed().as_millis();
    Ok(report)
}

async fn reachable(
    forbid: &Policy,
    schema: &Schema,
    envs: &[RequestEnv],
    per_query: Duration,
) -> Result<Report, VerifyError> {
    let started = Instant::now();
    let scoped = in_scope(forbid, schema, envs);
    let mut report = Report {
        id: format!("forbid-reachable:{}", forbid.id()),
        rule: forbid.id().to_string(),
        says: format!(
            "forbid `{}` matches some request (it is no dead rule)",
            forbid.id()
        ),
        outcome: Outcome::Violated,
        request_types: scoped.len(),
        millis: 0,
        counterexample: None,
        reason: None,
    };
    let mut symcc = solver(per_query)?;
    for (_, env) in scoped {
        let compiled = CompiledPolicy::compile(forbid, env, schema)
            .map_err(|e| VerifyError::Unsupported(format!("{}: {e}", forbid.id())))?;
        match symcc.check_never_matches_opt(&compiled).await {
            Ok(true) => {}
            Ok(false) => {
                report.outcome = Outcome::Proved;
                report.reason = None;
                break;
            }
            Err(error) => {
                report.outcome = Outcome::Unknown;
                report.reason = Some(format!("{}: {error}", describe_env(env)));
            }
        }
    }
    if report.outcome == Outcome::Violated {
        report.reason = Some("it matches no well-typed request: a dead rule".to_owned());
    }
    report.millis = started.elapsed().as_millis();
    Ok(report)
}

fn describe_env(env: &RequestEnv) -> String {
    format!("{} {} {}", env.principal(), env.action(), env.resource())
}

/// How a candidate pack compares with a baseline for one request type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// the same decision for every request and store
    Equivalent,
    /// every request the candidate allows, the baseline allows too: it
    /// only removes permissions
    FewerAllows,
    /// some request the baseline denies, the candidate allows
    MoreAllows,
    /// the solver gave up
    Unknown,
}

/// One request type's comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// principal type, action, resource type
    pub request_type: String,
    /// how the candidate differs
    pub change: Change,
    /// a request allowed by one pack and denied by the other: granted by
    /// the candidate for `more_allows`, taken away for `fewer_allows`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counterexample: Option<Counterexample>,
    /// why the solver could not answer, for `unknown`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// time taken
    pub millis: u128,
}

/// Compares `candidate` with `baseline` for every request type of
/// `schema`: equivalent, fewer allows, or more allows (each with a
/// request that shows it, re-decided by Cedar's authorizer over both).
///
/// The solver compares under Cedar's semantics, where an erroring policy
/// is skipped; Mandate denies on any error. The two agree only while no
/// policy can error, so each request type first has never-errors proved
/// for both packs; where either can error the comparison is `unknown`
/// (never `equivalent`), unless a grant survives Mandate's semantics.
///
/// # Errors
/// No solver, or a pack SymCC cannot take.
pub async fn compare(
    candidate: &PolicySet,
    baseline: &PolicySet,
    schema: &Schema,
    per_query: Duration,
) -> Result<Vec<Comparison>, VerifyError> {
    solver_available().await?;
    let mut symcc = solver(per_query)?;
    let mut out = Vec::new();
    for env in schema.request_envs() {
        let started = Instant::now();
        let compile = |set: &PolicySet| {
            CompiledPolicySet::compile(set, &env, schema)
                .map_err(|e| VerifyError::Unsupported(e.to_string()))
        };
        let (new, old) = (compile(candidate)?, compile(baseline)?);
        let mut comparison = Comparison {
            request_type: describe_env(&env),
            change: Change::Equivalent,
            counterexample: None,
            reason: None,
            millis: 0,
        };
        // Allowed by the candidate, denied by the baseline: granted.
        match symcc
            .check_implies_with_counterexample_opt(&new, &old)
            .await
        {
            Ok(Some(found)) => {
                comparison.change = Change::MoreAllows;
                comparison.counterexample = Some(difference(&found, candidate, baseline, schema));
            }
            Ok(None) => {
                // Allowed by the baseline, denied by the candidate: taken away.
                match symcc
                    .check_implies_with_counterexample_opt(&old, &new)
                    .await
                {
                    Ok(Some(found)) => {
                        comparison.change = Change::FewerAllows;
                        comparison.counterexample =
                            Some(difference(&found, baseline, candidate, schema));
                    }
                    Ok(None) => {}
                    Err(error) => {
                        comparison.change = Change::Unknown;
                        comparison.reason = Some(error.to_string());
                    }
                }
            }
            Err(error) => {
                comparison.change = Change::Unknown;
                comparison.reason = Some(error.to_string());
            }
        }
        let erring = match first_erring(&mut symcc, candidate, schema, &env).await? {
            Ok(None) => first_erring(&mut symcc, baseline, schema, &env)
                .await?
                .map(|erring| erring.map(|id| format!("policy `{id}` of the baseline"))),
            other => other.map(|erring| erring.map(|id| format!("policy `{id}` of the candidate"))),
        };
        // A grant Cedar's authorizer confirms with no error anywhere is a
        // grant under Mandate's semantics too: the candidate allows with no
        // error, and the baseline denies. Anything else is unsettled.
        let grant_stands = comparison.change == Change::MoreAllows
            && comparison
                .counterexample
                .as_ref()
                .is_some_and(|example| example.confirmed);
        match erring {
            Ok(Some(which)) if !grant_stands => {
                comparison.change = Change::Unknown;
                comparison.counterexample = None;
                comparison.reason = Some(format!(
                    "{which} can error on this request type: Cedar skips an erroring policy and Mandate denies, so the packs' answers cannot be compared exactly (guard it so `mandate verify` proves never-errors)"
                ));
            }
            Err(reason) if !grant_stands => {
                comparison.change = Change::Unknown;
                comparison.counterexample = None;
                comparison.reason = Some(format!("never-errors unsettled: {reason}"));
            }
            _ => {}
        }
        comparison.millis = started.elapsed().as_millis();
        out.push(comparison);
    }
    Ok(out)
}

/// The first policy of `policies` that can error on a request of `env`
/// (`Ok(Some)`), none (`Ok(None)`), or why the solver could not tell
/// (`Err`).
async fn first_erring(
    symcc: &mut CedarSymCompiler<LocalSolver>,
    policies: &PolicySet,
    schema: &Schema,
    env: &RequestEnv,
) -> Result<Result<Option<String>, String>, VerifyError> {
    for policy in policies.policies() {
        if in_scope(policy, schema, std::slice::from_ref(env)).is_empty() {
            continue;
        }
        let compiled = CompiledPolicy::compile(policy, env, schema)
            .map_err(|e| VerifyError::Unsupported(format!("{}: {e}", policy.id())))?;
        match symcc.check_never_errors_opt(&compiled).await {
            Ok(true) => {}
            Ok(false) => return Ok(Ok(Some(policy.id().to_string()))),
            Err(error) => return Ok(Err(format!("{}: {error}", policy.id()))),
        }
    }
    Ok(Ok(None))
}

/// A request `allows` allows and `denies` denies, confirmed by Cedar's
/// authorizer over both (the allow with no error: Mandate's semantics).
fn difference(
    found: &Env,
    allows: &PolicySet,
    denies: &PolicySet,
    schema: &Schema,
) -> Counterexample {
    let mut example = counterexample(found, allows, None);
    let other = judge::by_cedar(&Authorizer::new(), &found.request, denies, &found.entities);
    example.confirmed = example.confirmed && !other.allowed;
    readable(&mut example, &[allows, denies], schema);
    example
}

/// A counterexample as JSON, re-decided by Cedar's authorizer over the pack.
fn counterexample(found: &Env, policies: &PolicySet, policy: Option<String>) -> Counterexample {
    let request = &found.request;
    let uid =
        |uid: Option<&cedar_policy::EntityUid>| uid.map(ToString::to_string).unwrap_or_default();
    let context = request
        .context()
        .and_then(|context| context.to_json_value().ok())
        .unwrap_or(serde_json::Value::Null);
    let action_type = request.action().map(|a| a.type_name().to_string());
    let mut entities = entities_json(&found.entities);
    // The schema declares the actions: the example shows only the entities.
    if let serde_json::Value::Array(items) = &mut entities {
        items.retain(|entity| {
            entity.pointer("/uid/type").and_then(|t| t.as_str()) != action_type.as_deref()
        });
    }
    let judged = judge::by_cedar(&Authorizer::new(), request, policies, &found.entities);
    let confirmed = match policy {
        // an erroring policy: confirmed when Cedar reports its error
        Some(_) => !judged.errors.is_empty(),
        // an allow, as Mandate decides it: no policy erred
        None => judged.allowed,
    };
    Counterexample {
        principal: uid(request.principal()),
        action: uid(request.action()),
        resource: uid(request.resource()),
        context,
        entities,
        confirmed,
        policy,
    }
}

fn entities_json(entities: &Entities) -> serde_json::Value {
    let mut out = Vec::new();
    if entities.write_to_json(&mut out).is_err() {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(&out).unwrap_or(serde_json::Value::Null)
}

/// Gives the solver's ids (`""`, `"A"`, `"B"`) readable names, one per
/// entity (`user-1`, `account-1`, …), everywhere they appear — kept only
/// when Cedar decides the renamed example exactly as the original over
/// every pack in `over` (a policy may name an id).
fn readable(example: &mut Counterexample, over: &[&PolicySet], schema: &Schema) {
    let Ok(action) = cedar_policy::EntityUid::from_str(&example.action) else {
        return;
    };
    let action_type = action.type_name().to_string();
    let mut names: std::collections::HashMap<(String, String), String> = Default::default();
    let mut counts: std::collections::HashMap<String, usize> = Default::default();
    let mut name = |ty: &str, id: &str| {
        if ty == action_type {
            return;
        }
        let key = (ty.to_owned(), id.to_owned());
        if names.contains_key(&key) {
            return;
        }
        let short = ty.rsplit("::").next().unwrap_or(ty).to_lowercase();
        let count = counts.entry(short.clone()).or_default();
        *count += 1;
        names.insert(key, format!("{short}-{count}"));
    };
    for uid in [&example.principal, &example.resource] {
        if let Ok(uid) = cedar_policy::EntityUid::from_str(uid) {
            name(&uid.type_name().to_string(), uid.id().unescaped());
        }
    }
    let mut found = Vec::new();
    crate::entities::referenced_uids(&example.entities, &mut found);
    crate::entities::referenced_uids(&example.context, &mut found);
    for (ty, id) in found {
        name(ty, id);
    }
    let rename_uid = |written: &str| -> Option<String> {
        let uid = cedar_policy::EntityUid::from_str(written).ok()?;
        let ty = uid.type_name().to_string();
        let new = names.get(&(ty, uid.id().unescaped().to_owned()))?;
        Some(
            cedar_policy::EntityUid::from_type_name_and_id(
                uid.type_name().clone(),
                cedar_policy::EntityId::new(new),
            )
            .to_string(),
        )
    };
    let mut renamed = example.clone();
    if let Some(principal) = rename_uid(&example.principal) {
        renamed.principal = principal;
    }
    if let Some(resource) = rename_uid(&example.resource) {
        renamed.resource = resource;
    }
    rename_in(&mut renamed.entities, &names);
    rename_in(&mut renamed.context, &names);
    let same = over.iter().all(|policies| {
        let before = redecide(example, policies, schema);
        before.is_some() && before == redecide(&renamed, policies, schema)
    });
    if same {
        *example = renamed;
    }
}

fn rename_in(
    value: &mut serde_json::Value,
    names: &std::collections::HashMap<(String, String), String>,
) {
    match value {
        serde_json::Value::Object(map) => {
            let key = match (map.get("type"), map.get("id")) {
                (Some(serde_json::Value::String(ty)), Some(serde_json::Value::String(id)))
                    if map.len() == 2 =>
                {
                    Some((ty.clone(), id.clone()))
                }
                _ => None,
            };
            if let Some(key) = key {
                if let Some(new) = names.get(&key) {
                    map.insert("id".to_owned(), serde_json::Value::String(new.clone()));
                }
                return;
            }
            map.values_mut().for_each(|v| rename_in(v, names));
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| rename_in(v, names)),
        _ => {}
    }
}

/// Mandate's answer over `policies` for the example as written (JSON):
/// the decision, its reasons and how many policies erred (their messages
/// name the entities); `None` when it does not parse.
fn redecide(
    example: &Counterexample,
    policies: &PolicySet,
    schema: &Schema,
) -> Option<(bool, Vec<cedar_policy::PolicyId>, usize)> {
    let uid = |text: &str| cedar_policy::EntityUid::from_str(text).ok();
    let (principal, action, resource) = (
        uid(&example.principal)?,
        uid(&example.action)?,
        uid(&example.resource)?,
    );
    let context = if example.context.is_null() {
        cedar_policy::Context::empty()
    } else {
        cedar_policy::Context::from_json_value(example.context.clone(), Some((schema, &action)))
            .ok()?
    };
    let entities = Entities::from_json_value(example.entities.clone(), Some(schema)).ok()?;
    let request =
        cedar_policy::Request::new(principal, action, resource, context, Some(schema)).ok()?;
    let judged = judge::by_cedar(&Authorizer::new(), &request, policies, &entities);
    Some((judged.allowed, judged.reasons, judged.errors.len()))
}

/// The pack a counterexample was found in, as the flags that load it.
#[derive(Debug, Clone, Copy)]
pub struct Pack<'a> {
    /// the policies directory
    pub policies: &'a Path,
    /// the schema
    pub schema: &'a Path,
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The counterexample as a `mandate check` command over `pack`, its
/// entities written to `entities_file`: pasted, it gives `pack`'s answer.
pub fn check_command(example: &Counterexample, entities_file: &Path, pack: Pack<'_>) -> String {
    let mut command = format!(
        "mandate check --policies {} --schema {} --entities {} --principal {} --action {} --resource {}",
        quote(&pack.policies.display().to_string()),
        quote(&pack.schema.display().to_string()),
        quote(&entities_file.display().to_string()),
        quote(&example.principal),
        quote(action_id(&example.action)),
        quote(&example.resource),
    );
    if !example.context.is_null() {
        command.push_str(" --context ");
        command.push_str(&quote(&example.context.to_string()));
    }
    command
}

/// The `mandate test` command that runs a suite file over `pack`.
pub fn test_command(suite_file: &Path, pack: Pack<'_>) -> String {
    format!(
        "mandate test --policies {} --schema {} {}",
        quote(&pack.policies.display().to_string()),
        quote(&pack.schema.display().to_string()),
        quote(&suite_file.display().to_string()),
    )
}

/// A self-contained `mandate test` suite (its entities inline) with the
/// counterexample as its one case, expecting `expect` (`allow`/`deny`).
pub fn test_case(
    suite: &str,
    case: &str,
    rule: &str,
    example: &Counterexample,
    expect: &str,
) -> String {
    let yaml_string = |text: &str| serde_json::Value::String(text.to_owned()).to_string();
    let mut suite = format!(
        "name: {}\nentities:{}\ncases:\n  - name: {}\n    rule: {}\n    principal: {}\n    action: {}\n    resource: {}\n",
        yaml_string(suite),
        entity_lines(&example.entities),
        yaml_string(case),
        yaml_string(rule),
        yaml_string(&example.principal),
        yaml_string(action_id(&example.action)),
        yaml_string(&example.resource),
    );
    if !example.context.is_null() {
        suite.push_str(&format!("    context: {}\n", example.context));
    }
    suite.push_str(&format!("    expect: {expect}\n"));
    suite
}

/// The entities as a YAML block sequence, one JSON entity per line.
fn entity_lines(entities: &serde_json::Value) -> String {
    match entities.as_array() {
        Some(items) if !items.is_empty() => items
            .iter()
            .map(|entity| format!("\n  - {entity}"))
            .collect(),
        _ => " []".to_owned(),
    }
}

/// `Brokerage::Action::"withdraw"` → `withdraw`.
fn action_id(action: &str) -> &str {
    action
        .rsplit_once("::")
        .map_or(action, |(_, id)| id.trim_matches('"'))
}
