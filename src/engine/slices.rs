//! Entity slices the HTTP store's decisions reuse. Building Cedar's
//! `Entities` for a decision (copying each cached entity, computing the
//! hierarchy's transitive closure) costs as much as evaluating the policies,
//! and the same principal acts on the same account again and again; so the
//! built slice is kept, keyed by the entities the request names and the
//! action, and reused while every entity in it is fresh in the cache and
//! nothing was invalidated. A slice with stale or missing data is never kept.
//! With it goes the answer of the action's policies that do not read the
//! context, which depends on nothing else.

use std::sync::Arc;

use cedar_policy::{Entities, EntityUid};
use moka::sync::Cache;
use tokio::time::Instant;

use crate::entities::Gathered;
use crate::policy::FixedPart;

/// Slices kept at most: the hot (principal, resource, action) working set.
const CAPACITY: u64 = 10_000;

/// One decision's entities, ready for Cedar.
pub(super) struct Slice {
    /// the entities, with the action's
    pub entities: Entities,
    /// the answer of the action's context-free policies on these entities
    /// (the key names the principal, resource and action), once computed
    pub fixed: FixedPart,
    until: Instant,
    generation: u64,
}

/// The slices, by (named entities…, action).
pub(super) struct Slices {
    cache: Cache<Vec<EntityUid>, Arc<Slice>>,
}

impl Slices {
    pub(super) fn new() -> Self {
        Self {
            cache: Cache::builder().max_capacity(CAPACITY).build(),
        }
    }

    /// The slice for `key`, if it is still good under `generation`.
    pub(super) fn get(&self, key: &[EntityUid], generation: u64) -> Option<Arc<Slice>> {
        let slice = self.cache.get(key)?;
        if slice.generation == generation && Instant::now() < slice.until {
            Some(slice)
        } else {
            self.cache.invalidate(key);
            None
        }
    }

    /// Keeps `entities` for `key` while what they were built from stays
    /// fresh; returns them either way.
    pub(super) fn keep(
        &self,
        key: Vec<EntityUid>,
        entities: Entities,
        gathered: Gathered,
    ) -> Arc<Slice> {
        let slice = Arc::new(Slice {
            entities,
            fixed: FixedPart::default(),
            until: gathered.fresh_until.unwrap_or_else(Instant::now),
            generation: gathered.generation,
        });
        if !gathered.stale && gathered.fresh_until.is_some() {
            self.cache.insert(key, Arc::clone(&slice));
        }
        slice
    }
}
