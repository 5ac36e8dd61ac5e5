//! Building Cedar's request from the caller's context, and naming the
//! context attribute at fault when Cedar refuses it.

use std::str::FromStr;

use cedar_policy::{Context, EntityId, EntityTypeName, EntityUid, Request, RestrictedExpression};
use serde_json::Value;

use super::decision::{DecisionError, Field, RequestError};
use super::{Names, Stop, describe};
use crate::policy::{Attr, AttrKind, PolicySnapshot, RequestShape};

/// The caller's context, read for one decision: vouched for by the
/// action's shape (Cedar's request is built only if the memo has no answer
/// for the values the policies read), or already Cedar's request, built by
/// Cedar's own parser.
pub(super) enum ReadContext<'v> {
    /// checked against the shape; not yet converted
    Shaped(Shaped<'v>),
    /// Cedar's request, from the slow path (boxed: it is ten times the
    /// shaped form, and a decision's stages move this whole)
    Built(Box<Request>),
}

impl ReadContext<'_> {
    /// The shaped context, when the fast path took it.
    pub fn shaped(&self) -> Option<&Shaped<'_>> {
        match self {
            Self::Shaped(shaped) => Some(shaped),
            Self::Built(_) => None,
        }
    }

    /// Cedar's request: converted now from a shaped context, or the one
    /// the slow path built.
    pub fn request(
        &self,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
    ) -> Option<std::borrow::Cow<'_, Request>> {
        match self {
            Self::Shaped(shaped) => shaped
                .request(principal, action, resource)
                .map(std::borrow::Cow::Owned),
            Self::Built(request) => Some(std::borrow::Cow::Borrowed(request)),
        }
    }
}

/// A context the action's shape vouches for — known attributes of the
/// declared types, every required one present, principal and resource of
/// types the action applies to — and the values the policies read.
pub(super) struct Shaped<'v> {
    shape: &'v RequestShape,
    /// per attribute of the shape, in its order: its value, when present
    /// and read by some policy (attributes none reads are checked, then
    /// left out)
    read: Vec<Option<&'v Value>>,
}

impl Shaped<'_> {
    /// The values the policies read, per attribute of the shape: with the
    /// principal, action, resource and entities, all an answer depends on.
    pub fn read(&self) -> &[Option<&Value>] {
        &self.read
    }

    /// Cedar's request: each read value converted by its declared type, no
    /// JSON re-parse and no second check by Cedar. `None` if Cedar refuses
    /// what the shape vouched for (it does not).
    pub fn request(
        &self,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
    ) -> Option<Request> {
        let pairs = self
            .shape
            .attrs
            .iter()
            .zip(&self.read)
            .filter_map(|(attr, value)| Some((attr.name.clone(), expression(attr, (*value)?)?)));
        let context = Context::from_pairs(pairs).ok()?;
        Request::new(
            principal.clone(),
            action.clone(),
            resource.clone(),
            context,
            None,
        )
        .ok()
    }
}

