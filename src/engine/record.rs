//! Recording a decision: its line in the decision log, with what a replay
//! needs (the canonical request, the versions, the entities read).

use std::collections::HashSet;
use std::fmt::Write as _;

use cedar_policy::{Entity, EntityUid};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::Slice;
use super::decision::{Decision, DecisionRequest, EntityRef};
use super::memo::{MemoKey, ReadEntities};
use crate::policy::{ActionPlan, PolicySnapshot};
use crate::telemetry::{
    DecisionLog, Hex128, LINE_VERSION, LineText, LogEntry, LoggedError, Text, display_escaped,
    mask_attributes,
};

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
        if plain(self.id) {
            f.write_str(self.id)?;
        } else {
            write!(f, "{}", self.id.escape_debug())?;
        }
        f.write_str("\"")
    }
}

impl LineText for Canonical<'_> {
    /// The common case without `Display`: a type and an id that neither
    /// Cedar nor JSON escapes are copied whole, the quotes escaped.
    fn write_escaped(&self, out: &mut Vec<u8>) {
        match self.printed {
            Some(printed) if plain(printed) && plain(self.id) => {
                out.extend_from_slice(printed.as_bytes());
                out.extend_from_slice(b"::\\\"");
                out.extend_from_slice(self.id.as_bytes());
                out.extend_from_slice(b"\\\"");
            }
            _ => display_escaped(out, self),
        }
    }
}

/// Whether `text` is written as it is, by Cedar's `escape_debug` and by
/// JSON alike: printable ASCII with no quote or backslash.
fn plain(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b'\''))
}

impl<'a> Canonical<'a> {
    /// The entity `type_name::"id"` as `snapshot` prints its type.
    fn new(snapshot: &'a PolicySnapshot, type_name: &'a str, id: &'a str) -> Self {
        Canonical {
            printed: snapshot
                .entity_type_printed(type_name)
                .map(|(_, printed)| printed),
            type_name,
            id,
        }
    }
}

/// `Namespace::Type::"id"` as a decision's line names it, for a line
/// written apart from a decision (a search's).
pub(crate) fn canonical_uid(snapshot: &PolicySnapshot, type_name: &str, id: &str) -> String {
    Canonical::new(snapshot, type_name, id).to_string()
}

/// Writes one decision's line: canonical uids (`Brokerage::User::"erin"`,
/// whatever the caller's spelling), the action id, a request id made here
/// when the caller sent none.
pub(super) fn log_decision<'r>(
    log: &DecisionLog,
    snapshot: &PolicySnapshot,
    request: &DecisionRequest<'r>,
    (decision, read): (&Decision, Option<&ReadEntities>),
    took: std::time::Duration,
) {
    let canonical = |entity: EntityRef<'r>| Canonical::new(snapshot, entity.type_name, entity.id);
    let (principal, resource) = (canonical(request.principal), canonical(request.resource));
    let (action, action_groups) = logged_action(log, snapshot, request.action);
    let made;
    let request_id = match request.request_id {
        Some(id) => id,
        None => {
            made = new_request_id();
            &made
        }
    };
    log.record(&LogEntry {
        v: LINE_VERSION,
        time: std::time::SystemTime::now(),
        request_id,
        id: Hex128::random(),
        trace_id: crate::telemetry::trace::current_or_random(),
        principal: Text(&principal),
        action,
        resource: Text(&resource),
        resource_parts: (resource.printed.unwrap_or(resource.type_name), resource.id),
        action_groups,
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
        schema_version: snapshot.schema_version(),
        entities_digest: read.map(|read| read.digest.as_str()),
        entities: captured(log, read),
        stale_data: decision.stale_data(),
        latency_us: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        context: request.context,
    });
}

/// The action as its line names it (its id, or as the caller wrote it
/// when unknown), and its groups when the log keeps lines by group.
fn logged_action<'a>(
    log: &DecisionLog,
    snapshot: &'a PolicySnapshot,
    action: &'a str,
) -> (&'a str, &'a [String]) {
    let action_uid = snapshot.action(action);
    let groups = action_uid
        .filter(|_| log.needs_action_groups())
        .and_then(|uid| snapshot.plan(uid))
        .map_or(&[][..], ActionPlan::groups);
    (
        action_uid.map_or(action, |uid| uid.id().unescaped()),
        groups,
    )
}

/// The entities a line captures: those the decision read, masked, when
/// the log captures them.
fn captured<'a>(log: &DecisionLog, read: Option<&'a ReadEntities>) -> Option<&'a RawValue> {
    // A decision stopped before reading any entity read none.
    static NONE_READ: std::sync::LazyLock<Option<Box<RawValue>>> =
        std::sync::LazyLock::new(|| RawValue::from_string("[]".to_owned()).ok());
    match read {
        Some(read) => read.captured.as_deref(),
        None => log.captures_entities().and(NONE_READ.as_deref()),
    }
}

