//! Why a decision came out as it did, policy by policy: for each policy of
//! the action, whether its scope matched the request and whether its
//! condition held, and when it did not, the smallest part of the condition
//! that decided so (the false conjunct of a `&&`, the true disjunct of an
//! `unless`'s `||`, the sub-expression that raised the error).
//!
//! Asked for explicitly (`mandate check --explain`, the API's `explain`
//! flag), never on the decision path: each policy is re-evaluated piece by
//! piece with Cedar's own evaluator, from the policy's JSON form.

use std::str::FromStr;

use cedar_policy::{
    Authorizer, Effect, Entities, Expression, Policy, PolicySet, Request, eval_expression,
};
use serde::Serialize;
use serde_json::{Value, json};

use super::judge;

/// How one policy met the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyTrace {
    /// the policy id (its `@id`)
    pub policy: String,
    /// `permit` or `forbid`
    pub effect: &'static str,
    /// whether its principal, action and resource constraints matched
    pub scope_matched: bool,
    /// whether its `when` and `unless` clauses held (`None` when the scope
    /// did not match: they were not evaluated)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
    /// whether it decided the request: a satisfied forbid (the request is
    /// denied), or, when none is, a satisfied permit (allowed)
    pub determining: bool,
}

/// The outcome of a policy's condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Condition {
    /// every clause held
    Held,
    /// a clause did not hold; `because` is the part of it that decided so,
    /// as Cedar text, and `clause` says whether it is a `when` or `unless`
    NotHeld {
        /// `when` or `unless`
        clause: &'static str,
        /// the sub-expression whose value made the clause fail
        because: String,
        /// that sub-expression's value
        value: bool,
    },
    /// evaluating a clause raised an error (Mandate denies on any error)
    Error {
        /// the smallest sub-expression that raised it, as Cedar text
        at: String,
        /// Cedar's message
        message: String,
    },
}

/// Traces each policy of `policies` against `request` and `entities`.
/// A policy whose JSON form cannot be read is reported as an error, never
/// skipped. The determining policies are the judge's reasons: what a live
/// decision names (none when an error denied an allow).
pub fn trace(
    authorizer: &Authorizer,
    request: &Request,
    policies: &PolicySet,
    entities: &Entities,
) -> Vec<PolicyTrace> {
    let reasons = judge::by_cedar(authorizer, request, policies, entities).reasons;
    let mut traces: Vec<PolicyTrace> = policies
        .policies()
        .map(|policy| {
            let mut trace = trace_one(authorizer, request, policy, entities);
            trace.determining = reasons.contains(policy.id());
            trace
        })
        .collect();
    traces.sort_by(|a, b| a.policy.cmp(&b.policy));
    traces
}

/// One policy's trace: whether its scope matched `request` and, when it
/// did, whether its conditions held (or why not). `determining` is left
/// to `trace`, which knows the judge's reasons.
fn trace_one(
    authorizer: &Authorizer,
    request: &Request,
    policy: &Policy,
    entities: &Entities,
) -> PolicyTrace {
    let effect = match policy.effect() {
        Effect::Permit => "permit",
        Effect::Forbid => "forbid",
    };
    let mut trace = PolicyTrace {
        policy: policy.id().to_string(),
        effect,
        scope_matched: false,
        condition: None,
        determining: false,
    };
    let est = match policy.to_json() {
        Ok(est) => est,
        Err(error) => {
            trace.condition = Some(Condition::Error {
                at: "the policy".to_owned(),
                message: error.to_string(),
            });
            return trace;
        }
    };
    trace.scope_matched = scope_matches(authorizer, request, &est, entities);
    if !trace.scope_matched {
        return trace;
    }
    trace.condition = Some(condition(request, entities, &est));
    trace
}

/// Whether the scope of the policy `est` (its JSON form) alone matches
/// `request`: the same constraints, no condition, as a permit.
fn scope_matches(
    authorizer: &Authorizer,
    request: &Request,
    est: &Value,
    entities: &Entities,
) -> bool {
    let mut scope = est.clone();
    if let Some(fields) = scope.as_object_mut() {
        fields.insert("effect".to_owned(), json!("permit"));
        fields.insert("conditions".to_owned(), json!([]));
        fields.insert("annotations".to_owned(), json!({}));
    }
    probe_policy(scope)
        .and_then(|probe| PolicySet::from_policies([probe]).ok())
        .is_some_and(|set| judge::by_cedar(authorizer, request, &set, entities).allowed)
}

