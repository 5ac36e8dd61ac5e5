//! Recording a decision: its line in the decision log.

use super::decision::{Decision, DecisionRequest, EntityRef};
use super::uid_of;
use crate::policy::PolicySnapshot;
use crate::telemetry::{DecisionLog, LogEntry, LoggedError, Text};

/// An entity as the log names it: canonical (`Brokerage::User::"erin"`,
/// exactly as Cedar prints a uid, whatever the caller's spelling) when its
/// type resolves, else as the caller wrote it. Written into the line, not
/// built apart.
struct Canonical<'a> {
    uid: Option<cedar_policy::EntityUid>,
    type_name: &'a str,
    id: &'a str,
}

impl std::fmt::Display for Canonical<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.uid {
            Some(uid) => write!(
                f,
                "{}::\"{}\"",
                uid.type_name(),
                uid.id().unescaped().escape_debug()
            ),
            None => write!(f, "{}::{:?}", self.type_name, self.id),
        }
    }
}

/// Writes one decision's line: canonical uids (`Brokerage::User::"erin"`,
/// whatever the caller's spelling), the action id, a request id made here
/// when the caller sent none.
pub(super) fn log_decision<'r>(
    log: &DecisionLog,
    snapshot: &PolicySnapshot,
    request: &DecisionRequest<'r>,
    decision: &Decision,
    took: std::time::Duration,
) {
    let canonical = |entity: EntityRef<'r>| Canonical {
        uid: uid_of(snapshot, entity.type_name, entity.id),
        type_name: entity.type_name,
        id: entity.id,
    };
    let (principal, resource) = (canonical(request.principal), canonical(request.resource));
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
        principal: Text(&principal),
        action,
        resource: Text(&resource),
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
