//! The decision: a wire-neutral [`DecisionRequest`] in, a [`Decision`] out.
//!
//! Resolves names against the current policy snapshot, gathers the entity
//! slice the request needs, and asks Cedar. Fail closed: any error in
//! evaluation, an unknown type or action, or a missing entity is a deny that
//! says why. Only a caller's malformed input is an `Err` ([`RequestError`]),
//! which the API answers with a 4xx. Knows nothing of HTTP.

mod context;
mod decision;
mod fixed;
mod slices;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cedar_policy::{
    Authorizer, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName, EntityUid,
};
use serde_json::{Map, Value};

use crate::config::Sourcing;
use crate::entities::{EntityStore, Gathered};
use crate::policy::{ActionPlan, FixedPart, PolicySnapshot, PolicyStore, sorted_reasons};
use crate::telemetry::{DecisionLog, LogEntry, LoggedError, metrics};

pub use decision::{
    Decision, DecisionError, DecisionRequest, EntityRef, Field, ParsedEntities, RequestEntities,
    RequestError,
};

use context::{
    RequestProblem, ambiguous_reference, build_request, collect_entity_refs, culprit, fast_request,
};

/// Decides requests against the current policies and the entity store.
pub struct Engine {
    log: DecisionLog,
    policies: Arc<PolicyStore>,
    store: EntityStore,
    authorizer: Authorizer,
    sourcing: HashMap<EntityTypeName, Sourcing>,
    default_sourcing: Sourcing,
    /// whether some type is described by requests alone (not the store)
    any_request_sourced: bool,
    /// built entity slices, reused (HTTP store only)
    slices: Option<slices::Slices>,
    /// the context-free policies' answers (file store only)
    fixed_parts: Option<fixed::FixedParts>,
}

impl Engine {
    /// Builds the engine. `sourcing` says, per entity type, whether the store
    /// or the request describes it; types not listed take `default_sourcing`.
    pub fn new(
        policies: Arc<PolicyStore>,
        store: EntityStore,
        sourcing: HashMap<EntityTypeName, Sourcing>,
        default_sourcing: Sourcing,
    ) -> Self {
        let any_request_sourced = default_sourcing == Sourcing::Request
            || sourcing.values().any(|s| *s == Sourcing::Request);
        let slices = store.cache().map(|_| slices::Slices::new());
        let fixed_parts = store.resident().map(|_| fixed::FixedParts::new());
        Self {
            slices,
            fixed_parts,
            log: DecisionLog::off(),
            policies,
            store,
            authorizer: Authorizer::new(),
            sourcing,
            default_sourcing,
            any_request_sourced,
        }
    }

    /// Records every decision in `log` from now on.
    pub fn set_decision_log(&mut self, log: DecisionLog) {
        self.log = log;
    }

    /// Re-reads policies and schema and swaps them in; the entity store
    /// follows a schema change. On error the current snapshot keeps serving,
    /// and the error (with Cedar's diagnostics) is logged and returned.
    ///
    /// # Errors
    /// As [`crate::policy::load`].
    pub fn reload_policies(&self) -> Result<Arc<PolicySnapshot>, crate::policy::PolicyError> {
        let before = self.policies.current();
        match self.policies.reload() {
            Ok(snapshot) => {
                if snapshot.schema_version() != before.schema_version() {
                    self.store.schema_changed(snapshot.schema());
                }
                metrics().policy_reload("success", Some(snapshot.version()));
                tracing::info!(version = %snapshot.version(), policies = snapshot.policy_count(), "policies reloaded");
                Ok(snapshot)
            }
            Err(error) => {
                metrics().policy_reload("failure", None);
                for line in error.lines() {
                    tracing::error!(version = %before.version(), "policy reload refused, the last good policies keep serving: {line}");
                }
                Err(error)
            }
        }
    }

    /// The policies this engine decides with.
    pub fn policies(&self) -> &Arc<PolicyStore> {
        &self.policies
    }

    /// The entity store.
    pub fn store(&self) -> &EntityStore {
        &self.store
    }

    /// Resolves a type name as callers write it and builds the uid, for the
    /// admin API.
    pub fn parse_uid(&self, type_name: &str, id: &str) -> Option<EntityUid> {
        let snapshot = self.policies.current();
        let ty = snapshot.entity_type(type_name)?;
        Some(EntityUid::from_type_name_and_id(
            ty.clone(),
            EntityId::new(id),
        ))
    }

