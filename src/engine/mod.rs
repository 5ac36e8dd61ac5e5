//! The decision: a wire-neutral [`DecisionRequest`] in, a [`Decision`] out,
//! in five stages, each one function of this module:
//!
//! 1. `resolve`: principal, action and resource names to uids and the
//!    action's prepared plan (unknown names are a deny);
//! 2. `request`: Cedar's request from the caller's context
//!    (`context.rs`: the fast path by the action's shape, else Cedar's own
//!    parser) and the entities the request describes itself (`supplied.rs`);
//! 3. `slice`: the entities the decision reads, with the memo entry
//!    (`memo.rs`) that remembers them and the context-free answer;
//! 4. `evaluate`: the action's policies at once (`policy::Verdicts`);
//! 5. `explain`: when that raised an error, Cedar's authorizer decides
//!    and names the failing policy.
//!
//! Fail closed: any error in evaluation, an unknown type or action, or a
//! missing entity is a deny that says why. Only a caller's malformed input
//! is an `Err` ([`RequestError`]), which the API answers with a 4xx. Knows
//! nothing of HTTP.

mod context;
mod decision;
mod explain;
pub mod judge;
mod memo;
mod record;
mod related;
mod search;
mod search_memo;
mod shadow;
mod supplied;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cedar_policy::{Authorizer, Entities, Entity, EntityId, EntityTypeName, EntityUid};

use crate::entities::{EntityStore, Gathered, Resident, Sourcing, describe};
use crate::policy::{ActionPlan, PolicySnapshot, PolicyStore, Verdict};
use crate::telemetry::trace::{SPANS, stage};
use crate::telemetry::{DecisionLog, metrics};
use tracing::Instrument;

/// What the engine reports of its stores, for `/readyz`.
pub use crate::entities::{BusState, StoreHealth};
pub use decision::{
    Decision, DecisionError, DecisionRequest, EntityRef, Field, ParsedEntities, RequestEntities,
    RequestError, Summary,
};
/// A policy-by-policy account of a decision, for `explain` (see [`Engine::trace`]).
pub use explain::{Condition, PolicyTrace};
pub(crate) use record::canonical_uid;
pub use record::{acceptable_request_id, new_request_id, new_request_id_digits};
pub use search::{Found, SearchError, SearchQuery, Searched, Skipped};

use context::ReadContext;
use memo::{Epoch, Memo, MemoKey, Memoized};
use supplied::Sources;

/// What a replica can say of itself for `/readyz`.
pub struct Readiness {
    /// Whether the entity store answers.
    pub store: StoreHealth,
    /// The bus's state, when entities are cached with a bus configured.
    pub bus: Option<BusState>,
    /// The policies serving now.
    pub snapshot: Arc<PolicySnapshot>,
}

/// Decides requests against the current policies and the entity store.
pub struct Engine {
    log: DecisionLog,
    policies: Arc<PolicyStore>,
    store: EntityStore,
    authorizer: Authorizer,
    sources: Sources,
    memo: Memo,
    /// what subject and resource searches found, for their later pages
    searches: search_memo::SearchMemo,
    /// a candidate pack decided beside the live one, never enforced
    shadow: Option<Arc<PolicyStore>>,
}

/// Why a decision stopped before evaluation: a deny with its reason, or
/// the caller's mistake.
enum Stop {
    Deny(DecisionError),
    Refuse(RequestError),
}

impl From<RequestError> for Stop {
    fn from(error: RequestError) -> Self {
        Self::Refuse(error)
    }
}

fn deny(code: &'static str, message: String) -> Stop {
    Stop::Deny(DecisionError::new(code, message))
}

/// Stage 1's answer: the request's names resolved in one snapshot.
struct Names<'s> {
    principal: EntityUid,
    action: &'s EntityUid,
    resource: EntityUid,
    plan: &'s ActionPlan,
}

/// Stage 3's answer: the entities one decision reads, and the memo entry
/// that holds (or will hold) its answers.
#[derive(Clone)]
enum Slice {
    /// the file store's entities, read in place
    Resident(Arc<Resident>, Arc<Memoized>),
    /// the entities built for this decision (from the HTTP store's cache,
    /// and what the request describes)
    Built(Arc<Memoized>, Arc<Entities>),
    /// no entity needed: the memo's answer for this context settles it
    Settled(Arc<Memoized>, Verdict),
}

impl Slice {
    fn entities(&self) -> &Entities {
        match self {
            Self::Resident(resident, _) => &resident.entities,
            Self::Built(_, entities) => entities,
            Self::Settled(..) => &EMPTY,
        }
    }

    fn memo(&self) -> &Memoized {
        match self {
            Self::Resident(_, memo) | Self::Built(memo, _) | Self::Settled(memo, _) => memo,
        }
    }
}

/// What a caller of the stages needs of the slice.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    /// a decision: entities only when the remembered answers do not settle it
    Decision,
    /// `explain`: the entities, always
    Entities,
}

static EMPTY: std::sync::LazyLock<Entities> = std::sync::LazyLock::new(Entities::empty);

