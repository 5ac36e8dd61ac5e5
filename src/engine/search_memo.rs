//! What a subject or resource search found, remembered per (query, epoch)
//! so its later pages, and the same search asked again, cost no store call
//! and no decision.
//!
//! An answer is read only under the epoch it was computed under — the
//! policy snapshot, and the entities' generation read *before* anything was
//! gathered (the file store's reading, the cache's invalidation count) —
//! and, over the HTTP store, only while everything it was built from is
//! fresh (the listing and every entity decided). An invalidation (the
//! admin endpoint, a change event) moves the generation, so a revocation is
//! never hidden by a remembered answer: the next search decides again. An
//! answer built from stale data (the store failing) is not remembered. The
//! memo is bounded in bytes and only evicts.

use std::sync::Arc;

use moka::sync::Cache;
use serde_json::Value;
use tokio::time::Instant;

use super::memo::Epoch;
use super::search::{Found, SearchQuery, Searched};

/// Most bytes of remembered answers (ids and keys, estimated): a search's
/// answer is at most `search.max_candidates` ids (10,000, a few hundred
/// KiB), so dozens of the widest fit, and thousands of small ones.
pub const MAX_BYTES: u64 = 32 << 20;

/// One remembered answer.
struct Remembered {
    found: Found,
    epoch: Epoch,
    /// good until then (HTTP store); `None`: while the epoch holds
    fresh_until: Option<Instant>,
}

/// Remembered search answers.
pub(super) struct SearchMemo {
    answers: Cache<String, Arc<Remembered>>,
}

impl SearchMemo {
    pub(super) fn new() -> Self {
        Self {
            answers: Cache::builder()
                .max_capacity(MAX_BYTES)
                .weigher(|key: &String, remembered: &Arc<Remembered>| {
                    let ids: usize = remembered.found.ids.iter().map(|id| id.len() + 24).sum();
                    u32::try_from(key.len() + ids + 128).unwrap_or(u32::MAX)
                })
                .build(),
        }
    }

    /// The answer remembered for `key` under `epoch`, if still fresh (no
    /// candidate decided for it: `candidates` is 0).
    pub(super) fn get(&self, key: &str, epoch: Epoch) -> Option<Found> {
        let remembered = self.answers.get(key)?;
        let fresh = remembered
            .fresh_until
            .is_none_or(|until| Instant::now() < until);
        (remembered.epoch == epoch && fresh).then(|| Found {
            candidates: 0,
            ..remembered.found.clone()
        })
    }

    /// Remembers `found` for `key` under `epoch` (read before it was
    /// computed), good until `fresh_until`.
    pub(super) fn keep(
        &self,
        key: String,
        epoch: Epoch,
        fresh_until: Option<Instant>,
        found: &Found,
    ) {
        let remembered = Remembered {
            found: found.clone(),
            epoch,
            fresh_until,
        };
        self.answers.insert(key, Arc::new(remembered));
    }
}

/// The key of a search: what is searched, every part given and the
/// context (as sent; another spelling of the same context is only a miss),
/// and the candidates allowed (a wider limit may answer where a narrower
/// one refused).
pub(super) fn key(query: &SearchQuery<'_>, searched: Searched, max: usize) -> String {
    let context = query.context.map_or(Value::Null, Value::clone);
    // The searched side's id is ignored, as the search ignores it.
    let (subject_id, resource_id) = match searched {
        Searched::Subject => ("", query.resource.1),
        Searched::Resource => (query.subject.1, ""),
        Searched::Action => (query.subject.1, query.resource.1),
    };
    serde_json::json!([
        format!("{searched:?}"),
        query.subject.0,
        subject_id,
        query.action,
        query.resource.0,
        resource_id,
        context,
        max
    ])
    .to_string()
}
