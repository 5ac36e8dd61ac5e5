//! The cold tier's form of an entity, and the walk that builds the entity
//! back from it.
//!
//! What the cache keeps once it lets go of a built entity is Cedar's own
//! escaped JSON of its attributes and tags (entity references as
//! `__entity`, extension values as `__extn`), so reading it back needs no
//! guess. Its uid is the cache entry's key and its parents (as Cedar read
//! them) are kept beside it, so neither is written twice.
//!
//! Why a walk of our own: Cedar's `Entity::from_json_str` reads each value
//! through serde's untagged enums, which build and format an error for every
//! variant they try before the one that fits: ~48 µs per entity of the
//! shipped pack, against ~9 µs for this walk and `Entity::new`
//! (BENCHMARKS.md, "cold tier"). The walk only handles the plain cases; any
//! `__` key it does not know exactly (an extension call with several
//! arguments, an unknown function, `__expr`) goes to Cedar's parser, so
//! what a value means is always Cedar's reading.
//!
//! The walk checks no schema: the JSON is what Cedar wrote of an entity
//! that met the schema it was fetched under. The cache rebuilds with the
//! walk only under that same schema; under another, Cedar reads the JSON
//! against the new one.

use std::str::FromStr;

use cedar_policy::{Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression, Schema};
use serde_json::{Map, Value};

/// What the cache keeps of an entity once its built form is let go.
#[derive(Debug)]
pub enum Kept {
    /// Cedar's escaped JSON of its attributes and tags, read back by the walk
    Escaped(Box<str>),
    /// the store's own JSON of the entity, when Cedar cannot write it as
    /// JSON (a record holding a key Cedar's JSON reserves, `__entity`,
    /// `__extn` or `__expr`): read back by Cedar against the schema
    Store(Box<str>),
}

impl Kept {
    /// Its size in bytes: the cache's weight estimate.
    pub fn len(&self) -> usize {
        match self {
            Self::Escaped(json) | Self::Store(json) => json.len(),
        }
    }
}

/// What to keep of `entity`, parsed from the store's JSON `store`, and its
/// parents, as Cedar read them.
pub(super) fn kept_form(entity: &Entity, store: &str) -> (Kept, Vec<EntityUid>) {
    match escaped(entity) {
        Some(kept) => kept,
        None => {
            let (_, _, parents) = entity.clone().into_inner();
            (Kept::Store(store.into()), parents.into_iter().collect())
        }
    }
}

/// `None` when Cedar cannot write the entity as JSON.
fn escaped(entity: &Entity) -> Option<(Kept, Vec<EntityUid>)> {
    let Value::Object(mut whole) = entity.to_json_value().ok()? else {
        return None;
    };
    let parents = match whole.remove("parents") {
        None => Vec::new(),
        Some(Value::Array(parents)) => parents
            .into_iter()
            .map(|parent| EntityUid::from_json(parent).ok())
            .collect::<Option<_>>()?,
        Some(_) => return None,
    };
    let mut kept = Map::new();
    for part in ["attrs", "tags"] {
        if let Some(value) = whole.remove(part) {
            kept.insert(part.to_owned(), value);
        }
    }
    let json = Value::Object(kept).to_string().into_boxed_str();
    Some((Kept::Escaped(json), parents))
}

/// The entity `uid` with `parents`, built again from what was kept of it.
/// `checked`: whether `schema` is the schema it was checked against when
/// fetched; if not, Cedar reads it against `schema`.
///
/// # Errors
/// What was kept does not read back (not JSON, or a value Cedar refuses),
/// or does not meet `schema`: the caller denies, naming the entity.
pub(super) fn rebuild(
    uid: &EntityUid,
    parents: &[EntityUid],
    kept: &Kept,
    schema: &Schema,
    checked: bool,
) -> Result<Entity, String> {
    let json = match kept {
        Kept::Store(json) => {
            return Entity::from_json_str(json, Some(schema)).map_err(|e| super::describe(&e));
        }
        Kept::Escaped(json) => json,
    };
    let form: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    if !checked {
        return by_cedar(uid, parents, form, Some(schema));
    }
    match walked(uid, parents, &form) {
        Some(built) => built,
        None => by_cedar(uid, parents, form, None),
    }
}

/// `None` when the form holds something only Cedar's parser reads.
fn walked(uid: &EntityUid, parents: &[EntityUid], form: &Value) -> Option<Result<Entity, String>> {
    let mut walk = Walk::default();
    let attrs = walk.fields(form.get("attrs"))?;
    let tags = walk.fields(form.get("tags"))?;
    Some(
        Entity::new_with_tags(uid.clone(), attrs, parents.iter().cloned(), tags)
            .map_err(|e| e.to_string()),
    )
}

