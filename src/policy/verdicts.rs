//! Each action's policies as one Cedar expression, prepared once per
//! snapshot: the sum of `if <policy n> then 2^n else 0` over the action's
//! policies, where `<policy n>` is the policy's whole condition (principal
//! and resource scope, then its `when` and negated `unless` clauses, in
//! Cedar's order). One evaluation by Cedar's own evaluator answers which
//! policies are satisfied, a bit each.
//!
//! Why: Cedar's authorizer evaluates policy by policy, rebuilding each
//! condition and collecting diagnostics as it goes; for this pack that is
//! three times the cost of evaluating the same conditions at once (measured
//! in `benches/decision.rs`). The answer is the same by construction, with
//! one exception this module leaves to Cedar: when any condition errors, the
//! expression errors as a whole, and the caller asks the authorizer, which
//! says which policy failed and why.
//!
//! The policies that never read `context` are a separate expression: for a
//! given principal, action, resource and entities their answer cannot change,
//! so a caller may remember it ([`Verdicts::context_free`]) and pass it to
//! each further decision, which then evaluates only the policies that read
//! the context. This module remembers nothing itself: what to remember and
//! when it is void is the engine's memo.

use cedar_policy::{
    Effect, Entities, EvalResult, Expression, Policy, PolicyId, PolicySet, Request,
};
use serde_json::{Value, json};

use super::reads::ContextReads;

/// Bits per expression: Cedar's integers are signed 64-bit and `+` refuses
/// to overflow, so 62 policies sum to at most 2^62 - 1.
const BITS: usize = 62;

/// One action's policies, prepared for evaluation at once.
#[derive(Debug)]
pub struct Verdicts {
    /// the policies that never read `context`
    fixed: Vec<Chunk>,
    /// the policies that do
    varying: Vec<Chunk>,
}

/// Policies sorted by id, at most [`BITS`]: bit `n` of the expression's
/// value is the `n`-th policy.
#[derive(Debug)]
struct Chunk {
    expression: Expression,
    policies: Vec<(PolicyId, Effect)>,
}

/// The satisfied policies of some of an action's policies, each list sorted
/// by id: what [`Verdicts::context_free`] answers and a caller may keep.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Satisfied {
    permits: Vec<PolicyId>,
    forbids: Vec<PolicyId>,
}

/// Cedar's answer for a request that raised no error: whether it is allowed,
/// and the satisfied policies that decided it (the permits when allowed, the
/// forbids when denied by one), sorted by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// a permit is satisfied and no forbid is
    pub allowed: bool,
    /// the determining policies, sorted by id
    pub reasons: Vec<PolicyId>,
}

impl Verdicts {
    /// Prepares `policies` (static policies whose action scope has been
    /// matched already: it is not evaluated). `None` when a policy cannot be
    /// expressed this way (a template link, a scope form this module does not
    /// know); the action is then decided by the authorizer alone.
    pub fn prepare(policies: &PolicySet) -> Option<Self> {
        if policies.templates().next().is_some() {
            return None;
        }
        let mut sorted: Vec<(&Policy, Value)> = policies
            .policies()
            .map(|policy| Some((policy, condition(policy)?)))
            .collect::<Option<_>>()?;
        sorted.sort_by(|(a, _), (b, _)| by_id(a.id(), b.id()));
        let (varying, fixed): (Vec<_>, Vec<_>) = sorted
            .into_iter()
            .partition(|(_, condition)| ContextReads::of_json(condition).any());
        Some(Self {
            fixed: chunks(fixed)?,
            varying: chunks(varying)?,
        })
    }

    /// Which of the policies that never read `context` hold: an answer
    /// that stays true for this request's principal, action, resource and
    /// `entities`, whatever the context. `None` when one raised an error.
    pub fn context_free(&self, request: &Request, entities: &Entities) -> Option<Satisfied> {
        satisfied(&self.fixed, request, entities)
    }

    /// Evaluates every policy at once; `context_free` is the answer of
    /// [`Self::context_free`] for the same principal, action, resource and
    /// entities, remembered or just computed. `None` when any policy raised
    /// an error (or the expression did not yield its number): ask the
    /// authorizer, which names the policy and the error.
    pub fn evaluate(
        &self,
        request: &Request,
        entities: &Entities,
        context_free: &Satisfied,
    ) -> Option<Verdict> {
        let fixed = context_free;
        let varying = satisfied(&self.varying, request, entities)?;
        // Denied by any satisfied forbid; else allowed by any satisfied permit.
        let denied = !fixed.forbids.is_empty() || !varying.forbids.is_empty();
        let (known, mut reasons) = if denied {
            (&fixed.forbids, varying.forbids)
        } else {
            (&fixed.permits, varying.permits)
        };
        if !known.is_empty() {
            reasons.extend(known.iter().cloned());
            reasons.sort_unstable_by(by_id);
        }
        let allowed = !denied && !reasons.is_empty();
        Some(Verdict { allowed, reasons })
    }

