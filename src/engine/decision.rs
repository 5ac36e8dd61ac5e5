//! What goes into a decision and what comes out: the wire-neutral
//! request, the caller's mistakes, and the answer with its reasons.

use std::sync::Arc;

use cedar_policy::PolicyId;
use serde_json::{Map, Value};

/// An entity as a caller names it: a type (qualified, or unqualified in the
/// default namespace), an id, and, for request-described types, its attributes.
#[derive(Debug, Clone, Copy)]
pub struct EntityRef<'a> {
    /// `Brokerage::User`, or `user`
    pub type_name: &'a str,
    /// the entity id
    pub id: &'a str,
    /// attributes supplied by the caller (AuthZEN `properties`)
    pub properties: Option<&'a Map<String, Value>>,
}

/// One question, as decoded from any wire format.
#[derive(Debug, Clone, Copy)]
pub struct DecisionRequest<'a> {
    /// who asks
    pub principal: EntityRef<'a>,
    /// the action id (`view_account`) or full uid (`Brokerage::Action::"view_account"`)
    pub action: &'a str,
    /// on what
    pub resource: EntityRef<'a>,
    /// the Cedar context, as JSON (parsed against the schema)
    pub context: Option<&'a Value>,
    /// request-supplied entities
    pub entities: RequestEntities<'a>,
    /// the caller's correlation id (`X-Request-ID`), for the decision log
    pub request_id: Option<&'a str>,
}

/// Entities a request brings along.
#[derive(Debug, Clone, Copy, Default)]
pub enum RequestEntities<'a> {
    /// none
    #[default]
    None,
    /// in Cedar's JSON entity format, parsed by this decision
    Json(&'a [Value]),
    /// parsed once for many decisions (a batch's shared entities) by
    /// [`Engine::parse_entities`](super::Engine::parse_entities)
    Parsed(&'a ParsedEntities),
}

/// Request-supplied entities parsed and checked once, against the policy
/// snapshot of `version`; a decision under another snapshot parses again.
#[derive(Debug, Clone)]
pub struct ParsedEntities {
    pub(super) version: std::sync::Arc<str>,
    pub(super) json: Vec<Value>,
    pub(super) entities: Vec<cedar_policy::Entity>,
}

/// The part of a request at fault, so each API can name it in its own terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// the principal (AuthZEN `subject`)
    Principal,
    /// the principal's attributes (AuthZEN `subject.properties`)
    PrincipalProperties,
    /// the resource
    Resource,
    /// the resource's attributes (AuthZEN `resource.properties`)
    ResourceProperties,
    /// the context
    Context,
    /// one attribute of the context
    ContextAttribute(String),
    /// one of the request-supplied entities, by index
    Entity(usize),
}

/// A caller's mistake: the request is malformed, not merely denied.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    /// what is at fault
    pub field: Field,
    /// stable, snake_case
    pub code: &'static str,
    /// what is wrong, for a person
    pub message: String,
}

/// Why a decision is a deny although no `forbid` said so, or what went wrong
/// while evaluating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionError {
    pub(super) code: &'static str,
    pub(super) message: String,
    pub(super) policy: Option<PolicyId>,
}

impl DecisionError {
    pub(super) fn new(code: &'static str, message: String) -> Self {
        Self {
            code,
            message,
            policy: None,
        }
    }

    /// Stable, snake_case: `unknown_entity_type`, `unknown_action`,
    /// `entity_not_found`, `invalid_request`, `invalid_entities`,
    /// `entity_store_unavailable`, `evaluation_error`.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// What went wrong, for a person.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The policy whose evaluation failed, for `evaluation_error`.
    pub fn policy(&self) -> Option<&str> {
        self.policy.as_ref().map(AsRef::as_ref)
    }
}

/// The answer: allow or deny, the policies that determined it, and any errors.
#[derive(Debug, Clone)]
pub struct Decision {
    pub(super) allowed: bool,
    pub(super) reasons: Vec<PolicyId>,
    pub(super) errors: Vec<DecisionError>,
    pub(super) policy_version: Arc<str>,
    pub(super) stale_data: bool,
}

impl Decision {
    pub(super) fn deny(error: DecisionError, policy_version: Arc<str>) -> Self {
        Self {
            allowed: false,
            reasons: Vec::new(),
            errors: vec![error],
            policy_version,
            stale_data: false,
        }
    }

    /// The answer of Cedar (or of the memo, which holds Cedar's answers)
    /// for a request that raised no error.
    pub(super) fn of(verdict: crate::policy::Verdict, policy_version: &Arc<str>) -> Self {
        Self {
            allowed: verdict.allowed,
            reasons: verdict.reasons,
            errors: Vec::new(),
            policy_version: Arc::clone(policy_version),
            stale_data: false,
        }
    }

    /// A deny for an item of a batch that was malformed on its own: what
    /// would have been a 4xx for a single request.
    pub fn refused(code: &'static str, message: String, policy_version: Arc<str>) -> Self {
        Self::deny(DecisionError::new(code, message), policy_version)
    }

    /// Whether the action is allowed.
    pub fn allowed(&self) -> bool {
        self.allowed
    }

    /// The `@id` of each determining policy: the `permit`s of an allow, the
    /// `forbid`s of a deny (empty for a default deny).
    pub fn reasons(&self) -> impl ExactSizeIterator<Item = &str> {
        self.reasons.iter().map(AsRef::as_ref)
    }

    /// Errors met while deciding; any error makes the decision a deny.
    pub fn errors(&self) -> &[DecisionError] {
        &self.errors
    }

    /// Whether some entity data was served past its TTL because the store
    /// failed (within `cache.stale_if_error`).
    pub fn stale_data(&self) -> bool {
        self.stale_data
    }

    /// The policy version that decided.
    pub fn policy_version(&self) -> &str {
        &self.policy_version
    }

    /// One sentence: `allowed by O1`, `denied by G2`, `denied: no policy
    /// allowed the request`, `denied: entity_not_found`. Written where it is
    /// shown (into the answer's JSON, a log line), never built on its own.
    pub fn summary(&self) -> Summary<'_> {
        Summary(self)
    }
}

/// A decision's one-sentence summary ([`Decision::summary`]): `Display`,
/// and serialized as a string.
#[derive(Debug, Clone, Copy)]
pub struct Summary<'a>(&'a Decision);

impl Summary<'_> {
    /// Hands `piece` the summary's text in order, piece by piece: what
    /// `Display` writes, for a writer that needs no formatting machinery
    /// (every answer carries a summary).
    pub fn pieces(&self, mut piece: impl FnMut(&str)) {
        let decision = self.0;
        let reasons = |piece: &mut dyn FnMut(&str)| {
            for (n, reason) in decision.reasons.iter().enumerate() {
                if n > 0 {
                    piece(", ");
                }
                piece(reason.as_ref());
            }
        };
        match (decision.allowed, decision.errors.first()) {
            (true, _) => {
                piece("allowed by ");
                reasons(&mut piece);
            }
            (false, _) if !decision.reasons.is_empty() => {
                piece("denied by ");
                reasons(&mut piece);
            }
            (false, Some(error)) => {
                for text in ["denied: ", error.code, ": ", error.message.as_str()] {
                    piece(text);
                }
            }
            (false, None) => piece("denied: no policy allowed the request"),
        }
    }
}

impl std::fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut written = Ok(());
        self.pieces(|text| {
            if written.is_ok() {
                written = f.write_str(text);
            }
        });
        written
    }
}

impl serde::Serialize for Summary<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}