    fn sourcing(&self, ty: &EntityTypeName) -> Sourcing {
        self.sourcing
            .get(ty)
            .copied()
            .unwrap_or(self.default_sourcing)
    }

    /// Decides one request.
    ///
    /// # Errors
    /// Only for malformed input (a context that does not match the schema,
    /// request data for a store-served type, an invalid request entity): the
    /// caller's mistake, answered with a 4xx. Everything else is `Ok`, and a
    /// deny when anything went wrong.
    pub async fn decide(&self, request: &DecisionRequest<'_>) -> Result<Decision, RequestError> {
        let started = std::time::Instant::now();
        // One snapshot for the whole decision, its metrics included.
        let snapshot = self.policies.current();
        let outcome = self.decide_with(&snapshot, request).await;
        let took = started.elapsed();
        if let Ok(decision) = &outcome {
            let action = snapshot
                .action(request.action)
                .map_or("unknown", |a| a.id().unescaped());
            metrics().decision(action, decision.allowed(), took);
            if self.log.enabled() {
                log_decision(&self.log, &snapshot, request, decision, took);
            }
        }
        outcome
    }

    async fn decide_with(
        &self,
        snapshot: &Arc<PolicySnapshot>,
        request: &DecisionRequest<'_>,
    ) -> Result<Decision, RequestError> {
        let version = Arc::clone(snapshot.version());
        let deny = |code, message| {
            Ok(Decision::deny(
                DecisionError::new(code, message),
                Arc::clone(&version),
            ))
        };

        let Some(principal) = resolve(snapshot, &request.principal) else {
            return deny(
                "unknown_entity_type",
                unknown_type(request.principal.type_name),
            );
        };
        let Some((action, plan)) = snapshot
            .action(request.action)
            .and_then(|action| Some((action.clone(), snapshot.plan(action)?)))
        else {
            return deny(
                "unknown_action",
                format!("the schema declares no action `{}`", request.action),
            );
        };
        let Some(resource) = resolve(snapshot, &request.resource) else {
            return deny(
                "unknown_entity_type",
                unknown_type(request.resource.type_name),
            );
        };

        // The request's entities first; then the principal and resource as
        // the request describes them (a bare mention adds nothing when an
        // entity of that uid was sent).
        let mut supplied: Vec<Entity> = match request.entities {
            RequestEntities::None => Vec::new(),
            RequestEntities::Json(json) => self.request_entities(snapshot, json)?,
            RequestEntities::Parsed(parsed) if parsed.version == *snapshot.version() => {
                parsed.entities.clone()
            }
            RequestEntities::Parsed(parsed) => self.request_entities(snapshot, &parsed.json)?,
        };
        self.described(
            snapshot,
            &principal,
            &request.principal,
            Field::PrincipalProperties,
            &mut supplied,
        )?;
        self.described(
            snapshot,
            &resource,
            &request.resource,
            Field::ResourceProperties,
            &mut supplied,
        )?;

        let mut wanted = vec![principal.clone(), resource.clone()];
        let fast = plan.shape().and_then(|shape| {
            fast_request(
                shape,
                &principal,
                &action,
                &resource,
                request.context,
                &mut wanted,
            )
        });
        let empty = Value::Object(Map::new());
        let context_json = request.context.unwrap_or(&empty);
        let cedar_request = match fast {
            Some(cedar_request) => Ok(cedar_request),
            None => {
                // The fast path takes only exact entity references; what it
                // leaves here could hold one two readers read two ways.
                if let Some((name, why)) = ambiguous_reference(context_json) {
                    return Err(RequestError {
                        field: Field::ContextAttribute(name),
                        code: "invalid_context",
                        message: why.to_owned(),
                    });
                }
                collect_entity_refs(snapshot, context_json, &mut wanted);
                build_request(snapshot, &principal, &action, &resource, context_json)
            }
        };
        let cedar_request = match cedar_request {
            Ok(cedar_request) => cedar_request,
            Err(RequestProblem::Context(message)) => {
                let check = |json: &Value| {
                    build_request(snapshot, &principal, &action, &resource, json).map(|_| ())
                };
                let field = culprit(check, context_json, &message, plan.shape())
                    .map_or(Field::Context, Field::ContextAttribute);
                return Err(RequestError {
                    field,
                    code: "invalid_context",
                    message,
                });
            }
            Err(RequestProblem::Other(message)) => return deny("invalid_request", message),
        };

        // The file store holds all its entities, and the action entities, as
        // one `Entities`: read it in place, nothing gathered or copied.
        // Only the store describes the entities: what it holds or built
        // before can be read as it is.
        let store_only = supplied.is_empty() && !self.any_request_sourced;
        if let Some(all) = self.store.resident().filter(|_| store_only) {
            if let Some(missing) = wanted.iter().find(|uid| all.get(uid).is_none()) {
                return deny("entity_not_found", not_found(missing));
            }
            // The key: principal, resource, action.
            wanted.truncate(2);
            wanted.push(action);
            let kept = self
                .fixed_parts
                .as_ref()
                .zip(plan.verdicts())
                .map(|(parts, verdicts)| parts.get(&wanted, &all, verdicts));
            return Ok(self.evaluate(
                &cedar_request,
                plan,
                &all,
                kept.as_ref().map(|kept| &kept.part),
                version,
                Gathered::default(),
            ));
        }

        // The HTTP store: a slice built for the same entities and action,
        // still fresh, is reused as it is.
        let slice_key = match (&self.slices, self.store.cache()) {
            (Some(slices), Some(cache)) if store_only => {
                // The key is the named entities and the action: looked up in
                // place, copied only to keep a new slice.
                wanted.push(action.clone());
                // A slice whose kept answer is older policies' is rebuilt.
                let found = slices
                    .get(&wanted, cache.generation())
                    .filter(|slice| plan.verdicts().is_none_or(|v| slice.fixed.serves(v)));
                let key = found.is_none().then(|| wanted.clone());
                wanted.pop();
                if let Some(slice) = found {
                    metrics().cache_hits.inc_by(wanted.len() as u64);
                    return Ok(self.evaluate(
                        &cedar_request,
                        plan,
                        &slice.entities,
                        Some(&slice.fixed),
                        version,
                        Gathered::default(),
                    ));
                }
                key
            }
            _ => None,
        };

        let mut slice: Vec<Entity> =
            Vec::with_capacity(wanted.len() + supplied.len() + plan.entities().len());
        let from_store: Vec<EntityUid> = wanted
            .iter()
            .filter(|uid| self.sourcing(uid.type_name()) != Sourcing::Request)
            .cloned()
            .collect();
        let gathered = match self
            .store
            .gather(&from_store, snapshot.schema(), &mut slice)
            .await
        {
            Ok(gathered) => gathered,
            Err(error) => return deny("entity_store_unavailable", error.to_string()),
        };
        // Request data overrides stored data (only `merge` types get here).
        if !supplied.is_empty() {
            let overridden: HashSet<EntityUid> = supplied.iter().map(Entity::uid).collect();
            slice.retain(|stored| !overridden.contains(&stored.uid()));
        }
        slice.extend(supplied);
        let present: HashSet<EntityUid> = slice.iter().map(Entity::uid).collect();
        if let Some(missing) = wanted.iter().find(|uid| !present.contains(*uid)) {
            return deny("entity_not_found", not_found(missing));
        }
        slice.extend(plan.entities().iter().cloned());
        let entities = match Entities::from_entities(slice, None) {
            Ok(entities) => entities,
            Err(e) => return deny("invalid_entities", e.to_string()),
        };
        // Kept as a slice (with a place for its context-free answer), or
        // used once.
        let built = match (&self.slices, slice_key) {
            (Some(slices), Some(key)) => Ok(slices.keep(key, entities, gathered)),
            _ => Err(entities),
        };
        let (entities, fixed) = match &built {
            Ok(slice) => (&slice.entities, Some(&slice.fixed)),
            Err(entities) => (entities, None),
        };
        Ok(self.evaluate(&cedar_request, plan, entities, fixed, version, gathered))
    }