/// Whether the conditions of the policy `est` (its JSON form) held for
/// `request`, or the first clause that did not and why.
fn condition(request: &Request, entities: &Entities, est: &Value) -> Condition {
    let clauses = est
        .get("conditions")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    for clause in clauses {
        let kind = if clause.get("kind").and_then(Value::as_str) == Some("unless") {
            "unless"
        } else {
            "when"
        };
        // A `when` clause must be true, an `unless` clause false.
        let wanted = kind == "when";
        let body = clause.get("body").unwrap_or(&Value::Null);
        if let Some(outcome) = why(request, entities, body, wanted, kind) {
            return outcome;
        }
    }
    Condition::Held
}

/// `None` when `body` evaluates to `wanted`; else the smallest part of it
/// that explains why not.
fn why(
    request: &Request,
    entities: &Entities,
    body: &Value,
    wanted: bool,
    clause: &'static str,
) -> Option<Condition> {
    let text = cedar_text(body)?;
    match evaluate(request, entities, &text) {
        Ok(value) if value == wanted => None,
        Ok(value) => {
            // `a && b` false: the first false conjunct says why; `a || b`
            // true: the first true disjunct. Else this expression is the why.
            let operands = match (value, body) {
                (false, Value::Object(map)) => map.get("&&"),
                (true, Value::Object(map)) => map.get("||"),
                _ => None,
            };
            let inner = operands.and_then(|pair| {
                flatten(pair, if value { "||" } else { "&&" })
                    .into_iter()
                    .find_map(|operand| why(request, entities, operand, !value, clause))
            });
            Some(inner.unwrap_or(Condition::NotHeld {
                clause,
                because: text,
                value,
            }))
        }
        Err(message) => {
            let operands = match body {
                Value::Object(map) => map.get("&&").or_else(|| map.get("||")),
                _ => None,
            };
            let op = if matches!(body, Value::Object(map) if map.contains_key("&&")) {
                "&&"
            } else {
                "||"
            };
            let inner = operands.and_then(|pair| {
                flatten(pair, op).into_iter().find_map(|operand| {
                    match why(request, entities, operand, wanted, clause) {
                        Some(error @ Condition::Error { .. }) => Some(error),
                        _ => None,
                    }
                })
            });
            Some(inner.unwrap_or(Condition::Error { at: text, message }))
        }
    }
}

/// The operands of a chain of one operator, left to right.
fn flatten<'v>(pair: &'v Value, op: &str) -> Vec<&'v Value> {
    let mut operands = Vec::new();
    for side in [&pair["left"], &pair["right"]] {
        match side.get(op) {
            Some(inner) => operands.extend(flatten(inner, op)),
            None => operands.push(side),
        }
    }
    operands
}

/// A Boolean, or the error Cedar raised.
fn evaluate(request: &Request, entities: &Entities, text: &str) -> Result<bool, String> {
    let expression = Expression::from_str(text).map_err(|e| e.to_string())?;
    match eval_expression(request, entities, &expression) {
        Ok(cedar_policy::EvalResult::Bool(value)) => Ok(value),
        Ok(other) => Err(format!("evaluates to {other:?}, not a Boolean")),
        Err(error) => Err(error.to_string()),
    }
}

/// An expression of a policy's JSON form, as Cedar text: printed by Cedar
/// as the condition of a policy that has nothing else.
fn cedar_text(body: &Value) -> Option<String> {
    let probe = probe_policy(json!({
        "effect": "permit",
        "principal": {"op": "All"},
        "action": {"op": "All"},
        "resource": {"op": "All"},
        "conditions": [{"kind": "when", "body": body}],
    }))?;
    let text = probe.to_cedar()?;
    let (_, rest) = text.split_once("when {")?;
    let body = rest
        .trim_end()
        .strip_suffix(';')?
        .trim_end()
        .strip_suffix('}')?;
    Some(body.trim().to_owned())
}

