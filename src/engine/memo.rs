//! The engine's one memo: what a decision computed that the next decision
//! on the same principal, action, resource and context references may
//! reuse, under an explicit epoch.
//!
//! Answers are remembered, each fixed by the key and the epoch: the answer
//! of the action's policies that never read the context (most of them);
//! and, for a few contexts, the whole answer by the values the policies
//! read of it (a trader placing buy orders asks the same question again
//! and again; the values no policy reads, an order's instrument, do not
//! change it). Entities are not: a decision the remembered answers settle
//! reads none, and one that must evaluate gets its slice built again from
//! the entity cache's hot tier (a copy per entry would cost more memory
//! than the cache itself).
//!
//! An entry is read only under its own epoch — the policy snapshot it was
//! computed under and the entities' generation (the file store's reading,
//! the cache's invalidation count) — and, for entities from the HTTP store,
//! only while everything it was built from is fresh. Nothing else voids an
//! entry; the bound on entries (`cache.max_slices`) only evicts.
//!
//! An entry is found by a keyed hash of its key's compact spelling
//! ([`Spelling`], written once per lookup into a buffer each thread
//! reuses) and confirmed by that spelling kept beside it: the memo holds a
//! few dozen bytes per key, not Cedar's uids (120 bytes each), and a
//! lookup allocates nothing. Two keys that share a hash never share an
//! answer: the second is a miss and replaces the first.

use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use cedar_policy::EntityUid;
use moka::sync::Cache;
use serde_json::Value;
use tokio::time::Instant;

use crate::policy::{Satisfied, Verdict};

/// Whole answers kept per entry, by the context values read: the few
/// contexts a principal repeats on a resource.
const ANSWERS: usize = 16;

/// Most bytes of read values an answer is remembered by: the values a
/// client chooses cannot make the memo hold more than this per answer
/// (the few words a policy compares, not a megabyte string).
const ANSWER_BYTES: usize = 512;

/// The values of the context the policies read, per attribute of the
/// action's shape (`None`: absent).
type ReadValues = Box<[Option<Value>]>;

/// What a remembered answer is about: the entities the request names and
/// the action.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct MemoKey {
    pub principal: EntityUid,
    pub action: EntityUid,
    pub resource: EntityUid,
    /// the entities the context references, in the context's order
    pub refs: Vec<EntityUid>,
}

impl MemoKey {
    /// Every entity the decision needs data for: principal, resource and
    /// the context's references.
    pub fn named(&self) -> impl Iterator<Item = &EntityUid> {
        [&self.principal, &self.resource]
            .into_iter()
            .chain(&self.refs)
    }
}

/// A key written out compactly and unambiguously: for each uid (the
/// principal, the action, the resource, then the references), its type's
/// namespace (closed by an empty part), its type's name and its id, each
/// part length-prefixed, so every uid ends where its spelling says. Two
/// keys are equal exactly when their spellings are.
#[derive(Debug)]
struct Spelling(Box<[u8]>);

impl Spelling {
    fn of(key: &MemoKey) -> Self {
        let mut bytes = Vec::with_capacity(96);
        spell(key, |part| bytes.extend_from_slice(part));
        Self(bytes.into_boxed_slice())
    }
}

/// The largest spelling buffer a thread keeps between lookups.
const SPELT_KEPT: usize = 4096;

thread_local! {
    /// Each thread's key being looked up, spelt out; reused.
    static SPELT: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(128));
}

/// Hands `write` the parts of `key`'s spelling, in order.
fn spell(key: &MemoKey, mut write: impl FnMut(&[u8])) {
    let mut text = |text: &str| {
        // A part past 4 GiB cannot come: request bodies are bounded far below.
        write(&u32::try_from(text.len()).unwrap_or(u32::MAX).to_le_bytes());
        write(text.as_bytes());
    };
    let mut uid = |uid: &EntityUid| {
        let ty = uid.type_name();
        for part in ty.namespace_components() {
            text(part);
        }
        text("");
        text(ty.basename());
        text(uid.id().unescaped());
    };
    uid(&key.principal);
    uid(&key.action);
    uid(&key.resource);
    for reference in &key.refs {
        uid(reference);
    }
}

/// What an entry was computed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Epoch {
    /// the policy snapshot's epoch
    pub policies: u64,
    /// the file store's reading, or the entity cache's invalidation count
    pub entities: u64,
}

