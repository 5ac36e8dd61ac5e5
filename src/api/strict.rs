//! One reading of a JSON body only: a key sent twice in any object, where
//! one parser would take the first value and another the last, is refused
//! before anything reads the body. Scans the document's bytes once, after
//! the depth check has bounded its nesting, keeping the keys of the objects
//! open at the point reached (borrowed from the body unless they hold an
//! escape), and builds the path of the key at fault only when there is one.
//!
//! A scan of our own, not a serde walk: it is on every decision's path, and
//! serde's visitor machinery cost ~7,500 instructions for a 170-byte
//! AuthZEN request (BENCHMARKS.md). The serde walk stays, in the tests, as
//! the model the scan is checked against.

use std::borrow::Cow;
use std::collections::HashSet;

/// The dotted path of the first key that appears twice in one object of
/// `body` (`context.destination`, `evaluations[2].context.amount`), or
/// `None`. A body that is not JSON is `None` as soon as the scan reaches
/// the fault: the endpoint's own parse names it.
pub fn duplicate_key(body: &[u8]) -> Option<String> {
    let mut scan = Scan { body, at: 0 };
    let mut open: Vec<Open<'_>> = Vec::new();
    let mut keys: Vec<Cow<'_, [u8]>> = Vec::new();
    loop {
        // A value begins here.
        scan.skip_space();
        match scan.peek()? {
            b'{' | b'[' => {
                let object = scan.next()? == b'{';
                scan.skip_space();
                match (object, scan.peek()?) {
                    (true, b'}') | (false, b']') => scan.at += 1,
                    (true, _) => {
                        open.push(Open::Object {
                            first: keys.len(),
                            many: None,
                        });
                        if let Err(path) = scan.key(&mut open, &mut keys)? {
                            return Some(path);
                        }
                        continue;
                    }
                    (false, _) => {
                        open.push(Open::Array { index: 0 });
                        continue;
                    }
                }
            }
            b'"' => {
                scan.string()?;
            }
            b't' => scan.literal(b"true")?,
            b'f' => scan.literal(b"false")?,
            b'n' => scan.literal(b"null")?,
            _ => scan.number()?,
        }
        // A value ended: the next one of the innermost open container, or
        // its end (and so on outwards).
        loop {
            let innermost = open.last_mut()?;
            scan.skip_space();
            match (innermost, scan.next()?) {
                (Open::Array { index }, b',') => {
                    *index += 1;
                    break;
                }
                (Open::Object { .. }, b',') => {
                    if let Err(path) = scan.key(&mut open, &mut keys)? {
                        return Some(path);
                    }
                    break;
                }
                (Open::Array { .. }, b']') => {
                    open.pop();
                }
                (Open::Object { first, .. }, b'}') => {
                    keys.truncate(*first);
                    open.pop();
                }
                _ => return None,
            }
        }
    }
}

/// Objects this small are checked by a scan of their keys; larger ones by
/// a set, so a body of many keys costs linear time.
const SCAN_KEYS: usize = 16;

/// A container the scan is inside.
enum Open<'b> {
    /// its keys so far are `keys[first..]`, the last the current one; the
    /// same in a set once there are more than [`SCAN_KEYS`]
    Object {
        first: usize,
        many: Option<HashSet<Cow<'b, [u8]>>>,
    },
    /// the index of the current item
    Array { index: usize },
}

/// A place in a JSON body, read a byte at a time (the one-pass reader,
/// `quick.rs`, moves through a body with it too).
pub(super) struct Scan<'b> {
    pub body: &'b [u8],
    pub at: usize,
}

impl<'b> Scan<'b> {
    pub fn peek(&self) -> Option<u8> {
        self.body.get(self.at).copied()
    }

