//! Entity data: the stores that own users, accounts and destinations, and the
//! gathering of the small slice of it one decision needs (the entities a
//! request names and their ancestors).
//!
//! Knows Cedar's entity types and the schema, never policies, HTTP routes or
//! the listener.

mod cache;
mod candidates;
mod file;
mod http;
mod rebuild;

use std::collections::HashSet;
use std::sync::Arc;

use cedar_policy::{Entity, EntityTypeName, EntityUid, Schema};

#[cfg(test)]
pub(crate) use cache::double;
pub use cache::{
    BusState, CacheSettings, EntityCache, Fetch, FetchFuture, Found, ListQuery, StoreHealth,
};
pub use candidates::{BATCH, GatheredApart};
pub use file::{FileStore, Resident};

/// Most `/entities/search` requests one search makes (its pages, and the
/// listing asked again without `related` for a store that refuses it):
/// each page asks for every candidate at once, so a store that honours the
/// page `limit` answers in one; a store paging in smaller steps than asked
/// refuses the search rather than taking a request per few entities.
pub const LISTING_REQUESTS: usize = 3;

/// How long `/readyz` waits for a failing HTTP store to answer: under the
/// kubelet's default probe timeout (1 s), so the probe reports rather than
/// times out.
pub const READINESS_PROBE: std::time::Duration = std::time::Duration::from_millis(800);
pub use http::{Fetched, HttpStore, HttpStoreSettings, StoreUid, UpstreamError};

/// Where one entity type's attributes come from (`entities.sources`): the
/// engine asks it of every type a request names, so it lives with the
/// stores rather than with the configuration that sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sourcing {
    /// From the store alone; request-supplied data is refused with a 400.
    Store,
    /// From the request alone (entities the store never holds).
    Request,
    /// From the store, with request data overriding it: for a fully trusted caller.
    Merge,
}

/// Why entity data could not be had.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum EntityError {
    /// The entities file could not be read.
    #[error("cannot read entities file `{path}`: {source}")]
    Io {
        /// the file
        path: std::path::PathBuf,
        /// why
        source: std::io::Error,
    },
    /// The entities file does not parse, or does not conform to the schema.
    #[error("invalid entities file `{path}`")]
    Invalid {
        /// the file
        path: std::path::PathBuf,
        /// Cedar's error
        #[source]
        #[diagnostic_source]
        source: cedar_policy::entities_errors::EntitiesError,
    },
    /// The HTTP store client could not be built.
    #[error(transparent)]
    Setup(UpstreamError),
    /// The entities file was read against another schema than the one
    /// asked for: never decided on until it is read against it.
    #[error(
        "the entities file was read against another schema than the policies' (it does not meet the new one, or is being read again): fix the file or the schema"
    )]
    OtherSchema,
    /// The store failed and nothing usable was cached for `uid`.
    #[error("entity store unavailable for `{uid}`: {reason}")]
    Unavailable {
        /// the uid that could not be had
        uid: String,
        /// why the store failed
        reason: String,
    },
}

/// A store's listing of the entities of a type (for search).
#[derive(Debug, Clone)]
pub struct Listed {
    /// the ids listed
    pub ids: Arc<Vec<String>>,
    /// until when the listing is fresh (HTTP store); `None`: while the
    /// file store's reading holds
    pub fresh_until: Option<tokio::time::Instant>,
}

/// What gathering found beyond the entities themselves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gathered {
    /// some entity was served past its TTL because the store failed
    pub stale: bool,
    /// until when everything gathered stays fresh (HTTP store), so what is
    /// built from it may be reused until then
    pub fresh_until: Option<tokio::time::Instant>,
    /// the cache's invalidation generation before gathering
    pub generation: u64,
}

/// Where entity data comes from.
pub enum EntityStore {
    /// A Cedar JSON entities file, held in memory and re-read when it changes.
    File(Arc<FileStore>),
    /// The platform's entity service over HTTP, behind a cache.
    Http {
        /// the cache and its client
        cache: EntityCache,
        /// levels of parents gathered above the named entities
        ancestor_depth: u32,
    },
    /// No store: every entity comes from the request.
    None,
}

impl EntityStore {
    /// What names the data every replica reads alike, when there is such a
    /// thing: the file store's digest of its file. The HTTP store has none
    /// (each replica's cache is its own); nor has a request-only store.
    pub fn data_version(&self) -> Option<String> {
        match self {
            EntityStore::File(store) => Some(store.entities().digest.clone()),
            _ => None,
        }
    }