/// One remembered decision's reusable part.
#[derive(Debug)]
pub(super) struct Memoized {
    /// the key it answers, spelt out (`None`: kept nowhere)
    spelling: Option<Spelling>,
    epoch: Epoch,
    /// until when the cached entities it was built from are fresh (HTTP
    /// store); `None` for resident entities
    until: Option<Instant>,
    /// the context-free policies' answer, computed by the first decision
    /// that needs it (`None` inside: they raised an error)
    context_free: OnceLock<Option<Satisfied>>,
    /// whole answers by the context values read, oldest first
    answers: RwLock<Vec<(ReadValues, Verdict)>>,
    /// what the decision log says of the entities read, computed by the
    /// first logged decision that needs it
    read: OnceLock<ReadEntities>,
}

/// The entities a decision read, as its log line carries them.
#[derive(Debug)]
pub(super) struct ReadEntities {
    /// `sha256:` and 32 hex digits
    pub digest: String,
    /// the entities, masked (`log.capture_entities`), written once as
    /// JSON: each line copies the text
    pub captured: Option<Box<serde_json::value::RawValue>>,
}

impl Memoized {
    /// An entry for one decision alone, never kept: data the request
    /// described, or the store's data served stale.
    pub fn once() -> Self {
        Self {
            spelling: None,
            epoch: Epoch {
                policies: 0,
                entities: 0,
            },
            until: None,
            context_free: OnceLock::new(),
            read: OnceLock::new(),
            answers: RwLock::default(),
        }
    }

    /// What the log says of the entities read: the remembered one, or
    /// `compute`d now and remembered.
    pub fn read_entities(&self, compute: impl FnOnce() -> ReadEntities) -> &ReadEntities {
        self.read.get_or_init(compute)
    }

    /// Whether what the log says of the entities read is remembered.
    pub fn knows_read_entities(&self) -> bool {
        self.read.get().is_some()
    }

    /// The answer remembered for a context whose read values are `read`.
    pub fn answer(&self, read: &[Option<&Value>]) -> Option<Verdict> {
        let answers = self.answers.read().unwrap_or_else(PoisonError::into_inner);
        answers
            .iter()
            .find(|(values, _)| {
                values.len() == read.len()
                    && values
                        .iter()
                        .zip(read)
                        .all(|(kept, asked)| kept.as_ref() == *asked)
            })
            .map(|(_, verdict)| verdict.clone())
    }

    /// Remembers `verdict` for a context whose read values are `read`,
    /// forgetting the oldest answer past [`ANSWERS`].
    pub fn remember(&self, read: &[Option<&Value>], verdict: &Verdict) {
        let bytes: usize = read.iter().flatten().map(|value| weight(value)).sum();
        if bytes > ANSWER_BYTES {
            return;
        }
        let values: ReadValues = read.iter().map(|value| value.cloned()).collect();
        let mut answers = self.answers.write().unwrap_or_else(PoisonError::into_inner);
        if answers.iter().any(|(kept, _)| *kept == values) {
            return;
        }
        if answers.len() >= ANSWERS {
            answers.remove(0);
        }
        // Most entries keep one answer or a few: grow by one, not double.
        answers.reserve_exact(1);
        answers.push((values, verdict.clone()));
    }

    /// The context-free policies' answer: the remembered one, or `compute`d
    /// now and remembered.
    pub fn context_free(&self, compute: impl FnOnce() -> Option<Satisfied>) -> Option<&Satisfied> {
        self.context_free.get_or_init(compute).as_ref()
    }
}

/// About how many bytes a JSON value holds.
fn weight(value: &Value) -> usize {
    match value {
        Value::String(text) => text.len(),
        Value::Array(items) => items.iter().map(weight).sum(),
        Value::Object(map) => map.iter().map(|(key, item)| key.len() + weight(item)).sum(),
        Value::Null | Value::Bool(_) | Value::Number(_) => 8,
    }
}

/// The memo's own hasher for its keys, which are keyed hashes already:
/// a key is its own hash.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    /// One `u64` key from a fresh hasher is itself; anything else hashed
    /// after it is mixed in, not written over it.
    fn write_u64(&mut self, key: u64) {
        self.0 = self.0.rotate_left(32) ^ key;
    }
}

/// The entries, bounded in number, by their key's keyed hash; none at all
/// with a capacity of 0.
pub(super) struct Memo<S = RandomState> {
    entries: Option<Cache<u64, Arc<Memoized>, BuildHasherDefault<Prehashed>>>,
    /// keyed afresh per process: no client can choose keys that collide
    hasher: S,
}