    /// Evaluates every policy at once, nothing remembered.
    pub fn evaluate_all(&self, request: &Request, entities: &Entities) -> Option<Verdict> {
        let context_free = self.context_free(request, entities)?;
        self.evaluate(request, entities, &context_free)
    }
}

/// Policy ids in the order reasons are given.
fn by_id(a: &PolicyId, b: &PolicyId) -> std::cmp::Ordering {
    AsRef::<str>::as_ref(a).cmp(b.as_ref())
}

/// `policies` (sorted by id, with their conditions) as chunks of [`BITS`].
fn chunks(policies: Vec<(&Policy, Value)>) -> Option<Vec<Chunk>> {
    let mut out = Vec::with_capacity(policies.len().div_ceil(BITS));
    let mut rest = policies.into_iter().peekable();
    while rest.peek().is_some() {
        let (mut terms, mut ids) = (Vec::new(), Vec::new());
        for (bit, (policy, condition)) in rest.by_ref().take(BITS).enumerate() {
            terms.push(json!({ "if-then-else": {
                "if": condition,
                "then": { "Value": 1_i64 << bit },
                "else": { "Value": 0 },
            }}));
            ids.push((policy.id().clone(), policy.effect()));
        }
        out.push(Chunk {
            expression: expression(balanced_sum(terms)?)?,
            policies: ids,
        });
    }
    Some(out)
}

/// The satisfied policies of `chunks`; `None` on any error.
fn satisfied(chunks: &[Chunk], request: &Request, entities: &Entities) -> Option<Satisfied> {
    let mut out = Satisfied::default();
    for chunk in chunks {
        let EvalResult::Long(mut bits) =
            cedar_policy::eval_expression(request, entities, &chunk.expression).ok()?
        else {
            return None;
        };
        while bits > 0 {
            let (id, effect) = chunk.policies.get(bits.trailing_zeros() as usize)?;
            match effect {
                Effect::Permit => out.permits.push(id.clone()),
                Effect::Forbid => out.forbids.push(id.clone()),
            }
            bits &= bits - 1;
        }
    }
    Some(out)
}

/// `terms` added as a balanced tree, so the expression's depth (and the
/// stack its parsing and evaluation take) grows with the log of their number.
/// Cedar still evaluates the terms left to right.
fn balanced_sum(mut terms: Vec<Value>) -> Option<Value> {
    while terms.len() > 1 {
        let mut pairs = Vec::with_capacity(terms.len().div_ceil(2));
        let mut rest = terms.into_iter();
        while let Some(left) = rest.next() {
            pairs.push(match rest.next() {
                Some(right) => json!({ "+": { "left": left, "right": right } }),
                None => left,
            });
        }
        terms = pairs;
    }
    terms.pop()
}

/// A policy's condition as Cedar evaluates it, in Cedar's JSON expression
/// form: principal scope && resource scope && when… && !unless…, left to
/// right (so what short-circuits, and so what can error, is unchanged). The
/// action scope is left out: the caller matched it.
fn condition(policy: &Policy) -> Option<Value> {
    let est = policy.to_json().ok()?;
    let mut parts = Vec::new();
    for var in ["principal", "resource"] {
        if let Some(scope) = scope(var, est.get(var)?)? {
            parts.push(scope);
        }
    }
    for clause in est.get("conditions")?.as_array()? {
        let body = clause.get("body")?.clone();
        parts.push(match clause.get("kind")?.as_str()? {
            "when" => body,
            "unless" => json!({ "!": { "arg": body } }),
            _ => return None,
        });
    }
    Some(
        parts
            .into_iter()
            .reduce(|left, right| json!({ "&&": { "left": left, "right": right } }))
            .unwrap_or(json!({ "Value": true })),
    )
}