/// The caller's context for `names`, and the entities it references (the
/// entity slice needs their data). The fast path checks a context against
/// the action's shape; anything else goes to Cedar's schema-directed
/// parser, which decides or explains, and a context Cedar refuses is the
/// caller's mistake, naming the attribute.
pub(super) fn read_context<'v>(
    snapshot: &PolicySnapshot,
    names: &Names<'v>,
    context: Option<&'v Value>,
) -> Result<(ReadContext<'v>, Vec<EntityUid>), Stop> {
    let Names {
        principal,
        action,
        resource,
        plan,
    } = names;
    let mut refs = Vec::new();
    if let Some(shaped) = plan
        .shape()
        .and_then(|shape| shaped(shape, principal, resource, context, &mut refs))
    {
        return Ok((ReadContext::Shaped(shaped), refs));
    }
    refs.clear();
    let empty = Value::Object(serde_json::Map::new());
    let json = context.unwrap_or(&empty);
    // The fast path takes only exact entity references; what it leaves
    // here could hold one two readers read two ways.
    if let Some((name, why)) = ambiguous_reference(json) {
        return Err(Stop::Refuse(RequestError {
            field: Field::ContextAttribute(name),
            code: "invalid_context",
            message: why.to_owned(),
        }));
    }
    match build_request(snapshot, principal, action, resource, json) {
        Ok(request) => {
            collect_entity_refs(snapshot, json, &mut refs);
            Ok((ReadContext::Built(Box::new(request)), refs))
        }
        Err(RequestProblem::Context(message)) => {
            let check = |json: &Value| {
                build_request(snapshot, principal, action, resource, json).map(|_| ())
            };
            let field = culprit(check, json, &message, plan.shape())
                .map_or(Field::Context, Field::ContextAttribute);
            Err(Stop::Refuse(RequestError {
                field,
                code: "invalid_context",
                message,
            }))
        }
        Err(RequestProblem::Other(message)) => {
            Err(Stop::Deny(DecisionError::new("invalid_request", message)))
        }
    }
}

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

/// The first context attribute holding an entity reference that could be
/// read two ways: `__entity` beside other keys, an `__entity` that is not
/// exactly `{"type","id"}`, or `type` and `id` beside other keys. Cedar and
/// an application could each take a different entity from it.
fn ambiguous_reference(context: &Value) -> Option<(String, &'static str)> {
    fn ambiguous(value: &Value) -> Option<&'static str> {
        match value {
            Value::Object(map) => {
                if let Some(inner) = map.get("__entity") {
                    let exact = |m: &serde_json::Map<String, Value>| {
                        m.len() == 2
                            && m.get("type").is_some_and(Value::is_string)
                            && m.get("id").is_some_and(Value::is_string)
                    };
                    if map.len() != 1 || !inner.as_object().is_some_and(exact) {
                        return Some(
                            "an `__entity` reference holds exactly `{\"type\", \"id\"}` and \
                             nothing beside it",
                        );
                    }
                    return None;
                }
                if map.contains_key("type") && map.contains_key("id") && map.len() != 2 {
                    return Some("an entity reference holds exactly `type` and `id`");
                }
                map.values().find_map(ambiguous)
            }
            Value::Array(items) => items.iter().find_map(ambiguous),
            _ => None,
        }
    }
    match context {
        Value::Object(map) => map
            .iter()
            .find_map(|(name, value)| ambiguous(value).map(|why| (name.clone(), why))),
        _ => None,
    }
}

enum RequestProblem {
    /// the context does not match the action's context type: the caller's mistake
    Context(String),
    /// principal or resource of a type the action does not apply to: a deny
    Other(String),
}

fn build_request(
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

/// Contexts with more attributes than this are not searched attribute by
/// attribute for the culprit (each try is a full parse by Cedar): the error
/// names the context as a whole. Bounds the cost of a hostile context.
const CULPRIT_SEARCH_MAX: usize = 32;

/// On the error path only: names the context attribute Cedar refused.
/// Cedar names a missing one; an attribute the action's shape does not
/// declare is the culprit; otherwise, for a small context, each attribute
/// is left out in turn, and the culprit is the one whose absence cures the
/// error (or only turns it into "missing `it`").
fn culprit(
    check: impl Fn(&Value) -> Result<(), RequestProblem>,
    json: &Value,
    message: &str,
    shape: Option<&RequestShape>,
) -> Option<String> {
    let map = json.as_object()?;
    if let Some(undeclared) = shape.and_then(|shape| map.keys().find(|k| shape.attr(k).is_none())) {
        return Some(undeclared.clone());
    }
    if map.len() > CULPRIT_SEARCH_MAX {
        return None;
    }
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

/// The fast path's check: `None` sends the context down the slow path,
/// which decides or explains exactly as Cedar does. Entity references go to
/// `refs`.
fn shaped<'v>(
    shape: &'v RequestShape,
    principal: &EntityUid,
    resource: &EntityUid,
    context: Option<&'v Value>,
    refs: &mut Vec<EntityUid>,
) -> Option<Shaped<'v>> {
    if !shape.principals.contains(principal.type_name())
        || !shape.resources.contains(resource.type_name())
    {
        return None;
    }
    let mut read = vec![None; shape.attrs.len()];
    let mut required = 0;
    if let Some(context) = context {
        for (name, value) in context.as_object()? {
            let (index, attr) = shape.attr_at(name)?;
            if let Some(uid) = check(attr, value)? {
                refs.push(uid);
            }
            required += usize::from(attr.required);
            if attr.read {
                *read.get_mut(index)? = Some(value);
            }
        }
    }
    (required == shape.required).then_some(Shaped { shape, read })
}

