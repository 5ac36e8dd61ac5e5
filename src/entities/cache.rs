//! The entity cache in front of the HTTP store: keyed by uid, TTL, bounded
//! by entries and bytes (moka), single-flight per uid with one batched
//! upstream call per round of misses, negative caching, stale-if-error.
//!
//! Freshness is decided here, from tokio `Instant`s stamped at fetch time
//! (moka only bounds lifetime), and the store is behind [`Fetch`], so the
//! unit tests below drive time on tokio's paused clock.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cedar_policy::{Entity, EntityUid, Schema};
use moka::future::Cache;
use tokio::sync::watch;
use tokio::time::Instant;

use super::EntityError;
use super::http::{Fetched, HttpStore, UpstreamError};
use crate::telemetry::metrics;

/// Where the cache gets what it does not hold: the HTTP store (or, in the
/// unit tests, a double that counts and fails on demand).
pub trait Fetch: Send + Sync + 'static {
    /// Fetches `uids` in one call; a uid the store does not know is absent
    /// from the answer. Called with no uid to learn whether the store answers.
    fn fetch<'a>(&'a self, uids: &'a [EntityUid], schema: &'a Schema) -> FetchFuture<'a>;

    /// The ids of every entity of a type (for search), at most `max` and
    /// one more, only those referring to one of `related` when given; a
    /// store that cannot list says so.
    fn list<'a>(
        &'a self,
        type_name: &'a str,
        related: Option<&'a [EntityUid]>,
        max: usize,
    ) -> ListFuture<'a> {
        let _ = (type_name, related, max);
        Box::pin(async {
            Err(UpstreamError::Setup(
                "this store cannot list entities".to_owned(),
            ))
        })
    }
}

/// What [`Fetch::list`] returns.
pub type ListFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<String>, UpstreamError>> + Send + 'a>>;

/// What [`Fetch::fetch`] returns.
pub type FetchFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Fetched>, UpstreamError>> + Send + 'a>>;

impl Fetch for HttpStore {
    fn fetch<'a>(&'a self, uids: &'a [EntityUid], schema: &'a Schema) -> FetchFuture<'a> {
        Box::pin(HttpStore::fetch(self, uids, schema))
    }

    fn list<'a>(
        &'a self,
        type_name: &'a str,
        related: Option<&'a [EntityUid]>,
        max: usize,
    ) -> ListFuture<'a> {
        Box::pin(HttpStore::list(self, type_name, related, max))
    }
}

/// Settings of the cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    /// freshness of a fetched entity
    pub ttl: Duration,
    /// freshness of "the store does not know this uid"
    pub negative_ttl: Duration,
    /// how long past its TTL an entity may serve while the store fails
    pub stale_if_error: Duration,
    /// most entities held
    pub max_entries: u64,
    /// most bytes held (estimated)
    pub max_bytes: u64,
    /// with a change-event bus: the freshness while it is not connected
    /// (events cannot arrive then); `None` without a bus
    pub ttl_without_bus: Option<Duration>,
}

/// A cached entity and its parents.
#[derive(Debug)]
pub struct Cached {
    /// the entity, checked against the schema
    pub entity: Entity,
    /// its parents
    pub parents: Vec<EntityUid>,
    /// the size of its JSON, the weight estimate
    pub bytes: usize,
}

#[derive(Clone)]
struct Entry {
    /// `None`: the store does not know the uid
    value: Option<Arc<Cached>>,
    fetched: Instant,
}

type Flight = watch::Receiver<Option<Result<(), UpstreamError>>>;

/// What a lookup found.
pub struct Lookup {
    /// the entities found (absent uids are simply not here)
    pub found: Vec<Arc<Cached>>,
    /// whether any of them was served stale because the store failed
    pub stale: bool,
    /// when the first entry consulted (found or known absent) stops being
    /// fresh: what is built from this lookup is good until then
    pub fresh_until: Option<Instant>,
}

/// How long a store answer vouches for the store: `/readyz` asks again
/// after it, so a store that went down unasked is noticed within a probe or
/// two (one empty batch per probe, at most).
pub const ANSWERED_RECENTLY: Duration = Duration::from_secs(5);

