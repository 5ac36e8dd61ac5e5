//! Which entities a search's candidates must refer to. When every permit
//! left after partial evaluation requires the searched entity to hold, in
//! one of its attributes, one of some known entities (`resource.owner ==
//! User::"grace"`, `resource.traders.contains(User::"grace")`), only the
//! entities whose attributes refer to one of them can be allowed: the store
//! lists those, not every entity of the type.
//!
//! The narrowing is sound by construction: every candidate is still decided
//! by the policies, so a store that lists more only costs time; and an
//! entity that refers to none of them satisfies no permit, so nothing
//! allowed is left out. A permit of any other shape (an employee may view
//! every account) turns the narrowing off.

use std::collections::BTreeSet;

use cedar_policy::{Effect, EntityUid, PolicySet};
use serde_json::Value;

/// What every permit requires of the searched entity, one of: to be one
/// of some known entities, or to refer to one of some in its attributes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Required {
    /// the searched entity is one of these (`principal == User::"a"`,
    /// `[User::"a", User::"b"].contains(principal)`)
    pub is_one_of: BTreeSet<EntityUid>,
    /// or its attributes refer to one of these
    pub refers_to: BTreeSet<EntityUid>,
}

impl Required {
    fn one_of(uids: BTreeSet<EntityUid>) -> Self {
        Self {
            is_one_of: uids,
            ..Self::default()
        }
    }

    fn referring(uids: BTreeSet<EntityUid>) -> Self {
        Self {
            refers_to: uids,
            ..Self::default()
        }
    }

    fn union(mut self, other: Self) -> Self {
        self.is_one_of.extend(other.is_one_of);
        self.refers_to.extend(other.refers_to);
        self
    }
}

/// What every permit of `policies` requires of the `searched` variable
/// (`"principal"` or `"resource"`); `None` when some permit requires
/// neither (or there is no permit: partial evaluation answers that case).
pub(super) fn required(policies: &PolicySet, searched: &str) -> Option<Required> {
    let mut required = Required::default();
    let mut permits = 0_usize;
    for policy in policies.policies() {
        if policy.effect() != Effect::Permit {
            continue;
        }
        permits += 1;
        let json = policy.to_json().ok()?;
        // The conditions are a conjunction: one `when` with a requirement
        // is enough; `unless` only narrows further.
        let conditions = json.get("conditions")?.as_array()?;
        let found = conditions
            .iter()
            .filter(|condition| condition.get("kind").and_then(Value::as_str) == Some("when"))
            .find_map(|condition| requirement(condition.get("body")?, searched))?;
        required = required.union(found);
    }
    (permits > 0).then_some(required)
}

/// What `expr` (Cedar's JSON expression form) requires of the searched
/// variable, if anything this module reads.
fn requirement(expr: &Value, searched: &str) -> Option<Required> {
    let (op, operands) = only_entry(expr)?;
    let pair = || Some((operands.get("left")?, operands.get("right")?));
    match op {
        // Never true (what partial evaluation leaves of a permit that
        // cannot apply): requires what cannot be met.
        "Value" if operands == &Value::Bool(false) => Some(Required::default()),
        // Either side's requirement holds for the conjunction.
        "&&" => {
            let (left, right) = pair()?;
            requirement(left, searched).or_else(|| requirement(right, searched))
        }
        // Both sides must require something: the union then holds.
        "||" => {
            let (left, right) = pair()?;
            Some(requirement(left, searched)?.union(requirement(right, searched)?))
        }
        "if-then-else" => Some(
            requirement(operands.get("then")?, searched)?
                .union(requirement(operands.get("else")?, searched)?),
        ),
        "==" => {
            let (left, right) = pair()?;
            equality(left, right, searched)
        }
        "contains" => {
            let (left, right) = pair()?;
            containment(left, right, searched)
        }
        "containsAny" | "containsAll" => {
            let (left, right) = pair()?;
            set_containment(op == "containsAny", left, right, searched)
        }
        _ => None,
    }
}

/// What `left == right` requires: to be the entity the other side names
/// (`principal == User::"a"`), or to refer to it (`resource.owner ==
/// User::"a"`).
fn equality(left: &Value, right: &Value, searched: &str) -> Option<Required> {
    let (searched_side, other) = if mentions(left, searched) {
        (left, right)
    } else {
        (right, left)
    };
    let one = BTreeSet::from([entity_literal(other)?]);
    if is_var(searched_side, searched) {
        Some(Required::one_of(one))
    } else if is_searched_attr(searched_side, searched) {
        Some(Required::referring(one))
    } else {
        None
    }
}

/// What `left.contains(right)` requires: to hold an entity in an
/// attribute (`resource.traders.contains(User::"a")`), or to be one of
/// (or refer to one of) a set of entities.
fn containment(left: &Value, right: &Value, searched: &str) -> Option<Required> {
    if is_searched_attr(left, searched) {
        Some(Required::referring(BTreeSet::from([entity_literal(
            right,
        )?])))
    } else if is_var(right, searched) {
        Some(Required::one_of(entity_literals(left)?))
    } else if is_searched_attr(right, searched) {
        // `[User::"a", …].contains(principal.primaryUser)`: what
        // partial evaluation leaves of `resource.poaUsers.contains(
        // principal.primaryUser)` once the resource is known.
        Some(Required::referring(entity_literals(left)?))
    } else {
        None
    }
}

