//! What makes a case test nothing: a name the schema or the entities do not
//! have (a typo in the action, a renamed type, a misspelt id), or a
//! decision that erred. Either denies whatever the policies say, and would
//! pass every `expect: deny`. Each fails the case, saying what was meant,
//! unless the case lists the error under `errors:` (then it is the point).

use std::fmt::Write as _;

use cedar_policy::{EntityId, EntityUid};
use serde_json::Value;

use super::Case;
use crate::engine::{Decision, Engine};

/// Every name of `case` the schema does not declare, and (over a file
/// store) every stored entity the entities lack, each with the closest
/// known name; `None` when every name is known. A type the requests
/// describe (`entities.sources`) is never looked up.
pub(super) fn unknown_names(
    engine: &Engine,
    case: &Case,
    principal: (&str, &str),
    resource: (&str, &str),
    context: Option<&Value>,
) -> Option<String> {
    let snapshot = engine.policies().current();
    let resident = engine.store().resident();
    let mut problems = Vec::new();
    if snapshot.action(&case.action).is_none() && !case.expects_error("unknown_action") {
        problems.push(format!(
            "`action`: {}",
            snapshot.unknown_action(&case.action)
        ));
    }
    let mut named = vec![("principal", principal)];
    // A request-described resource is not looked up.
    if case.resource_properties.is_none() {
        named.push(("resource", resource));
    }
    let mut in_context = Vec::new();
    if let Some(context) = context {
        crate::entities::referenced_uids(context, &mut in_context);
    }
    named.extend(in_context.into_iter().map(|uid| ("context", uid)));
    for (field, (type_name, id)) in named {
        let Some(ty) = snapshot.entity_type(type_name) else {
            if !case.expects_error("unknown_entity_type") {
                problems.push(format!(
                    "`{field}`: {}",
                    snapshot.unknown_type("entity type", type_name)
                ));
            }
            continue;
        };
        let Some(resident) = resident.as_ref().filter(|_| engine.stored(ty)) else {
            continue;
        };
        let uid = EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id));
        if resident.entities.get(&uid).is_some() || case.expects_error("entity_not_found") {
            continue;
        }
        let ids = resident
            .entities
            .iter()
            .filter(|entity| entity.uid().type_name() == ty)
            .map(|entity| entity.uid().id().unescaped().to_owned());
        let suggestion = crate::policy::closest(id, ids)
            .map(|meant| format!(" (did you mean `{meant}`?)"))
            .unwrap_or_default();
        problems.push(format!(
            "`{field}`: the entities have no {ty} `{id}`{suggestion}"
        ));
    }
    if problems.is_empty() {
        return None;
    }
    let mut text = String::from(
        "    unknown name: the case tests no policy (list the error under `errors:` if it is the point):\n",
    );
    for problem in problems {
        let _ = writeln!(text, "      {problem}");
    }
    Some(text)
}

/// A deny that errors the case does not expect tests nothing: such a case
/// fails, saying what erred, unless it lists the errors it is about under
/// `errors:`.
pub(super) fn erred(case: &Case, decision: &Decision) -> Option<String> {
    if case.errors.is_some() || decision.errors().is_empty() {
        return None;
    }
    let mut diff = String::from(
        "    hollow: the decision erred, so it tests no policy (list the codes under `errors:` if the error is the point):\n",
    );
    for error in decision.errors() {
        let _ = writeln!(diff, "      {}: {}", error.code(), error.message());
    }
    Some(diff)
}