/// What the cache can say of its store, for `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreHealth {
    /// the store's last answer was a success
    Answering,
    /// the store's last exchange failed, but it answered within the stale
    /// bound and entities are held: what is cached is still served
    Degraded,
    /// the store has never answered, or not within the stale bound
    Unavailable,
}

/// The outcome of the store's exchanges, as far as readiness cares.
#[derive(Debug, Default, Clone, Copy)]
struct Exchanges {
    last_success: Option<Instant>,
    last_failed: bool,
}

/// The cache and its store.
pub struct EntityCache {
    store: Arc<dyn Fetch>,
    entries: Cache<EntityUid, Entry>,
    inflight: Arc<Mutex<HashMap<EntityUid, Flight>>>,
    settings: CacheSettings,
    /// when the store last answered, and whether it failed since
    exchanges: Arc<Mutex<Exchanges>>,
    /// bumped by every invalidation: what was built from earlier lookups
    /// is void
    generation: std::sync::atomic::AtomicU64,
    /// whether the change-event bus is connected (meaningful with one)
    bus_connected: std::sync::atomic::AtomicBool,
}

impl EntityCache {
    /// A cache over `store`.
    pub fn new(store: impl Fetch, settings: CacheSettings) -> Self {
        // Kept at least a second whatever the TTLs: freshness is decided by
        // our own stamps, and a lookup must find what its fetch just stored
        // (with `cache.ttl = 0s`, "ask the store every time").
        let lifetime = (settings.ttl.max(settings.negative_ttl) + settings.stale_if_error)
            .max(std::time::Duration::from_secs(1));
        // Two bounds with one weigher: each entry weighs at least
        // max_bytes / max_entries, so neither bound can be passed.
        let floor = (settings.max_bytes / settings.max_entries.max(1)).max(1);
        let entries = Cache::builder()
            .time_to_live(lifetime)
            .max_capacity(settings.max_bytes)
            .eviction_listener(|_uid, _entry, _cause| metrics().cache_evictions.inc())
            .weigher(move |_uid: &EntityUid, entry: &Entry| {
                let bytes = entry
                    .value
                    .as_ref()
                    .map_or(64, |cached| cached.bytes as u64);
                u32::try_from(bytes.max(floor)).unwrap_or(u32::MAX)
            })
            .build();
        Self {
            store: Arc::new(store),
            entries,
            inflight: Arc::new(Mutex::new(HashMap::new())),
            settings,
            exchanges: Arc::new(Mutex::new(Exchanges::default())),
            generation: std::sync::atomic::AtomicU64::new(0),
            bus_connected: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The bus connected or went away. Going away voids what was built
    /// under the long TTL (from here on entities are fresh for
    /// `ttl_without_bus`); coming back forgets everything, since events may
    /// have been missed meanwhile.
    pub fn set_bus_connected(&self, connected: bool) {
        let was = self
            .bus_connected
            .swap(connected, std::sync::atomic::Ordering::AcqRel);
        match (was, connected) {
            (false, true) => self.invalidate_all(),
            (true, false) => self.bump_generation(),
            _ => {}
        }
    }

    /// The ids of every entity of `type_name` the store holds (at most
    /// `max` and one more; with `related`, those referring to one of
    /// them), asked of the store each time: a search must not miss what
    /// the cache has not seen.
    ///
    /// # Errors
    /// The store fails or cannot list.
    pub async fn list(
        &self,
        type_name: &str,
        related: Option<&[EntityUid]>,
        max: usize,
    ) -> Result<Vec<String>, UpstreamError> {
        self.store.list(type_name, related, max).await
    }

    /// Whether the bus is connected; `None` when there is no bus.
    pub fn bus_connected(&self) -> Option<bool> {
        self.settings.ttl_without_bus.map(|_| {
            self.bus_connected
                .load(std::sync::atomic::Ordering::Acquire)
        })
    }

    /// How long a fetched entity is fresh now: the TTL, or with a bus that
    /// is not connected, at most `ttl_without_bus`.
    fn ttl(&self) -> Duration {
        match self.settings.ttl_without_bus {
            Some(short)
                if !self
                    .bus_connected
                    .load(std::sync::atomic::Ordering::Acquire) =>
            {
                self.settings.ttl.min(short)
            }
            _ => self.settings.ttl,
        }
    }

    /// The invalidation generation: it changes whenever entries are dropped
    /// on purpose (read it before a lookup, compare it after).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn bump_generation(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// The store's health: answering when it answered in the last
    /// `ANSWERED_RECENTLY` (5 s) and has not failed since; otherwise it is asked
    /// for nothing (an empty batch), within `within`, to learn whether it
    /// answers now.
    ///
    /// Ready means decisions can be made: the store answers, or it fails
    /// but what it last said is still served (entities held, its last
    /// answer within `ttl + stale_if_error`). Past that bound every
    /// decision on an uncached entity is a deny, and the replica says so.
    pub async fn health(&self, schema: &Arc<Schema>, within: Duration) -> StoreHealth {
        let last = self.exchanges();
        let recent = last
            .last_success
            .is_some_and(|at| at.elapsed() < ANSWERED_RECENTLY);
        if recent && !last.last_failed {
            return StoreHealth::Answering;
        }
        let answered = tokio::time::timeout(within, self.store.fetch(&[], schema))
            .await
            .is_ok_and(|answer| answer.is_ok());
        record(&self.exchanges, answered);
        if answered {
            return StoreHealth::Answering;
        }
        let servable = self
            .exchanges()
            .last_success
            .is_some_and(|at| at.elapsed() < self.settings.ttl + self.settings.stale_if_error);
        if servable && self.settled_len().await > 0 {
            StoreHealth::Degraded
        } else {
            StoreHealth::Unavailable
        }
    }

    fn exchanges(&self) -> Exchanges {
        *self
            .exchanges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Entities held now (approximate, as moka counts: its bookkeeping
    /// lags inserts until it runs).
    pub fn len(&self) -> u64 {
        self.entries.entry_count()
    }

    /// Entities held now, moka's pending bookkeeping run first so the count
    /// includes what was just inserted (for `/metrics`).
    pub async fn settled_len(&self) -> u64 {
        self.entries.run_pending_tasks().await;
        self.entries.entry_count()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets `uids`, so the next lookup asks the store.
    pub async fn invalidate(&self, uids: &[EntityUid]) {
        for uid in uids {
            self.entries.invalidate(uid).await;
        }
        self.bump_generation();
    }

    /// Forgets everything.
    pub fn invalidate_all(&self) {
        self.entries.invalidate_all();
        self.bump_generation();
    }

    /// Looks `uids` up: fresh entries from the cache; misses fetched in one
    /// call, shared with concurrent lookups of the same uids; stale entries
    /// only when that call fails.
    ///
    /// # Errors
    /// When the store fails for a uid that has no entry within the stale bound.
    pub async fn lookup(
        &self,
        uids: &[EntityUid],
        schema: &Arc<Schema>,
    ) -> Result<Lookup, EntityError> {
        let now = Instant::now();
        let mut found = Vec::with_capacity(uids.len());
        let mut missing: Vec<(&EntityUid, Option<Entry>)> = Vec::new();
        let mut fresh_until: Option<Instant> = None;
        let mut note =
            |entry: &Entry| earliest(&mut fresh_until, entry.fetched + self.ttl_of(entry));
        for uid in uids {
            match self.entries.get(uid).await {
                Some(entry) if self.is_fresh(&entry, now) => {
                    metrics().cache_hits.inc();
                    note(&entry);
                    found.extend(entry.value);
                }
                stale => {
                    metrics().cache_misses.inc();
                    missing.push((uid, stale));
                }
            }
        }
        if missing.is_empty() {
            return Ok(Lookup {
                found,
                stale: false,
                fresh_until,
            });
        }

        // What a fetch stores from here on answers this lookup, however
        // short the TTL.
        let asked = Instant::now();
        let flights = self.join_or_lead(missing.iter().map(|(uid, _)| *uid), schema);
        let mut failure = None;
        for mut flight in flights {
            let outcome = flight.wait_for(Option::is_some).await.map(|v| v.clone());
            match outcome {
                Ok(Some(Ok(()))) => {}
                Ok(Some(Err(error))) => failure = Some(error),
                Ok(None) | Err(_) => {
                    failure = Some(UpstreamError::Unreachable(
                        "the fetch was abandoned".to_owned(),
                    ))
                }
            }
        }

        let now = Instant::now();
        let mut stale = false;
        for (uid, previous) in missing {
            match self.entries.get(uid).await {
                Some(entry) if entry.fetched >= asked || self.is_fresh(&entry, now) => {
                    note(&entry);
                    found.extend(entry.value);
                }
                _ => {
                    let usable = previous.filter(|entry| self.within_stale_bound(entry, now));
                    match (usable, &failure) {
                        (Some(entry), Some(_)) => {
                            metrics().cache_stale.inc();
                            stale = true;
                            found.extend(entry.value);
                        }
                        (_, Some(error)) => {
                            return Err(EntityError::Unavailable {
                                uid: uid.to_string(),
                                reason: error.to_string(),
                            });
                        }
                        // Fetched and absent: the store does not know it.
                        (_, None) => {}
                    }
                }
            }
        }
        // Absent uids the fetch just learnt of are fresh for the negative TTL.
        if found.len() < uids.len() {
            earliest(&mut fresh_until, now + self.settings.negative_ttl);
        }
        Ok(Lookup {
            found,
            stale,
            fresh_until,
        })
    }

    fn ttl_of(&self, entry: &Entry) -> std::time::Duration {
        if entry.value.is_some() {
            self.ttl()
        } else {
            self.settings.negative_ttl
        }
    }

    fn is_fresh(&self, entry: &Entry, now: Instant) -> bool {
        now.saturating_duration_since(entry.fetched) < self.ttl_of(entry)
    }

    fn within_stale_bound(&self, entry: &Entry, now: Instant) -> bool {
        entry.value.is_some()
            && now.saturating_duration_since(entry.fetched)
                < self.settings.ttl + self.settings.stale_if_error
    }

    /// For each uid, joins the fetch already in flight or leads a new one;
    /// the uids this call leads are fetched together in one spawned task
    /// (spawned, so a caller that goes away cannot strand the others).
    fn join_or_lead<'a>(
        &self,
        uids: impl Iterator<Item = &'a EntityUid>,
        schema: &Arc<Schema>,
    ) -> Vec<Flight> {
        let (sender, receiver) = watch::channel(None);
        let mut flights = Vec::new();
        let mut lead = Vec::new();
        {
            let mut inflight = self
                .inflight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for uid in uids {
                match inflight.get(uid) {
                    Some(flight) => flights.push(flight.clone()),
                    None => {
                        inflight.insert(uid.clone(), receiver.clone());
                        lead.push(uid.clone());
                    }
                }
            }
        }
        if lead.is_empty() {
            return flights;
        }
        flights.push(receiver);
        let store = Arc::clone(&self.store);
        let entries = self.entries.clone();
        let inflight = Arc::clone(&self.inflight);
        let exchanges = Arc::clone(&self.exchanges);
        let schema = Arc::clone(schema);
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let result = store.fetch(&lead, &schema).await;
            let outcome = result
                .as_ref()
                .map_or_else(UpstreamError::outcome, |_| "ok");
            metrics().upstream(outcome, started.elapsed());
            let fetched = Instant::now();
            record(&exchanges, result.is_ok());
            let outcome = match result {
                Ok(answer) => {
                    // A batch asks for hundreds of uids at once: the answered
                    // ones go in a set, not a list scanned per answer.
                    let mut answered_uids = std::collections::HashSet::with_capacity(answer.len());
                    for item in answer {
                        let uid = item.entity.uid();
                        answered_uids.insert(uid.clone());
                        let value = Some(Arc::new(Cached {
                            entity: item.entity,
                            parents: item.parents,
                            bytes: item.bytes,
                        }));
                        entries.insert(uid, Entry { value, fetched }).await;
                    }
                    for uid in lead.iter().filter(|uid| !answered_uids.contains(*uid)) {
                        entries
                            .insert(
                                uid.clone(),
                                Entry {
                                    value: None,
                                    fetched,
                                },
                            )
                            .await;
                    }
                    Ok(())
                }
                Err(error) => {
                    tracing::warn!(%error, uids = lead.len(), "entity store request failed");
                    Err(error)
                }
            };
            {
                let mut inflight = inflight
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for uid in &lead {
                    inflight.remove(uid);
                }
            }
            let _ = sender.send(Some(outcome));
        });
        flights
    }
}

/// Notes one exchange with the store.
fn record(exchanges: &Mutex<Exchanges>, answered: bool) {
    let mut exchanges = exchanges
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    exchanges.last_failed = !answered;
    if answered {
        exchanges.last_success = Some(Instant::now());
    }
}

/// Moves `slot` back to `until` when that is earlier (or `slot` is unset).
fn earliest(slot: &mut Option<Instant>, until: Instant) {
    *slot = Some(slot.map_or(until, |t| t.min(until)));
}

/// A store double for unit tests: serves a fixed set of entities through
/// the real answer parser, counts calls, fails or stalls on demand.
#[cfg(test)]
pub(crate) mod double {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use cedar_policy::{EntityUid, Schema};
    use serde_json::Value;

    use super::{Fetch, FetchFuture};
    use crate::entities::UpstreamError;
    use crate::entities::http::{answered, parse};

    /// The double's state, shared with the test through an `Arc`.
    #[derive(Default)]
    pub(crate) struct Double {
        entities: Vec<Value>,
        pub calls: AtomicUsize,
        pub asked: Mutex<Vec<Vec<String>>>,
        pub failing: AtomicBool,
        /// how long each answer takes (on tokio's clock)
        pub delay: Mutex<std::time::Duration>,
    }

    impl Double {
        pub(crate) fn new(entities: Vec<Value>) -> std::sync::Arc<Self> {
            std::sync::Arc::new(Self {
                entities,
                ..Self::default()
            })
        }

        pub(crate) fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl Fetch for std::sync::Arc<Double> {
        fn fetch<'a>(&'a self, uids: &'a [EntityUid], schema: &'a Schema) -> FetchFuture<'a> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                let mut names: Vec<String> = uids.iter().map(ToString::to_string).collect();
                names.sort();
                self.asked.lock().unwrap().push(names);
                let delay = *self.delay.lock().unwrap();
                tokio::time::sleep(delay).await;
                if self.failing.load(Ordering::SeqCst) {
                    return Err(UpstreamError::Unreachable("the double is down".to_owned()));
                }
                let body = serde_json::json!({ "entities": self.entities });
                answered(parse(body.to_string().as_bytes(), schema)?, uids)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::double::Double;
    use super::*;
    use serde_json::json;
    use std::sync::atomic::Ordering;

    const TTL: Duration = Duration::from_secs(30);

    fn settings() -> CacheSettings {
        CacheSettings {
            ttl: TTL,
            negative_ttl: Duration::from_secs(5),
            stale_if_error: Duration::from_secs(60),
            max_entries: 1000,
            max_bytes: 1 << 20,
            ttl_without_bus: None,
        }
    }

    fn schema() -> Arc<Schema> {
        Arc::new(
            Schema::from_cedarschema_str("entity Group; entity User in [Group];")
                .unwrap()
                .0,
        )
    }

    fn user(id: &str) -> EntityUid {
        format!(r#"User::"{id}""#).parse().unwrap()
    }

    fn cache() -> (EntityCache, Arc<Double>) {
        let double = Double::new(vec![
            json!({"uid": {"type": "User", "id": "a"}, "attrs": {}, "parents": [{"type": "Group", "id": "g"}]}),
            json!({"uid": {"type": "User", "id": "b"}, "attrs": {}, "parents": []}),
        ]);
        (EntityCache::new(Arc::clone(&double), settings()), double)
    }

    async fn found(cache: &EntityCache, id: &str) -> Result<Lookup, EntityError> {
        cache.lookup(&[user(id)], &schema()).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_entry_is_served_without_asking_and_an_expired_one_is_fetched_again() {
        let (cache, double) = cache();
        let first = found(&cache, "a").await.unwrap();
        assert_eq!(first.found.len(), 1);
        assert_eq!(
            first.found[0].parents,
            vec!["Group::\"g\"".parse().unwrap()]
        );
        assert_eq!(first.fresh_until, Some(Instant::now() + TTL));
        tokio::time::advance(TTL - Duration::from_millis(1)).await;
        found(&cache, "a").await.unwrap();
        assert_eq!(double.calls(), 1, "fresh until its TTL");
        tokio::time::advance(Duration::from_millis(1)).await;
        found(&cache, "a").await.unwrap();
        assert_eq!(double.calls(), 2, "fetched again at its TTL");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unknown_uid_is_remembered_for_the_negative_ttl() {
        let (cache, double) = cache();
        for _ in 0..3 {
            let lookup = found(&cache, "ghost").await.unwrap();
            assert!(lookup.found.is_empty());
            assert_eq!(
                lookup.fresh_until,
                Some(Instant::now() + Duration::from_secs(5))
            );
        }
        assert_eq!(double.calls(), 1);
        tokio::time::advance(Duration::from_secs(5)).await;
        found(&cache, "ghost").await.unwrap();
        assert_eq!(double.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn health_is_answering_then_degraded_within_the_stale_bound_then_unavailable() {
        let within = Duration::from_millis(800);
        let (cache, double) = cache();
        double.failing.store(true, Ordering::SeqCst);
        assert_eq!(
            cache.health(&schema(), within).await,
            StoreHealth::Unavailable,
            "never answered"
        );
        double.failing.store(false, Ordering::SeqCst);
        assert_eq!(
            cache.health(&schema(), within).await,
            StoreHealth::Answering
        );
        found(&cache, "a").await.unwrap();
        let calls = double.calls();
        assert_eq!(
            cache.health(&schema(), within).await,
            StoreHealth::Answering
        );
        assert_eq!(
            double.calls(),
            calls,
            "a store that just answered is not asked"
        );
        tokio::time::advance(ANSWERED_RECENTLY).await;
        assert_eq!(
            cache.health(&schema(), within).await,
            StoreHealth::Answering
        );
        assert_eq!(double.calls(), calls + 1, "then it is asked again");
        double.failing.store(true, Ordering::SeqCst);
        tokio::time::advance(ANSWERED_RECENTLY).await;
        assert_eq!(
            cache.health(&schema(), within).await,
            StoreHealth::Degraded,
            "a store that went down unasked is noticed by the probe"
        );

        tokio::time::advance(TTL).await;
        found(&cache, "a").await.unwrap();
        assert_eq!(
            cache.health(&schema(), within).await,
            StoreHealth::Degraded,
            "failing, but Alice is still served stale"
        );
        tokio::time::advance(Duration::from_secs(60) - ANSWERED_RECENTLY).await;
        assert_eq!(
            cache.health(&schema(), within).await,
            StoreHealth::Unavailable,
            "past ttl + stale_if_error nothing is served"
        );

        *double.delay.lock().unwrap() = Duration::from_secs(5);
        double.failing.store(false, Ordering::SeqCst);
        assert_eq!(
            cache.health(&schema(), within).await,
            StoreHealth::Unavailable,
            "a store slower than the probe's bound is not answering"
        );
        *double.delay.lock().unwrap() = Duration::ZERO;
        assert_eq!(
            cache.health(&schema(), within).await,
            StoreHealth::Answering
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_store_serves_stale_within_the_bound_and_fails_beyond_it() {
        let (cache, double) = cache();
        found(&cache, "a").await.unwrap();
        double.failing.store(true, Ordering::SeqCst);
        tokio::time::advance(TTL + Duration::from_secs(1)).await;
        let stale = found(&cache, "a").await.unwrap();
        assert!(stale.stale, "served stale");
        assert_eq!(stale.found.len(), 1);
        assert!(
            matches!(
                found(&cache, "b").await,
                Err(EntityError::Unavailable { .. })
            ),
            "never seen: nothing to serve"
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(
            matches!(
                found(&cache, "a").await,
                Err(EntityError::Unavailable { .. })
            ),
            "past the stale bound"
        );
        double.failing.store(false, Ordering::SeqCst);
        let back = found(&cache, "a").await.unwrap();
        assert!(!back.stale);
    }

    #[tokio::test(start_paused = true)]
    async fn without_the_bus_entities_are_fresh_for_ttl_without_bus_and_a_reconnect_forgets_all() {
        let double = Double::new(vec![
            json!({"uid": {"type": "User", "id": "a"}, "attrs": {}, "parents": []}),
        ]);
        let short = Duration::from_secs(1);
        let cache = EntityCache::new(
            Arc::clone(&double),
            CacheSettings {
                ttl_without_bus: Some(short),
                ..settings()
            },
        );
        // Not connected yet: fresh for a second only.
        assert_eq!(
            found(&cache, "a").await.unwrap().fresh_until,
            Some(Instant::now() + short)
        );
        tokio::time::advance(short).await;
        found(&cache, "a").await.unwrap();
        assert_eq!(double.calls(), 2, "asked again after ttl_without_bus");

        let generation = cache.generation();
        cache.set_bus_connected(true);
        assert_ne!(
            cache.generation(),
            generation,
            "connecting forgets everything"
        );
        let lookup = found(&cache, "a").await.unwrap();
        assert_eq!(double.calls(), 3);
        assert_eq!(
            lookup.fresh_until,
            Some(Instant::now() + TTL),
            "the full TTL with the bus"
        );
        tokio::time::advance(short * 5).await;
        found(&cache, "a").await.unwrap();
        assert_eq!(double.calls(), 3, "events keep it fresh");

        let generation = cache.generation();
        cache.set_bus_connected(false);
        assert_ne!(
            cache.generation(),
            generation,
            "what was built under the long TTL is void"
        );
        found(&cache, "a").await.unwrap();
        assert_eq!(double.calls(), 4, "5 s old: stale without the bus");
        cache.set_bus_connected(false);
        found(&cache, "a").await.unwrap();
        assert_eq!(double.calls(), 4, "no change, no invalidation");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_lookups_share_one_fetch() {
        let (cache, double) = cache();
        *double.delay.lock().unwrap() = Duration::from_millis(500);
        let cache = Arc::new(cache);
        let lookups: Vec<_> = (0..10)
            .map(|_| {
                let cache = Arc::clone(&cache);
                tokio::spawn(async move { found(&cache, "a").await.unwrap().found.len() })
            })
            .collect();
        for lookup in lookups {
            assert_eq!(lookup.await.unwrap(), 1);
        }
        assert_eq!(double.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_invalidation_forgets_and_moves_the_generation() {
        let (cache, double) = cache();
        found(&cache, "a").await.unwrap();
        let before = cache.generation();
        cache.invalidate(&[user("a")]).await;
        assert_ne!(cache.generation(), before);
        found(&cache, "a").await.unwrap();
        assert_eq!(double.calls(), 2);
        cache.invalidate_all();
        found(&cache, "b").await.unwrap();
        assert_eq!(double.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_ttl_asks_every_time_and_still_answers() {
        let double = Double::new(vec![
            json!({"uid": {"type": "User", "id": "a"}, "attrs": {}, "parents": []}),
        ]);
        let cache = EntityCache::new(
            Arc::clone(&double),
            CacheSettings {
                ttl: Duration::ZERO,
                ..settings()
            },
        );
        for n in 1..=3 {
            assert_eq!(found(&cache, "a").await.unwrap().found.len(), 1);
            assert_eq!(double.calls(), n);
        }
    }
}