/// What `left.containsAny(right)` (`any`) or `left.containsAll(right)`
/// requires: `searched.attr.containsAny([…])`, `searched.attr.containsAll(
/// […])` (non-empty), and `[…].containsAny(searched.attr)`; not
/// `[…].containsAll(searched.attr)`, which an empty set satisfies.
fn set_containment(any: bool, left: &Value, right: &Value, searched: &str) -> Option<Required> {
    let listed = if is_searched_attr(left, searched) {
        entity_literals(right)?
    } else if any && is_searched_attr(right, searched) {
        entity_literals(left)?
    } else {
        return None;
    };
    (!listed.is_empty()).then(|| Required::referring(listed))
}

/// The searched variable itself.
fn is_var(expr: &Value, searched: &str) -> bool {
    expr.get("Var").and_then(Value::as_str) == Some(searched)
}

/// The searched variable, or one of its attributes.
fn mentions(expr: &Value, searched: &str) -> bool {
    is_var(expr, searched) || is_searched_attr(expr, searched)
}

/// The one `{op: operands}` entry of a JSON expression.
fn only_entry(expr: &Value) -> Option<(&str, &Value)> {
    let object = expr.as_object()?;
    if object.len() != 1 {
        return None;
    }
    object.iter().next().map(|(op, v)| (op.as_str(), v))
}

/// `searched.attr`, one attribute of the searched entity itself.
fn is_searched_attr(expr: &Value, searched: &str) -> bool {
    let Some((".", access)) = only_entry(expr) else {
        return false;
    };
    access
        .get("left")
        .and_then(|left| left.get("Var"))
        .and_then(Value::as_str)
        == Some(searched)
}

/// An entity literal: `{"Value": {"__entity": {"type", "id"}}}`.
fn entity_literal(expr: &Value) -> Option<EntityUid> {
    let (op, value) = only_entry(expr)?;
    (op == "Value").then_some(())?;
    entity_value(value)
}

fn entity_value(value: &Value) -> Option<EntityUid> {
    EntityUid::from_json(value.get("__entity")?.clone()).ok()
}

/// A set of entity literals, written as a set expression or a set value.
fn entity_literals(expr: &Value) -> Option<BTreeSet<EntityUid>> {
    match only_entry(expr)? {
        ("Set", Value::Array(items)) => items.iter().map(entity_literal).collect(),
        ("Value", Value::Array(items)) => items.iter().map(entity_value).collect(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uids(set: &BTreeSet<EntityUid>) -> Vec<String> {
        let mut uids: Vec<String> = set.iter().map(ToString::to_string).collect();
        uids.sort();
        uids
    }

    /// (is one of, refers to), or `None`.
    fn required_of(text: &str) -> Option<(Vec<String>, Vec<String>)> {
        let policies: PolicySet = text.parse().unwrap();
        required(&policies, "resource")
            .map(|required| (uids(&required.is_one_of), uids(&required.refers_to)))
    }

    const GRACE: &str = r#"User::"grace""#;

    #[test]
    fn references_in_every_permit_are_unioned_and_forbids_ignored() {
        let text = format!(
            r#"permit(principal, action, resource) when {{ resource.owner == {GRACE} }};
               permit(principal, action, resource) when {{ resource.active && (resource.traders.contains({GRACE}) || resource.admins.containsAny([User::"ann"])) }};
               permit(principal, action, resource) when {{ [Account::"a", Account::"b"].contains(resource) || Account::"c" == resource }};
               permit(principal, action, resource) when {{ resource has backup && [User::"bea", User::"cy"].contains(resource.backup) }};
               permit(principal, action, resource) when {{ [User::"dan"].containsAny(resource.admins) && resource.active }};
               permit(principal, action, resource) when {{ false }};
               forbid(principal, action, resource) when {{ resource.frozen }};"#
        );
        assert_eq!(
            required_of(&text),
            Some((
                vec![
                    r#"Account::"a""#.to_owned(),
                    r#"Account::"b""#.to_owned(),
                    r#"Account::"c""#.to_owned()
                ],
                vec![
                    r#"User::"ann""#.to_owned(),
                    r#"User::"bea""#.to_owned(),
                    r#"User::"cy""#.to_owned(),
                    r#"User::"dan""#.to_owned(),
                    GRACE.to_owned()
                ]
            ))
        );
    }

    #[test]
    fn one_permit_without_a_requirement_turns_the_narrowing_off() {
        // A flag; a reference that is not required; one side of an `||`
        // without one; a nested attribute; another entity's attribute.
        for open in [
            "resource.public",
            r#"resource.owner != User::"grace""#,
            r#"resource.owner == User::"grace" || resource.public"#,
            r#"resource.owner.manager == User::"grace""#,
            r#"principal.owner == User::"grace""#,
            r#"resource in Account::"a""#,
            // an empty `admins` is contained in any set
            r#"[User::"ann"].containsAll(resource.admins)"#,
            r#"[User::"ann"].contains(principal.owner)"#,
        ] {
            let text = format!(
                r#"permit(principal, action, resource) when {{ resource.owner == {GRACE} }};
                   permit(principal, action, resource) when {{ {open} }};"#
            );
            assert_eq!(required_of(&text), None, "{open}");
        }
        // A reference behind `unless` narrows nothing.
        assert_eq!(
            required_of(&format!(
                r#"permit(principal, action, resource) unless {{ resource.owner == {GRACE} }};"#
            )),
            None
        );
        assert_eq!(required_of("forbid(principal, action, resource);"), None);
    }
}
