//! The entity cache in front of the HTTP store: keyed by uid, TTL, bounded
//! by entries and bytes (moka), single-flight per uid with one batched
//! upstream call per round of misses, negative caching, stale-if-error.
//!
//! **Two tiers.** Every cached entity is kept as its compact JSON (a few
//! hundred bytes); Cedar's built form (a few KiB: each attribute map and
//! set a B-tree) only for the most recently used `cache.max_built`, keyed
//! by the answer it was built from, never by uid: a built entity can only
//! ever stand for the very answer it came from, so no invalidation needs
//! to reach the hot tier and none can be lost to it. One let go is built
//! again from its JSON on its next use.
//!
//! Freshness is decided here, from tokio `Instant`s stamped when a fetch
//! was *sent* (moka only bounds lifetime), and the store is behind
//! [`Fetch`], so the unit tests below drive time on tokio's paused clock.
//!
//! **Invalidation wins every race with a fetch.** A fetch in flight when
//! its uid is invalidated is *overtaken*: its answer may describe the
//! entity as it was before the change, so it is never stored. It still
//! answers the lookups that were waiting on it (each began before the
//! invalidation, so deciding on the old record orders them before the
//! change), and nothing else: a lookup that begins after the invalidation
//! cannot join it and leads a fetch of its own. Storing an answer and
//! invalidating take one lock, so no order of the two can store an
//! overtaken answer. What is built from a lookup carries the generation
//! read before it, and every invalidation moves the generation last, so the
//! engine's memo never keeps overtaken data under the new generation.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cedar_policy::{Entity, EntityUid, Schema};
use moka::sync::Cache;
use tokio::sync::watch;
use tokio::time::Instant;

use super::http::{Fetched, HttpStore, UpstreamError};
use super::{EntityError, Listed};
use crate::telemetry::metrics;

/// Where the cache gets what it does not hold: the HTTP store (or, in the
/// unit tests, a double that counts and fails on demand).
pub trait Fetch: Send + Sync + 'static {
    /// Fetches `uids` in one call; a uid the store does not know is absent
    /// from the answer.
    fn fetch<'a>(&'a self, uids: &'a [EntityUid], schema: &'a Schema) -> FetchFuture<'a>;

    /// Asks the store for nothing, once, to learn whether it answers now
    /// (`/readyz`): no retries, so a probe costs the store one request.
    fn probe<'a>(&'a self, schema: &'a Schema) -> ProbeFuture<'a> {
        Box::pin(async move { self.fetch(&[], schema).await.map(drop) })
    }

    /// The ids `query` lists (for search); a store that cannot list says
    /// so.
    fn list<'a>(&'a self, query: ListQuery<'a>) -> ListFuture<'a> {
        let _ = query;
        Box::pin(async {
            Err(UpstreamError::Setup(
                "this store cannot list entities".to_owned(),
            ))
        })
    }
}

/// A listing asked of the store (for search): the ids of every entity of
/// `type_name`, only those referring to one of `related` when given, at
/// most `max` and one more, in at most `requests` requests.
#[derive(Debug, Clone, Copy)]
pub struct ListQuery<'a> {
    /// the entity type, as Cedar prints it
    pub type_name: &'a str,
    /// when given, only the entities whose attributes refer to one of these
    pub related: Option<&'a [EntityUid]>,
    /// the most ids wanted (one more is asked, to tell "more" apart)
    pub max: usize,
    /// the most requests the listing may take (pages)
    pub requests: usize,
}

/// What [`Fetch::list`] returns.
pub type ListFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<String>, UpstreamError>> + Send + 'a>>;

/// What [`Fetch::fetch`] returns.
pub type FetchFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Fetched>, UpstreamError>> + Send + 'a>>;

/// What [`Fetch::probe`] returns.
pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Result<(), UpstreamError>> + Send + 'a>>;

impl Fetch for HttpStore {
    fn fetch<'a>(&'a self, uids: &'a [EntityUid], schema: &'a Schema) -> FetchFuture<'a> {
        Box::pin(HttpStore::fetch(self, uids, schema))
    }

    fn probe<'a>(&'a self, schema: &'a Schema) -> ProbeFuture<'a> {
        Box::pin(HttpStore::probe(self, schema))
    }

    fn list<'a>(&'a self, query: ListQuery<'a>) -> ListFuture<'a> {
        Box::pin(HttpStore::list(self, query))
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
    /// most entities kept built (the hot tier); the rest are built again
    /// from their JSON on use
    pub max_built: u64,
    /// with a change-event bus: the freshness while it is not connected
    /// (events cannot arrive then); `None` without a bus
    pub ttl_without_bus: Option<Duration>,
}

