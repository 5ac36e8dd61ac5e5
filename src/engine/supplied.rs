//! The entities a request describes itself, and the rule that says whether
//! it may: per entity type, the store alone, the request alone, or the
//! store with the request's data over it (`entities.sources`).

use std::collections::{HashMap, HashSet};

use cedar_policy::{Entity, EntityTypeName, EntityUid};
use serde_json::Value;

use super::decision::{EntityRef, Field, RequestEntities, RequestError};
use super::describe;
use crate::entities::Sourcing;
use crate::policy::PolicySnapshot;

/// Where each entity type's data comes from.
pub(super) struct Sources {
    by_type: foldhash::HashMap<EntityTypeName, Sourcing>,
    default: Sourcing,
    /// whether some type is described by requests alone (not the store)
    any_request: bool,
}

impl Sources {
    pub fn new(by_type: HashMap<EntityTypeName, Sourcing>, default: Sourcing) -> Self {
        let any_request =
            default == Sourcing::Request || by_type.values().any(|s| *s == Sourcing::Request);
        Self {
            by_type: by_type.into_iter().collect(),
            default,
            any_request,
        }
    }

    /// The sourcing of `ty`.
    pub fn of(&self, ty: &EntityTypeName) -> Sourcing {
        self.by_type.get(ty).copied().unwrap_or(self.default)
    }

    /// Whether some type's data comes from requests alone: a decision may
    /// then hold request data even when the request sent none.
    pub fn any_request(&self) -> bool {
        self.any_request
    }

    /// The request's own entities: its `entities` (parsed now, or once for
    /// a batch), then the principal's and resource's `properties`.
    pub fn supplied(
        &self,
        snapshot: &PolicySnapshot,
        entities: RequestEntities<'_>,
        principal: (&EntityUid, &EntityRef<'_>),
        resource: (&EntityUid, &EntityRef<'_>),
    ) -> Result<Vec<Entity>, RequestError> {
        let mut supplied = match entities {
            RequestEntities::None => Vec::new(),
            RequestEntities::Json(json) => self.parse(snapshot, json)?,
            RequestEntities::Parsed(parsed) if parsed.version == *snapshot.version() => {
                parsed.entities.clone()
            }
            RequestEntities::Parsed(parsed) => self.parse(snapshot, &parsed.json)?,
        };
        let (uid, reference) = principal;
        self.described(
            snapshot,
            uid,
            reference,
            Field::PrincipalProperties,
            &mut supplied,
        )?;
        let (uid, reference) = resource;
        self.described(
            snapshot,
            uid,
            reference,
            Field::ResourceProperties,
            &mut supplied,
        )?;
        Ok(supplied)
    }

    /// Request-supplied entities in Cedar's JSON format, checked against
    /// the schema and the sourcing of their types. A uid sent twice is two
    /// descriptions of one entity: refused, not resolved by order.
    pub fn parse(
        &self,
        snapshot: &PolicySnapshot,
        json: &[Value],
    ) -> Result<Vec<Entity>, RequestError> {
        let mut seen = HashSet::with_capacity(json.len());
        json.iter()
            .enumerate()
            .map(|(index, json)| {
                let entity = Entity::from_json_value(json.clone(), Some(snapshot.schema()))
                    .map_err(|e| RequestError {
                        field: Field::Entity(index),
                        code: "invalid_entity",
                        message: describe(&e),
                    })?;
                let uid = entity.uid();
                if self.of(uid.type_name()) == Sourcing::Store {
                    return Err(store_authoritative(Field::Entity(index), &uid));
                }
                if !seen.insert(uid) {
                    return Err(RequestError {
                        field: Field::Entity(index),
                        code: "duplicate_entity",
                        message: format!("`{}` is sent more than once", entity.uid()),
                    });
                }
                Ok(entity)
            })
            .collect()
    }

    /// Turns AuthZEN `properties` into a request-supplied entity, when the
    /// type is request-described (or `merge`); `out` holds the entities
    /// the request already describes.
    fn described(
        &self,
        snapshot: &PolicySnapshot,
        uid: &EntityUid,
        reference: &EntityRef<'_>,
        field: Field,
        out: &mut Vec<Entity>,
    ) -> Result<(), RequestError> {
        let sourcing = self.of(uid.type_name());
        let described = || out.iter().any(|entity| entity.uid() == *uid);
        let Some(properties) = reference.properties else {
            // A request-described entity exists because the request names
            // it, when its type needs no attribute; otherwise it must come
            // in `entities`, or it is missing.
            if sourcing == Sourcing::Request && !described() {
                let attrs = serde_json::Map::new();
                out.extend(entity_of(snapshot, uid, reference.id, attrs).ok());
            }
            return Ok(());
        };
        match sourcing {
            Sourcing::Store if properties.is_empty() => Ok(()),
            Sourcing::Store => Err(store_authoritative(field, uid)),
            Sourcing::Request | Sourcing::Merge if described() => Err(RequestError {
                field,
                code: "duplicate_entity",
                message: format!("`{uid}` is described twice in the request"),
            }),
            Sourcing::Request | Sourcing::Merge => {
                // An attribute the type does not declare no validated
                // policy can read: ignored, as AuthZEN asks of additional
                // properties, rather than refused.
                let attrs: serde_json::Map<String, Value> = properties
                    .iter()
                    .filter(|(name, _)| snapshot.declares_attribute(uid.type_name(), name))
                    .map(|(name, value)| (name.clone(), value.clone()))
                    .collect();
                // Properties that say nothing a policy reads do not replace
                // what the store holds (its attributes and parents).
                if attrs.is_empty() && sourcing == Sourcing::Merge {
                    return Ok(());
                }
                let entity =
                    entity_of(snapshot, uid, reference.id, attrs).map_err(|e| RequestError {
                        field,
                        code: "invalid_properties",
                        message: describe(&e),
                    })?;
                out.push(entity);
                Ok(())
            }
        }
    }
}

/// The entity `uid` (its id as the request spells it) with `attrs` and
/// no parents, checked against the schema.
fn entity_of(
    snapshot: &PolicySnapshot,
    uid: &EntityUid,
    id: &str,
    attrs: serde_json::Map<String, Value>,
) -> Result<Entity, cedar_policy::entities_errors::EntitiesError> {
    let json = serde_json::json!({
        "uid": { "type": uid.type_name().to_string(), "id": id },
        "attrs": attrs,
        "parents": [],
    });
    Entity::from_json_value(json, Some(snapshot.schema()))
}

fn store_authoritative(field: Field, uid: &EntityUid) -> RequestError {
    RequestError {
        field,
        code: "store_authoritative",
        message: format!(
            "request data for `{uid}` is refused: type `{}` is served by the entity store (set `entities.sources` to `merge` to trust callers with it)",
            uid.type_name()
        ),
    }
}