    /// Appends to `out` the stored entities for `uids` and their ancestors.
    /// A uid the store does not hold is simply absent.
    ///
    /// # Errors
    /// When the store cannot answer and nothing usable is cached.
    pub async fn gather(
        &self,
        uids: &[EntityUid],
        schema: &Arc<Schema>,
        out: &mut Vec<Entity>,
    ) -> Result<Gathered, EntityError> {
        match self {
            Self::File(store) => {
                store.gather(uids, schema, out)?;
                Ok(Gathered::default())
            }
            Self::Http {
                cache,
                ancestor_depth,
            } => {
                let mut seen: HashSet<EntityUid> = uids.iter().cloned().collect();
                let mut round: Vec<EntityUid> = seen.iter().cloned().collect();
                let mut gathered = Gathered {
                    generation: cache.generation(),
                    ..Gathered::default()
                };
                for depth in 0..=*ancestor_depth {
                    let lookup = cache.lookup(&round, schema).await?;
                    gathered.stale |= lookup.stale;
                    gathered.fresh_until = match (gathered.fresh_until, lookup.fresh_until) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    let mut next = Vec::new();
                    for found in lookup.found {
                        if depth < *ancestor_depth {
                            next.extend(
                                found
                                    .cached
                                    .parents
                                    .iter()
                                    .filter(|p| seen.insert((*p).clone()))
                                    .cloned(),
                            );
                        }
                        out.push(Entity::clone(&found.entity));
                    }
                    if next.is_empty() {
                        break;
                    }
                    round = next;
                }
                Ok(gathered)
            }
            Self::None => Ok(Gathered::default()),
        }
    }

    /// Gathers many uids at once (a search's candidates), each then read
    /// apart with [`GatheredApart::own`]: a store call per round of misses
    /// and [`BATCH`] uids, not a round trip per uid. The file store and no
    /// store find nothing here (the file store's are read in place).
    ///
    /// # Errors
    /// When the store cannot answer and nothing usable is cached.
    pub async fn gather_apart(
        &self,
        uids: &[EntityUid],
        schema: &Arc<Schema>,
    ) -> Result<GatheredApart, EntityError> {
        match self {
            Self::Http {
                cache,
                ancestor_depth,
            } => candidates::gather_apart(cache, *ancestor_depth, uids, schema).await,
            Self::File(_) | Self::None => Ok(GatheredApart::default()),
        }
    }

    /// The generation of what the store serves: the file's reading, or
    /// the cache's invalidation count (what a remembered answer is good
    /// for; 0 without a store).
    pub fn generation(&self) -> u64 {
        match self {
            Self::File(store) => store.entities().generation,
            Self::Http { cache, .. } => cache.generation(),
            Self::None => 0,
        }
    }

    /// The whole store as one `Entities` (action entities included), when
    /// it is held in memory: the file store. A decision reads it in place.
    pub fn resident(&self) -> Option<Arc<Resident>> {
        match self {
            Self::File(store) => Some(store.entities()),
            Self::Http { .. } | Self::None => None,
        }
    }

    /// Whether the store can serve decisions now: the file loaded (it
    /// keeps its last good reading), or the HTTP store answering, or failing
    /// while its cached entities are still served (see
    /// [`EntityCache::health`]). A failing store is asked again within
    /// [`READINESS_PROBE`].
    pub async fn health(&self, schema: &Arc<Schema>) -> StoreHealth {
        match self {
            Self::Http { cache, .. } => cache.health(schema, READINESS_PROBE).await,
            Self::File(_) | Self::None => StoreHealth::Answering,
        }
    }

    /// Entities cached now (0 without a cache), counted exactly.
    pub async fn cached(&self) -> u64 {
        match self.cache() {
            Some(cache) => cache.settled_len(),
            None => 0,
        }
    }

    /// The schema changed: re-check the file, or forget what was fetched
    /// under the old schema.
    pub fn schema_changed(&self, schema: &Arc<Schema>) {
        match self {
            Self::File(store) => store.set_schema(Arc::clone(schema)),
            Self::Http { cache, .. } => cache.invalidate_all(),
            Self::None => {}
        }
    }

    /// Forgets cached data for `uids` (re-reads the file for the file store).
    pub async fn invalidate(&self, uids: &[EntityUid]) {
        match self {
            Self::File(store) => store.reload_now(),
            Self::Http { cache, .. } => cache.invalidate(uids),
            Self::None => {}
        }
    }

    /// A change event named `uids` (see `bus`): the HTTP store's cache
    /// forgets them; the file store re-reads its file if it changed (a
    /// `stat`, so a storm of events costs no re-reads of an unchanged file).
    pub async fn changed(&self, uids: &[EntityUid]) {
        match self {
            Self::File(store) => store.reload_if_changed(),
            Self::Http { cache, .. } => cache.invalidate(uids),
            Self::None => {}
        }
    }

    /// The change-event bus connected, went away or was refused (see
    /// [`EntityCache::set_bus_state`]); the file store does not mind.
    pub fn set_bus_state(&self, state: BusState) {
        if let Self::Http { cache, .. } = self {
            cache.set_bus_state(state);
        }
    }