/// A cached entity: the cold tier, its attributes and tags as Cedar wrote
/// them once the store's answer met the schema, and its parents.
#[derive(Debug)]
pub struct Cached {
    /// its parents (its uid is the entry's key, not kept twice)
    pub parents: Vec<EntityUid>,
    /// its attributes and tags as Cedar writes them (`rebuild`), compact
    json: super::rebuild::Kept,
    /// this answer's own number, the hot tier's key: a later answer for
    /// the same uid has another
    serial: u64,
    /// the schema the store's answer was checked against (held, so its
    /// address is never another schema's)
    schema: Arc<Schema>,
}

/// Numbers every answer the cache keeps, for [`Cached::serial`].
static SERIAL: AtomicU64 = AtomicU64::new(0);

/// A found entity: the cached answer and its built form.
pub struct Found {
    /// what the cache holds of it
    pub cached: Arc<Cached>,
    /// Cedar's entity, from the hot tier or built now
    pub entity: Arc<Entity>,
}

#[derive(Clone)]
struct Entry {
    /// `None`: the store does not know the uid
    value: Option<Arc<Cached>>,
    /// when the fetch that learnt it was sent: the store's answer may
    /// describe any moment after that, so freshness counts from here
    fetched: Instant,
}

/// One fetch's answer: an entry for every uid it led.
type Answer = HashMap<EntityUid, Entry>;

/// A fetch in flight, as the lookups waiting on it see it.
type Flight = watch::Receiver<Option<Result<Arc<Answer>, UpstreamError>>>;

/// The fetches in flight, and what invalidations overtook. One lock guards
/// it and every write of the entries, so storing an answer and invalidating
/// happen one after the other, never interleaved.
#[derive(Default)]
struct Flights {
    next_id: u64,
    /// the flight a lookup missing this uid joins
    by_uid: HashMap<EntityUid, (u64, Flight)>,
    /// flights in progress some of whose uids were invalidated meanwhile
    overtaken: HashMap<u64, Overtaken>,
}

/// What an invalidation took from a flight in progress.
enum Overtaken {
    All,
    Uids(HashSet<EntityUid>),
}

impl Overtaken {
    fn covers(&self, uid: &EntityUid) -> bool {
        match self {
            Self::All => true,
            Self::Uids(uids) => uids.contains(uid),
        }
    }
}

/// What a lookup found.
pub struct Lookup {
    /// the entities found (absent uids are simply not here)
    pub found: Vec<Found>,
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

/// How long one readiness probe's verdict stands: however many `/readyz`
/// requests arrive, a failing store is probed at most once per this, and
/// concurrent requests share the probe in progress.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Whether change events can reach this replica: what the cache's TTL
/// and `/readyz` follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusState {
    /// connected, and the subscription accepted: the full TTL holds
    Connected,
    /// not connected, or connected with the subscription not yet known to
    /// be accepted: entities are fresh for `ttl_without_bus` only
    Disconnected,
    /// connected, but the server refused the subscription (permissions, a
    /// limit): no event can arrive, so as [`BusState::Disconnected`]
    Refused,
}

impl BusState {
    /// What `/readyz` says.
    pub fn label(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
            Self::Refused => "refused",
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Connected,
            2 => Self::Refused,
            _ => Self::Disconnected,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Self::Disconnected => 0,
            Self::Connected => 1,
            Self::Refused => 2,
        }
    }
}

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

/// Which listing: the type, the `related` uids, the most asked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ListingKey {
    type_name: String,
    related: Option<Vec<EntityUid>>,
    max: usize,
}

/// A store's listing, kept for later pages and searches.
struct Listing {
    ids: Arc<Vec<String>>,
    /// the generation read before it was asked
    generation: u64,
    /// fresh until then
    until: Instant,
}

/// Most bytes of listings kept (ids and keys, estimated): 10,000 ids of a
/// few dozen bytes are under 1 MiB, so a few dozen listings fit.
pub const MAX_LISTING_BYTES: u64 = 16 << 20;

