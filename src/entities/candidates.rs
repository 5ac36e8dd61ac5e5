//! Gathering many entities at once and reading each apart: a search's
//! candidates. One lookup of the cache per round (the candidates, then each
//! level of their parents), at most [`BATCH`] uids a store call, instead of a
//! round trip per candidate; then each candidate's own entities (itself and
//! its ancestors to `store.ancestor_depth`) are read from what was found,
//! exactly what gathering it alone would have found.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cedar_policy::{Entity, EntityUid, Schema};

use super::cache::{EntityCache, Found};
use super::{EntityError, Gathered};

/// Most uids asked of the store in one call: the store's answer stays far
/// under `store.max_response_bytes` (16 MiB) even for accounts of a few KiB
/// each, and 10,000 candidates (`search.max_candidates`) take ten calls.
pub const BATCH: usize = 1_000;

/// What gathering many uids found: every entity and ancestor, by uid.
#[derive(Default)]
pub struct GatheredApart {
    found: HashMap<EntityUid, Found>,
    depth: u32,
    /// staleness, freshness and generation, as [`super::EntityStore::gather`]
    pub gathered: Gathered,
    /// store calls the cache led or joined for these uids (an upper bound:
    /// a round with every uid cached makes none)
    pub rounds: usize,
}

impl GatheredApart {
    /// Appends `uid`'s own entities (itself and its ancestors, as
    /// gathering it alone would); `false` when the store does not hold it.
    pub fn own(&self, uid: &EntityUid, out: &mut Vec<Entity>) -> bool {
        let Some(first) = self.found.get(uid) else {
            return false;
        };
        let mut seen = HashSet::from([uid.clone()]);
        let mut round = vec![first];
        for depth in 0..=self.depth {
            let mut next = Vec::new();
            for found in round {
                out.push(Entity::clone(&found.entity));
                if depth < self.depth {
                    next.extend(unseen_parents(found, &mut seen).filter_map(|p| self.found.get(p)));
                }
            }
            if next.is_empty() {
                break;
            }
            round = next;
        }
        true
    }
}

/// `found`'s parents not `seen` yet, each marked seen as it is taken.
fn unseen_parents<'f>(
    found: &'f Found,
    seen: &'f mut HashSet<EntityUid>,
) -> impl Iterator<Item = &'f EntityUid> {
    found
        .cached
        .parents
        .iter()
        .filter(move |parent| seen.insert((*parent).clone()))
}

/// Gathers `uids` and their ancestors to `depth` through `cache`, a round
/// per level, each round's uids in calls of at most [`BATCH`].
///
/// Every ancestor a uid alone would reach is found: a breadth-first walk
/// over all of them meets each entity first at its least depth, so its
/// parents are asked whenever any uid still has levels left above it.
///
/// # Errors
/// When the store fails for a uid that has no entry within the stale bound.
pub(super) async fn gather_apart(
    cache: &EntityCache,
    depth: u32,
    uids: &[EntityUid],
    schema: &Arc<Schema>,
) -> Result<GatheredApart, EntityError> {
    let mut apart = GatheredApart {
        depth,
        gathered: Gathered {
            generation: cache.generation(),
            ..Gathered::default()
        },
        ..GatheredApart::default()
    };
    let mut seen: HashSet<EntityUid> = uids.iter().cloned().collect();
    let mut round: Vec<EntityUid> = seen.iter().cloned().collect();
    round.sort_unstable();
    for level in 0..=depth {
        let mut next = Vec::new();
        for chunk in round.chunks(BATCH) {
            let lookup = cache.lookup(chunk, schema).await?;
            apart.rounds += 1;
            apart.gathered.stale |= lookup.stale;
            apart.gathered.fresh_until = match (apart.gathered.fresh_until, lookup.fresh_until) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            for found in lookup.found {
                if level < depth {
                    next.extend(unseen_parents(&found, &mut seen).cloned());
                }
                apart.found.insert(found.entity.uid(), found);
            }
        }
        if next.is_empty() {
            break;
        }
        round = next;
    }
    Ok(apart)
}

#[cfg(test)]
mod tests {

    use serde_json::json;

    use super::*;
    use crate::entities::EntityStore;
    use crate::entities::double::Double;

    fn uid(text: &str) -> EntityUid {
        text.parse().unwrap()
    }

    /// `a` in `g1` in `g2` in `g3`; `b` in `g2` directly; `c` absent.
    fn store(depth: u32) -> (EntityStore, Arc<Double>, Arc<Schema>) {
        let group = |id: &str, parents: Vec<&str>| {
            json!({"uid": {"type": "Group", "id": id}, "attrs": {},
                   "parents": parents.iter().map(|p| json!({"type": "Group", "id": p})).collect::<Vec<_>>()})
        };
        let double = Double::new(vec![
            json!({"uid": {"type": "User", "id": "a"}, "attrs": {}, "parents": [{"type": "Group", "id": "g1"}]}),
            json!({"uid": {"type": "User", "id": "b"}, "attrs": {}, "parents": [{"type": "Group", "id": "g2"}]}),
            group("g1", vec!["g2"]),
            group("g2", vec!["g3"]),
            group("g3", vec![]),
        ]);
        let settings = crate::entities::cache::tests::settings();
        let schema =
            Schema::from_cedarschema_str("entity Group in [Group]; entity User in [Group];")
                .unwrap()
                .0;
        let store = EntityStore::Http {
            cache: EntityCache::new(Arc::clone(&double), settings),
            ancestor_depth: depth,
        };
        (store, double, Arc::new(schema))
    }

    fn sorted(entities: &[Entity]) -> Vec<String> {
        let mut uids: Vec<String> = entities.iter().map(|e| e.uid().to_string()).collect();
        uids.sort();
        uids
    }

    #[tokio::test(start_paused = true)]
    async fn each_candidate_read_apart_has_what_gathering_it_alone_finds_in_a_call_per_round() {
        for depth in 0..=3 {
            let (store, double, schema) = store(depth);
            let uids = [
                uid(r#"User::"a""#),
                uid(r#"User::"b""#),
                uid(r#"User::"c""#),
            ];
            let apart = store.gather_apart(&uids, &schema).await.unwrap();
            // A round per level reached, each one call (b's g2 is a's
            // second level: asked once, at the first level it is met).
            assert!(double.calls() <= depth as usize + 1, "depth {depth}");
            for uid in &uids {
                let mut own = Vec::new();
                let held = apart.own(uid, &mut own);
                assert_eq!(held, uid.id().unescaped() != "c", "{uid}");
                assert_eq!(
                    sorted(&own),
                    alone(depth, uid).await,
                    "{uid} at depth {depth}"
                );
            }
        }
    }

    /// What gathering `uid` alone finds, at `depth`.
    async fn alone(depth: u32, uid: &EntityUid) -> Vec<String> {
        let (store, _, schema) = store(depth);
        let mut out = Vec::new();
        store
            .gather(std::slice::from_ref(uid), &schema, &mut out)
            .await
            .unwrap();
        sorted(&out)
    }
}