/// One entity's walk: remembers the last entity type it parsed, since the
/// references in a set are mostly of one type (an account's users).
#[derive(Default)]
struct Walk {
    last_type: Option<(String, EntityTypeName)>,
}

impl Walk {
    /// A missing part is empty.
    fn fields(&mut self, part: Option<&Value>) -> Option<Vec<(String, RestrictedExpression)>> {
        match part {
            None => Some(Vec::new()),
            Some(Value::Object(fields)) => fields
                .iter()
                .map(|(name, value)| Some((name.clone(), self.expression(value)?)))
                .collect(),
            Some(_) => None,
        }
    }

    fn expression(&mut self, value: &Value) -> Option<RestrictedExpression> {
        Some(match value {
            Value::Bool(b) => RestrictedExpression::new_bool(*b),
            Value::Number(n) => RestrictedExpression::new_long(n.as_i64()?),
            Value::String(s) => RestrictedExpression::new_string(s.clone()),
            Value::Array(items) => RestrictedExpression::new_set(
                items
                    .iter()
                    .map(|item| self.expression(item))
                    .collect::<Option<Vec<_>>>()?,
            ),
            Value::Object(fields) if fields.keys().any(|key| key.starts_with("__")) => {
                self.escape(fields)?
            }
            Value::Object(_) => RestrictedExpression::new_record(self.fields(Some(value))?).ok()?,
            Value::Null => return None,
        })
    }