impl Engine {
    /// Builds the engine. `sourcing` says, per entity type, whether the store
    /// or the request describes it; types not listed take `default_sourcing`.
    /// At most `max_slices` decisions are remembered (`cache.max_slices`).
    pub fn new(
        policies: Arc<PolicyStore>,
        store: EntityStore,
        sourcing: HashMap<EntityTypeName, Sourcing>,
        default_sourcing: Sourcing,
        max_slices: u64,
    ) -> Self {
        Self {
            log: DecisionLog::off(),
            policies,
            store,
            authorizer: Authorizer::new(),
            sources: Sources::new(sourcing, default_sourcing),
            memo: Memo::new(max_slices),
            searches: search_memo::SearchMemo::new(),
            shadow: None,
        }
    }

    /// Decides every recorded decision with `shadow` too, off the
    /// decision's path, never enforced (`policy.shadow_dir`).
    pub fn set_shadow(&mut self, shadow: Arc<PolicyStore>) {
        self.shadow = Some(shadow);
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
        if let Some(Err(error)) = self.shadow.as_ref().map(|shadow| shadow.reload()) {
            for line in error.lines() {
                tracing::error!(
                    "shadow policy reload refused, the last good shadow pack stays: {line}"
                );
            }
        }
        match self
            .policies
            .reload_then(|schema| self.store.schema_changed(schema))
        {
            Ok(snapshot) => {
                metrics().policy_reload("success", Some(snapshot.version()));
                tracing::info!(version = %snapshot.version(), policies = snapshot.policy_count(), "policies reloaded");
                Ok(snapshot)
            }
            Err(error) => {
                metrics().policy_reload("failure", None);
                for line in error.lines() {
                    tracing::error!(version = %self.policies.current().version(), "policy reload refused, the last good policies keep serving: {line}");
                }
                Err(error)
            }
        }
    }

    /// The policies this engine decides with.
    pub fn policies(&self) -> &Arc<PolicyStore> {
        &self.policies
    }

    /// The decision log, for the lines a caller writes itself (a search's).
    pub fn decision_log(&self) -> &DecisionLog {
        &self.log
    }

    /// The entity store, for the parts that feed it (the bus, the wiring,
    /// the suites); the API asks through the methods below.
    pub fn store(&self) -> &EntityStore {
        &self.store
    }

    /// What `/readyz` reports: whether the entity store answers (at most
    /// one probe per second) and, with a bus, its state.
    pub async fn readiness(&self) -> Readiness {
        let snapshot = self.policies.current();
        Readiness {
            store: self.store.health(snapshot.schema()).await,
            bus: self.store.bus_state(),
            snapshot,
        }
    }

    /// Entities cached now (0 without a cache), for the metrics gauge.
    pub async fn cached_entities(&self) -> u64 {
        self.store.cached().await
    }

    /// Forgets the named entities and everything built from them (an
    /// operator's invalidation).
    pub async fn forget(&self, uids: &[EntityUid]) {
        self.store.invalidate(uids).await;
    }

    /// Forgets every cached entity and everything built from them.
    pub fn forget_all(&self) {
        self.store.invalidate_all();
    }

    /// The entity data's version where the store has one (the file store's
    /// reading), so a search's page token is bound to the data it paged.
    pub fn data_version(&self) -> Option<String> {
        self.store.data_version()
    }