/// The entities a decision read: the named ones and their ancestors (the
/// file store's, read in place), or the slice built for it less the action
/// entities; digested in a canonical form, and captured (masked) when the
/// log asks. Computed once per remembered slice, not per decision.
pub(super) fn read_entities(
    slice: &Slice,
    key: &MemoKey,
    plan: &ActionPlan,
    capture: Option<&[String]>,
) -> ReadEntities {
    let read: Vec<Entity> = match slice {
        Slice::Resident(resident, _) => {
            let mut read = Vec::new();
            resident.gather(key.named(), &mut read);
            read
        }
        Slice::Built(..) | Slice::Settled(..) => {
            let actions: HashSet<EntityUid> = plan.entities().iter().map(Entity::uid).collect();
            slice
                .entities()
                .iter()
                .filter(|entity| !actions.contains(&entity.uid()))
                .cloned()
                .collect()
        }
    };
    let mut json: Vec<Value> = read
        .iter()
        .filter_map(|entity| entity.to_json_value().ok())
        .map(canonical)
        .collect();
    json.sort_by_cached_key(|entity| entity.get("uid").map(ToString::to_string));
    let json = Value::Array(json);
    let hash = Sha256::digest(json.to_string().as_bytes());
    let mut digest = String::with_capacity(7 + 32);
    digest.push_str("sha256:");
    for byte in hash.iter().take(16) {
        let _ = write!(digest, "{byte:02x}");
    }
    let captured = capture.and_then(|mask| {
        let mut json = json;
        // Attributes only: a uid is never masked.
        if let Value::Array(entities) = &mut json {
            for attrs in entities.iter_mut().filter_map(|e| e.get_mut("attrs")) {
                mask_attributes(attrs, mask);
            }
        }
        serde_json::value::to_raw_value(&json).ok()
    });
    ReadEntities { digest, captured }
}

/// `value` with every object's keys sorted and every array (Cedar's sets,
/// an entity's parents) in order: the same data always digests the same,
/// whatever order Cedar's maps hand it in.
fn canonical(value: Value) -> Value {
    match value {
        Value::Object(object) => {
            let mut entries: Vec<(String, Value)> = object
                .into_iter()
                .map(|(key, inner)| (key, canonical(inner)))
                .collect();
            entries.sort_by(|(a, _), (b, _)| a.cmp(b));
            Value::Object(entries.into_iter().collect())
        }
        Value::Array(items) => {
            let mut items: Vec<Value> = items.into_iter().map(canonical).collect();
            items.sort_by_cached_key(ToString::to_string);
            Value::Array(items)
        }
        other => other,
    }
}

/// A request id for a request that came without one: 128 random bits as
/// 32 hex digits.
pub fn new_request_id() -> String {
    Hex128::random().to_string()
}

/// [`new_request_id`]'s 32 ASCII digits, made on the stack: the HTTP
/// listener's header value is made from them without a string between.
pub fn new_request_id_digits() -> [u8; 32] {
    Hex128::random().digits()
}

/// Whether a caller's request id may be used (answered and logged): at most
/// 128 bytes of `[A-Za-z0-9._:-]`. Anything else (60 KB, a quote, a copy of
/// another line's JSON) is replaced by [`new_request_id`] and never logged.
pub fn acceptable_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_id_is_short_and_plain_or_replaced() {
        for good in [
            "a",
            "req-1",
            "01J:trace.span_2",
            &"x".repeat(128),
            &new_request_id(),
        ] {
            assert!(acceptable_request_id(good), "{good}");
        }
        for bad in [
            "",
            &"x".repeat(129),
            "a b",
            "a\"b",
            "a\\b",
            "é",
            "a\nb",
            "a,b",
            "{\"x\":1}",
        ] {
            assert!(!acceptable_request_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_same_data_in_any_order_is_one_canonical_form() {
        let one = serde_json::json!({"uid": {"type": "T", "id": "a"},
            "parents": [{"type": "G", "id": "x"}, {"type": "G", "id": "y"}],
            "attrs": {"b": 1, "a": [3, 1, 2]}});
        let other = serde_json::json!({"attrs": {"a": [2, 3, 1], "b": 1},
            "parents": [{"id": "y", "type": "G"}, {"id": "x", "type": "G"}],
            "uid": {"id": "a", "type": "T"}});
        assert_eq!(
            canonical(one.clone()).to_string(),
            canonical(other).to_string()
        );
        let changed = serde_json::json!({"uid": {"type": "T", "id": "a"},
            "parents": [{"type": "G", "id": "x"}], "attrs": {"b": 1, "a": [3, 1, 2]}});
        assert_ne!(canonical(one).to_string(), canonical(changed).to_string());
    }

    #[test]
    fn captured_attributes_named_in_the_mask_are_hidden_at_any_depth() {
        let mut entities = serde_json::json!([{"uid": {"type": "T", "id": "a"},
            "attrs": {"iban": "DE00", "limits": {"iban": "FR00", "daily": 5}}}]);
        mask_attributes(&mut entities, &["iban".to_owned()]);
        assert!(!entities.to_string().contains("00\""), "{entities}");
        assert_eq!(entities[0]["attrs"]["limits"]["daily"], 5);
        assert_eq!(entities[0]["attrs"]["iban"], "***");
    }

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
            let mut escaped = b"\"".to_vec();
            ours.write_escaped(&mut escaped);
            escaped.push(b'"');
            assert_eq!(
                String::from_utf8(escaped).unwrap(),
                serde_json::to_string(&uid.to_string()).unwrap(),
                "{id:?}"
            );
        }
        let unknown = Canonical {
            printed: None,
            type_name: "Robot",
            id: "r2",
        };
        assert_eq!(unknown.to_string(), r#"Robot::"r2""#);
    }
}
