//! Shadow mode (`policy.shadow_dir`): a candidate pack decides every
//! recorded decision beside the live one, over the same request and the
//! same entities, on a task of its own after the live decision is made, so
//! the live answer never waits for it and never depends on it. Where the two
//! differ, the divergence is counted (`mandate_shadow_divergence_total`) and
//! written to the decision log.

use std::sync::Arc;

use cedar_policy::{Authorizer, Entities, EntityUid, Request};
use serde::Serialize;

use super::context::ReadContext;
use super::judge::{self, Judgement};
use super::memo::MemoKey;
use super::{Decision, Slice};
use crate::policy::{PolicySnapshot, PolicyStore};
use crate::telemetry::{DecisionLog, metrics};

/// A divergence, as logged: told from a decision's line by its `shadow`
/// field.
#[derive(Serialize)]
struct Divergence<'a> {
    #[serde(serialize_with = "crate::telemetry::decision_log::rfc3339")]
    time: std::time::SystemTime,
    request_id: Option<&'a str>,
    principal: String,
    action: String,
    resource: String,
    /// `allow_to_deny` or `deny_to_allow`: the live answer, then the
    /// candidate's
    shadow: &'static str,
    live_policy_version: &'a str,
    candidate_policy_version: &'a str,
    /// the candidate's determining policies
    candidate_reasons: Vec<String>,
}

/// Decides the live decision's request with the shadow pack on a task of
/// its own, and counts and logs a divergence. Outside a runtime (never, in
/// the server) nothing is decided.
pub(super) fn decide_beside(
    shadow: &Arc<PolicyStore>,
    log: &DecisionLog,
    (key, context, slice): (&MemoKey, &ReadContext<'_>, Slice),
    live: &Decision,
    request_id: Option<&str>,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let Some(request) = context
        .request(&key.principal, &key.action, &key.resource)
        .map(std::borrow::Cow::into_owned)
    else {
        return;
    };
    let (shadow, log, action) = (Arc::clone(shadow), log.clone(), key.action.clone());
    let live_allowed = live.allowed();
    let live_version = Arc::clone(&live.policy_version);
    let request_id = request_id.map(str::to_owned);
    runtime.spawn(async move {
        let candidate = shadow.current();
        let judged = judge_candidate(&candidate, &request, &action, slice.entities());
        let allowed = judged.as_ref().is_some_and(|judged| judged.allowed);
        metrics().shadow_decided();
        if allowed == live_allowed {
            return;
        }
        let direction = if live_allowed {
            "allow_to_deny"
        } else {
            "deny_to_allow"
        };
        metrics().shadow_divergence(direction);
        if log.enabled() {
            let reasons = judged
                .map(|judged| judged.reasons.iter().map(ToString::to_string).collect())
                .unwrap_or_default();
            log.record_line(&divergence(
                (&request, &action),
                direction,
                (&live_version, candidate.version()),
                reasons,
                request_id.as_deref(),
            ));
        }
    });
}

/// The candidate pack's judgement of `request`, as a live decision is
/// judged (any error a deny); `None` when it has no plan for `action`.
fn judge_candidate(
    candidate: &PolicySnapshot,
    request: &Request,
    action: &EntityUid,
    entities: &Entities,
) -> Option<Judgement> {
    candidate.plan(action).map(|plan| {
        judge::judge(
            &Authorizer::new(),
            request,
            (plan.policies(), plan.verdicts()),
            entities,
        )
    })
}

/// A divergence's line: the request's names, the live answer then the
/// candidate's (`shadow`), both versions, and the candidate's determining
/// policies.
fn divergence<'a>(
    (request, action): (&Request, &EntityUid),
    shadow: &'static str,
    (live_policy_version, candidate_policy_version): (&'a str, &'a str),
    candidate_reasons: Vec<String>,
    request_id: Option<&'a str>,
) -> Divergence<'a> {
    let uid = |uid: Option<&EntityUid>| uid.map(ToString::to_string).unwrap_or_default();
    Divergence {
        time: std::time::SystemTime::now(),
        request_id,
        principal: uid(request.principal()),
        action: action.id().unescaped().to_owned(),
        resource: uid(request.resource()),
        shadow,
        live_policy_version,
        candidate_policy_version,
        candidate_reasons,
    }
}