    /// Whether entities of `ty` may come from the store: not when the
    /// requests alone describe them (`entities.sources`), so a missing one
    /// in the store is no mistake.
    pub fn stored(&self, ty: &cedar_policy::EntityTypeName) -> bool {
        self.sources.of(ty) != Sourcing::Request
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

    /// Decides one request.
    ///
    /// # Errors
    /// Only for malformed input (a context that does not match the schema,
    /// request data for a store-served type, an invalid request entity): the
    /// caller's mistake, answered with a 4xx. Everything else is `Ok`, and a
    /// deny when anything went wrong.
    pub async fn decide(&self, request: &DecisionRequest<'_>) -> Result<Decision, RequestError> {
        self.decide_and_record(request, true).await
    }

    /// Decides without a decision-log line or a metric: one of a search's
    /// many candidate decisions (the search is the caller's one request).
    pub(crate) async fn decide_unrecorded(
        &self,
        request: &DecisionRequest<'_>,
    ) -> Result<Decision, RequestError> {
        self.decide_and_record(request, false).await
    }

    async fn decide_and_record(
        &self,
        request: &DecisionRequest<'_>,
        record: bool,
    ) -> Result<Decision, RequestError> {
        let started = std::time::Instant::now();
        // One snapshot for the whole decision, its metrics included.
        let snapshot = self.policies.current();
        // The stages run at once; only a slice to be built from the store
        // is awaited, boxed with the recording after it: this future holds
        // none of the stages' values (a decision that needs no slice built,
        // a memo hit or the file store's entities, never makes or moves an
        // awaiting future at all).
        match self.decide_at_once(&snapshot, request, record, started) {
            Ok(outcome) => outcome,
            Err(later) => later.await,
        }
    }

    /// [`Self::decide_and_record`]'s decision and its recording when no
    /// stage waits; else the rest, boxed, to be awaited.
    fn decide_at_once<'v>(
        &'v self,
        snapshot: &'v PolicySnapshot,
        request: &'v DecisionRequest<'_>,
        record: bool,
        started: std::time::Instant,
    ) -> Result<Result<Decision, RequestError>, Later<'v>> {
        let span = stage(|| {
            tracing::info_span!(
                target: SPANS,
                "decision",
                action = request.action,
                decision = tracing::field::Empty,
            )
        });
        let decided = match span.in_scope(|| self.decide_now(snapshot, request, record)) {
            Ok(Now::Decided(decided)) => Ok(decided),
            Ok(Now::Later(prepared, hit)) => {
                return Err(Box::pin(async move {
                    let decided = self
                        .decide_later(snapshot, request, prepared, hit, record)
                        .instrument(span.clone())
                        .await;
                    self.recorded(snapshot, request, (record, started), &span, decided)
                }));
            }
            Err(stop) => Err(stop),
        };
        Ok(self.recorded(snapshot, request, (record, started), &span, decided))
    }

    /// A decision's outcome, with its span, metric and log line when it is
    /// `record`ed: the decision, or the caller's mistake.
    fn recorded(
        &self,
        snapshot: &PolicySnapshot,
        request: &DecisionRequest<'_>,
        (record, started): (bool, std::time::Instant),
        span: &tracing::Span,
        decided: Result<Decided<'_>, Stop>,
    ) -> Result<Decision, RequestError> {
        if let Ok((_, decision, _)) = &decided {
            span.record(
                "decision",
                if decision.allowed() { "allow" } else { "deny" },
            );
        }
        let (action, outcome, read) = match decided {
            Ok((action, decision, read)) => (Some(action), Ok(decision), Some(read)),
            Err(Stop::Deny(error)) => (
                snapshot.action(request.action),
                Ok(Decision::deny(error, Arc::clone(snapshot.version()))),
                None,
            ),
            Err(Stop::Refuse(error)) => (None, Err(error), None),
        };
        if let (Ok(decision), true) = (&outcome, record) {
            let took = started.elapsed();
            let action = action.map_or("unknown", |a| a.id().unescaped());
            metrics().decision(action, decision.allowed(), took);
            if self.log.enabled() {
                let read = read.as_ref().map(|(slice, key, plan)| {
                    slice.memo().read_entities(|| {
                        record::read_entities(slice, key, plan, self.log.captures_entities())
                    })
                });
                record::log_decision(&self.log, snapshot, request, (decision, read), took);
            }
        }
        outcome
    }

    /// Why `request` is decided as it is, policy by policy (see
    /// `engine/explain.rs`): the stages up to the entity slice again,
    /// then each policy of the action evaluated piece by piece. `None` when
    /// the request never reaches the policies (an unknown name, a missing
    /// entity, a store failure: the decision's errors say so). Asked for
    /// explicitly, apart from the decision, so the decision path stays as
    /// it is.
    pub async fn trace(&self, request: &DecisionRequest<'_>) -> Option<Vec<PolicyTrace>> {
        let snapshot = self.policies.current();
        let sliced = self
            .through_slice(&snapshot, request, Need::Entities)
            .await
            .ok()?;
        let key = &sliced.key;
        let cedar_request = sliced
            .context
            .request(&key.principal, &key.action, &key.resource)?;
        Some(explain::trace(
            &self.authorizer,
            &cedar_request,
            sliced.plan.policies(),
            sliced.slice.entities(),
        ))
    }

    /// The five stages when the slice needs no waiting; else what stages 1
    /// and 2 found, for [`Self::decide_later`] to go on from.
    fn decide_now<'v>(
        &self,
        snapshot: &'v PolicySnapshot,
        request: &'v DecisionRequest<'_>,
        record: bool,
    ) -> Result<Now<'v>, Stop> {
        let prepared = self.prepare(snapshot, request)?;
        Ok(match self.slice_now(snapshot, &prepared, Need::Decision)? {
            SliceNow::Ready(slice) => Now::Decided(self.conclude(
                prepared.sliced(slice, Gathered::default()),
                snapshot,
                request,
                record,
            )),
            SliceNow::Build(hit) => Now::Later(prepared, hit),
        })
    }

    /// The five stages' end when the slice is built from the store.
    async fn decide_later<'v>(
        &self,
        snapshot: &'v PolicySnapshot,
        request: &'v DecisionRequest<'_>,
        prepared: Prepared<'v>,
        hit: Option<Arc<Memoized>>,
        record: bool,
    ) -> Result<Decided<'v>, Stop> {
        let sliced = self.slice_built(snapshot, prepared, hit).await?;
        Ok(self.conclude(sliced, snapshot, request, record))
    }

    /// Stages 4 and 5: the evaluation over the slice, and the shadow pack
    /// beside it; `Ok` carries the resolved action for the metrics, and
    /// what was read, for the decision log.
    fn conclude<'v>(
        &self,
        sliced: Sliced<'v>,
        snapshot: &'v PolicySnapshot,
        request: &'v DecisionRequest<'_>,
        record: bool,
    ) -> Decided<'v> {
        let (key, context, slice) = (&sliced.key, &sliced.context, &sliced.slice);
        let mut decision = stage(|| tracing::info_span!(target: SPANS, "evaluate"))
            .in_scope(|| self.evaluate(key, context, sliced.plan, slice, snapshot.version()));
        decision.stale_data = sliced.gathered.stale;
        if let (Some(shadow), true) = (&self.shadow, record) {
            shadow::decide_beside(
                shadow,
                &self.log,
                (key, context, slice.clone()),
                &decision,
                request.request_id,
            );
        }
        (
            sliced.action,
            decision,
            (sliced.slice, sliced.key, sliced.plan),
        )
    }

    /// Stages 1 to 3, shared by a decision's trace: the names, the
    /// context read, the request's own entities, the memo key, the slice.
    async fn through_slice<'v>(
        &self,
        snapshot: &'v PolicySnapshot,
        request: &'v DecisionRequest<'_>,
        need: Need,
    ) -> Result<Sliced<'v>, Stop> {
        let prepared = self.prepare(snapshot, request)?;
        match self.slice_now(snapshot, &prepared, need)? {
            SliceNow::Ready(slice) => Ok(prepared.sliced(slice, Gathered::default())),
            SliceNow::Build(hit) => Box::pin(self.slice_built(snapshot, prepared, hit)).await,
        }
    }

    /// Stages 1 and 2 and what stage 3 looks up: the names, the context
    /// read, the request's own entities, the memo key.
    fn prepare<'v>(
        &self,
        snapshot: &'v PolicySnapshot,
        request: &'v DecisionRequest<'_>,
    ) -> Result<Prepared<'v>, Stop> {
        let names = resolve(snapshot, request)?;
        let (context, refs) = context::read_context(snapshot, &names, request.context)?;
        let supplied = self.sources.supplied(
            snapshot,
            request.entities,
            (&names.principal, &request.principal),
            (&names.resource, &request.resource),
        )?;
        let key = MemoKey {
            principal: names.principal,
            action: names.action.clone(),
            resource: names.resource,
            refs,
        };
        Ok(Prepared {
            action: names.action,
            plan: names.plan,
            key,
            context,
            supplied,
        })
    }

    /// Whether the store alone describes the entities `prepared` reads:
    /// only then may the memo serve them or remember them.
    fn store_only(&self, prepared: &Prepared<'_>) -> bool {
        prepared.supplied.is_empty() && !self.sources.any_request()
    }

    /// Stage 3 when nothing need be awaited: the file store's resident
    /// entities under the memo's entry for the key, or the memo's answer
    /// when it settles the decision; else the memo's entry, if any, for
    /// [`Self::slice_built`].
    fn slice_now(
        &self,
        snapshot: &PolicySnapshot,
        prepared: &Prepared<'_>,
        need: Need,
    ) -> Result<SliceNow, Stop> {
        let key = &prepared.key;
        let store_only = self.store_only(prepared);
        if let Some(resident) = self.store.resident().filter(|_| store_only) {
            if !resident.read_under(snapshot.schema()) {
                let error = crate::entities::EntityError::OtherSchema;
                return Err(deny("entity_store_unavailable", error.to_string()));
            }
            let epoch = Epoch {
                policies: snapshot.epoch(),
                entities: resident.generation,
            };
            // An entry under this reading of the file was kept only once
            // every entity the key names was found in it.
            let memo = match self.memo.get(key, epoch) {
                Some(memo) => memo,
                None => {
                    if let Some(missing) =
                        key.named().find(|uid| resident.entities.get(uid).is_none())
                    {
                        return Err(deny("entity_not_found", not_found(missing)));
                    }
                    self.memo.keep(key, epoch, None)
                }
            };
            return Ok(SliceNow::Ready(Slice::Resident(resident, memo)));
        }
        let Some(cache) = self.store.cache().filter(|_| store_only) else {
            return Ok(SliceNow::Build(None));
        };
        let epoch = Epoch {
            policies: snapshot.epoch(),
            entities: cache.generation(),
        };
        let Some(memo) = self.memo.get(key, epoch) else {
            return Ok(SliceNow::Build(None));
        };
        let settled = (need == Need::Decision)
            .then(|| self.settled(&memo, &prepared.context))
            .flatten();
        Ok(match settled {
            Some(verdict) => {
                metrics().cache_hits.inc_by(key.named().count() as u64);
                SliceNow::Ready(Slice::Settled(memo, verdict))
            }
            // The answers remembered do not settle it: its entities
            // again, from the cache's hot tier.
            None => SliceNow::Build(Some(memo)),
        })
    }

    /// Stage 3 otherwise: the entities gathered from the store, merged
    /// with what the request describes, and built; under `hit`, the
    /// memo's entry found, else remembered while fresh when the request
    /// described nothing.
    async fn slice_built<'v>(
        &self,
        snapshot: &PolicySnapshot,
        prepared: Prepared<'v>,
        hit: Option<Arc<Memoized>>,
    ) -> Result<Sliced<'v>, Stop> {
        let store_only = self.store_only(&prepared);
        let Prepared {
            action,
            plan,
            key,
            context,
            supplied,
        } = prepared;
        let (entities, gathered) = self.build(snapshot, plan, &key, supplied).await?;
        let memo = match hit {
            Some(memo) => memo,
            None if store_only
                && self.store.cache().is_some()
                && !gathered.stale
                && gathered.fresh_until.is_some() =>
            {
                let epoch = Epoch {
                    policies: snapshot.epoch(),
                    entities: gathered.generation,
                };
                self.memo.keep(&key, epoch, gathered.fresh_until)
            }
            None => Arc::new(Memoized::once()),
        };
        Ok(Sliced {
            action,
            plan,
            key,
            context,
            slice: Slice::Built(memo, Arc::new(entities)),
            gathered,
        })
    }

    /// The memo's answer for `context` when it settles a decision with no
    /// entity read: the whole answer for the values it reads, with the
    /// decision log's account of the entities read already known (or no
    /// log) and no shadow pack to decide beside.
    fn settled(&self, memo: &Memoized, context: &ReadContext<'_>) -> Option<Verdict> {
        if self.shadow.is_some() || (self.log.enabled() && !memo.knows_read_entities()) {
            return None;
        }
        memo.answer(context.shaped()?.read())
    }

    /// Gathers the named entities (and their ancestors) from the store,
    /// lays the request's own data over them, checks every named one is
    /// there, and builds Cedar's `Entities` with the action's.
    async fn build(
        &self,
        snapshot: &PolicySnapshot,
        plan: &ActionPlan,
        key: &MemoKey,
        supplied: Vec<Entity>,
    ) -> Result<(Entities, Gathered), Stop> {
        let from_store: Vec<EntityUid> = key
            .named()
            .filter(|uid| self.sources.of(uid.type_name()) != Sourcing::Request)
            .cloned()
            .collect();
        let mut slice: Vec<Entity> =
            Vec::with_capacity(from_store.len() + supplied.len() + plan.entities().len());
        let gathered = self
            .store
            .gather(&from_store, snapshot.schema(), &mut slice)
            .instrument(stage(
                || tracing::info_span!(target: SPANS, "entities.gather", uids = from_store.len()),
            ))
            .await
            .map_err(|error| deny("entity_store_unavailable", error.to_string()))?;
        // Request data overrides stored data (only `merge` types get here).
        if !supplied.is_empty() {
            let overridden: HashSet<EntityUid> = supplied.iter().map(Entity::uid).collect();
            slice.retain(|stored| !overridden.contains(&stored.uid()));
        }
        slice.extend(supplied);
        let present: HashSet<EntityUid> = slice.iter().map(Entity::uid).collect();
        if let Some(missing) = key.named().find(|uid| !present.contains(*uid)) {
            return Err(deny("entity_not_found", not_found(missing)));
        }
        slice.extend(plan.entities().iter().cloned());
        let entities = Entities::from_entities(slice, None)
            .map_err(|e| deny("invalid_entities", e.to_string()))?;
        Ok((entities, gathered))
    }

    /// Stage 4: the answer the memo holds for the values the policies read
    /// of this context, or the action's policies at once, the context-free
    /// ones' answer read from the memo (or computed and remembered). Any
    /// error goes to Cedar's authorizer ([`judge::by_cedar`]).
    fn evaluate(
        &self,
        key: &MemoKey,
        context: &ReadContext<'_>,
        plan: &ActionPlan,
        slice: &Slice,
        version: &Arc<str>,
    ) -> Decision {
        if let Slice::Settled(_, verdict) = slice {
            return Decision::of(verdict.clone(), version);
        }
        let (entities, memo) = (slice.entities(), slice.memo());
        let shaped = context.shaped();
        if let Some(verdict) = shaped.and_then(|shaped| memo.answer(shaped.read())) {
            #[cfg(debug_assertions)]
            if let Some(request) = context.request(&key.principal, &key.action, &key.resource) {
                judge::check(
                    &self.authorizer,
                    &verdict,
                    &request,
                    plan.policies(),
                    entities,
                );
            }
            return Decision::of(verdict, version);
        }
        let Some(request) = context.request(&key.principal, &key.action, &key.resource) else {
            let refused = "Cedar refused the context its schema vouches for".to_owned();
            return Decision::deny(
                DecisionError::new("invalid_request", refused),
                Arc::clone(version),
            );
        };
        let request = &*request;
        let verdict = plan.verdicts().and_then(|verdicts| {
            let context_free = memo.context_free(|| verdicts.context_free(request, entities))?;
            verdicts.evaluate(request, entities, context_free)
        });
        let Some(verdict) = verdict else {
            // Stage 5: Cedar's authorizer, policy by policy, for a request
            // the verdicts could not answer: it names each failing policy.
            return judge::by_cedar(&self.authorizer, request, plan.policies(), entities)
                .into_decision(version);
        };
        #[cfg(debug_assertions)]
        judge::check(
            &self.authorizer,
            &verdict,
            request,
            plan.policies(),
            entities,
        );
        if let Some(shaped) = shaped {
            memo.remember(shaped.read(), &verdict);
        }
        Decision::of(verdict, version)
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
            .filter_map(|(type_name, id)| uid_of(&snapshot, type_name, id))
            .filter(|uid| self.sources.of(uid.type_name()) != Sourcing::Request)
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
    pub fn parse_entities(
        &self,
        json: Vec<serde_json::Value>,
    ) -> Result<ParsedEntities, RequestError> {
        let snapshot = self.policies.current();
        let entities = self.sources.parse(&snapshot, &json)?;
        Ok(ParsedEntities {
            version: Arc::clone(snapshot.version()),
            json,
            entities,
        })
    }
}