fn probe_policy(est: Value) -> Option<Policy> {
    Policy::from_json(None, est).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cedar_policy::{Context, EntityUid, PolicyId, Schema};

    /// Policies named by their `@id`, as the loader names them.
    fn named(text: &str) -> PolicySet {
        let parsed: PolicySet = text.parse().unwrap();
        PolicySet::from_policies(
            parsed
                .policies()
                .map(|p| p.new_id(PolicyId::new(p.annotation("id").unwrap()))),
        )
        .unwrap()
    }

    fn fixture() -> (PolicySet, Entities, Request) {
        let (schema, _) = Schema::from_cedarschema_str(
            "entity User = { active: Bool }; entity Doc = { owner: User, editors: Set<User> };
             action view appliesTo { principal: User, resource: Doc, context: { mfa: Bool } };",
        )
        .unwrap();
        let policies = named(
            r#"
            @id("owner") permit (principal, action == Action::"view", resource)
              when { principal.active && resource.owner == principal };
            @id("editor") permit (principal is User, action, resource)
              when { resource.editors.contains(principal) } unless { context.mfa == false || principal.active == false };
            @id("nobody") forbid (principal == User::"mallory", action, resource);
        "#,
        );
        let entities = Entities::from_json_value(
            json!([
                {"uid": {"type": "User", "id": "ann"}, "attrs": {"active": true}, "parents": []},
                {"uid": {"type": "User", "id": "bob"}, "attrs": {"active": true}, "parents": []},
                {"uid": {"type": "Doc", "id": "d"}, "attrs": {"owner": {"__entity": {"type": "User", "id": "ann"}}, "editors": [{"__entity": {"type": "User", "id": "bob"}}]}, "parents": []}
            ]),
            Some(&schema),
        )
        .unwrap();
        let uid = |text: &str| text.parse::<EntityUid>().unwrap();
        let request = Request::new(
            uid(r#"User::"bob""#),
            uid(r#"Action::"view""#),
            uid(r#"Doc::"d""#),
            Context::from_json_value(json!({"mfa": false}), None).unwrap(),
            None,
        )
        .unwrap();
        (policies, entities, request)
    }

    #[test]
    fn each_policy_says_whether_its_scope_matched_and_which_part_of_its_condition_failed() {
        let (policies, entities, request) = fixture();
        let traces = trace(&Authorizer::new(), &request, &policies, &entities);
        let by_id = |id: &str| traces.iter().find(|t| t.policy == id).unwrap().clone();

        let owner = by_id("owner");
        assert!(owner.scope_matched);
        assert_eq!(
            owner.condition,
            Some(Condition::NotHeld {
                clause: "when",
                because: "resource.owner == principal".to_owned(),
                value: false,
            }),
            "the false conjunct, not the whole condition"
        );
        assert!(!owner.determining);

        let editor = by_id("editor");
        assert_eq!(
            editor.condition,
            Some(Condition::NotHeld {
                clause: "unless",
                because: "context.mfa == false".to_owned(),
                value: true,
            }),
            "the true disjunct of the unless"
        );

        let nobody = by_id("nobody");
        assert!(!nobody.scope_matched);
        assert_eq!(nobody.condition, None);
        assert_eq!(nobody.effect, "forbid");
    }

    #[test]
    fn a_held_condition_determines_and_an_error_names_its_sub_expression() {
        let (policies, entities, request) = fixture();
        let uid = |text: &str| text.parse::<EntityUid>().unwrap();
        let ann = Request::new(
            uid(r#"User::"ann""#),
            uid(r#"Action::"view""#),
            uid(r#"Doc::"d""#),
            Context::from_json_value(json!({"mfa": true}), None).unwrap(),
            None,
        )
        .unwrap();
        let traces = trace(&Authorizer::new(), &ann, &policies, &entities);
        let owner = traces.iter().find(|t| t.policy == "owner").unwrap();
        assert_eq!(owner.condition, Some(Condition::Held));
        assert!(owner.determining);

        let erroring = named(
            r#"@id("e") permit (principal, action, resource) when { principal.active && principal.missing };"#,
        );
        let traces = trace(&Authorizer::new(), &request, &erroring, &entities);
        match &traces[0].condition {
            Some(Condition::Error { at, message }) => {
                assert_eq!(at, "principal.missing");
                assert!(message.contains("missing"), "{message}");
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn when_an_error_denies_an_allow_no_policy_determined_it() {
        let (_, entities, request) = fixture();
        let policies = named(
            r#"@id("open") permit (principal, action, resource);
               @id("broken") forbid (principal, action, resource) when { principal.missing };"#,
        );
        let traces = trace(&Authorizer::new(), &request, &policies, &entities);
        let open = traces.iter().find(|t| t.policy == "open").unwrap();
        assert_eq!(open.condition, Some(Condition::Held));
        assert!(
            traces.iter().all(|t| !t.determining),
            "Cedar allows (it skips the erring forbid), Mandate denies: {traces:?}"
        );
    }
}
