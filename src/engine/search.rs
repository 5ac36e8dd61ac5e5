//! AuthZEN search: who may, on what, which actions. Candidates come from
//! the store (every entity of the searched type) or the schema (the actions
//! that apply to the subject's and resource's types); each is decided as
//! an evaluation would decide it, so every result, asked back as an
//! evaluation with the same context, is allowed, and nothing the store
//! holds that would be allowed is missing.
//!
//! A subject or resource search first asks Cedar's type-aware partial
//! evaluation (`tpe`), the searched entity unknown and the rest known: a
//! definite deny answers `[]` without listing the store. When every permit
//! it leaves names what it allows, only those entities, or those referring
//! to them, are candidates (`related`). Else the names and
//! the context are read once, and each candidate is decided over the
//! entities its evaluation would read (the file store's; or the named
//! entities' slice and the candidate's own, from the HTTP store's cache) by
//! the action's policies, any error a deny. No candidate's decision is
//! remembered in the decisions' memo: a search does not push the hot
//! path's answers out.
//!
//! What a search costs the store is bounded: the listing takes at most
//! `LISTING_REQUESTS` (3) requests and is kept while fresh; the candidates
//! are gathered together, a store call per round of misses and `BATCH`
//! uids, never one per candidate. The whole answer is remembered per
//! (query, policies, entity generation) while fresh (`search_memo.rs`), so
//! later pages, and the same search again, cost nothing; an invalidation
//! moves the generation and the next search decides again.

use std::collections::HashSet;
use std::sync::Arc;

use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, PartialEntities,
    PartialEntityUid, PartialRequest, PolicySet, Request,
};
use serde_json::Value;

use super::context::{ReadContext, read_context};
use super::memo::Epoch;
use super::{
    DecisionRequest, Engine, EntityRef, Names, RequestEntities, RequestError, Stop, resolve,
};
use super::{judge, related, search_memo};
use crate::entities::{GatheredApart, Resident};
use crate::policy::{ActionPlan, PolicySnapshot, Verdicts};

/// What is searched for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Searched {
    /// subjects of `subject.type`
    Subject,
    /// resources of `resource.type`
    Resource,
    /// actions
    Action,
}

/// A search: the parts given; the searched one has its type only (an id,
/// if sent, is ignored, as the specification says).
#[derive(Debug, Clone, Copy)]
pub struct SearchQuery<'a> {
    /// the subject's type, and its id unless subjects are searched
    pub subject: (&'a str, &'a str),
    /// the action, unless actions are searched
    pub action: &'a str,
    /// the resource's type, and its id unless resources are searched
    pub resource: (&'a str, &'a str),
    /// the context every candidate is decided with
    pub context: Option<&'a Value>,
}

/// Why a search cannot be answered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SearchError {
    /// The searched type or a named action is not the schema's.
    #[error("{0}")]
    Unknown(String),
    /// More candidates than allowed: a truncated answer would under-report.
    #[error(
        "the search has more than {limit} candidates (`search.max_candidates`); narrow it (a more specific type, or an evaluation per entity) or raise the limit"
    )]
    TooWide {
        /// the limit
        limit: usize,
    },
    /// The store cannot list the entities of a type.
    #[error("cannot list the candidates: {0}")]
    CannotList(String),
    /// The request itself is malformed (e.g. the context does not fit).
    #[error(transparent)]
    Request(#[from] RequestError),
}

/// What a search found, and what it cost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// the ids (or action names) allowed, sorted
    pub ids: Vec<String>,
    /// how many candidates were decided (0: remembered from an earlier
    /// search, nothing decided)
    pub candidates: usize,
    /// answered by partial evaluation alone: nothing was listed
    pub pruned: bool,
    /// actions an action search could not decide with the context given
    /// (it lacks what their schema requires): neither allowed nor denied
    pub skipped: Vec<Skipped>,
}

/// An action an action search could not decide, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// the action's name
    pub action: String,
    /// why, for a person: what the context lacks
    pub reason: String,
}

/// The names and context of a subject or resource search, read once.
struct Fixed<'s> {
    names: Names<'s>,
    context: ReadContext<'s>,
    /// the entities the search names besides the candidates: the
    /// subject or resource given, and the context's references
    named: Vec<EntityUid>,
}

/// How a search's candidates are decided: the action's plan, and the
/// residual policies (with their verdicts, when they can be prepared).
struct Evaluator<'p> {
    plan: &'p ActionPlan,
    residual: Option<(&'p PolicySet, Option<&'p Verdicts>)>,
}

