//! Recording a decision: its line in the decision log.

use super::decision::{Decision, DecisionRequest, EntityRef};
use crate::policy::PolicySnapshot;
use crate::telemetry::{DecisionLog, LogEntry, LoggedError, Text};

/// An entity as the log names it: canonical (`Brokerage::User::"erin"`,
/// exactly as Cedar prints a uid, whatever the caller's spelling) when its
/// type resolves, else as the caller wrote it. Written into the line, not
/// built apart.
struct Canonical<'a> {
    /// the type as Cedar prints it, when it resolves
    printed: Option<&'a str>,
    type_name: &'a str,
    id: &'a str,
}

impl std::fmt::Display for Canonical<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(printed) = self.printed else {
            return write!(f, "{}::{:?}", self.type_name, self.id);
        };
        f.write_str(printed)?;
        f.write_str("::\"")?;
        // Cedar escapes the id as `str::escape_debug` does; most ids need
        // nothing escaped and are written whole.
        let plain = self
            .id
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b'\''));
        if plain {
            f.write_str(self.id)?;
        } else {
            write!(f, "{}", self.id.escape_debug())?;
        }
        f.write_str("\"")
    }
}

/// `Namespace::Type::"id"` as a decision's line names it, for a line
/// written apart from a decision (a search's).
pub(crate) fn canonical_uid(snapshot: &PolicySnapshot, type_name: &str, id: &str) -> String {
    Canonical {
        printed: snapshot
            .entity_type_printed(type_name)
            .map(|(_, printed)| printed),
        type_name,
        id,
    }
    .to_string()
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
        printed: snapshot
            .entity_type_printed(entity.type_name)
            .map(|(_, printed)| printed),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities_are_named_exactly_as_cedar_prints_them() {
        let snapshot = crate::policy::the_pack();
        for id in [
            "erin",
            "alice-personal",
            "a\"b",
            "back\\slash",
            "it's",
            "ünï",
            "x y",
            "tab\t",
            "",
        ] {
            let uid = cedar_policy::EntityUid::from_type_name_and_id(
                snapshot.entity_type("user").unwrap().clone(),
                cedar_policy::EntityId::new(id),
            );
            let ours = Canonical {
                printed: snapshot.entity_type_printed("User").map(|(_, p)| p),
                type_name: "User",
                id,
            };
            assert_eq!(ours.to_string(), uid.to_string(), "{id:?}");
        }
        let unknown = Canonical {
            printed: None,
            type_name: "Robot",
            id: "r2",
        };
        assert_eq!(unknown.to_string(), r#"Robot::"r2""#);
    }
}