/// The cache and its store.
pub struct EntityCache {
    store: Arc<dyn Fetch>,
    entries: Cache<EntityUid, Entry>,
    /// the hot tier: built entities by [`Cached::serial`]
    built: Cache<u64, Arc<Entity>>,
    /// the store's listings (for search), by what was asked
    listings: Cache<ListingKey, Arc<Listing>>,
    flights: Arc<Mutex<Flights>>,
    settings: CacheSettings,
    /// when the store last answered, and whether it failed since
    exchanges: Arc<Mutex<Exchanges>>,
    /// when the store was last probed for readiness; held across the
    /// probe, so concurrent `/readyz` requests share it
    probed: tokio::sync::Mutex<Option<Instant>>,
    /// bumped by every invalidation: what was built from earlier lookups
    /// is void
    generation: AtomicU64,
    /// the change-event bus's [`BusState`] (meaningful with one)
    bus: AtomicU8,
}

impl EntityCache {
    /// A cache over `store`.
    pub fn new(store: impl Fetch, settings: CacheSettings) -> Self {
        // A lifetime bound only: freshness is decided by our own stamps,
        // and a lookup reads its fetch's answer from the fetch, not from
        // here (so `cache.ttl = 0s`, "ask the store every time", works).
        let lifetime = (settings.ttl.max(settings.negative_ttl) + settings.stale_if_error)
            .max(Duration::from_secs(1));
        // Two bounds with one weigher: each entry weighs at least
        // max_bytes / max_entries, so neither bound can be passed.
        let floor = (settings.max_bytes / settings.max_entries.max(1)).max(1);
        let built: Cache<u64, Arc<Entity>> = Cache::builder()
            .max_capacity(settings.max_built)
            .time_to_live(lifetime)
            .build();
        // An answer evicted, replaced or invalidated takes its built form
        // with it: the hot tier never holds more than the entries' bounds
        // allow, however large the entities.
        let hot = built.clone();
        let entries = Cache::builder()
            .time_to_live(lifetime)
            .max_capacity(settings.max_bytes)
            .eviction_listener(move |_uid, entry: Entry, _cause| {
                metrics().cache_evictions.inc();
                if let Some(cached) = &entry.value {
                    hot.invalidate(&cached.serial);
                }
            })
            .weigher(move |_uid: &EntityUid, entry: &Entry| {
                let bytes = entry
                    .value
                    .as_ref()
                    .map_or(64, |cached| cached.json.len() as u64);
                u32::try_from(bytes.max(floor)).unwrap_or(u32::MAX)
            })
            .build();
        let listings = Cache::builder()
            .time_to_live(settings.ttl.max(Duration::from_secs(1)))
            .max_capacity(MAX_LISTING_BYTES)
            .weigher(|key: &ListingKey, listed: &Arc<Listing>| {
                let ids: usize = listed.ids.iter().map(|id| id.len() + 24).sum();
                let related = key.related.as_ref().map_or(0, |uids| uids.len() * 64);
                u32::try_from(ids + related + 128).unwrap_or(u32::MAX)
            })
            .build();
        Self {
            store: Arc::new(store),
            entries,
            built,
            listings,
            flights: Arc::new(Mutex::new(Flights::default())),
            settings,
            exchanges: Arc::new(Mutex::new(Exchanges::default())),
            probed: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            bus: AtomicU8::new(BusState::Disconnected.to_u8()),
        }
    }

    /// The bus's state changed. Leaving `Connected` voids what was built
    /// under the long TTL (from here on entities are fresh for
    /// `ttl_without_bus`); reaching it forgets everything, since events may
    /// have been missed meanwhile.
    pub fn set_bus_state(&self, state: BusState) {
        let was = BusState::from_u8(self.bus.swap(state.to_u8(), Ordering::AcqRel));
        match (was == BusState::Connected, state == BusState::Connected) {
            (false, true) => self.invalidate_all(),
            (true, false) => self.bump_generation(),
            _ => {}
        }
    }

    /// The ids of every entity of `type_name` the store holds (at most
    /// `max` and one more; with `related`, those referring to one of
    /// them), in at most `requests` store requests. The store's answer is
    /// kept while it is fresh (as an entity would be: `cache.ttl`, or
    /// `cache.ttl_without_bus`, from when the listing was sent) and no
    /// invalidation has happened since it was sent: an entity added or
    /// removed is either announced (an invalidation, which voids every
    /// listing) or seen within the TTL, as a changed entity would be.
    ///
    /// # Errors
    /// The store fails or cannot list.
    pub async fn list(&self, query: ListQuery<'_>) -> Result<Listed, UpstreamError> {
        let key = ListingKey {
            type_name: query.type_name.to_owned(),
            related: query.related.map(<[EntityUid]>::to_vec),
            max: query.max,
        };
        let generation = self.generation();
        let now = Instant::now();
        if let Some(listed) = self.listings.get(&key)
            && listed.generation == generation
            && now < listed.until
        {
            return Ok(Listed {
                ids: Arc::clone(&listed.ids),
                fresh_until: Some(listed.until),
            });
        }
        let ids = Arc::new(self.store.list(query).await?);
        let until = now + self.ttl();
        let listed = Listing {
            ids: Arc::clone(&ids),
            // Read before the listing was sent: an invalidation meanwhile
            // leaves this listing under a generation no lookup reads.
            generation,
            until,
        };
        self.listings.insert(key, Arc::new(listed));
        Ok(Listed {
            ids,
            fresh_until: Some(until),
        })
    }

