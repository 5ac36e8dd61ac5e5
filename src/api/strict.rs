//! One reading of a JSON body only: a key sent twice in any object, where
//! one parser would take the first value and another the last, is refused
//! before anything reads the body. Walks the document once, after the
//! depth check has bounded its nesting, and builds the path of the key at
//! fault only when there is one.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The dotted path of the first key that appears twice in one object of
/// `body` (`context.destination`, `evaluations[2].context.amount`), or
/// `None`. A body that is not JSON is `None`: the endpoint's own parse
/// names that fault.
pub fn duplicate_key(body: &[u8]) -> Option<String> {
    let mut found = None;
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let _ = Node {
        at: &Step::Root,
        found: &mut found,
    }
    .deserialize(&mut deserializer);
    found
}

/// Where a value sits: a chain of steps up to the root, turned into text
/// only for the one path reported.
enum Step<'s> {
    Root,
    Key(&'s Step<'s>, &'s str),
    Index(&'s Step<'s>, usize),
}

impl fmt::Display for Step<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Root => Ok(()),
            Step::Key(Step::Root, key) => write!(f, "{key}"),
            Step::Key(parent, key) => write!(f, "{parent}.{key}"),
            Step::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

struct Node<'a, 's> {
    at: &'s Step<'s>,
    found: &'a mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// An object key, borrowed from the body unless it holds an escape: no
/// allocation per key on the usual request.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }

            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }

            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Objects this small are checked by a scan; larger ones by a set.
const SCAN_KEYS: usize = 16;

impl<'de> Visitor<'de> for Node<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Node { at, found } = self;
        let mut index = 0;
        loop {
            let step = Step::Index(at, index);
            let node = Node {
                at: &step,
                found: &mut *found,
            };
            if seq.next_element_seed(node)?.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Node { at, found } = self;
        let mut keys: Vec<Cow<'de, str>> = Vec::new();
        let mut many: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let repeated = if keys.len() < SCAN_KEYS {
                keys.contains(&key)
            } else {
                if many.is_empty() {
                    many.extend(keys.iter().cloned());
                }
                many.contains(&key)
            };
            if repeated {
                *found = Some(Step::Key(at, &key).to_string());
                return Err(de::Error::custom("duplicate key"));
            }
            let step = Step::Key(at, &key);
            map.next_value_seed(Node {
                at: &step,
                found: &mut *found,
            })?;
            if keys.len() < SCAN_KEYS {
                keys.push(key);
            } else {
                many.insert(key);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_sent_twice_is_found_at_any_depth_and_named() {
        assert_eq!(
            duplicate_key(br#"{"a": 1, "b": {"c": [1, {"d": 2}]}}"#),
            None
        );
        assert_eq!(duplicate_key(br#"{"a": 1, "a": 2}"#).as_deref(), Some("a"));
        assert_eq!(
            duplicate_key(br#"{"context": {"destination": "x", "destination": "y"}}"#).as_deref(),
            Some("context.destination")
        );
        assert_eq!(
            duplicate_key(br#"{"evaluations": [{}, {"resource": {"id": "a", "id": "b"}}]}"#)
                .as_deref(),
            Some("evaluations[1].resource.id")
        );
        // the same key in sibling objects is no duplicate
        assert_eq!(duplicate_key(br#"[{"a": 1}, {"a": 2}]"#), None);
        // escapes are read: "\u0061" is "a"
        assert_eq!(
            duplicate_key(br#"{"a": 1, "\u0061": 2}"#).as_deref(),
            Some("a")
        );
    }

    #[test]
    fn large_objects_are_checked_by_a_set() {
        let mut body = String::from("{");
        for i in 0..5000 {
            body.push_str(&format!("\"k{i}\": {i},"));
        }
        body.push_str("\"k17\": 0}");
        assert_eq!(duplicate_key(body.as_bytes()).as_deref(), Some("k17"));
    }
}