    /// The ids of every entity of type `ty` the store holds, at most `max`
    /// and one more (for search: more than `max` is refused, not cut); with
    /// `related`, only those whose attributes refer to one of these
    /// entities (a store may list more, never fewer). The HTTP store's
    /// listing is kept while fresh, for later pages and searches (see
    /// [`EntityCache::list`]), and asked in at most [`LISTING_REQUESTS`].
    ///
    /// # Errors
    /// A store that cannot list (none), or an HTTP store that fails, does
    /// not implement `/entities/search` or does not end its pages within
    /// [`LISTING_REQUESTS`].
    pub async fn list(
        &self,
        ty: &EntityTypeName,
        related: Option<&[EntityUid]>,
        max: usize,
    ) -> Result<Listed, String> {
        let id = |uid: &EntityUid| uid.id().unescaped().to_owned();
        match self {
            Self::File(store) => {
                let resident = store.entities();
                let listed: Vec<String> = match related {
                    Some(related) => {
                        let referrers = resident.referrers();
                        let mut uids: Vec<&EntityUid> = related
                            .iter()
                            .filter_map(|uid| referrers.get(uid))
                            .flatten()
                            .filter(|uid| uid.type_name() == ty)
                            .collect();
                        uids.sort_unstable();
                        uids.dedup();
                        uids.into_iter()
                            .take(max.saturating_add(1))
                            .map(id)
                            .collect()
                    }
                    None => resident
                        .entities
                        .iter()
                        .map(Entity::uid)
                        .filter(|uid| uid.type_name() == ty)
                        .take(max.saturating_add(1))
                        .map(|uid| id(&uid))
                        .collect(),
                };
                Ok(Listed {
                    ids: Arc::new(listed),
                    fresh_until: None,
                })
            }
            Self::Http { cache, .. } => cache
                .list(ListQuery {
                    type_name: &ty.to_string(),
                    related,
                    max,
                    requests: LISTING_REQUESTS,
                })
                .await
                .map_err(|e| e.to_string()),
            Self::None => Err("with `store.kind = \"none\"` there is no store to list".to_owned()),
        }
    }

    /// The store's kind, as configured (`file`, `http`, `none`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::File(_) => "file",
            Self::Http { .. } => "http",
            Self::None => "none",
        }
    }

    /// The change-event bus's state; `None` without a bus (or with the
    /// file store, which does not depend on it).
    pub fn bus_state(&self) -> Option<BusState> {
        match self {
            Self::Http { cache, .. } => cache.bus_state(),
            Self::File(_) | Self::None => None,
        }
    }

    /// Forgets all cached data (re-reads the file for the file store).
    pub fn invalidate_all(&self) {
        match self {
            Self::File(store) => store.reload_now(),
            Self::Http { cache, .. } => cache.invalidate_all(),
            Self::None => {}
        }
    }

    /// The cache, for metrics, when there is one.
    pub fn cache(&self) -> Option<&EntityCache> {
        match self {
            Self::Http { cache, .. } => Some(cache),
            _ => None,
        }
    }
}

/// An error with its causes, joined with colons, each said once (Cedar's
/// top-level messages alone can be as vague as "entity does not conform
/// to the schema"; a transport error's cause is where it failed).
pub fn describe(error: &dyn std::error::Error) -> String {
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

/// Every entity a JSON value of Cedar's entity format refers to, at any
/// depth (an attribute, a set's element, a record's field), as `(type,
/// id)`, in either reference form (`{"type", "id"}` or `{"__entity":
/// …}`): what a search's `related` narrowing matches, where naming more
/// is safe and fewer is not.
pub fn referenced_uids<'v>(value: &'v serde_json::Value, found: &mut Vec<(&'v str, &'v str)>) {
    use serde_json::Value;
    match value {
        Value::Array(items) => items.iter().for_each(|item| referenced_uids(item, found)),
        Value::Object(object) => {
            if let (Some(Value::String(type_name)), Some(Value::String(id))) =
                (object.get("type"), object.get("id"))
            {
                found.push((type_name, id));
            }
            object
                .values()
                .for_each(|item| referenced_uids(item, found));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn references_are_found_in_either_form_at_any_depth() {
        let attrs = serde_json::json!({
            "owner": {"__entity": {"type": "User", "id": "a"}},
            "viewers": [{"type": "User", "id": "b"}],
            "limits": {"approver": {"type": "User", "id": "c"}, "count": 2},
            "kind": "personal"
        });
        let mut found = Vec::new();
        super::referenced_uids(&attrs, &mut found);
        found.sort_unstable();
        found.dedup();
        assert_eq!(found, [("User", "a"), ("User", "b"), ("User", "c")]);
    }
}