/// What partial evaluation left.
enum Partial {
    /// no candidate can be allowed
    Denied,
    /// the policies each candidate is decided by
    Residual(PolicySet),
    /// it could not take the request: the action's policies decide
    Undecided,
}

/// How long what a search computed is good for: the earliest end of
/// freshness of anything it read, and whether anything was served stale.
#[derive(Default)]
struct Freshness {
    until: Option<tokio::time::Instant>,
    stale: bool,
}

impl Freshness {
    fn meet(&mut self, stale: bool, until: Option<tokio::time::Instant>) {
        self.stale |= stale;
        if let Some(until) = until {
            self.until = Some(self.until.map_or(until, |t| t.min(until)));
        }
    }
}

/// The entities a candidate's evaluation reads besides its own.
enum Known {
    /// the file store's, all of them
    Resident(Arc<Resident>),
    /// the named entities and their ancestors, and their uids
    Slice(Vec<Entity>, HashSet<EntityUid>),
}

impl Engine {
    /// What the search finds: the ids (or action names), sorted, each
    /// allowed.
    ///
    /// # Errors
    /// [`SearchError`]: an unknown type or action, too many candidates, a
    /// store that cannot list or describe a candidate, or a malformed
    /// context.
    pub async fn search(
        &self,
        query: &SearchQuery<'_>,
        searched: Searched,
        max_candidates: usize,
    ) -> Result<Found, SearchError> {
        if searched == Searched::Action {
            return self
                .search_afresh(query, searched, max_candidates, &mut Freshness::default())
                .await;
        }
        // Read before anything is gathered: an invalidation meanwhile
        // leaves the answer under an epoch no later search reads.
        let epoch = self.search_epoch();
        let key = search_memo::key(query, searched, max_candidates);
        if let Some(found) = self.searches.get(&key, epoch) {
            return Ok(found);
        }
        let mut freshness = Freshness::default();
        let found = self
            .search_afresh(query, searched, max_candidates, &mut freshness)
            .await?;
        // Remembered when nothing was stale and its freshness is known:
        // the file store's reading, or the HTTP store's data until it
        // expires (the request-described path decides through the memo and
        // knows no freshness).
        let known = self.store.resident().is_some() || freshness.until.is_some();
        if !found.pruned && !freshness.stale && known && !self.sources.any_request() {
            self.searches.keep(key, epoch, freshness.until, &found);
        }
        Ok(found)
    }

    /// What `search` would answer from memory: the same search (its later
    /// pages) under the same policies and entity generation, still fresh.
    pub fn remembered(
        &self,
        query: &SearchQuery<'_>,
        searched: Searched,
        max_candidates: usize,
    ) -> Option<Found> {
        (searched != Searched::Action).then_some(())?;
        let key = search_memo::key(query, searched, max_candidates);
        self.searches.get(&key, self.search_epoch())
    }

    fn search_epoch(&self) -> Epoch {
        Epoch {
            policies: self.policies.current().epoch(),
            entities: self.store.generation(),
        }
    }

    /// The search decided now, nothing remembered read; `freshness` met
    /// with everything it reads.
    async fn search_afresh(
        &self,
        query: &SearchQuery<'_>,
        searched: Searched,
        max_candidates: usize,
        freshness: &mut Freshness,
    ) -> Result<Found, SearchError> {
        let snapshot = self.policies.current();
        let (subject_type, resource_type) = (
            known_type(&snapshot, query.subject.0)?,
            known_type(&snapshot, query.resource.0)?,
        );
        if searched == Searched::Action {
            let actions = applicable_actions(&snapshot, &subject_type, &resource_type);
            return self.search_actions(query, actions, max_candidates).await;
        }
        if snapshot.action(query.action).is_none() {
            return Err(SearchError::Unknown(snapshot.unknown_action(query.action)));
        }
        let searched_type = match searched {
            Searched::Subject => &subject_type,
            _ => &resource_type,
        };
        self.search_entities(
            &snapshot,
            query,
            (searched, searched_type),
            max_candidates,
            freshness,
        )
        .await
    }