/// Whether `value` is what `attr` declares: `Some(Some(uid))` for an
/// entity reference, `Some(None)` for another good value.
fn check(attr: &Attr, value: &Value) -> Option<Option<EntityUid>> {
    match (&attr.kind, value) {
        (AttrKind::String, Value::String(_)) | (AttrKind::Bool, Value::Bool(_)) => Some(None),
        (AttrKind::Long, Value::Number(number)) => number.as_i64().map(|_| None),
        (AttrKind::Decimal, Value::String(text)) if is_decimal(text) => Some(None),
        (AttrKind::Entity(ty, written), Value::Object(map)) => {
            let (t, id) = reference(map)?;
            (t == written).then(|| {
                Some(EntityUid::from_type_name_and_id(
                    ty.clone(),
                    EntityId::new(id),
                ))
            })
        }
        _ => None,
    }
}

/// An exact entity reference: `{"type", "id"}` or `{"__entity": {"type", "id"}}`.
fn reference(map: &serde_json::Map<String, Value>) -> Option<(&str, &str)> {
    let target = match (map.len(), map.get("__entity")) {
        (1, Some(Value::Object(inner))) => inner,
        (2, None) => map,
        _ => return None,
    };
    match (target.len(), target.get("type"), target.get("id")) {
        (2, Some(Value::String(t)), Some(Value::String(id))) => Some((t, id)),
        _ => None,
    }
}

/// A checked value as Cedar's expression of its declared type.
fn expression(attr: &Attr, value: &Value) -> Option<RestrictedExpression> {
    Some(match (&attr.kind, value) {
        (AttrKind::String, Value::String(text)) => RestrictedExpression::new_string(text.clone()),
        (AttrKind::Long, Value::Number(number)) => RestrictedExpression::new_long(number.as_i64()?),
        (AttrKind::Bool, Value::Bool(flag)) => RestrictedExpression::new_bool(*flag),
        (AttrKind::Entity(ty, _), Value::Object(map)) => {
            let (_, id) = reference(map)?;
            RestrictedExpression::new_entity_uid(EntityUid::from_type_name_and_id(
                ty.clone(),
                EntityId::new(id),
            ))
        }
        (AttrKind::Decimal, Value::String(text)) => RestrictedExpression::new_decimal(text),
        _ => return None,
    })
}