/// What a decision read: its slice, the names it was read for, the plan.
type Read<'v> = (Slice, MemoKey, &'v ActionPlan);

/// What stages 1 and 2 leave for stage 3.
struct Prepared<'v> {
    action: &'v EntityUid,
    plan: &'v ActionPlan,
    key: MemoKey,
    context: ReadContext<'v>,
    /// the request's own entities
    supplied: Vec<Entity>,
}

impl<'v> Prepared<'v> {
    /// With the slice stage 3 found at once (the request's own entities
    /// then none: a slice built from them goes the other way).
    fn sliced(self, slice: Slice, gathered: Gathered) -> Sliced<'v> {
        Sliced {
            action: self.action,
            plan: self.plan,
            key: self.key,
            context: self.context,
            slice,
            gathered,
        }
    }
}

/// Stage 3's slice when found without waiting, or what building one
/// starts from.
enum SliceNow {
    /// the file store's resident entities, or the memo's settled answer
    Ready(Slice),
    /// to be built from the store, under the memo's entry when one was found
    Build(Option<Arc<Memoized>>),
}

/// A decision's stages, done or to be awaited.
enum Now<'v> {
    Decided(Decided<'v>),
    /// the slice is to be built: stages 1 and 2's work, and the memo's entry
    Later(Prepared<'v>, Option<Arc<Memoized>>),
}

/// What the stages give: the resolved action, the decision, what was read.
type Decided<'v> = (&'v EntityUid, Decision, Read<'v>);

/// A decision's rest when its slice is built from the store: boxed, so
/// that the futures of those that await it stay small.
type Later<'v> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Decision, RequestError>> + Send + 'v>,
>;

/// What stages 1 to 3 leave for evaluation.
struct Sliced<'v> {
    action: &'v EntityUid,
    plan: &'v ActionPlan,
    key: MemoKey,
    context: ReadContext<'v>,
    slice: Slice,
    gathered: Gathered,
}