    /// A subject or resource search, its types and action known: pruned
    /// when partial evaluation (or a missing named entity) says every
    /// evaluation would deny, else each candidate the store lists decided.
    async fn search_entities(
        &self,
        snapshot: &PolicySnapshot,
        query: &SearchQuery<'_>,
        (searched, searched_type): (Searched, &EntityTypeName),
        max_candidates: usize,
        freshness: &mut Freshness,
    ) -> Result<Found, SearchError> {
        // Nothing to list when every evaluation would deny: a named entity
        // unknown, a request that cannot be built, or partial evaluation
        // finding no candidate could be allowed.
        let pruned = Found {
            pruned: true,
            ..Found::default()
        };
        let Some(fixed) = self.fixed(snapshot, query, searched)? else {
            return Ok(pruned);
        };
        let Some(known) = self.known_entities(snapshot, &fixed, freshness).await? else {
            return Ok(pruned);
        };
        let residual =
            match Self::partially_evaluate(snapshot, &fixed, query.context, searched, &known) {
                Partial::Denied => return Ok(pruned),
                Partial::Residual(policies) => Some(policies),
                Partial::Undecided => None,
            };
        let required = required_of(residual.as_ref(), searched);
        let candidates = self
            .candidates(searched_type, required.as_ref(), max_candidates, freshness)
            .await?;
        if candidates.len() > max_candidates {
            return Err(SearchError::TooWide {
                limit: max_candidates,
            });
        }
        let mut ids = if self.sources.any_request() {
            // Request-described types take the ordinary path, each
            // candidate decided as a request of its own.
            self.decide_each(query, searched, &candidates, &mut Vec::new())
                .await?
        } else {
            self.decide_over_store(
                snapshot,
                &fixed,
                (searched, searched_type),
                (&known, residual.as_ref()),
                &candidates,
                freshness,
            )
            .await?
        };
        ids.sort();
        Ok(Found {
            ids,
            candidates: candidates.len(),
            ..Found::default()
        })
    }

    /// The ids a subject or resource search decides: every entity of the
    /// type the store holds or, with a requirement, the entities it names
    /// and those referring to what it names (at most `max` and one more).
    async fn candidates(
        &self,
        searched_type: &EntityTypeName,
        required: Option<&related::Required>,
        max: usize,
        freshness: &mut Freshness,
    ) -> Result<Vec<String>, SearchError> {
        let Some(required) = required else {
            let listed = self
                .store
                .list(searched_type, None, max)
                .await
                .map_err(SearchError::CannotList)?;
            freshness.meet(false, listed.fresh_until);
            return Ok(listed.ids.to_vec());
        };
        let mut ids: Vec<String> = required
            .is_one_of
            .iter()
            .filter(|uid| uid.type_name() == searched_type)
            .map(|uid| uid.id().unescaped().to_owned())
            .collect();
        if !required.refers_to.is_empty() {
            let referring: Vec<EntityUid> = required.refers_to.iter().cloned().collect();
            let listed = self
                .store
                .list(searched_type, Some(&referring), max)
                .await
                .map_err(SearchError::CannotList)?;
            freshness.meet(false, listed.fresh_until);
            ids.extend(listed.ids.iter().cloned());
            ids.sort_unstable();
            ids.dedup();
        }
        Ok(ids)
    }

    /// Each action decided as an evaluation would, with the context
    /// attributes its schema declares and no others.
    async fn search_actions(
        &self,
        query: &SearchQuery<'_>,
        actions: Vec<String>,
        max_candidates: usize,
    ) -> Result<Found, SearchError> {
        if actions.len() > max_candidates {
            return Err(SearchError::TooWide {
                limit: max_candidates,
            });
        }
        let mut skipped = Vec::new();
        let mut ids = self
            .decide_each(query, Searched::Action, &actions, &mut skipped)
            .await?;
        ids.sort();
        skipped.sort_by(|a, b| a.action.cmp(&b.action));
        Ok(Found {
            ids,
            candidates: actions.len(),
            pruned: false,
            skipped,
        })
    }