    /// Asks Cedar, and turns its answer into a decision: any error is a deny.
    /// The action's policies are evaluated at once ([`crate::policy::Verdicts`]); when that
    /// raises an error, Cedar's authorizer evaluates them one by one to say
    /// which policy failed and why. `fixed` keeps the context-free
    /// policies' answer for these entities, when they are a kept slice.
    fn evaluate(
        &self,
        cedar_request: &cedar_policy::Request,
        plan: &ActionPlan,
        entities: &Entities,
        fixed: Option<&FixedPart>,
        version: Arc<str>,
        gathered: Gathered,
    ) -> Decision {
        if let Some(verdict) = plan
            .verdicts()
            .and_then(|verdicts| verdicts.evaluate(cedar_request, entities, fixed))
        {
            #[cfg(debug_assertions)]
            self.check_verdict(&verdict, cedar_request, plan, entities);
            return Decision {
                allowed: verdict.allowed,
                reasons: verdict.reasons,
                errors: Vec::new(),
                policy_version: version,
                stale_data: gathered.stale,
            };
        }
        let response = self
            .authorizer
            .is_authorized(cedar_request, plan.policies(), entities);
        let errors: Vec<DecisionError> = response
            .diagnostics()
            .errors()
            .map(|e| {
                let cedar_policy::AuthorizationError::PolicyEvaluationError(failed) = e;
                DecisionError {
                    code: "evaluation_error",
                    message: e.to_string(),
                    policy: Some(failed.policy_id().clone()),
                }
            })
            .collect();
        let cedar_allowed = response.decision() == CedarDecision::Allow;
        // Fail closed: Cedar skips a policy that errors, so an erroring
        // `forbid` would protect nothing. Any error is a deny.
        let allowed = cedar_allowed && errors.is_empty();
        let reasons = if allowed || !cedar_allowed {
            sorted_reasons(&response)
        } else {
            Vec::new()
        };
        Decision {
            allowed,
            reasons,
            errors,
            policy_version: version,
            stale_data: gathered.stale,
        }
    }

