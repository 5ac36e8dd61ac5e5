//! The one place a Cedar request over its entities becomes Mandate's
//! answer. Mandate's rule: **allow only when Cedar allows and nothing
//! erred**. Cedar skips a policy whose evaluation errs, so an erroring
//! `forbid` would protect nothing; Mandate denies instead. Live decisions,
//! search, shadow mode, explanations and `verify`'s confirmation of its
//! counterexamples all judge here, so none of them can disagree with what
//! a live decision would answer. No other file reads Cedar's decision.
//!
//! Debug builds (every test) check each prepared verdict against Cedar's
//! authorizer here too: the same decision, the same reasons, no error.

use std::sync::Arc;

use cedar_policy::{Authorizer, Entities, PolicyId, PolicySet, Request};

use super::decision::{Decision, DecisionError};
use crate::policy::{Verdict, Verdicts};

/// Mandate's answer to one request, before it is versioned as a
/// [`Decision`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    /// Cedar allowed and no policy erred
    pub allowed: bool,
    /// the determining policies, sorted by id (none for a request Cedar
    /// allowed but Mandate denies for an error: no policy decided that)
    pub reasons: Vec<PolicyId>,
    /// every policy that erred, with Cedar's message
    pub errors: Vec<DecisionError>,
}

impl Judgement {
    /// This answer under the policy version that gave it.
    pub fn into_decision(self, policy_version: &Arc<str>) -> Decision {
        Decision {
            allowed: self.allowed,
            reasons: self.reasons,
            errors: self.errors,
            policy_version: Arc::clone(policy_version),
            stale_data: false,
        }
    }
}

impl From<Verdict> for Judgement {
    /// A prepared verdict: it only answers requests that raise no error.
    fn from(verdict: Verdict) -> Self {
        Self {
            allowed: verdict.allowed,
            reasons: verdict.reasons,
            errors: Vec::new(),
        }
    }
}

/// Cedar's authorizer over `policies`, judged by Mandate's rule: each
/// erring policy named with Cedar's message, and any error a deny.
pub fn by_cedar(
    authorizer: &Authorizer,
    request: &Request,
    policies: &PolicySet,
    entities: &Entities,
) -> Judgement {
    let response = authorizer.is_authorized(request, policies, entities);
    let errors: Vec<DecisionError> = response
        .diagnostics()
        .errors()
        .map(|error| {
            let cedar_policy::AuthorizationError::PolicyEvaluationError(failed) = error;
            DecisionError {
                code: "evaluation_error",
                message: error.to_string(),
                policy: Some(failed.policy_id().clone()),
            }
        })
        .collect();
    let cedar_allowed = response.decision() == cedar_policy::Decision::Allow;
    let allowed = cedar_allowed && errors.is_empty();
    // A deny Cedar gave has its forbids as reasons; an allow Mandate
    // turned into a deny has none (the permits did not decide it).
    let reasons = if allowed || !cedar_allowed {
        sorted_reasons(&response)
    } else {
        Vec::new()
    };
    Judgement {
        allowed,
        reasons,
        errors,
    }
}

/// The prepared verdicts' answer when they give one (checked against
/// Cedar's in debug builds), else Cedar's authorizer's.
pub fn judge(
    authorizer: &Authorizer,
    request: &Request,
    (policies, verdicts): (&PolicySet, Option<&Verdicts>),
    entities: &Entities,
) -> Judgement {
    match verdicts.and_then(|verdicts| verdicts.evaluate_all(request, entities)) {
        Some(verdict) => {
            #[cfg(debug_assertions)]
            check(authorizer, &verdict, request, policies, entities);
            verdict.into()
        }
        None => by_cedar(authorizer, request, policies, entities),
    }
}

/// The policies that determined Cedar's answer, sorted by id: the order
/// verdicts give reasons in, so the two compare and either can answer.
fn sorted_reasons(response: &cedar_policy::Response) -> Vec<PolicyId> {
    let mut reasons: Vec<PolicyId> = response.diagnostics().reason().cloned().collect();
    reasons.sort_unstable_by(|a, b| AsRef::<str>::as_ref(a).cmp(b.as_ref()));
    reasons
}

/// Whether partial evaluation already denies, whatever the unknowns turn
/// out to be (a deny under Cedar's rule is one under Mandate's too).
pub fn denied_whatever_unknown(response: &cedar_policy::TpeResponse<'_>) -> bool {
    response.decision() == Some(cedar_policy::Decision::Deny)
}

/// Debug builds: panics unless Cedar's authorizer over the same policies
/// gives `verdict`'s decision and reasons, with no error.
#[cfg(debug_assertions)]
pub fn check(
    authorizer: &Authorizer,
    verdict: &Verdict,
    request: &Request,
    policies: &PolicySet,
    entities: &Entities,
) {
    let cedar = authorizer.is_authorized(request, policies, entities);
    assert_eq!(
        (verdict.allowed, &verdict.reasons, 0),
        (
            cedar.decision() == cedar_policy::Decision::Allow,
            &sorted_reasons(&cedar),
            cedar.diagnostics().errors().count()
        ),
        "verdicts and Cedar's authorizer disagree on {request}"
    );
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use cedar_policy::{Context, EntityUid};

    use super::*;

    fn request() -> Request {
        let uid = |text: &str| EntityUid::from_str(text).unwrap();
        Request::new(
            uid(r#"User::"carol""#),
            uid(r#"Action::"view""#),
            uid(r#"Account::"a""#),
            Context::empty(),
            None,
        )
        .unwrap()
    }

    fn judged(policies: &str) -> Judgement {
        let policies = PolicySet::from_str(policies).unwrap();
        let entities = Entities::empty();
        by_cedar(&Authorizer::new(), &request(), &policies, &entities)
    }

    #[test]
    fn an_allow_is_an_allow_only_when_nothing_erred() {
        let allowed = judged("permit(principal, action, resource);");
        assert!(allowed.allowed);
        assert_eq!(allowed.reasons, [PolicyId::new("policy0")]);
        assert!(allowed.errors.is_empty());

        // Cedar skips the erring forbid and allows; Mandate denies, with
        // the error and no reason.
        let erred = judged(
            r#"permit(principal, action, resource);
               forbid(principal, action, resource) when { principal.missing };"#,
        );
        assert!(!erred.allowed);
        assert!(erred.reasons.is_empty());
        assert_eq!(erred.errors.len(), 1);
        assert_eq!(erred.errors[0].code(), "evaluation_error");
        assert_eq!(erred.errors[0].policy, Some(PolicyId::new("policy1")));
    }

    #[test]
    fn a_deny_names_its_forbids_and_no_permit_is_a_deny_without_reasons() {
        let forbidden = judged(
            r#"permit(principal, action, resource);
               forbid(principal, action, resource);"#,
        );
        assert!(!forbidden.allowed);
        assert_eq!(forbidden.reasons, [PolicyId::new("policy1")]);
        let nothing = judged(r#"permit(principal, action, resource) when { false };"#);
        assert_eq!(
            nothing,
            Judgement {
                allowed: false,
                reasons: Vec::new(),
                errors: Vec::new()
            }
        );
    }
}