    /// Each candidate decided through the ordinary pipeline, one request at
    /// a time, unrecorded (the search is the caller's one request).
    async fn decide_each(
        &self,
        query: &SearchQuery<'_>,
        searched: Searched,
        candidates: &[String],
        skipped: &mut Vec<Skipped>,
    ) -> Result<Vec<String>, SearchError> {
        let mut found = Vec::new();
        for (index, candidate) in candidates.iter().enumerate() {
            let own_context = (searched == Searched::Action)
                .then(|| self.context_for(candidate, query.context))
                .flatten();
            let (subject, action, resource) = match searched {
                Searched::Subject => (candidate.as_str(), query.action, query.resource.1),
                Searched::Resource => (query.subject.1, query.action, candidate.as_str()),
                Searched::Action => (query.subject.1, candidate.as_str(), query.resource.1),
            };
            let request = DecisionRequest {
                principal: EntityRef {
                    type_name: query.subject.0,
                    id: subject,
                    properties: None,
                },
                action,
                resource: EntityRef {
                    type_name: query.resource.0,
                    id: resource,
                    properties: None,
                },
                context: own_context.as_ref().or(query.context),
                entities: RequestEntities::None,
                request_id: None,
            };
            match self.decide_unrecorded(&request).await {
                Ok(decision) if decision.allowed() => found.push(candidate.clone()),
                Ok(_) => {}
                // Each action has its own context: one this context does
                // not fit is not allowed with it, and is said to be skipped.
                Err(error) if searched == Searched::Action => skipped.push(Skipped {
                    action: candidate.clone(),
                    reason: error.message,
                }),
                Err(error) => return Err(error.into()),
            }
            if index % 64 == 63 {
                // A wide search gives the request timer a chance.
                tokio::task::yield_now().await;
            }
        }
        Ok(found)
    }