    /// The bus's state; `None` when there is no bus.
    pub fn bus_state(&self) -> Option<BusState> {
        self.settings
            .ttl_without_bus
            .map(|_| BusState::from_u8(self.bus.load(Ordering::Acquire)))
    }

    fn bus_connected(&self) -> bool {
        self.bus.load(Ordering::Acquire) == BusState::Connected.to_u8()
    }

    /// How long a fetched entity is fresh now: the TTL, or with a bus that
    /// is not connected, at most `ttl_without_bus`.
    fn ttl(&self) -> Duration {
        match self.settings.ttl_without_bus {
            Some(short) if !self.bus_connected() => self.settings.ttl.min(short),
            _ => self.settings.ttl,
        }
    }

    /// The invalidation generation: it changes whenever entries are dropped
    /// on purpose (read it before a lookup, compare it after).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn bump_generation(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The store's health: answering when it answered in the last
    /// `ANSWERED_RECENTLY` (5 s) and has not failed since; otherwise it is
    /// probed (an empty batch, one attempt, within `within`), at most once
    /// per `PROBE_INTERVAL` (1 s) however many ask, to learn whether it answers
    /// now.
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
        let answered = {
            // Held across the probe: concurrent requests wait for it and
            // read its outcome rather than probing again.
            let mut probed = self.probed.lock().await;
            if probed.is_some_and(|at| at.elapsed() < PROBE_INTERVAL) {
                // Probed a moment ago: what the store did since (the probe,
                // or a decision's fetch) says whether it answers.
                !self.exchanges().last_failed
            } else {
                let answered = tokio::time::timeout(within, self.store.probe(schema))
                    .await
                    .is_ok_and(|answer| answer.is_ok());
                record(&self.exchanges, answered);
                *probed = Some(Instant::now());
                answered
            }
        };
        if answered {
            return StoreHealth::Answering;
        }
        let servable = self
            .exchanges()
            .last_success
            .is_some_and(|at| at.elapsed() < self.settings.ttl + self.settings.stale_if_error);
        if servable && self.settled_len() > 0 {
            StoreHealth::Degraded
        } else {
            StoreHealth::Unavailable
        }
    }

    fn exchanges(&self) -> Exchanges {
        *self
            .exchanges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Entities held now (approximate, as moka counts: its bookkeeping
    /// lags inserts until it runs).
    pub fn len(&self) -> u64 {
        self.entries.entry_count()
    }

    /// Entities held now, moka's pending bookkeeping run first so the count
    /// includes what was just inserted (for `/metrics`).
    pub fn settled_len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn flights(&self) -> std::sync::MutexGuard<'_, Flights> {
        self.flights.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets `uids`, so the next lookup asks the store; a fetch of any of
    /// them in flight is overtaken (its answer is not stored, and no
    /// lookup from now on joins it).
    pub fn invalidate(&self, uids: &[EntityUid]) {
        {
            let mut flights = self.flights();
            let Flights {
                by_uid, overtaken, ..
            } = &mut *flights;
            for uid in uids {
                if let Some((id, _)) = by_uid.remove(uid) {
                    match overtaken
                        .entry(id)
                        .or_insert_with(|| Overtaken::Uids(HashSet::new()))
                    {
                        Overtaken::All => {}
                        Overtaken::Uids(taken) => {
                            taken.insert(uid.clone());
                        }
                    }
                }
                self.entries.invalidate(uid);
            }
        }
        // Last: a lookup that reads the new generation cannot have joined
        // an overtaken fetch.
        self.bump_generation();
    }

    /// Forgets everything; every fetch in flight is overtaken.
    pub fn invalidate_all(&self) {
        {
            let mut flights = self.flights();
            let Flights {
                by_uid, overtaken, ..
            } = &mut *flights;
            for (_, (id, _)) in by_uid.drain() {
                overtaken.insert(id, Overtaken::All);
            }
            self.entries.invalidate_all();
        }
        // Unreachable now (their answers are gone); freed rather than left
        // to age out.
        self.built.invalidate_all();
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
            match self.entries.get(uid) {
                Some(entry) if self.is_fresh(&entry, now) => {
                    metrics().cache_hits.inc();
                    note(&entry);
                    found.extend(entry.value.map(|cached| (uid, cached)));
                }
                stale => {
                    metrics().cache_misses.inc();
                    missing.push((uid, stale));
                }
            }
        }
        if missing.is_empty() {
            return Ok(Lookup {
                found: self.build(found, schema)?,
                stale: false,
                fresh_until,
            });
        }

        let (flights, flight_of) = self.join_or_lead(missing.iter().map(|(uid, _)| *uid), schema);
        // Each flight's answer; `None`: it failed.
        let mut answers: Vec<Option<Arc<Answer>>> = Vec::with_capacity(flights.len());
        let mut failure = None;
        for mut flight in flights {
            let outcome = flight.wait_for(Option::is_some).await.map(|v| v.clone());
            answers.push(match outcome {
                Ok(Some(Ok(answer))) => Some(answer),
                Ok(Some(Err(error))) => {
                    failure = Some(error);
                    None
                }
                Ok(None) | Err(_) => {
                    failure = Some(UpstreamError::Unreachable(
                        "the fetch was abandoned".to_owned(),
                    ));
                    None
                }
            });
        }

        let now = Instant::now();
        let mut stale = false;
        for ((uid, previous), flight) in missing.into_iter().zip(flight_of) {
            // The answer of the one fetch this lookup led or joined *for
            // this uid*, whether or not it was stored. (Another fetch it
            // joined may hold the uid too, overtaken: never read it there.)
            let answer = answers.get(flight).and_then(Option::as_ref);
            if let Some(entry) = answer.and_then(|answer| answer.get(uid)) {
                note(entry);
                found.extend(entry.value.clone().map(|cached| (uid, cached)));
                continue;
            }
            let usable = previous.filter(|entry| self.within_stale_bound(entry, now));
            match (usable, &failure) {
                (Some(entry), _) => {
                    metrics().cache_stale.inc();
                    stale = true;
                    found.extend(entry.value.map(|cached| (uid, cached)));
                }
                (None, error) => {
                    return Err(EntityError::Unavailable {
                        uid: uid.to_string(),
                        reason: error.as_ref().map_or_else(
                            || "the fetch was abandoned".to_owned(),
                            ToString::to_string,
                        ),
                    });
                }
            }
        }
        Ok(Lookup {
            found: self.build(found, schema)?,
            stale,
            fresh_until,
        })
    }

    /// Each found answer with its built entity: from the hot tier, else
    /// built again from its kept JSON (`rebuild`) and kept there. An
    /// answer checked against another schema than `schema` (a fetch that
    /// began before a policy reload changed it) is read again by Cedar
    /// against `schema`, never served as it was checked.
    ///
    /// # Errors
    /// An entity whose kept JSON does not read back, or does not meet
    /// `schema`: unavailable, so the decision denies.
    fn build(
        &self,
        found: Vec<(&EntityUid, Arc<Cached>)>,
        schema: &Arc<Schema>,
    ) -> Result<Vec<Found>, EntityError> {
        found
            .into_iter()
            .map(|(uid, cached)| {
                let current = Arc::ptr_eq(&cached.schema, schema);
                if current && let Some(entity) = self.built.get(&cached.serial) {
                    return Ok(Found { cached, entity });
                }
                metrics().cache_rebuilt.inc();
                let entity =
                    super::rebuild::rebuild(uid, &cached.parents, &cached.json, schema, current)
                        .map_err(|reason| EntityError::Unavailable {
                            uid: uid.to_string(),
                            reason: format!("its cached data does not read back: {reason}"),
                        })?;
                let entity = Arc::new(entity);
                if current {
                    self.built.insert(cached.serial, Arc::clone(&entity));
                }
                Ok(Found { cached, entity })
            })
            .collect()
    }

    fn ttl_of(&self, entry: &Entry) -> Duration {
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
    /// Returns each flight once, and for each uid (in order) the index of
    /// its flight.
    fn join_or_lead<'a>(
        &self,
        uids: impl Iterator<Item = &'a EntityUid>,
        schema: &Arc<Schema>,
    ) -> (Vec<Flight>, Vec<usize>) {
        let (sender, receiver) = watch::channel(None);
        let mut joined: Vec<(u64, Flight)> = Vec::new();
        let mut flight_of = Vec::new();
        let mut lead = Vec::new();
        let id = {
            let mut flights = self.flights();
            let id = flights.next_id;
            flights.next_id = id.wrapping_add(1);
            for uid in uids {
                let index = match flights.by_uid.get(uid) {
                    Some((other, flight)) => {
                        match joined.iter().position(|(seen, _)| seen == other) {
                            Some(index) => index,
                            None => {
                                joined.push((*other, flight.clone()));
                                joined.len() - 1
                            }
                        }
                    }
                    None => {
                        flights.by_uid.insert(uid.clone(), (id, receiver.clone()));
                        lead.push(uid.clone());
                        usize::MAX // this call's own flight: last
                    }
                };
                flight_of.push(index);
            }
            id
        };
        let mut flights: Vec<Flight> = joined.into_iter().map(|(_, flight)| flight).collect();
        let own = flights.len();
        for index in &mut flight_of {
            if *index == usize::MAX {
                *index = own;
            }
        }
        if lead.is_empty() {
            return (flights, flight_of);
        }
        flights.push(receiver);
        let store = Arc::clone(&self.store);
        let entries = self.entries.clone();
        let built = self.built.clone();
        let shared = Arc::clone(&self.flights);
        let exchanges = Arc::clone(&self.exchanges);
        let schema = Arc::clone(schema);
        tokio::spawn(async move {
            // Freshness counts from here: the store may read its data any
            // time after the request leaves.
            let sent = Instant::now();
            let started = std::time::Instant::now();
            let result = store.fetch(&lead, &schema).await;
            let outcome = result
                .as_ref()
                .map_or_else(UpstreamError::outcome, |_| "ok");
            metrics().upstream(outcome, started.elapsed());
            record(&exchanges, result.is_ok());
            let answer =
                result.map(|fetched| Arc::new(answer(&lead, fetched, sent, &built, &schema)));
            if let Err(error) = &answer {
                tracing::warn!(%error, uids = lead.len(), "entity store request failed");
            }
            {
                let mut flights = shared.lock().unwrap_or_else(PoisonError::into_inner);
                let overtaken = flights.overtaken.remove(&id);
                for uid in &lead {
                    if flights.by_uid.get(uid).is_some_and(|(by, _)| *by == id) {
                        flights.by_uid.remove(uid);
                    }
                }
                // Under the lock: an invalidation either came first (and
                // is in `overtaken`) or comes after, and drops these.
                if let Ok(answer) = &answer {
                    for (uid, entry) in answer.iter() {
                        if !overtaken.as_ref().is_some_and(|taken| taken.covers(uid)) {
                            entries.insert(uid.clone(), entry.clone());
                        }
                    }
                }
            }
            let _ = sender.send(Some(answer));
        });
        (flights, flight_of)
    }
}

