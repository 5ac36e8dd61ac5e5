//! Invalidation against fetches in flight, on tokio's paused clock: every
//! order of "fetch sent", "the record changes and is invalidated" and
//! "fetch answered", and a property test of random interleavings against a
//! model. The rule under test: a lookup that begins after an invalidation
//! never sees a record older than the one the invalidation announced; nor
//! does a search's listing (kept for later pages) outlive one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cedar_policy::{EntityUid, EvalResult, Schema};
use proptest::prelude::*;
use serde_json::json;
use tokio::sync::oneshot;

use super::tests::{TTL, settings, user};
use super::{CacheSettings, EntityCache, Fetch, FetchFuture};
use crate::entities::http::{answered, parse};
use crate::entities::{EntityError, UpstreamError};

/// A store whose every answer waits for the test's word, and describes the
/// records as they were when the request was *sent*: the worst a store may
/// do, since it may read its data at any moment after the request left.
#[derive(Default)]
struct Gated {
    state: Mutex<GatedState>,
}

#[derive(Default)]
struct GatedState {
    /// each user's version: the record's `v`
    versions: HashMap<String, i64>,
    /// requests waiting for the word: `true` fails them
    pending: Vec<oneshot::Sender<bool>>,
    calls: usize,
}

impl Gated {
    fn new(users: &[&str]) -> Arc<Self> {
        let gated = Self::default();
        gated.state.lock().unwrap().versions = users.iter().map(|u| ((*u).to_owned(), 1)).collect();
        Arc::new(gated)
    }

    /// The system of record changes `user` (the change event follows).
    fn write(&self, user: &str) -> i64 {
        let mut state = self.state.lock().unwrap();
        let version = state.versions.entry(user.to_owned()).or_insert(0);
        *version += 1;
        *version
    }

    fn version(&self, user: &str) -> i64 {
        self.state.lock().unwrap().versions[user]
    }

    fn pending(&self) -> usize {
        self.state.lock().unwrap().pending.len()
    }

    fn calls(&self) -> usize {
        self.state.lock().unwrap().calls
    }

    /// Answers the `n`th waiting request (oldest first), or fails it.
    fn answer(&self, n: usize, fail: bool) {
        let mut state = self.state.lock().unwrap();
        if n < state.pending.len() {
            let _ = state.pending.remove(n).send(fail);
        }
    }
}

impl Fetch for Arc<Gated> {
    fn fetch<'a>(&'a self, uids: &'a [EntityUid], schema: &'a Schema) -> FetchFuture<'a> {
        Box::pin(async move {
            let (word, heard) = oneshot::channel();
            let body = {
                let mut state = self.state.lock().unwrap();
                state.calls += 1;
                let entities: Vec<_> = uids
                    .iter()
                    .filter_map(|uid| {
                        let id = uid.id().unescaped();
                        state.versions.get(id).map(|v| {
                            json!({"uid": {"type": "User", "id": id}, "attrs": {"v": v}, "parents": []})
                        })
                    })
                    .collect();
                state.pending.push(word);
                json!({ "entities": entities }).to_string()
            };
            if heard.await.unwrap_or(true) {
                return Err(UpstreamError::Unreachable("told to fail".to_owned()));
            }
            answered(parse(body.as_bytes(), schema)?, uids)
        })
    }

    /// Every user, as the store held them when the listing was *sent*.
    fn list<'a>(&'a self, _query: super::ListQuery<'a>) -> super::ListFuture<'a> {
        Box::pin(async move {
            let (word, heard) = oneshot::channel();
            let mut ids: Vec<String> = {
                let mut state = self.state.lock().unwrap();
                state.calls += 1;
                state.pending.push(word);
                state.versions.keys().cloned().collect()
            };
            ids.sort();
            if heard.await.unwrap_or(true) {
                return Err(UpstreamError::Unreachable("told to fail".to_owned()));
            }
            Ok(ids)
        })
    }
}

impl Gated {
    /// The system of record removes `user` (the change event follows).
    fn remove(&self, user: &str) {
        self.state.lock().unwrap().versions.remove(user);
    }
}

/// Every user, as the races' listings ask.
const EVERY_USER: super::ListQuery<'static> = super::ListQuery {
    type_name: "User",
    related: None,
    max: 100,
    requests: 3,
};