impl Memo {
    /// A memo of at most `capacity` entries (0: nothing is remembered).
    pub fn new(capacity: u64) -> Self {
        Self::with_hasher(capacity, RandomState::new())
    }
}

impl<S: BuildHasher> Memo<S> {
    fn with_hasher(capacity: u64, hasher: S) -> Self {
        Self {
            entries: (capacity > 0).then(|| {
                Cache::builder()
                    .max_capacity(capacity)
                    .build_with_hasher(BuildHasherDefault::default())
            }),
            hasher,
        }
    }

    /// The entry for `key`, when it was computed under `epoch` and is still
    /// fresh.
    pub fn get(&self, key: &MemoKey, epoch: Epoch) -> Option<Arc<Memoized>> {
        let entries = self.entries.as_ref()?;
        // Spelt once into this thread's buffer: hashed as bytes, then
        // compared with the entry's spelling as bytes.
        SPELT.with_borrow_mut(|spelt| {
            spelt.clear();
            spell(key, |part| spelt.extend_from_slice(part));
            let found = entries
                .get(&self.hasher.hash_one(spelt.as_slice()))
                .filter(|entry| {
                    entry.epoch == epoch
                        && entry.until.is_none_or(|until| Instant::now() < until)
                        && entry
                            .spelling
                            .as_ref()
                            .is_some_and(|kept| *kept.0 == **spelt)
                });
            // A key of many references leaves no large buffer behind.
            if spelt.capacity() > SPELT_KEPT {
                *spelt = Vec::with_capacity(128);
            }
            found
        })
    }

    /// Keeps a new entry for `key` (replacing any other); `until` when the
    /// data its decisions read stops being fresh.
    pub fn keep(&self, key: &MemoKey, epoch: Epoch, until: Option<Instant>) -> Arc<Memoized> {
        let spelling = self.entries.is_some().then(|| Spelling::of(key));
        let hash = spelling
            .as_ref()
            .map(|spelling| self.hasher.hash_one(&*spelling.0));
        let entry = Arc::new(Memoized {
            spelling,
            epoch,
            until,
            context_free: OnceLock::new(),
            read: OnceLock::new(),
            answers: RwLock::default(),
        });
        if let (Some(entries), Some(hash)) = (&self.entries, hash) {
            entries.insert(hash, Arc::clone(&entry));
        }
        entry
    }