    /// The names and the context, read once for every candidate (the
    /// searched entity's id stands empty: only its type is read). `None`
    /// when an evaluation would deny before reading any entity.
    fn fixed<'s>(
        &self,
        snapshot: &'s PolicySnapshot,
        query: &SearchQuery<'s>,
        searched: Searched,
    ) -> Result<Option<Fixed<'s>>, SearchError> {
        let (subject_id, resource_id) = match searched {
            Searched::Subject => ("", query.resource.1),
            _ => (query.subject.1, ""),
        };
        let request = DecisionRequest {
            principal: EntityRef {
                type_name: query.subject.0,
                id: subject_id,
                properties: None,
            },
            action: query.action,
            resource: EntityRef {
                type_name: query.resource.0,
                id: resource_id,
                properties: None,
            },
            context: query.context,
            entities: RequestEntities::None,
            request_id: None,
        };
        let names = match resolve(snapshot, &request) {
            Ok(names) => names,
            Err(_) => return Ok(None),
        };
        let (context, mut named) = match read_context(snapshot, &names, query.context) {
            Ok(read) => read,
            Err(Stop::Refuse(error)) => return Err(error.into()),
            Err(Stop::Deny(_)) => return Ok(None),
        };
        named.push(match searched {
            Searched::Subject => names.resource.clone(),
            _ => names.principal.clone(),
        });
        Ok(Some(Fixed {
            names,
            context,
            named,
        }))
    }

    /// The entities every candidate's evaluation reads besides its own:
    /// the file store's (all of them), or the named ones and their
    /// ancestors from the HTTP store. `None` when a named one is missing
    /// (every evaluation would deny).
    async fn known_entities(
        &self,
        snapshot: &PolicySnapshot,
        fixed: &Fixed<'_>,
        freshness: &mut Freshness,
    ) -> Result<Option<Known>, SearchError> {
        if let Some(resident) = self.store.resident() {
            if !resident.read_under(snapshot.schema()) {
                let error = crate::entities::EntityError::OtherSchema;
                return Err(SearchError::CannotList(error.to_string()));
            }
            if fixed
                .named
                .iter()
                .any(|uid| resident.entities.get(uid).is_none())
            {
                return Ok(None);
            }
            return Ok(Some(Known::Resident(resident)));
        }
        let mut slice = Vec::with_capacity(fixed.named.len() * 2);
        let gathered = self
            .store
            .gather(&fixed.named, snapshot.schema(), &mut slice)
            .await
            .map_err(|error| SearchError::CannotList(error.to_string()))?;
        freshness.meet(gathered.stale, gathered.fresh_until);
        let present: HashSet<EntityUid> = slice.iter().map(Entity::uid).collect();
        if fixed.named.iter().any(|uid| !present.contains(uid)) {
            return Ok(None);
        }
        Ok(Some(Known::Slice(slice, present)))
    }

    /// Cedar's type-aware partial evaluation, the searched entity unknown
    /// and the named entities known (any other unknown): a definite deny,
    /// or the residual policies each candidate is decided by (Cedar's
    /// reauthorization: the same answer, errors included, as the action's
    /// policies, for any entities that agree with the known ones). What it
    /// cannot take is left to the action's policies: partial evaluation
    /// only ever saves work.
    fn partially_evaluate(
        snapshot: &PolicySnapshot,
        fixed: &Fixed<'_>,
        context: Option<&Value>,
        searched: Searched,
        known: &Known,
    ) -> Partial {
        let schema = snapshot.schema();
        let names = &fixed.names;
        // The whole context, as Cedar's parser reads it (the fast path
        // keeps only what the policies read; partial evaluation checks the
        // context against the schema).
        let empty = Value::Object(serde_json::Map::new());
        let Ok(context) = Context::from_json_value(
            context.unwrap_or(&empty).clone(),
            Some((schema, names.action)),
        ) else {
            return Partial::Undecided;
        };
        let unknown = |uid: &EntityUid| PartialEntityUid::new(uid.type_name().clone(), None);
        let known_uid = |uid: &EntityUid| PartialEntityUid::from_concrete(uid.clone());
        let (principal, resource) = match searched {
            Searched::Subject => (unknown(&names.principal), known_uid(&names.resource)),
            _ => (known_uid(&names.principal), unknown(&names.resource)),
        };
        let Ok(partial) = PartialRequest::new(
            principal,
            names.action.clone(),
            resource,
            Some(context),
            schema,
        ) else {
            return Partial::Undecided;
        };
        let given: Vec<Entity> = match known {
            // The named entities and their ancestors, not the whole file:
            // what the policies cannot reach from them stays unknown.
            Known::Resident(resident) => {
                let mut given = Vec::with_capacity(fixed.named.len() * 2);
                resident.gather(&fixed.named, &mut given);
                given
            }
            Known::Slice(slice, _) => slice.clone(),
        };
        let Ok(entities) = Entities::from_entities(given, None) else {
            return Partial::Undecided;
        };
        let Ok(entities) = PartialEntities::from_concrete(entities, schema) else {
            return Partial::Undecided;
        };
        match names.plan.policies().tpe(&partial, &entities, schema) {
            Ok(response) if judge::denied_whatever_unknown(&response) => Partial::Denied,
            Ok(response) => Partial::Residual(response.policy_set()),
            Err(_) => Partial::Undecided,
        }
    }

    /// Each candidate decided over the entities its evaluation would
    /// read, by the action's policies (any error a deny), the names and
    /// context read once.
    async fn decide_over_store(
        &self,
        snapshot: &PolicySnapshot,
        fixed: &Fixed<'_>,
        (searched, searched_type): (Searched, &EntityTypeName),
        (known, residual): (&Known, Option<&PolicySet>),
        candidates: &[String],
        freshness: &mut Freshness,
    ) -> Result<Vec<String>, SearchError> {
        let Names {
            principal,
            action,
            resource,
            plan,
        } = &fixed.names;
        // The residual policies prepared once as verdicts (one expression
        // for them all), and Cedar's context built once for every candidate.
        let prepared = residual.map(|policies| (policies, Verdicts::prepare(policies)));
        let evaluator = Evaluator {
            plan,
            residual: prepared
                .as_ref()
                .map(|(policies, verdicts)| (*policies, verdicts.as_ref())),
        };
        let Some(context) = fixed
            .context
            .request(principal, action, resource)
            .and_then(|request| request.context().cloned())
        else {
            return Ok(Vec::new());
        };
        let apart = self
            .gather_candidates(snapshot, known, searched_type, candidates, freshness)
            .await?;
        let mut found = Vec::new();
        let mut own = Vec::new();
        for (index, candidate) in candidates.iter().enumerate() {
            let uid = candidate_uid(searched_type, candidate);
            let Some(request) = candidate_request(&fixed.names, searched, &uid, &context) else {
                continue;
            };
            let Some(allowed) =
                self.allowed_over(&request, &uid, (known, &apart), &evaluator, &mut own)
            else {
                continue;
            };
            if allowed {
                found.push(candidate.clone());
            }
            if index % 64 == 63 {
                // A wide search gives the request timer a chance.
                tokio::task::yield_now().await;
            }
        }
        Ok(found)
    }

    /// Every candidate's entities gathered together from the HTTP store:
    /// a store call per round of misses, not a round trip per candidate.
    /// Nothing for the file store's, which holds them all already.
    async fn gather_candidates(
        &self,
        snapshot: &PolicySnapshot,
        known: &Known,
        searched_type: &EntityTypeName,
        candidates: &[String],
        freshness: &mut Freshness,
    ) -> Result<GatheredApart, SearchError> {
        if let Known::Resident(_) = known {
            return Ok(GatheredApart::default());
        }
        let uids: Vec<EntityUid> = candidates
            .iter()
            .map(|candidate| candidate_uid(searched_type, candidate))
            .collect();
        let apart = self
            .store
            .gather_apart(&uids, snapshot.schema())
            .await
            .map_err(|error| SearchError::CannotList(error.to_string()))?;
        freshness.meet(apart.gathered.stale, apart.gathered.fresh_until);
        Ok(apart)
    }

    /// Whether the candidate `uid`'s `request` is allowed over the
    /// entities its evaluation reads: the file store's (the candidate
    /// among them), or the named entities' slice with the candidate's own
    /// (gathered apart) and the action's entities. `None` when the store
    /// gave nothing for the candidate: it is skipped.
    fn allowed_over(
        &self,
        request: &Request,
        uid: &EntityUid,
        (known, apart): (&Known, &GatheredApart),
        evaluator: &Evaluator<'_>,
        own: &mut Vec<Entity>,
    ) -> Option<bool> {
        match known {
            Known::Resident(resident) => Some(
                resident.entities.get(uid).is_some()
                    && self.allows(request, evaluator, &resident.entities),
            ),
            Known::Slice(slice, present) => {
                own.clear();
                if !apart.own(uid, own) {
                    return None;
                }
                let entities = slice
                    .iter()
                    .cloned()
                    .chain(own.drain(..).filter(|e| !present.contains(&e.uid())))
                    .chain(evaluator.plan.entities().iter().cloned());
                Some(
                    Entities::from_entities(entities, None)
                        .is_ok_and(|entities| self.allows(request, evaluator, &entities)),
                )
            }
        }
    }

    /// Whether the action's policies allow `request` over `entities`, as
    /// a live decision judges (any error a deny): the residual policies
    /// when partial evaluation left some, else the prepared verdicts, else
    /// Cedar's authorizer.
    fn allows(&self, request: &Request, evaluator: &Evaluator<'_>, entities: &Entities) -> bool {
        let policies = match evaluator.residual {
            Some(residual) => residual,
            None => (evaluator.plan.policies(), evaluator.plan.verdicts()),
        };
        judge::judge(&self.authorizer, request, policies, entities).allowed
    }

    /// `context` with only the attributes `action`'s context declares,
    /// when the schema's shape of it is known.
    fn context_for(&self, action: &str, context: Option<&Value>) -> Option<Value> {
        let snapshot = self.policies.current();
        let shape = snapshot
            .action(action)
            .and_then(|uid| snapshot.plan(uid))
            .and_then(|plan| plan.shape())?;
        let given = context?.as_object()?;
        let kept: serde_json::Map<String, Value> = given
            .iter()
            .filter(|(name, _)| shape.attr(name).is_some())
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        Some(Value::Object(kept))
    }
}