/// The users a listing through `cache` finds, answering the store if it
/// is asked.
async fn listed(store: &Gated, cache: &Arc<EntityCache>) -> Vec<String> {
    let listing = {
        let cache = Arc::clone(cache);
        tokio::spawn(async move { cache.list(EVERY_USER).await })
    };
    answer_all(store).await;
    listing.await.unwrap().unwrap().ids.to_vec()
}

/// A search's listing of users is kept for later pages, but never past an
/// invalidation: in every order of "listing sent", "a user removed and the
/// removal announced" and "listing answered", the next listing no longer
/// has the user.
#[tokio::test(start_paused = true)]
async fn in_every_order_a_kept_listing_never_outlives_an_invalidation() {
    use Step::{Answer, Change, Send};
    for order in [
        [Send, Change, Answer],
        [Send, Answer, Change],
        [Change, Send, Answer],
    ] {
        for everything in [false, true] {
            let case = format!("{order:?} (all: {everything})");
            let store = Gated::new(&["erin", "frank"]);
            let cache = cache(&store);
            let mut sent = None;
            for step in order {
                match step {
                    Send => {
                        let cache = Arc::clone(&cache);
                        sent = Some(tokio::spawn(async move { cache.list(EVERY_USER).await }));
                        settle().await;
                        assert_eq!(store.pending(), 1, "{case}: the listing was sent");
                    }
                    Change => {
                        store.remove("frank");
                        if everything {
                            cache.invalidate_all();
                        } else {
                            cache.invalidate(&[user("frank")]);
                        }
                    }
                    Answer => answer_all(&store).await,
                }
            }
            // The listing in flight answers as the store did (linearized
            // before the change); one sent before the change is not kept,
            // one sent after it may be.
            sent.unwrap().await.unwrap().unwrap();
            let calls = store.calls();
            assert_eq!(listed(&store, &cache).await, ["erin"], "{case}");
            let sent_before_change = order[0] == Send;
            let asked = usize::from(sent_before_change);
            assert_eq!(store.calls(), calls + asked, "{case}: listed afresh");
            // And that one is kept: a later page asks the store nothing.
            assert_eq!(listed(&store, &cache).await, ["erin"], "{case}");
            assert_eq!(store.calls(), calls + asked, "{case}: kept");
        }
    }
}

/// One schema, as a policy snapshot holds it across reloads that do not
/// change it.
fn schema() -> Arc<Schema> {
    static SCHEMA: std::sync::OnceLock<Arc<Schema>> = std::sync::OnceLock::new();
    Arc::clone(SCHEMA.get_or_init(|| {
        Arc::new(
            Schema::from_cedarschema_str("entity User { v: Long };")
                .unwrap()
                .0,
        )
    }))
}

fn cache(store: &Arc<Gated>) -> Arc<EntityCache> {
    cache_built(store, settings().max_built)
}

/// A cache keeping at most `max_built` entities built (0: every lookup
/// builds from the JSON kept).
fn cache_built(store: &Arc<Gated>, max_built: u64) -> Arc<EntityCache> {
    let settings = CacheSettings {
        max_built,
        ..settings()
    };
    Arc::new(EntityCache::new(Arc::clone(store), settings))
}

/// The version a lookup of `id` found (`None`: not found).
async fn version(cache: &EntityCache, id: &str) -> Result<Option<i64>, EntityError> {
    let lookup = cache.lookup(&[user(id)], &schema()).await?;
    Ok(lookup
        .found
        .first()
        .map(|cached| match cached.entity.attr("v") {
            Some(Ok(EvalResult::Long(v))) => v,
            other => panic!("no version: {other:?}"),
        }))
}

type Pending = tokio::task::JoinHandle<Result<Option<i64>, EntityError>>;

fn start(cache: &Arc<EntityCache>, id: &'static str) -> Pending {
    let cache = Arc::clone(cache);
    tokio::spawn(async move { version(&cache, id).await })
}

/// Lets every spawned task run until it waits on something (one thread,
/// paused clock: nothing else moves).
async fn settle() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}