/// Stage 1: the request's names in `snapshot`. An unknown type or action
/// is a deny that names it.
fn resolve<'s>(
    snapshot: &'s PolicySnapshot,
    request: &DecisionRequest<'_>,
) -> Result<Names<'s>, Stop> {
    let entity = |reference: &EntityRef<'_>| {
        uid_of(snapshot, reference.type_name, reference.id).ok_or_else(|| {
            deny(
                "unknown_entity_type",
                snapshot.unknown_type("entity type", reference.type_name),
            )
        })
    };
    let principal = entity(&request.principal)?;
    let (action, plan) = snapshot
        .action(request.action)
        .and_then(|action| Some((action, snapshot.plan(action)?)))
        .ok_or_else(|| deny("unknown_action", snapshot.unknown_action(request.action)))?;
    let resource = entity(&request.resource)?;
    Ok(Names {
        principal,
        action,
        resource,
        plan,
    })
}

fn uid_of(snapshot: &PolicySnapshot, type_name: &str, id: &str) -> Option<EntityUid> {
    let ty = snapshot.entity_type(type_name)?;
    Some(EntityUid::from_type_name_and_id(
        ty.clone(),
        EntityId::new(id),
    ))
}

fn not_found(uid: &EntityUid) -> String {
    format!("entity `{uid}` is not known to the entity store or the request")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entities::{CacheSettings, EntityCache, double::Double};
    use crate::policy::PolicySources;
    use std::time::Duration;

    const TTL: Duration = Duration::from_secs(30);

    /// The pack over the demo data, served by a store double behind the
    /// real cache, on tokio's paused clock.
    fn engine(policies: &std::path::Path) -> (Engine, Arc<Double>) {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let demo = std::fs::read_to_string(root.join("examples/demo/entities.json")).unwrap();
        let double = Double::new(serde_json::from_str(&demo).unwrap());
        let store = PolicyStore::open(PolicySources {
            policy_dir: policies.to_owned(),
            schema: root.join("schema"),
            default_namespace: None,
        })
        .unwrap();
        let cache = EntityCache::new(
            Arc::clone(&double),
            CacheSettings {
                ttl: TTL,
                negative_ttl: Duration::from_secs(5),
                stale_if_error: Duration::ZERO,
                max_entries: 10_000,
                max_bytes: 1 << 24,
                max_built: 10_000,
                ttl_without_bus: None,
            },
        );
        let engine = Engine::new(
            Arc::new(store),
            EntityStore::Http {
                cache,
                ancestor_depth: 3,
            },
            HashMap::new(),
            Sourcing::Store,
            100,
        );
        (engine, double)
    }

    fn view(user: &str) -> DecisionRequest<'_> {
        DecisionRequest {
            principal: EntityRef {
                type_name: "user",
                id: user,
                properties: None,
            },
            action: "view_account",
            resource: EntityRef {
                type_name: "account",
                id: "alice-personal",
                properties: None,
            },
            context: None,
            entities: RequestEntities::None,
            request_id: None,
        }
    }

    fn copy_of_the_pack() -> tempfile::TempDir {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().unwrap();
        for file in std::fs::read_dir(root.join("policies")).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_some_and(|e| e == "cedar") {
                std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
            }
        }
        dir
    }

    #[tokio::test(start_paused = true)]
    async fn a_remembered_slice_serves_until_its_entities_expire() {
        let pack = copy_of_the_pack();
        let (engine, double) = engine(pack.path());
        for _ in 0..5 {
            assert!(engine.decide(&view("carol")).await.unwrap().allowed());
        }
        assert_eq!(double.calls(), 1, "one fetch, then the memo");
        tokio::time::advance(TTL).await;
        assert!(engine.decide(&view("carol")).await.unwrap().allowed());
        assert_eq!(double.calls(), 2, "expired entities are fetched again");
    }

    /// A decision the memo's answers settle reads no entity; `explain`, and
    /// a decision they do not settle, get the entities again from the
    /// cache (no second fetch).
    #[tokio::test(start_paused = true)]
    async fn a_settled_decision_reads_no_entity_and_the_others_get_theirs_again() {
        let pack = copy_of_the_pack();
        let (engine, double) = engine(pack.path());
        let order = |side: &str| serde_json::json!({"side": side, "instrument": "AAPL"});
        let (buy, sell) = (order("buy"), order("sell"));
        let ask = |context| DecisionRequest {
            action: "place_order",
            context: Some(context),
            ..view("carol")
        };
        assert!(engine.decide(&ask(&buy)).await.unwrap().allowed());
        let snapshot = engine.policies.current();
        let sliced = |context, need| {
            let request = ask(context);
            let snapshot = &snapshot;
            let engine = &engine;
            async move {
                engine
                    .through_slice(snapshot, &request, need)
                    .await
                    .map(|sliced| sliced.slice)
                    .ok()
                    .unwrap()
            }
        };
        let settled = sliced(&buy, Need::Decision).await;
        assert!(
            matches!(&settled, Slice::Settled(_, verdict) if verdict.allowed),
            "the same read values: the remembered answer"
        );
        for (context, need) in [(&buy, Need::Entities), (&sell, Need::Decision)] {
            let slice = sliced(context, need).await;
            assert!(matches!(slice, Slice::Built(..)));
            assert!(
                slice
                    .entities()
                    .iter()
                    .any(|entity| entity.uid().id().unescaped() == "carol"),
                "carol's entity built again"
            );
        }
        assert!(engine.decide(&ask(&sell)).await.unwrap().allowed());
        assert_eq!(double.calls(), 1, "every entity again from the cache");
    }

    #[tokio::test(start_paused = true)]
    async fn a_remembered_answer_is_found_by_the_values_the_policies_read_and_nothing_else() {
        let pack = copy_of_the_pack();
        let (engine, _) = engine(pack.path());
        let cases: [(serde_json::Value, bool); 5] = [
            (
                serde_json::json!({"side": "buy", "instrument": "AAPL"}),
                true,
            ),
            (
                serde_json::json!({"side": "hold", "instrument": "AAPL"}),
                false,
            ),
            (
                serde_json::json!({"side": "buy", "instrument": "MSFT"}),
                true,
            ),
            (
                serde_json::json!({"instrument": "AAPL", "side": "hold"}),
                false,
            ),
            (
                serde_json::json!({"side": "sell", "instrument": "AAPL"}),
                true,
            ),
        ];
        // Twice over: the second round answers from the memo.
        for _ in 0..2 {
            for (context, allowed) in &cases {
                let order = DecisionRequest {
                    action: "place_order",
                    context: Some(context),
                    ..view("carol")
                };
                let decision = engine.decide(&order).await.unwrap();
                assert_eq!(decision.allowed(), *allowed, "{context}");
            }
        }
        let entry = engine.memo.get(
            &MemoKey {
                principal: uid_of(&engine.policies.current(), "user", "carol").unwrap(),
                action: engine
                    .policies
                    .current()
                    .action("place_order")
                    .unwrap()
                    .clone(),
                resource: uid_of(&engine.policies.current(), "account", "alice-personal").unwrap(),
                refs: Vec::new(),
            },
            Epoch {
                policies: engine.policies.current().epoch(),
                entities: engine.store.cache().unwrap().generation(),
            },
        );
        let entry = entry.expect("one entry for carol's orders on the account");
        let side = |side: &str| serde_json::Value::from(side);
        let read: Vec<Option<serde_json::Value>> = engine
            .policies
            .current()
            .plan(engine.policies.current().action("place_order").unwrap())
            .unwrap()
            .shape()
            .unwrap()
            .attrs
            .iter()
            .map(|attr| (attr.name == "side").then(|| side("buy")))
            .collect();
        let asked: Vec<Option<&serde_json::Value>> = read.iter().map(Option::as_ref).collect();
        assert!(
            entry.answer(&asked).is_some_and(|verdict| verdict.allowed),
            "the instrument, which no policy reads, is not part of the answer's key"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_revocation_landing_mid_fetch_is_never_undone_by_the_fetch_or_the_memo() {
        let pack = copy_of_the_pack();
        let (engine, double) = engine(pack.path());
        let engine = Arc::new(engine);
        *double.delay.lock().unwrap() = Duration::from_secs(1);
        // A decision sends its fetch (Carol a trader, read as it is sent) ...
        let before = tokio::spawn({
            let engine = Arc::clone(&engine);
            async move { engine.decide(&view("carol")).await.unwrap().allowed() }
        });
        tokio::time::advance(Duration::from_millis(100)).await;
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
        assert_eq!(double.calls(), 1, "the fetch is in flight");
        // ... Carol is revoked and the change applied while it is.
        for entity in double.entities.lock().unwrap().iter_mut() {
            if entity["uid"]["id"] == "alice-personal" {
                entity["attrs"]["traders"] = serde_json::json!([]);
            }
        }
        let account: EntityUid = r#"Brokerage::Account::"alice-personal""#.parse().unwrap();
        engine.store().changed(&[account]).await;
        let after = tokio::spawn({
            let engine = Arc::clone(&engine);
            async move { engine.decide(&view("carol")).await.unwrap().allowed() }
        });
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(
            before.await.unwrap(),
            "begun before the change: the old record"
        );
        assert!(
            !after.await.unwrap(),
            "begun after it: never the overtaken answer"
        );
        for _ in 0..3 {
            assert!(
                !engine.decide(&view("carol")).await.unwrap().allowed(),
                "nothing cached or remembered from the overtaken fetch"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_policy_reload_or_an_invalidation_voids_what_was_remembered() {
        let pack = copy_of_the_pack();
        let (engine, double) = engine(pack.path());
        let carol = engine.decide(&view("carol")).await.unwrap();
        assert!(carol.allowed());
        // A policy that forbids every view: the remembered context-free
        // answer (which allowed) must not be read under the new snapshot.
        std::fs::write(
            pack.path().join("zz_freeze.cedar"),
            "@id(\"freeze\") forbid (principal, action == Brokerage::Action::\"view_account\", resource);",
        )
        .unwrap();
        engine.reload_policies().unwrap();
        let frozen = engine.decide(&view("carol")).await.unwrap();
        assert!(!frozen.allowed());
        assert_eq!(frozen.reasons().collect::<Vec<_>>(), ["freeze"]);
        assert_eq!(double.calls(), 1, "the cached entities still serve");
        engine.store().invalidate_all();
        assert!(!engine.decide(&view("carol")).await.unwrap().allowed());
        assert_eq!(double.calls(), 2, "an invalidation voids the slice");
    }

    /// A schema change the entities file does not meet: the file store
    /// keeps its last good reading, made against the old schema (its
    /// action groups included), so decisions under the new one deny until
    /// the file meets it; then they decide again.
    #[tokio::test]
    async fn file_entities_read_against_another_schema_are_never_decided_on() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let pack = copy_of_the_pack();
        let dir = tempfile::tempdir().unwrap();
        let schema_file = dir.path().join("brokerage.cedarschema");
        let schema_text =
            std::fs::read_to_string(root.join("schema/brokerage.cedarschema")).unwrap();
        std::fs::write(&schema_file, &schema_text).unwrap();
        let entities = dir.path().join("entities.json");
        std::fs::copy(root.join("examples/demo/entities.json"), &entities).unwrap();
        let policies = PolicyStore::open(PolicySources {
            policy_dir: pack.path().to_owned(),
            schema: schema_file.clone(),
            default_namespace: None,
        })
        .unwrap();
        let file =
            crate::entities::FileStore::open(&entities, Arc::clone(policies.current().schema()))
                .unwrap();
        let policies = Arc::new(policies);
        let file = Arc::new(file);
        // The same stores, with one type the request describes: decisions
        // then gather the file's entities and build a slice (not the
        // resident reading in place).
        let request_sourced = Engine::new(
            Arc::clone(&policies),
            EntityStore::File(Arc::clone(&file)),
            HashMap::from([("Brokerage::Destination".parse().unwrap(), Sourcing::Request)]),
            Sourcing::Store,
            100,
        );
        let engine = Engine::new(
            policies,
            EntityStore::File(file),
            HashMap::new(),
            Sourcing::Store,
            100,
        );
        for engine in [&engine, &request_sourced] {
            assert!(engine.decide(&view("carol")).await.unwrap().allowed());
        }
        // Every user must now have a badge; the file gives none.
        let stricter = schema_text.replacen(
            "  entity User {\n",
            "  entity User {\n    badge: String,\n",
            1,
        );
        assert_ne!(stricter, schema_text);
        std::fs::write(&schema_file, &stricter).unwrap();
        engine.reload_policies().unwrap();
        for engine in [&engine, &request_sourced] {
            let denied = engine.decide(&view("carol")).await.unwrap();
            assert!(!denied.allowed());
            assert_eq!(
                denied.errors()[0].code,
                "entity_store_unavailable",
                "{}",
                denied.summary()
            );
        }
        // The schema back as the file meets it: decided again.
        std::fs::write(&schema_file, format!("{schema_text}\n// again\n")).unwrap();
        engine.reload_policies().unwrap();
        for engine in [&engine, &request_sourced] {
            assert!(engine.decide(&view("carol")).await.unwrap().allowed());
        }
    }
}