    /// Debug builds (every test) check each verdict against Cedar's
    /// authorizer: the same decision, the same reasons, no error.
    #[cfg(debug_assertions)]
    fn check_verdict(
        &self,
        verdict: &crate::policy::Verdict,
        cedar_request: &cedar_policy::Request,
        plan: &ActionPlan,
        entities: &Entities,
    ) {
        let cedar = self
            .authorizer
            .is_authorized(cedar_request, plan.policies(), entities);
        let reasons = sorted_reasons(&cedar);
        assert_eq!(
            (verdict.allowed, &verdict.reasons, 0),
            (
                cedar.decision() == CedarDecision::Allow,
                &reasons,
                cedar.diagnostics().errors().count()
            ),
            "verdicts and Cedar's authorizer disagree on {cedar_request}"
        );
    }

    /// Warms the entity cache for many decisions at once (a batch's
    /// subjects and resources, as `(type, id)`): one store call per round
    /// of misses instead of one per decision. A failure is left for each
    /// decision to meet and explain.
    pub async fn prefetch<'r>(&self, refs: impl IntoIterator<Item = (&'r str, &'r str)>) {
        if self.store.cache().is_none() {
            return;
        }
        let snapshot = self.policies.current();
        let uids: HashSet<EntityUid> = refs
            .into_iter()
            .filter_map(|(type_name, id)| {
                let reference = EntityRef {
                    type_name,
                    id,
                    properties: None,
                };
                resolve(&snapshot, &reference)
            })
            .filter(|uid| self.sourcing(uid.type_name()) != Sourcing::Request)
            .collect();
        if uids.len() < 2 {
            return;
        }
        let uids: Vec<EntityUid> = uids.into_iter().collect();
        let mut warmed = Vec::new();
        let _ = self
            .store
            .gather(&uids, snapshot.schema(), &mut warmed)
            .await;
    }

    /// Parses request-supplied entities once, for many decisions (a batch's
    /// shared `entities`).
    ///
    /// # Errors
    /// An entity that does not conform to the schema, or of a store-served
    /// type, naming its index.
    pub fn parse_entities(&self, json: Vec<Value>) -> Result<ParsedEntities, RequestError> {
        let snapshot = self.policies.current();
        let entities = self.request_entities(&snapshot, &json)?;
        Ok(ParsedEntities {
            version: Arc::clone(snapshot.version()),
            json,
            entities,
        })
    }

    /// Request-supplied entities in Cedar's JSON format, checked against
    /// the schema and the sourcing of their types. A uid sent twice is two
    /// descriptions of one entity: refused, not resolved by order.
    fn request_entities(
        &self,
        snapshot: &PolicySnapshot,
        json: &[Value],
    ) -> Result<Vec<Entity>, RequestError> {
        let mut seen = HashSet::with_capacity(json.len());
        json.iter()
            .enumerate()
            .map(|(index, json)| {
                let entity = Entity::from_json_value(json.clone(), Some(snapshot.schema()))
                    .map_err(|e| RequestError {
                        field: Field::Entity(index),
                        code: "invalid_entity",
                        message: describe(&e),
                    })?;
                let uid = entity.uid();
                if self.sourcing(uid.type_name()) == Sourcing::Store {
                    return Err(store_authoritative(Field::Entity(index), &uid));
                }
                if !seen.insert(uid) {
                    return Err(RequestError {
                        field: Field::Entity(index),
                        code: "duplicate_entity",
                        message: format!("`{}` is sent more than once", entity.uid()),
                    });
                }
                Ok(entity)
            })
            .collect()
    }

    /// Turns AuthZEN `properties` into a request-supplied entity, when the
    /// type is request-described (or `merge`); `out` holds the entities
    /// the request already describes.
    fn described(
        &self,
        snapshot: &PolicySnapshot,
        uid: &EntityUid,
        reference: &EntityRef<'_>,
        field: Field,
        out: &mut Vec<Entity>,
    ) -> Result<(), RequestError> {
        let sourcing = self.sourcing(uid.type_name());
        let described = || out.iter().any(|entity| entity.uid() == *uid);
        let Some(properties) = reference.properties else {
            // A request-described entity exists because the request names
            // it, when its type needs no attribute; otherwise it must come
            // in `entities`, or it is missing.
            if sourcing == Sourcing::Request && !described() {
                let json = serde_json::json!({
                    "uid": { "type": uid.type_name().to_string(), "id": reference.id },
                    "attrs": {},
                    "parents": [],
                });
                out.extend(Entity::from_json_value(json, Some(snapshot.schema())).ok());
            }
            return Ok(());
        };
        match sourcing {
            Sourcing::Store if properties.is_empty() => Ok(()),
            Sourcing::Store => Err(store_authoritative(field, uid)),
            Sourcing::Request | Sourcing::Merge if described() => Err(RequestError {
                field,
                code: "duplicate_entity",
                message: format!("`{uid}` is described twice in the request"),
            }),
            Sourcing::Request | Sourcing::Merge => {
                let json = serde_json::json!({
                    "uid": { "type": uid.type_name().to_string(), "id": reference.id },
                    "attrs": properties,
                    "parents": [],
                });
                let entity =
                    Entity::from_json_value(json, Some(snapshot.schema())).map_err(|e| {
                        RequestError {
                            field,
                            code: "invalid_properties",
                            message: describe(&e),
                        }
                    })?;
                out.push(entity);
                Ok(())
            }
        }
    }
}