    pub fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    pub fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// An object's next key and its `:`: `Err` with the path when the
    /// object already has it; `None` when the body is not JSON here.
    fn key(
        &mut self,
        open: &mut [Open<'b>],
        keys: &mut Vec<Cow<'b, [u8]>>,
    ) -> Option<Result<(), String>> {
        self.skip_space();
        let key = self.string()?;
        let Some(Open::Object { first, many }) = open.last_mut() else {
            return None;
        };
        let siblings = keys.get(*first..)?;
        let repeated = match many {
            Some(set) => !set.insert(key.clone()),
            None if siblings.len() < SCAN_KEYS => siblings.contains(&key),
            None => {
                let mut set: HashSet<_> = siblings.iter().cloned().collect();
                let repeated = !set.insert(key.clone());
                *many = Some(set);
                repeated
            }
        };
        if repeated {
            return Some(Err(path(open, keys, &key)));
        }
        keys.push(key);
        self.skip_space();
        (self.next()? == b':').then_some(Ok(()))
    }

    /// A string, the opening quote next: its content, unescaped when it
    /// holds an escape (serde_json's reading, so `"\u0061"` is `a`).
    ///
    /// Lenient on purpose: a typed decode skips the fields it does not know
    /// without checking their text (a lone surrogate, bytes that are not
    /// UTF-8, a control character), so a string the scan stopped at would
    /// let a duplicate after it through. Only an unterminated string ends
    /// the scan; an escape serde_json does not read is compared as written.
    fn string(&mut self) -> Option<Cow<'b, [u8]>> {
        if self.next()? != b'"' {
            return None;
        }
        let start = self.at;
        let mut escaped = false;
        loop {
            match self.next()? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.next()?;
                }
                _ => {}
            }
        }
        let content = self.body.get(start..self.at - 1)?;
        if escaped {
            let quoted = self.body.get(start - 1..self.at)?;
            if let Ok(text) = serde_json::from_slice::<String>(quoted) {
                return Some(Cow::Owned(text.into_bytes()));
            }
        }
        Some(Cow::Borrowed(content))
    }

    pub fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at.checked_add(word.len())?;
        (self.body.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// `-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.some_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            self.some_digits()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.at;
        self.digits();
        (self.at > start).then_some(())
    }
}