/// A fetch's answer as entries: each uid led, found or known absent (an
/// entity it was not asked for is no answer, and is dropped). The built
/// entities go to the hot tier, where the lookups about to use them find
/// them.
fn answer(
    lead: &[EntityUid],
    fetched: Vec<Fetched>,
    sent: Instant,
    built: &Cache<u64, Arc<Entity>>,
    schema: &Arc<Schema>,
) -> Answer {
    let mut answer: Answer = lead
        .iter()
        .map(|uid| {
            let absent = Entry {
                value: None,
                fetched: sent,
            };
            (uid.clone(), absent)
        })
        .collect();
    for item in fetched {
        let uid = item.entity.uid();
        if let Some(entry) = answer.get_mut(&uid) {
            let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
            built.insert(serial, Arc::new(item.entity));
            entry.value = Some(Arc::new(Cached {
                parents: item.parents,
                json: item.json,
                serial,
                schema: Arc::clone(schema),
            }));
        }
    }
    answer
}

/// Notes one exchange with the store.
fn record(exchanges: &Mutex<Exchanges>, answered: bool) {
    let mut exchanges = exchanges.lock().unwrap_or_else(PoisonError::into_inner);
    exchanges.last_failed = !answered;
    if answered {
        exchanges.last_success = Some(Instant::now());
    }
}