/// Answers every waiting request until none is left.
async fn answer_all(store: &Gated) {
    settle().await;
    while store.pending() > 0 {
        store.answer(0, false);
        settle().await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    /// a lookup of an expired entry sends a fetch
    Send,
    /// the record changes, and the change is announced (invalidated)
    Change,
    /// the store answers every request waiting
    Answer,
}

/// Answers every waiting request, the newest first (so an overtaken fetch
/// is the last to answer), until none is left.
async fn answer_newest_first(store: &Gated) {
    settle().await;
    while store.pending() > 0 {
        store.answer(store.pending() - 1, false);
        settle().await;
    }
}

/// Every order of the three steps (a fetch is sent before it is answered),
/// each through both ways an invalidation arrives (one uid, and all), with
/// and without a lookup beginning right after the change.
#[tokio::test(start_paused = true)]
async fn in_every_order_of_send_change_and_answer_the_change_wins() {
    use Step::{Answer, Change, Send};
    for order in [
        [Send, Change, Answer],
        [Send, Answer, Change],
        [Change, Send, Answer],
    ] {
        for (everything, asked_between) in
            [(false, false), (false, true), (true, false), (true, true)]
        {
            let case = format!("{order:?} (all: {everything}, asked between: {asked_between})");
            let store = Gated::new(&["erin"]);
            let cache = cache(&store);
            let warm = start(&cache, "erin");
            answer_all(&store).await;
            assert_eq!(warm.await.unwrap().unwrap(), Some(1));
            // Expired: the next lookup re-fetches, as every hot entity is
            // re-fetched every TTL.
            tokio::time::advance(TTL).await;

            let mut before = None;
            let mut after = None;
            for step in order {
                match step {
                    Send => {
                        before = Some(start(&cache, "erin"));
                        settle().await;
                        assert_eq!(store.pending(), 1, "{case}: the re-fetch was sent");
                    }
                    Change => {
                        store.write("erin");
                        if everything {
                            cache.invalidate_all();
                        } else {
                            cache.invalidate(&[user("erin")]);
                        }
                        if asked_between {
                            after = Some(start(&cache, "erin"));
                        }
                        settle().await;
                    }
                    Answer => answer_newest_first(&store).await,
                }
                // A slow store: seconds pass between the steps.
                tokio::time::advance(Duration::from_secs(2)).await;
            }
            answer_all(&store).await;
            let before = before.unwrap().await.unwrap().unwrap();
            assert!(
                before.is_some(),
                "{case}: a lookup begun before the change may see either record"
            );
            if let Some(after) = after {
                assert_eq!(
                    after.await.unwrap().unwrap(),
                    Some(2),
                    "{case}: begun after the change, it sees the change"
                );
            }
            let later = start(&cache, "erin");
            answer_all(&store).await;
            assert_eq!(
                later.await.unwrap().unwrap(),
                Some(2),
                "{case}: the cache kept the new record, never the overtaken one"
            );
            let calls = store.calls();
            let again = start(&cache, "erin");
            settle().await;
            assert_eq!(store.pending(), 0, "{case}: then served from the cache");
            assert_eq!(again.await.unwrap().unwrap(), Some(2));
            assert_eq!(store.calls(), calls);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn freshness_counts_from_when_the_fetch_was_sent() {
    let store = Gated::new(&["erin"]);
    let cache = cache(&store);
    let first = start(&cache, "erin");
    settle().await;
    // The store takes 10 s to answer.
    tokio::time::advance(Duration::from_secs(10)).await;
    answer_all(&store).await;
    assert_eq!(first.await.unwrap().unwrap(), Some(1));
    let lookup = cache.lookup(&[user("erin")], &schema()).await.unwrap();
    assert_eq!(
        lookup.fresh_until,
        Some(tokio::time::Instant::now() - Duration::from_secs(10) + TTL),
        "fresh for a TTL from the request, not from the answer"
    );
    tokio::time::advance(TTL - Duration::from_secs(10)).await;
    let again = start(&cache, "erin");
    settle().await;
    assert_eq!(
        store.pending(),
        1,
        "a TTL after it was sent, it is fetched again"
    );
    answer_all(&store).await;
    assert_eq!(again.await.unwrap().unwrap(), Some(1));
}

#[tokio::test(start_paused = true)]
async fn a_lookup_after_an_invalidation_never_joins_the_overtaken_fetch() {
    let store = Gated::new(&["erin"]);
    let cache = cache(&store);
    let before = start(&cache, "erin");
    settle().await;
    store.write("erin");
    cache.invalidate(&[user("erin")]);
    let after = start(&cache, "erin");
    settle().await;
    assert_eq!(
        store.pending(),
        2,
        "the lookup after the change led its own fetch"
    );
    // The new fetch answers first, then the overtaken one: the old record
    // must not overwrite the new.
    store.answer(1, false);
    settle().await;
    store.answer(0, false);
    settle().await;
    assert_eq!(after.await.unwrap().unwrap(), Some(2));
    assert_eq!(
        before.await.unwrap().unwrap(),
        Some(1),
        "its own answer, used once"
    );
    assert_eq!(version(&cache, "erin").await.unwrap(), Some(2));
    assert_eq!(store.pending(), 0);
}

#[derive(Debug, Clone)]
enum Op {
    /// a lookup of some of the users (a bit each) begins
    Lookup(u8),
    /// the store answers (or fails) one of the waiting requests
    Answer(usize, bool),
    /// a user's record changes and the change is invalidated
    Change(usize),
    /// everything is invalidated (a reconnect, a schema change)
    InvalidateAll,
    /// time passes
    Advance(u64),
}

const USERS: [&str; 3] = ["a", "b", "c"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1..8u8).prop_map(Op::Lookup),
        3 => (0..4usize, prop::bool::weighted(0.2)).prop_map(|(n, fail)| Op::Answer(n, fail)),
        2 => (0..USERS.len()).prop_map(Op::Change),
        1 => Just(Op::InvalidateAll),
        2 => (0..45_000u64).prop_map(Op::Advance),
    ]
}

/// Versions a lookup of several users found, by user.
type Many = tokio::task::JoinHandle<Result<HashMap<String, i64>, EntityError>>;

fn start_many(cache: &Arc<EntityCache>, ids: Vec<&'static str>) -> Many {
    let cache = Arc::clone(cache);
    tokio::spawn(async move {
        let uids: Vec<EntityUid> = ids.iter().map(|id| user(id)).collect();
        let lookup = cache.lookup(&uids, &schema()).await?;
        Ok(lookup
            .found
            .iter()
            .map(|cached| {
                let version = match cached.entity.attr("v") {
                    Some(Ok(EvalResult::Long(v))) => v,
                    other => panic!("no version: {other:?}"),
                };
                (cached.entity.uid().id().unescaped().to_owned(), version)
            })
            .collect())
    })
}

/// Runs `ops`; every lookup must find, for each user it asked for, a
/// version no older than the one the last invalidation before it began
/// announced (the model: `announced`). With `max_built` 0 every entity is
/// built from its JSON, with 1 the hot tier churns, with 1,000 it keeps all.
async fn against_the_model(ops: Vec<Op>, max_built: u64) {
    let store = Gated::new(&USERS);
    let cache = cache_built(&store, max_built);
    let mut announced: HashMap<&str, i64> = USERS.iter().map(|u| (*u, 1)).collect();
    let mut lookups: Vec<(Vec<(&str, i64)>, Many)> = Vec::new();
    for op in ops {
        match op {
            Op::Lookup(mask) => {
                let ids: Vec<&'static str> = USERS
                    .iter()
                    .enumerate()
                    .filter(|(bit, _)| mask & (1 << bit) != 0)
                    .map(|(_, id)| *id)
                    .collect();
                let floors = ids.iter().map(|id| (*id, announced[id])).collect();
                lookups.push((floors, start_many(&cache, ids)));
            }
            Op::Answer(n, fail) => store.answer(n, fail),
            Op::Change(n) => {
                let id = USERS[n];
                let version = store.write(id);
                cache.invalidate(&[user(id)]);
                announced.insert(id, version);
            }
            Op::InvalidateAll => {
                cache.invalidate_all();
                for id in USERS {
                    announced.insert(id, store.version(id));
                }
            }
            Op::Advance(ms) => tokio::time::advance(Duration::from_millis(ms)).await,
        }
        settle().await;
    }
    answer_all(&store).await;
    for (floors, lookup) in lookups {
        match lookup.await.unwrap() {
            Ok(found) => {
                for (id, floor) in floors {
                    let Some(&version) = found.get(id) else {
                        panic!("{id}: the store knows every user")
                    };
                    assert!(
                        version >= floor,
                        "{id}: served version {version}, but version {floor} was announced before the lookup began"
                    );
                }
            }
            Err(EntityError::Unavailable { .. }) => {} // a failed fetch, nothing stale to serve
            Err(other) => panic!("{other}"),
        }
    }
    // Settled, every user is served at its current version.
    for id in USERS {
        let now = start(&cache, id);
        answer_all(&store).await;
        assert_eq!(now.await.unwrap().unwrap(), Some(store.version(id)), "{id}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_interleaving_serves_a_record_older_than_the_last_invalidation(
        ops in prop::collection::vec(op(), 1..48),
        max_built in prop::sample::select(vec![0_u64, 1, 1000]),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(against_the_model(ops, max_built));
    }
}