/// `context.destination`, `evaluations[1].resource.id`: where `key` sits.
fn path(open: &[Open<'_>], keys: &[Cow<'_, [u8]>], key: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut path = String::new();
    // A key is joined by a dot unless it is the first step (a key may be
    // empty, so the text so far cannot tell).
    let mut first_step = true;
    for (depth, container) in open.iter().enumerate() {
        match container {
            Open::Array { index } => {
                let _ = write!(path, "[{index}]");
            }
            Open::Object { .. } if depth + 1 == open.len() => break,
            // An outer object's current key: the last of its own, just
            // before the next object's first.
            Open::Object { first, .. } => {
                let next_first = open.iter().skip(depth + 1).find_map(|inner| match inner {
                    Open::Object { first, .. } => Some(*first),
                    Open::Array { .. } => None,
                });
                let current = next_first
                    .unwrap_or(keys.len())
                    .checked_sub(1)
                    .filter(|c| c >= first)
                    .and_then(|c| keys.get(c));
                let name = current.map_or(Cow::Borrowed(""), |key| String::from_utf8_lossy(key));
                if !first_step {
                    path.push('.');
                }
                path.push_str(&name);
            }
        }
        first_step = false;
    }
    if !first_step {
        path.push('.');
    }
    path.push_str(&String::from_utf8_lossy(key));
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The serde walk the scan replaced: the reading it must agree with.
    mod model {
        use std::borrow::Cow;
        use std::collections::HashSet;
        use std::fmt;

        use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

        /// The dotted path of the first key that appears twice in one object of
        /// `body` (`context.destination`, `evaluations[2].context.amount`), or
        /// `None`. A body that is not JSON is `None`: the endpoint's own parse
        /// names that fault.
        pub(super) fn duplicate_key(body: &[u8]) -> Option<String> {
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
    }

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
        // Text a typed decode skips unchecked in a field it does not know
        // (a lone surrogate, bytes that are not UTF-8, a control character)
        // never ends the check before a duplicate after it.
        for skipped in [&br#""\ud800""#[..], b"\"\xff\"", b"\"\x01\""] {
            let mut body = br#"{"x": "#.to_vec();
            body.extend_from_slice(skipped);
            body.extend_from_slice(br#", "context": {"amount": 1, "amount": 999999}}"#);
            assert_eq!(
                duplicate_key(&body).as_deref(),
                Some("context.amount"),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
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

    /// Space as a sender might put it.
    fn space() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just(""), Just(" "), Just("\n  "), Just("\t\r\n")]
    }

    /// Keys that collide often, spelt plainly and escaped.
    fn key() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            Just(r#""a""#),
            Just(r#""\u0061""#),
            Just(r#""b""#),
            Just(r#""é""#),
            Just(r#""\u00e9""#),
            Just(r#""a\"b""#),
            Just(r#""""#),
        ]
    }

    /// A JSON document as text, written with varied space and escapes.
    fn document() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            (-1000i32..1000, 0u8..9).prop_map(|(n, e)| format!("{n}.5e{e}")),
            Just("-0".to_owned()),
            Just(r#""plain""#.to_owned()),
            Just(r#""esc\n\u0041\"\\""#.to_owned()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            Just("null".to_owned()),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                (
                    proptest::collection::vec((space(), inner.clone()), 0..5),
                    space()
                )
                    .prop_map(|(items, end)| {
                        let items: Vec<String> = items
                            .into_iter()
                            .map(|(sp, v)| format!("{sp}{v}"))
                            .collect();
                        format!("[{}{end}]", items.join(","))
                    }),
                (
                    proptest::collection::vec((space(), key(), space(), inner), 0..5),
                    space()
                )
                    .prop_map(|(fields, end)| {
                        let fields: Vec<String> = fields
                            .into_iter()
                            .map(|(sp, k, sp2, v)| format!("{sp}{k}{sp2}:{sp2}{v}"))
                            .collect();
                        format!("{{{}{end}}}", fields.join(","))
                    }),
            ]
        })
    }

    /// The generated documents judge both ways: many hold a duplicate
    /// (nested ones too) and many hold none, so the agreement below is
    /// never an agreement on `None` alone.
    #[test]
    fn the_generated_documents_hold_duplicates_and_clean_ones() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (mut with, mut nested, mut without) = (0, 0, 0);
        for _ in 0..1000 {
            let doc = document().new_tree(&mut runner).unwrap().current();
            match model::duplicate_key(doc.as_bytes()) {
                Some(path) if path.contains('.') || path.contains('[') => nested += 1,
                Some(_) => with += 1,
                None => without += 1,
            }
            assert_eq!(
                duplicate_key(doc.as_bytes()),
                model::duplicate_key(doc.as_bytes()),
                "{doc}"
            );
        }
        assert!(
            with >= 100 && nested >= 50 && without >= 100,
            "{with} top-level, {nested} nested, {without} clean"
        );
    }

    proptest! {
        #[test]
        fn the_scan_reads_every_document_as_the_serde_walk_does(doc in document()) {
            prop_assert_eq!(duplicate_key(doc.as_bytes()), model::duplicate_key(doc.as_bytes()), "{}", doc);
        }

        /// On bytes that may not be JSON (a document cut or changed at one
        /// place, or noise): never a panic; a duplicate the serde walk
        /// finds, the scan finds; and one only the scan finds is in a body
        /// serde_json refuses anyway.
        #[test]
        fn on_any_bytes_the_scan_never_refuses_what_serde_accepts(
            doc in document(),
            cut in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            noise in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut changed = doc.clone().into_bytes();
            if !changed.is_empty() {
                let at = at.index(changed.len());
                changed[at] = byte;
            }
            let cut = doc.as_bytes()[..cut.index(doc.len() + 1)].to_vec();
            for body in [changed, cut, noise] {
                let (scan, model) = (duplicate_key(&body), model::duplicate_key(&body));
                if model.is_some() {
                    prop_assert_eq!(&scan, &model);
                }
                if scan.is_some() && model.is_none() {
                    prop_assert!(serde_json::from_slice::<serde_json::Value>(&body).is_err());
                }
            }
        }
    }
}
