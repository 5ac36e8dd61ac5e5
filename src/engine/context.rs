//! Building Cedar's request from the caller's context, and naming the
//! context attribute at fault when Cedar refuses it.

use std::str::FromStr;

use cedar_policy::{Context, EntityId, EntityTypeName, EntityUid, Request};
use serde_json::Value;

use super::describe;
use crate::policy::PolicySnapshot;

/// Finds entity references (`{"type","id"}` or `{"__entity":{…}}`) of
/// types the schema declares in a context, so their data can be gathered
/// with the rest.
pub(super) fn collect_entity_refs(
    snapshot: &PolicySnapshot,
    json: &Value,
    out: &mut Vec<EntityUid>,
) {
    match json {
        Value::Object(map) => {
            let target = map
                .get("__entity")
                .and_then(Value::as_object)
                .unwrap_or(map);
            if let (Some(Value::String(ty)), Some(Value::String(id))) =
                (target.get("type"), target.get("id"))
            {
                let declared = EntityTypeName::from_str(ty)
                    .ok()
                    .filter(|ty| snapshot.entity_types().any(|known| known == ty));
                if let Some(ty) = declared {
                    out.push(EntityUid::from_type_name_and_id(ty, EntityId::new(id)));
                }
                return;
            }
            map.values()
                .for_each(|v| collect_entity_refs(snapshot, v, out));
        }
        Value::Array(items) => items
            .iter()
            .for_each(|v| collect_entity_refs(snapshot, v, out)),
        _ => {}
    }
}

pub(super) enum RequestProblem {
    /// the context does not match the action's context type: the caller's mistake
    Context(String),
    /// principal or resource of a type the action does not apply to: a deny
    Other(String),
}

pub(super) fn build_request(
    snapshot: &PolicySnapshot,
    principal: &EntityUid,
    action: &EntityUid,
    resource: &EntityUid,
    context: &Value,
) -> Result<Request, RequestProblem> {
    let context = Context::from_json_value(context.clone(), Some((snapshot.schema(), action)))
        .map_err(|e| RequestProblem::Context(describe(&e)))?;
    Request::new(
        principal.clone(),
        action.clone(),
        resource.clone(),
        context,
        Some(snapshot.schema()),
    )
    .map_err(|e| {
        use cedar_policy::RequestValidationError as E;
        match e {
            E::InvalidContext(_) | E::TypeOfContext(_) => RequestProblem::Context(describe(&e)),
            other => RequestProblem::Other(describe(&other)),
        }
    })
}

/// On the error path only: names the context attribute Cedar refused.
/// Cedar names a missing one; otherwise each attribute is left out in turn,
/// and the culprit is the one whose absence cures the error (or only turns
/// it into "missing `it`").
pub(super) fn culprit(
    check: impl Fn(&Value) -> Result<(), RequestProblem>,
    json: &Value,
    message: &str,
) -> Option<String> {
    let map = json.as_object()?;
    let named_missing = |text: &str| {
        text.split_once("attribute `")
            .and_then(|(_, rest)| rest.split_once('`'))
            .map(|(name, _)| name.to_owned())
    };
    if let Some(name) = named_missing(message).filter(|name| !map.contains_key(name)) {
        return Some(name);
    }
    let check_without = |key: &String| {
        let mut without = map.clone();
        without.remove(key);
        check(&Value::Object(without))
    };
    map.keys()
        .find(|key| check_without(key).is_ok())
        .or_else(|| {
            map.keys().find(|key| {
                matches!(check_without(key), Err(RequestProblem::Context(other)) if named_missing(&other).as_deref() == Some(key.as_str()))
            })
        })
        .cloned()
}