/// An error with its causes, joined with colons (Cedar's top-level messages
/// alone can be as vague as "entity does not conform to the schema").
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = inner.source();
    }
    text
}

/// Writes one decision's line: canonical uids (`Brokerage::User::"erin"`,
/// whatever the caller's spelling), the action id, a request id made here
/// when the caller sent none.
fn log_decision(
    log: &DecisionLog,
    snapshot: &PolicySnapshot,
    request: &DecisionRequest<'_>,
    decision: &Decision,
    took: std::time::Duration,
) {
    let canonical = |entity: &EntityRef<'_>| {
        resolve(snapshot, entity).map_or_else(
            || format!("{}::{:?}", entity.type_name, entity.id),
            |uid| uid.to_string(),
        )
    };
    let (principal, resource) = (canonical(&request.principal), canonical(&request.resource));
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
        principal: &principal,
        action,
        resource: &resource,
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

fn resolve(snapshot: &PolicySnapshot, reference: &EntityRef<'_>) -> Option<EntityUid> {
    let ty = snapshot.entity_type(reference.type_name)?;
    Some(EntityUid::from_type_name_and_id(
        ty.clone(),
        EntityId::new(reference.id),
    ))
}

fn not_found(uid: &EntityUid) -> String {
    format!("entity `{uid}` is not known to the entity store or the request")
}

fn unknown_type(name: &str) -> String {
    format!("the schema declares no entity type `{name}`")
}

fn store_authoritative(field: Field, uid: &EntityUid) -> RequestError {
    RequestError {
        field,
        code: "store_authoritative",
        message: format!(
            "request data for `{uid}` is refused: type `{}` is served by the entity store (set `entities.sources` to `merge` to trust callers with it)",
            uid.type_name()
        ),
    }
}