    /// Entries held now (approximate, as moka counts).
    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.entries.as_ref().map_or(0, |entries| {
            entries.run_pending_tasks();
            entries.entry_count()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(principal: &str) -> MemoKey {
        let uid = |text: &str| text.parse::<EntityUid>().unwrap();
        MemoKey {
            principal: uid(&format!(r#"User::"{principal}""#)),
            action: uid(r#"Action::"read""#),
            resource: uid(r#"Doc::"d""#),
            refs: Vec::new(),
        }
    }

    const EPOCH: Epoch = Epoch {
        policies: 1,
        entities: 1,
    };

    #[test]
    fn an_entry_is_read_only_under_its_epoch() {
        let memo = Memo::new(100);
        memo.keep(&key("a"), EPOCH, None);
        assert!(memo.get(&key("a"), EPOCH).is_some());
        assert!(memo.get(&key("b"), EPOCH).is_none());
        for other in [
            Epoch {
                policies: 2,
                ..EPOCH
            },
            Epoch {
                entities: 2,
                ..EPOCH
            },
        ] {
            assert!(memo.get(&key("a"), other).is_none(), "{other:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_built_from_cached_data_lives_while_it_is_fresh() {
        let memo = Memo::new(100);
        let until = Instant::now() + Duration::from_secs(5);
        memo.keep(&key("a"), EPOCH, Some(until));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(memo.get(&key("a"), EPOCH).is_some());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(memo.get(&key("a"), EPOCH).is_none(), "stale at its TTL");
    }

    #[test]
    fn the_context_free_answer_is_computed_once() {
        let memo = Memo::new(100);
        let entry = memo.keep(&key("a"), EPOCH, None);
        let mut computed = 0;
        for _ in 0..3 {
            let answer = entry.context_free(|| {
                computed += 1;
                Some(Satisfied::default())
            });
            assert!(answer.is_some());
        }
        assert_eq!(computed, 1);
    }

    #[test]
    fn a_whole_answer_is_found_by_exactly_the_values_read() {
        let memo = Memo::new(100);
        let entry = memo.keep(&key("a"), EPOCH, None);
        let (buy, sell) = (Value::from("buy"), Value::from("sell"));
        let allowed = Verdict {
            allowed: true,
            reasons: vec![cedar_policy::PolicyId::new("S2")],
        };
        entry.remember(&[Some(&buy), None], &allowed);
        assert_eq!(entry.answer(&[Some(&buy), None]), Some(allowed.clone()));
        assert_eq!(entry.answer(&[Some(&sell), None]), None);
        assert_eq!(
            entry.answer(&[Some(&buy), Some(&buy)]),
            None,
            "presence counts"
        );
        assert_eq!(entry.answer(&[None, None]), None);
        for n in 0..ANSWERS {
            entry.remember(&[Some(&Value::from(n)), None], &allowed);
        }
        assert_eq!(
            entry.answer(&[Some(&buy), None]),
            None,
            "the oldest is forgotten"
        );
        assert!(entry.answers.read().unwrap().len() <= ANSWERS);
    }

    /// Every key hashes alike: only the spelling tells them apart.
    #[derive(Default)]
    struct Colliding;

    impl std::hash::Hasher for Colliding {
        fn finish(&self) -> u64 {
            7
        }
        fn write(&mut self, _: &[u8]) {}
    }

    #[test]
    fn keys_that_share_a_hash_never_share_an_answer() {
        let memo = Memo::with_hasher(100, std::hash::BuildHasherDefault::<Colliding>::default());
        memo.keep(&key("a"), EPOCH, None);
        assert!(memo.get(&key("a"), EPOCH).is_some());
        assert!(memo.get(&key("b"), EPOCH).is_none(), "b is not a");
        memo.keep(&key("b"), EPOCH, None);
        assert!(memo.get(&key("b"), EPOCH).is_some());
        assert!(memo.get(&key("a"), EPOCH).is_none(), "b replaced a");
    }

    fn uid(ty: &str, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(ty.parse().unwrap(), cedar_policy::EntityId::new(id))
    }

    proptest::proptest! {
        /// Two keys are spelt alike exactly when they are equal: whatever the
        /// namespaces, names, ids (empty, or holding the separators'
        /// bytes) and references.
        #[test]
        fn two_keys_are_spelt_alike_exactly_when_equal(
            parts in proptest::collection::vec(
                (proptest::sample::select(vec!["User", "A::User", "A::B::User", "Doc"]),
                 proptest::sample::select(vec!["", "a", "u", "\0", "\u{1}\0\0\0a", "A::User"])),
                6,
            ),
            actions in proptest::collection::vec(
                (proptest::sample::select(vec!["Action", "A::Action"]),
                 proptest::sample::select(vec!["read", "write"])),
                2,
            ),
            refs in 0usize..=1,
            other_refs in 0usize..=1,
        ) {
            let key = |parts: &[(&str, &str)], action: (&str, &str), refs: usize| MemoKey {
                principal: uid(parts[0].0, parts[0].1),
                action: uid(action.0, action.1),
                resource: uid(parts[1].0, parts[1].1),
                refs: parts[2..2 + refs].iter().map(|(ty, id)| uid(ty, id)).collect(),
            };
            let first = key(&parts[..3], actions[0], refs);
            let second = key(&parts[3..], actions[1], other_refs);
            proptest::prop_assert_eq!(Spelling::of(&first).0 == Spelling::of(&second).0, first == second);
            // And through the memo: its entry is found by its own key, and
            // by the other only when the two are equal.
            let memo = Memo::new(10);
            let epoch = Epoch { policies: 1, entities: 1 };
            memo.keep(&first, epoch, None);
            proptest::prop_assert!(memo.get(&first, epoch).is_some());
            proptest::prop_assert_eq!(memo.get(&second, epoch).is_some(), first == second);
        }
    }

    #[test]
    fn a_capacity_of_zero_remembers_nothing() {
        let memo = Memo::new(0);
        memo.keep(&key("a"), EPOCH, None);
        assert!(memo.get(&key("a"), EPOCH).is_none());
        assert_eq!(memo.len(), 0);
    }

    #[test]
    fn the_bound_holds() {
        let memo = Memo::new(10);
        for n in 0..100 {
            memo.keep(&key(&n.to_string()), EPOCH, None);
        }
        assert!(memo.len() <= 10, "{}", memo.len());
    }
}