/// A principal or resource scope as an expression; `Some(None)` for none.
fn scope(var: &str, constraint: &Value) -> Option<Option<Value>> {
    let subject = json!({ "Var": var });
    let entity = |c: &Value| Some(json!({ "Value": { "__entity": c.get("entity")?.clone() } }));
    Some(Some(match constraint.get("op")?.as_str()? {
        "All" => return Some(None),
        "==" => json!({ "==": { "left": subject, "right": entity(constraint)? } }),
        "in" => json!({ "in": { "left": subject, "right": entity(constraint)? } }),
        "is" => {
            let entity_type = constraint.get("entity_type")?;
            match constraint.get("in") {
                None => json!({ "is": { "left": subject, "entity_type": entity_type } }),
                Some(within) => json!({ "is": {
                    "left": subject, "entity_type": entity_type, "in": entity(within)?,
                }}),
            }
        }
        _ => return None,
    }))
}

/// The JSON expression as an [`Expression`]. Cedar reads expressions only as
/// text, so the expression is carried as the condition of a throwaway policy
/// built from JSON, which Cedar prints, and the condition is read back.
fn expression(body: Value) -> Option<Expression> {
    let carrier = json!({
        "effect": "permit",
        "principal": { "op": "All" },
        "action": { "op": "All" },
        "resource": { "op": "All" },
        "conditions": [{ "kind": "when", "body": body }],
    });
    let text = Policy::from_json(None, carrier).ok()?.to_string();
    let condition = text
        .strip_prefix("permit(principal, action, resource) when {")?
        .strip_suffix("};")?;
    condition.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::judge::{self, Judgement};
    use cedar_policy::{Authorizer, Context, EntityUid, Schema};

    fn pack() -> (super::super::PolicySnapshot, Entities) {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let snapshot = super::super::the_pack();
        let text = std::fs::read_to_string(root.join("examples/demo/entities.json")).unwrap();
        let entities = Entities::from_json_str(&text, Some(snapshot.schema()))
            .unwrap()
            .add_entities(snapshot.schema().action_entities().unwrap(), None)
            .unwrap();
        (snapshot, entities)
    }

    /// Contexts for every action of the pack: each action takes those its
    /// schema accepts.
    fn contexts() -> Vec<Value> {
        let destination = |id: &str| json!({"type": "Brokerage::Destination", "id": id});
        let user = |id: &str| json!({"type": "Brokerage::User", "id": id});
        let mut all = vec![json!({})];
        for (side, dest) in [("buy", "alice-bank"), ("hold", "mallory-wallet")] {
            all.push(json!({"side": side, "instrument": "AAPL"}));
            all.push(json!({"destination": destination(dest), "amount": "10.00"}));
            all.push(json!({"destination": destination(dest), "ownerApproved": true}));
            all.push(json!({"source": destination(dest)}));
        }
        for target in ["bob", "carol", "alice", "alice-api", "mallory"] {
            all.push(json!({"target": user(target)}));
            for role in ["trader", "administrator", "janitor"] {
                all.push(json!({"target": user(target), "role": role}));
                all.push(json!({"role": role}));
            }
            for (mfa, email) in [(true, false), (false, false)] {
                all.push(json!({"forUser": user(target), "mfa": mfa, "emailConfirmed": email}));
            }
        }
        all
    }

    #[test]
    fn every_action_of_the_pack_is_prepared() {
        let (snapshot, _) = pack();
        for action in snapshot.schema().actions() {
            let plan = snapshot.plan(action).unwrap();
            assert!(plan.verdicts().is_some(), "{action}");
        }
    }

    #[test]
    fn verdicts_agree_with_cedars_authorizer_on_every_action_user_account_and_context() {
        let (snapshot, entities) = pack();
        let schema: &Schema = snapshot.schema();
        let authorizer = Authorizer::new();
        let of_type = |ty: &str| -> Vec<EntityUid> {
            entities
                .iter()
                .map(cedar_policy::Entity::uid)
                .filter(|uid| uid.type_name().to_string() == ty)
                .collect()
        };
        let (users, accounts) = (of_type("Brokerage::User"), of_type("Brokerage::Account"));
        let (mut compared, mut allowed) = (0, 0);
        for action in schema.actions() {
            let plan = snapshot.plan(action).unwrap();
            let verdicts = plan.verdicts().unwrap();
            let contexts: Vec<Context> = contexts()
                .into_iter()
                .filter_map(|json| Context::from_json_value(json, Some((schema, action))).ok())
                .collect();
            for principal in &users {
                for resource in accounts
                    .iter()
                    .chain(of_type("Brokerage::MarketData").iter())
                {
                    // One remembered context-free answer per principal and
                    // resource, as the engine's memo keeps it.
                    let mut kept: Option<Option<Satisfied>> = None;
                    for context in &contexts {
                        let Ok(request) = Request::new(
                            principal.clone(),
                            action.clone(),
                            resource.clone(),
                            context.clone(),
                            Some(schema),
                        ) else {
                            continue;
                        };
                        let judged =
                            judge::by_cedar(&authorizer, &request, plan.policies(), &entities);
                        let ours = verdicts.evaluate_all(&request, &entities);
                        let remembered =
                            kept.get_or_insert_with(|| verdicts.context_free(&request, &entities));
                        let reused = remembered
                            .as_ref()
                            .and_then(|part| verdicts.evaluate(&request, &entities, part));
                        assert_eq!(ours, reused, "{request}");
                        assert_eq!(ours.is_none(), !judged.errors.is_empty(), "{request}");
                        if let Some(ours) = ours {
                            allowed += usize::from(ours.allowed);
                            assert_eq!(Judgement::from(ours), judged, "{request}");
                        }
                        compared += 1;
                    }
                }
            }
        }
        assert!(
            compared > 1000 && allowed > 50,
            "{compared} compared, {allowed} allowed"
        );
        // Requests without a schema check can miss context attributes: both
        // must then see an error.
        let action = snapshot.action("withdraw").unwrap();
        let plan = snapshot.plan(action).unwrap();
        let request = Request::new(
            users[0].clone(),
            action.clone(),
            accounts[0].clone(),
            Context::empty(),
            None,
        )
        .unwrap();
        assert!(
            plan.verdicts()
                .unwrap()
                .evaluate_all(&request, &entities)
                .is_none()
        );
        let cedar = authorizer.is_authorized(&request, plan.policies(), &entities);
        assert!(cedar.diagnostics().errors().next().is_some());
    }

    #[test]
    fn scopes_and_many_policies_are_kept_exactly() {
        // 70 policies (two expressions), with every scope form.
        let mut text = String::new();
        for n in 0..70 {
            let (effect, scope) = match n % 5 {
                0 => ("permit", r#"principal == User::"a", action, resource"#),
                1 => ("permit", r#"principal in Group::"g", action, resource"#),
                2 => ("permit", "principal is User, action, resource"),
                3 => (
                    "permit",
                    r#"principal is User in Group::"h", action, resource"#,
                ),
                _ => ("forbid", "principal, action, resource is Doc"),
            };
            let guard = if n == 69 {
                "when { context.stop }"
            } else {
                "unless { false }"
            };
            text.push_str(&format!("@id(\"p{n:02}\") {effect} ({scope}) {guard};\n"));
        }
        let policies: PolicySet = text.parse().unwrap();
        let policies = {
            let mut set = PolicySet::new();
            for p in policies.policies() {
                let id = PolicyId::new(p.annotation("id").unwrap());
                set.add(p.new_id(id)).unwrap();
            }
            set
        };
        let verdicts = Verdicts::prepare(&policies).unwrap();
        // 69 context-free policies in two expressions, one that reads it.
        assert_eq!((verdicts.fixed.len(), verdicts.varying.len()), (2, 1));
        let entities = Entities::from_json_value(
            json!([
                {"uid": {"type": "User", "id": "a"}, "attrs": {}, "parents": [{"type": "Group", "id": "g"}]},
                {"uid": {"type": "Group", "id": "g"}, "attrs": {}, "parents": [{"type": "Group", "id": "h"}]},
            ]),
            None,
        )
        .unwrap();
        let authorizer = Authorizer::new();
        for (principal, resource, stop) in [
            (r#"User::"a""#, r#"Doc::"d""#, false),
            (r#"User::"a""#, r#"File::"f""#, false),
            (r#"User::"b""#, r#"File::"f""#, true),
            (r#"Bot::"a""#, r#"Doc::"d""#, true),
        ] {
            let request = Request::new(
                principal.parse().unwrap(),
                r#"Action::"read""#.parse().unwrap(),
                resource.parse().unwrap(),
                Context::from_json_value(json!({ "stop": stop }), None).unwrap(),
                None,
            )
            .unwrap();
            let judged = judge::by_cedar(&authorizer, &request, &policies, &entities);
            let ours = verdicts.evaluate_all(&request, &entities).unwrap();
            assert!(!ours.reasons.is_empty(), "{request}");
            assert_eq!(Judgement::from(ours), judged, "{request}");
        }
    }
}