/// Whether `text` is a decimal Cedar accepts: digits, a point, one to four
/// digits, within range. Stricter than Cedar near the limits (those take
/// the slow path).
fn is_decimal(text: &str) -> bool {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let Some((whole, fraction)) = unsigned.split_once('.') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && digits(fraction) && fraction.len() <= 4 && whole.len() <= 12
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::judge;
    use cedar_policy::{Authorizer, Entities};
    use serde_json::json;

    fn pack() -> (PolicySnapshot, Entities) {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let snapshot = crate::policy::the_pack();
        let text = std::fs::read_to_string(root.join("examples/demo/entities.json")).unwrap();
        let entities = Entities::from_json_str(&text, Some(snapshot.schema())).unwrap();
        (snapshot, entities)
    }

    fn uid(snapshot: &PolicySnapshot, ty: &str, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(
            snapshot.entity_type(ty).unwrap().clone(),
            EntityId::new(id),
        )
    }

    /// The fast path end to end: checked, then built.
    fn fast_request(
        shape: &RequestShape,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
        context: Option<&Value>,
        refs: &mut Vec<EntityUid>,
    ) -> Option<Request> {
        let shaped = shaped(shape, principal, resource, context, refs);
        if shaped.is_none() {
            refs.clear();
        }
        shaped?.request(principal, action, resource)
    }

    #[test]
    fn the_fast_path_takes_only_what_it_can_vouch_for_and_decides_as_cedar_does() {
        let (snapshot, entities) = pack();
        let action = snapshot.action("withdraw").unwrap().clone();
        let plan = snapshot.plan(&action).unwrap();
        let shape = plan.shape().unwrap();
        let account = uid(&snapshot, "account", "alice-personal");
        let destination = json!({"type": "Brokerage::Destination", "id": "alice-bank"});
        let cases = [
            (
                json!({"destination": destination, "amount": "100.00"}),
                true,
            ),
            (
                json!({"destination": {"__entity": destination}, "ownerApproved": true}),
                true,
            ),
            (
                json!({"destination": {"type": "Brokerage::Destination", "id": "elsewhere"}}),
                true,
            ),
            (json!({"destination": destination, "amount": "abc"}), false),
            (json!({"destination": destination, "amount": 100}), false),
            (
                json!({"destination": destination, "amount": "1.23456"}),
                false,
            ),
            (
                json!({"destination": destination, "ownerApproved": "yes"}),
                false,
            ),
            (json!({"destination": destination, "note": "x"}), false),
            (
                json!({"destination": {"type": "Brokerage::User", "id": "alice"}}),
                false,
            ),
            (
                json!({"destination": {"type": "destination", "id": "alice-bank"}}),
                false,
            ),
            (json!({"amount": "1.00"}), false),
            (json!([1, 2]), false),
        ];
        let authorizer = Authorizer::new();
        for user in ["alice", "erin", "bob", "carol"] {
            let principal = uid(&snapshot, "user", user);
            for (context, fast) in &cases {
                let mut wanted = Vec::new();
                let built = fast_request(
                    shape,
                    &principal,
                    &action,
                    &account,
                    Some(context),
                    &mut wanted,
                );
                assert_eq!(built.is_some(), *fast, "{context}");
                let Some(built) = built else {
                    assert!(wanted.is_empty(), "a refused context names no entity");
                    continue;
                };
                assert_eq!(wanted.len(), 1, "the destination is gathered");
                let slow = build_request(&snapshot, &principal, &action, &account, context)
                    .ok()
                    .unwrap();
                assert_eq!(
                    judge::by_cedar(&authorizer, &built, plan.policies(), &entities),
                    judge::by_cedar(&authorizer, &slow, snapshot.policies(), &entities),
                    "{user} {context}"
                );
            }
        }
        let not_a_user = uid(&snapshot, "account", "acme-corp");
        let context = json!({"destination": destination});
        assert!(
            fast_request(
                shape,
                &not_a_user,
                &action,
                &account,
                Some(&context),
                &mut Vec::new()
            )
            .is_none(),
            "a principal of a type the action does not apply to takes the slow path"
        );
    }

    #[test]
    fn decimals_the_fast_path_accepts_are_decimals() {
        for good in ["0.0", "-1.5", "100.00", "123456789012.1234"] {
            assert!(is_decimal(good), "{good}");
        }
        for bad in [
            "1",
            "1.",
            ".5",
            "1.23456",
            "1e3",
            "--1.0",
            "1234567890123.0",
            "١.٠",
        ] {
            assert!(!is_decimal(bad), "{bad}");
        }
    }
}
