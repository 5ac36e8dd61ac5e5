//! The file store's kept answers of context-free policies. The file store
//! needs no entity slices (it decides on all its entities in place), so the
//! answer an HTTP store's slice carries ([`FixedPart`]) is kept here instead:
//! by principal, resource and action, for the entities it was computed on.
//! A reload of the file makes new entities, and the answers kept for the old
//! ones are never read again.

use std::sync::{Arc, Weak};

use cedar_policy::{Entities, EntityUid};
use moka::sync::Cache;

use crate::policy::{FixedPart, Verdicts};

/// Answers kept at most: the hot (principal, resource, action) working set.
const CAPACITY: u64 = 10_000;

/// One kept answer, and the entities it holds for.
pub(super) struct Kept {
    /// the entities the answer was computed on (held weakly: their address
    /// cannot be reused while this lives, so it identifies them)
    entities: Weak<Entities>,
    /// the answer
    pub part: FixedPart,
}

/// The kept answers, by `[principal, resource, action]`.
pub(super) struct FixedParts {
    cache: Cache<Vec<EntityUid>, Arc<Kept>>,
}

impl FixedParts {
    pub(super) fn new() -> Self {
        Self {
            cache: Cache::builder().max_capacity(CAPACITY).build(),
        }
    }

    /// The place for the answer of `verdicts` for `key` (`[principal,
    /// resource, action]`) on `entities`: the kept one, or a new empty one,
    /// kept (replacing one made for other entities or older policies).
    pub(super) fn get(
        &self,
        key: &[EntityUid],
        entities: &Arc<Entities>,
        verdicts: &Verdicts,
    ) -> Arc<Kept> {
        if let Some(kept) = self.cache.get(key)
            && std::ptr::eq(kept.entities.as_ptr(), Arc::as_ptr(entities))
            && kept.part.serves(verdicts)
        {
            return kept;
        }
        let kept = Arc::new(Kept {
            entities: Arc::downgrade(entities),
            part: FixedPart::default(),
        });
        self.cache.insert(key.to_vec(), Arc::clone(&kept));
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cedar_policy::{Context, Policy, PolicyId, PolicySet, Request};

    #[test]
    fn an_answer_is_kept_only_for_its_entities_and_policies() {
        let verdicts = |text: &str| {
            let mut set = PolicySet::new();
            set.add(text.parse::<Policy>().unwrap().new_id(PolicyId::new("p")))
                .unwrap();
            Verdicts::prepare(&set).unwrap()
        };
        let permit = verdicts(r#"permit (principal, action, resource) when { principal.ok };"#);
        let user = |ok: bool| {
            Arc::new(
                Entities::from_json_value(
                    serde_json::json!([{"uid": {"type": "User", "id": "a"}, "attrs": {"ok": ok}, "parents": []}]),
                    None,
                )
                .unwrap(),
            )
        };
        let key: Vec<EntityUid> = [r#"User::"a""#, r#"Doc::"d""#, r#"Action::"read""#]
            .iter()
            .map(|uid| uid.parse().unwrap())
            .collect();
        let request = Request::new(
            key[0].clone(),
            key[2].clone(),
            key[1].clone(),
            Context::empty(),
            None,
        )
        .unwrap();
        let parts = FixedParts::new();
        let decide = |entities: &Arc<Entities>, verdicts: &Verdicts| {
            let kept = parts.get(&key, entities, verdicts);
            verdicts
                .evaluate(&request, entities, Some(&kept.part))
                .unwrap()
                .allowed
        };
        let (allowed, refused) = (user(true), user(false));
        assert!(decide(&allowed, &permit));
        assert!(decide(&allowed, &permit), "read back");
        // The file reloaded: new entities, a new answer.
        assert!(!decide(&refused, &permit));
        // New policies on the same entities: their own answer.
        let inverse = verdicts(r#"permit (principal, action, resource) when { !principal.ok };"#);
        assert!(decide(&refused, &inverse));
        let stricter = verdicts(r#"permit (principal, action, resource) when { principal.ok };"#);
        assert!(decide(&allowed, &stricter));
        assert!(
            Arc::ptr_eq(
                &parts.get(&key, &allowed, &stricter),
                &parts.get(&key, &allowed, &stricter)
            ),
            "kept while entities and policies stay"
        );
    }
}