    /// `{"__entity": {"type", "id"}}` and a one-argument `__extn` of a known
    /// function; anything else is Cedar's to read.
    fn escape(&mut self, fields: &Map<String, Value>) -> Option<RestrictedExpression> {
        let (key, inner) = fields.iter().next().filter(|_| fields.len() == 1)?;
        let inner = inner.as_object().filter(|inner| inner.len() == 2)?;
        match key.as_str() {
            "__entity" => {
                let name = self.type_name(inner.get("type")?.as_str()?)?;
                let id = EntityId::new(inner.get("id")?.as_str()?);
                Some(RestrictedExpression::new_entity_uid(
                    EntityUid::from_type_name_and_id(name, id),
                ))
            }
            "__extn" => {
                let arg = inner.get("arg")?.as_str()?;
                match inner.get("fn")?.as_str()? {
                    "decimal" => Some(RestrictedExpression::new_decimal(arg)),
                    "ip" => Some(RestrictedExpression::new_ip(arg)),
                    "datetime" => Some(RestrictedExpression::new_datetime(arg)),
                    "duration" => Some(RestrictedExpression::new_duration(arg)),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn type_name(&mut self, text: &str) -> Option<EntityTypeName> {
        match &self.last_type {
            Some((last, name)) if last == text => Some(name.clone()),
            _ => {
                let name = EntityTypeName::from_str(text).ok()?;
                self.last_type = Some((text.to_owned(), name.clone()));
                Some(name)
            }
        }
    }
}

/// Cedar's own parser over the whole entity (escaped, so it reads the same
/// with a schema or without; with one, it is checked against it).
fn by_cedar(
    uid: &EntityUid,
    parents: &[EntityUid],
    form: Value,
    schema: Option<&Schema>,
) -> Result<Entity, String> {
    let Value::Object(mut whole) = form else {
        return Err("the kept form is not a JSON object".into());
    };
    let written = |uid: &EntityUid| uid.to_json_value().map_err(|e| e.to_string());
    whole.insert("uid".into(), written(uid)?);
    let parents = parents.iter().map(written).collect::<Result<Vec<_>, _>>()?;
    whole.insert("parents".into(), Value::Array(parents));
    Entity::from_json_value(Value::Object(whole), schema).map_err(|e| super::describe(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// A schema the escaped form's walk never reads.
    fn unread() -> Schema {
        Schema::from_cedarschema_str("").unwrap().0
    }

    fn read_back(entity: &Entity, parents: &[EntityUid]) -> Entity {
        let (kept, kept_parents) = kept_form(entity, "unused: the entity is written escaped");
        assert!(matches!(kept, Kept::Escaped(_)), "{kept:?}");
        assert_eq!(
            kept_parents
                .iter()
                .collect::<std::collections::HashSet<_>>(),
            parents.iter().collect(),
            "the parents as Cedar read them"
        );
        rebuild(&entity.uid(), parents, &kept, &unread(), true).unwrap()
    }

    fn escaped_json(kept: &Kept) -> &str {
        match kept {
            Kept::Escaped(json) => json,
            Kept::Store(_) => panic!("kept as the store's JSON: {kept:?}"),
        }
    }

    fn parents_of(json: &Value) -> Vec<EntityUid> {
        json["parents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|parent| EntityUid::from_json(parent.clone()).unwrap())
            .collect()
    }

    fn shipped(schema: &str, entities: &str) -> (Schema, Vec<Value>) {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(root.join(schema)).unwrap();
        let schema = Schema::from_cedarschema_str(&text).unwrap().0;
        let entities = std::fs::read_to_string(root.join(entities)).unwrap();
        (schema, serde_json::from_str(&entities).unwrap())
    }

    #[test]
    fn every_shipped_entity_reads_back_as_cedar_parsed_it() {
        for (schema, entities) in [
            (
                "schema/brokerage.cedarschema",
                "examples/demo/entities.json",
            ),
            (
                "examples/authzen-todo/schema.cedarschema",
                "examples/authzen-todo/entities.json",
            ),
        ] {
            let (schema, entities) = shipped(schema, entities);
            assert!(entities.len() > 5, "{entities:?}");
            for json in entities {
                let parsed = Entity::from_json_value(json.clone(), Some(&schema)).unwrap();
                let parents = parents_of(&json);
                let (kept, _) = kept_form(&parsed, &json.to_string());
                let form = serde_json::from_str(escaped_json(&kept)).unwrap();
                assert!(
                    walked(&parsed.uid(), &parents, &form).is_some(),
                    "{parsed}: the shipped packs' entities take the walk, not Cedar's parser"
                );
                let rebuilt = read_back(&parsed, &parents);
                assert!(rebuilt.deep_eq(&parsed), "{parsed} read back as {rebuilt}");
            }
        }
    }

    #[test]
    fn a_form_the_walk_does_not_know_is_read_by_cedar() {
        let uid: EntityUid = r#"T::"x""#.parse().unwrap();
        // Two arguments: Cedar's `offset`, which only Cedar's parser reads.
        let kept = r#"{"attrs": {"at": {"__extn": {"fn": "offset", "args": [
            {"__extn": {"fn": "datetime", "arg": "2024-01-01"}},
            {"__extn": {"fn": "duration", "arg": "1h"}}]}}}}"#;
        let form: Value = serde_json::from_str(kept).unwrap();
        assert!(walked(&uid, &[], &form).is_none());
        let read = |kept: &str| rebuild(&uid, &[], &Kept::Escaped(kept.into()), &unread(), true);
        let rebuilt = read(kept).unwrap();
        let expected = Entity::new(
            uid.clone(),
            HashMap::from([(
                "at".to_owned(),
                r#"datetime("2024-01-01").offset(duration("1h"))"#.parse().unwrap(),
            )]),
            Default::default(),
        )
        .unwrap();
        assert!(rebuilt.deep_eq(&expected), "{rebuilt}");
        // What Cedar refuses is refused, never read some other way.
        let refused = r#"{"attrs": {"x": {"__expr": "1 + 1"}}}"#;
        assert!(read(refused).is_err());
        assert!(read("not json").is_err());
        assert!(read(r#"{"attrs": {"n": 1.5}}"#).is_err());
    }

    /// An entity checked against one schema, rebuilt under another: read
    /// by Cedar against the new one, so what no longer meets it is refused
    /// rather than served as it was checked.
    #[test]
    fn under_another_schema_cedar_reads_it_against_that_schema() {
        let schema = |text: &str| Schema::from_cedarschema_str(text).unwrap().0;
        let before = schema("entity Group; entity User in [Group] { name: String };");
        let json = r#"{"uid": {"type": "User", "id": "a"}, "attrs": {"name": "A"},
            "parents": [{"type": "Group", "id": "g"}]}"#;
        let entity = Entity::from_json_str(json, Some(&before)).unwrap();
        let (kept, parents) = kept_form(&entity, json);
        let rebuild =
            |schema: &Schema, checked| rebuild(&entity.uid(), &parents, &kept, schema, checked);
        // Under the schema it was checked against: the walk.
        assert!(rebuild(&before, true).unwrap().deep_eq(&entity));
        // A new schema it still meets: Cedar's reading, the same entity.
        let widened = schema("entity Group; entity User in [Group] { name: String, age?: Long };");
        assert!(rebuild(&widened, false).unwrap().deep_eq(&entity));
        // One it no longer meets: refused, naming what is missing.
        let stricter =
            schema("entity Group; entity User in [Group] { name: String, frozen: Bool };");
        let refused = rebuild(&stricter, false).unwrap_err();
        assert!(refused.contains("frozen"), "{refused}");
    }

    /// Cedar cannot write a record holding a key its JSON reserves: the
    /// store's own JSON is kept, and read back by Cedar.
    #[test]
    fn an_entity_cedar_cannot_write_is_kept_as_the_store_sent_it() {
        let schema = Schema::from_cedarschema_str(
            r#"entity Group; entity User in [Group] { r: { "__extn": Long } };"#,
        )
        .unwrap()
        .0;
        let json = r#"{"uid": {"type": "User", "id": "a"}, "attrs": {"r": {"__extn": 1}},
            "parents": [{"type": "Group", "id": "g"}]}"#;
        let entity = Entity::from_json_str(json, Some(&schema)).unwrap();
        assert!(entity.to_json_value().is_err(), "Cedar writes it after all");
        let (kept, parents) = kept_form(&entity, json);
        assert!(matches!(kept, Kept::Store(_)), "{kept:?}");
        assert_eq!(parents, vec![r#"Group::"g""#.parse().unwrap()]);
        let rebuilt = rebuild(&entity.uid(), &parents, &kept, &schema, true).unwrap();
        assert!(rebuilt.deep_eq(&entity), "{rebuilt}");
    }

    /// The parents kept are Cedar's reading of the store's answer, whatever
    /// else a parent's JSON holds: never a reading of our own that might
    /// drop one Cedar's entity has.
    #[test]
    fn the_parents_kept_are_the_ones_cedar_read() {
        let schema = Schema::from_cedarschema_str("entity Group; entity User in [Group];")
            .unwrap()
            .0;
        let answer = br#"{"entities": [{"uid": {"type": "User", "id": "a"}, "attrs": {},
            "parents": [{"type": "Group", "id": "g", "__entity": "junk"},
                        {"__entity": {"type": "Group", "id": "h"}}]}]}"#;
        let fetched = super::super::http::parse(answer, &schema).unwrap();
        let mut parents: Vec<String> = fetched[0].parents.iter().map(ToString::to_string).collect();
        parents.sort();
        assert_eq!(parents, [r#"Group::"g""#, r#"Group::"h""#]);
    }

    /// A value of every kind Cedar's JSON writes, nested.
    fn value() -> impl Strategy<Value = RestrictedExpression> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(RestrictedExpression::new_bool),
            any::<i64>().prop_map(RestrictedExpression::new_long),
            "[a-z_ \"\\\\]{0,6}".prop_map(RestrictedExpression::new_string),
            "[a-z]{1,4}".prop_map(|id| {
                RestrictedExpression::new_entity_uid(EntityUid::from_type_name_and_id(
                    "NS::User".parse().unwrap(),
                    EntityId::new(id),
                ))
            }),
            (0u8..100, 0u16..10000)
                .prop_map(|(i, f)| RestrictedExpression::new_decimal(format!("{i}.{f}"))),
            (0u8..=255, 0u8..=32)
                .prop_map(|(a, bits)| RestrictedExpression::new_ip(format!("10.0.0.{a}/{bits}"))),
            (0u32..100_000).prop_map(|s| RestrictedExpression::new_duration(format!("{s}s"))),
            (0u32..9999).prop_map(|d| {
                RestrictedExpression::new_datetime(format!("2024-01-01T00:00:00.{:03}Z", d % 1000))
            }),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4)
                    .prop_map(RestrictedExpression::new_set),
                proptest::collection::btree_map("[a-z_]{1,5}", inner, 0..4)
                    .prop_map(|fields| { RestrictedExpression::new_record(fields).unwrap() }),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_entity_reads_back_from_its_kept_form(
            attrs in proptest::collection::hash_map("[a-z]{1,6}", value(), 0..5),
            tags in proptest::collection::hash_map("[a-z]{1,6}", value(), 0..3),
            parents in proptest::collection::vec("[a-z]{1,4}", 0..3),
        ) {
            let uid: EntityUid = r#"NS::Account::"a""#.parse().unwrap();
            let parents: Vec<EntityUid> = parents
                .into_iter()
                .map(|id| EntityUid::from_type_name_and_id("NS::Group".parse().unwrap(), EntityId::new(id)))
                .collect();
            let entity =
                Entity::new_with_tags(uid, attrs, parents.iter().cloned(), tags).unwrap();
            let rebuilt = read_back(&entity, &parents);
            prop_assert!(rebuilt.deep_eq(&entity), "{} read back as {}", entity, rebuilt);
        }
    }
}
