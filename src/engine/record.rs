//! Recording a decision: its line in the decision log.

use super::decision::{Decision, DecisionRequest, EntityRef};
use super::uid_of;
use crate::policy::PolicySnapshot;
use crate::telemetry::{DecisionLog, LogEntry, LoggedError};

/// Writes one decision's line: canonical uids (`Brokerage::User::"erin"`,
/// whatever the caller's spelling), the action id, a request id made here
/// when the caller sent none.
pub(super) fn log_decision(
    log: &DecisionLog,
    snapshot: &PolicySnapshot,
    request: &DecisionRequest<'_>,
    decision: &Decision,
    took: std::time::Duration,
) {
    let canonical = |entity: &EntityRef<'_>| {
        uid_of(snapshot, entity.type_name, entity.id).map_or_else(
            || format!("{}::{:?}", entity.type_name, entity.id),
            |uid| uid.to_string(),
        )
    };
    let (principal, resource) = (canonical(&request.principal), canonical(&request.resource));
    let action = snapshot
        .action(request.action)
        .map_or(request.action, |uid| uid.id().unescaped());
    let made;
    let request_id = match request.request_id {
        Some(id) => id,
        None => {
            made = new_request_id();
            &made
        }
    };
    log.record(&LogEntry {
        time: std::time::SystemTime::now(),
        request_id,
        principal: &principal,
        action,
        resource: &resource,
        decision: if decision.allowed() { "allow" } else { "deny" },
        reasons: decision.reasons().collect(),
        errors: decision
            .errors()
            .iter()
            .map(|e| LoggedError {
                code: e.code(),
                message: e.message(),
            })
            .collect(),
        policy_version: &decision.policy_version,
        stale_data: decision.stale_data(),
        latency_us: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        context: request.context,
    });
}

/// A request id for a request that came without one: 128 random bits as
/// 32 hex digits.
pub fn new_request_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}