/// Moves `slot` back to `until` when that is earlier (or `slot` is unset).
fn earliest(slot: &mut Option<Instant>, until: Instant) {
    *slot = Some(slot.map_or(until, |t| t.min(until)));
}

#[cfg(test)]
mod races;

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
        /// what the store holds; a test may change it (a request reads it
        /// when sent, as a store may)
        pub entities: Mutex<Vec<Value>>,
        pub calls: AtomicUsize,
        pub asked: Mutex<Vec<Vec<String>>>,
        pub failing: AtomicBool,
        /// how long each answer takes (on tokio's clock)
        pub delay: Mutex<std::time::Duration>,
    }

    impl Double {
        pub(crate) fn new(entities: Vec<Value>) -> std::sync::Arc<Self> {
            std::sync::Arc::new(Self {
                entities: Mutex::new(entities),
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
                let body = serde_json::json!({ "entities": *self.entities.lock().unwrap() });
                let delay = *self.delay.lock().unwrap();
                tokio::time::sleep(delay).await;
                if self.failing.load(Ordering::SeqCst) {
                    return Err(UpstreamError::Unreachable("the double is down".to_owned()));
                }
                answered(parse(body.to_string().as_bytes(), schema)?, uids)
            })
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::double::Double;
    use super::*;
    use serde_json::json;
    use std::sync::atomic::Ordering;

    pub(super) const TTL: Duration = Duration::from_secs(30);

    pub(crate) fn settings() -> CacheSettings {
        CacheSettings {
            ttl: TTL,
            negative_ttl: Duration::from_secs(5),
            stale_if_error: Duration::from_secs(60),
            max_entries: 1000,
            max_bytes: 1 << 20,
            max_built: 1000,
            ttl_without_bus: None,
        }
    }

    /// One schema, as a policy snapshot holds it across reloads that do
    /// not change it.
    fn schema() -> Arc<Schema> {
        static SCHEMA: std::sync::OnceLock<Arc<Schema>> = std::sync::OnceLock::new();
        Arc::clone(SCHEMA.get_or_init(|| {
            Arc::new(
                Schema::from_cedarschema_str("entity Group; entity User in [Group];")
                    .unwrap()
                    .0,
            )
        }))
    }

    pub(super) fn user(id: &str) -> EntityUid {
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
            first.found[0].cached.parents,
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
        let schema = schema();
        let health = || cache.health(&schema, within);
        double.failing.store(true, Ordering::SeqCst);
        assert_eq!(health().await, StoreHealth::Unavailable, "never answered");
        double.failing.store(false, Ordering::SeqCst);
        assert_eq!(
            health().await,
            StoreHealth::Unavailable,
            "within the probe interval the last probe's verdict stands"
        );
        assert_eq!(double.calls(), 1, "one probe per interval");
        tokio::time::advance(PROBE_INTERVAL).await;
        assert_eq!(health().await, StoreHealth::Answering);
        found(&cache, "a").await.unwrap();
        let calls = double.calls();
        assert_eq!(health().await, StoreHealth::Answering);
        assert_eq!(
            double.calls(),
            calls,
            "a store that just answered is not asked"
        );
        tokio::time::advance(ANSWERED_RECENTLY).await;
        assert_eq!(health().await, StoreHealth::Answering);
        assert_eq!(double.calls(), calls + 1, "then it is asked again");
        double.failing.store(true, Ordering::SeqCst);
        tokio::time::advance(ANSWERED_RECENTLY).await;
        assert_eq!(
            health().await,
            StoreHealth::Degraded,
            "a store that went down unasked is noticed by the probe"
        );

        tokio::time::advance(TTL).await;
        found(&cache, "a").await.unwrap();
        assert_eq!(
            health().await,
            StoreHealth::Degraded,
            "failing, but Alice is still served stale"
        );
        tokio::time::advance(Duration::from_secs(60) - ANSWERED_RECENTLY).await;
        assert_eq!(
            health().await,
            StoreHealth::Unavailable,
            "past ttl + stale_if_error nothing is served"
        );

        *double.delay.lock().unwrap() = Duration::from_secs(5);
        double.failing.store(false, Ordering::SeqCst);
        assert_eq!(
            health().await,
            StoreHealth::Unavailable,
            "a store slower than the probe's bound is not answering"
        );
        *double.delay.lock().unwrap() = Duration::ZERO;
        tokio::time::advance(PROBE_INTERVAL).await;
        assert_eq!(health().await, StoreHealth::Answering);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_readiness_probes_share_one_store_request_per_interval() {
        let (cache, double) = cache();
        double.failing.store(true, Ordering::SeqCst);
        *double.delay.lock().unwrap() = Duration::from_millis(300);
        let cache = Arc::new(cache);
        let probes: Vec<_> = (0..50)
            .map(|_| {
                let cache = Arc::clone(&cache);
                tokio::spawn(
                    async move { cache.health(&schema(), Duration::from_millis(800)).await },
                )
            })
            .collect();
        for probe in probes {
            assert_eq!(probe.await.unwrap(), StoreHealth::Unavailable);
        }
        assert_eq!(double.calls(), 1, "fifty probes at once: one request");
        // Every 100 ms for 1.5 s: the verdict stands a second from when
        // the probe ended.
        for _ in 0..15 {
            cache.health(&schema(), Duration::from_millis(800)).await;
            tokio::time::advance(PROBE_INTERVAL / 10).await;
        }
        assert_eq!(double.calls(), 2, "one more once the interval passed");
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

        // Whether changing the bus's state voided what was built.
        let forgets = |state| {
            let generation = cache.generation();
            cache.set_bus_state(state);
            cache.generation() != generation
        };
        assert!(
            forgets(BusState::Connected),
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

        assert!(
            forgets(BusState::Disconnected),
            "what was built under the long TTL is void"
        );
        found(&cache, "a").await.unwrap();
        assert_eq!(double.calls(), 4, "5 s old: stale without the bus");
        cache.set_bus_state(BusState::Disconnected);
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
        cache.invalidate(&[user("a")]);
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

    /// The cold tier: with no entity kept built, each lookup builds it
    /// again from the JSON kept, and finds what the store sent; with the
    /// hot tier, the built one is served (the same entity either way).
    #[tokio::test(start_paused = true)]
    async fn an_entity_let_go_by_the_hot_tier_is_built_again_from_its_json() {
        for max_built in [0, 1000] {
            let double = Double::new(vec![
                json!({"uid": {"type": "User", "id": "a"}, "attrs": {}, "parents": [{"type": "Group", "id": "g"}]}),
            ]);
            let cache = EntityCache::new(
                Arc::clone(&double),
                CacheSettings {
                    max_built,
                    ..settings()
                },
            );
            let first = found(&cache, "a").await.unwrap();
            let again = found(&cache, "a").await.unwrap();
            assert_eq!(double.calls(), 1, "the second lookup is a cache hit");
            let built = |lookup: &Lookup| {
                let entity = &lookup.found[0].entity;
                (entity.uid(), entity.to_json_value().unwrap())
            };
            assert_eq!(built(&first), built(&again), "max_built {max_built}");
            assert_eq!(first.found[0].entity.uid(), user("a"));
            assert_eq!(
                Arc::ptr_eq(&first.found[0].entity, &again.found[0].entity),
                max_built > 0,
                "served from the hot tier exactly when it keeps entities"
            );
        }
    }

    /// A fetch sent before a policy reload changed the schema may answer
    /// after the cache was emptied for it: what it kept was checked against
    /// the old schema, so under the new one it is never served from the
    /// hot tier nor as checked, but read again by Cedar against the new
    /// one; refused when it no longer meets it.
    #[tokio::test(start_paused = true)]
    async fn an_answer_checked_against_another_schema_is_checked_again() {
        let double = Double::new(vec![
            json!({"uid": {"type": "User", "id": "a"}, "attrs": {}, "parents": [{"type": "Group", "id": "g"}]}),
        ]);
        let cache = EntityCache::new(Arc::clone(&double), settings());
        let first = found(&cache, "a").await.unwrap();
        let other = |text: &str| Arc::new(Schema::from_cedarschema_str(text).unwrap().0);
        let widened = other("entity Group; entity User in [Group] { age?: Long };");
        let again = cache.lookup(&[user("a")], &widened).await.unwrap();
        assert_eq!(double.calls(), 1, "still the cached answer");
        assert!(again.found[0].entity.deep_eq(&first.found[0].entity));
        assert!(
            !Arc::ptr_eq(&first.found[0].entity, &again.found[0].entity),
            "not the hot tier's entity, built under the old schema"
        );
        let stricter = other("entity Group; entity User in [Group] { frozen: Bool };");
        let refused = cache.lookup(&[user("a")], &stricter).await;
        assert!(
            matches!(&refused, Err(EntityError::Unavailable { reason, .. }) if reason.contains("frozen")),
            "{:?}",
            refused.map(|lookup| lookup.found.len())
        );
        // Under the schema it was checked against, the hot tier serves.
        let last = found(&cache, "a").await.unwrap();
        assert!(Arc::ptr_eq(&first.found[0].entity, &last.found[0].entity));
    }
}