/// The schema's entity type `name`, or why the search cannot name it.
fn known_type(snapshot: &PolicySnapshot, name: &str) -> Result<EntityTypeName, SearchError> {
    snapshot
        .entity_type(name)
        .cloned()
        .ok_or_else(|| SearchError::Unknown(snapshot.unknown_type("entity type", name)))
}

/// The uid of a candidate of the searched type.
fn candidate_uid(searched_type: &EntityTypeName, candidate: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(searched_type.clone(), EntityId::new(candidate))
}

/// The request deciding candidate `uid`: the search's names with the
/// searched one replaced, and its context. `None` when Cedar refuses it
/// (the candidate is then skipped).
fn candidate_request(
    names: &Names<'_>,
    searched: Searched,
    uid: &EntityUid,
    context: &Context,
) -> Option<Request> {
    let (principal, resource) = match searched {
        Searched::Subject => (uid, &names.resource),
        _ => (&names.principal, uid),
    };
    Request::new(
        principal.clone(),
        names.action.clone(),
        resource.clone(),
        context.clone(),
        None,
    )
    .ok()
}

/// An action search's candidates: the actions the schema applies to the
/// subject's and resource's types, by name.
fn applicable_actions(
    snapshot: &PolicySnapshot,
    subject_type: &EntityTypeName,
    resource_type: &EntityTypeName,
) -> Vec<String> {
    snapshot
        .schema()
        .actions_for_principal_and_resource(subject_type, resource_type)
        .map(|action| action.id().unescaped().to_owned())
        .collect()
}

/// Only the entities every permit could allow, when partial evaluation
/// left permits that name them (`None`: every entity of the type).
fn required_of(residual: Option<&PolicySet>, searched: Searched) -> Option<related::Required> {
    let searched_var = match searched {
        Searched::Subject => "principal",
        _ => "resource",
    };
    residual.and_then(|policies| related::required(policies, searched_var))
}
