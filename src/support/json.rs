//! JSON written straight into a buffer, for the two texts every decision
//! writes (its answer and its log line): byte for byte what `serde_json`
//! writes for the same values, at a fraction of the cost. `serde_json`
//! escapes every string, keys included, a byte at a time; here keys are
//! constants written whole, and a string is checked eight bytes at a time
//! and copied whole when it needs no escape, as almost every one does.
//! The tests hold the output to `serde_json`'s for any text.

use std::fmt::{self, Write as _};

/// `text` as a JSON string (quotes included), escaped as `serde_json`
/// escapes it: `"`, `\` and the control characters, nothing else.
pub fn string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    escaped(out, text);
    out.push(b'"');
}

/// `value`'s `Display` escaped as the inside of a JSON string (no quotes).
pub fn display_inside(out: &mut Vec<u8>, value: &(impl fmt::Display + ?Sized)) {
    // Writing into a `Vec` cannot fail; a `Display` that fails leaves what
    // it wrote, as `serde_json` would have failed the whole text.
    let _ = write!(Escaping(out), "{value}");
}

/// `value` in decimal, as a JSON number.
pub fn number(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// `true` or `false`.
pub fn boolean(out: &mut Vec<u8>, value: bool) {
    out.extend_from_slice(if value { b"true" } else { b"false" });
}

/// `[a,b,…]` of `items` as JSON strings.
pub fn strings<'a>(out: &mut Vec<u8>, items: impl IntoIterator<Item = &'a str>) {
    out.push(b'[');
    for (index, item) in items.into_iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        string(out, item);
    }
    out.push(b']');
}

/// `value` as `serde_json` writes it (object keys in its map's order).
pub fn value(out: &mut Vec<u8>, value: &serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(value) => boolean(out, *value),
        // Numbers as `serde_json` writes them (integers, and floats its own way).
        Value::Number(number) => {
            let _ = serde_json::to_writer(&mut *out, number);
        }
        Value::String(text) => string(out, text),
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                self::value(out, item);
            }
            out.push(b']');
        }
        Value::Object(fields) => {
            out.push(b'{');
            for (index, (name, item)) in fields.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                string(out, name);
                out.push(b':');
                self::value(out, item);
            }
            out.push(b'}');
        }
    }
}

/// Writes what it is given as the inside of a JSON string.
struct Escaping<'a>(&'a mut Vec<u8>);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        escaped(self.0, text);
        Ok(())
    }
}

/// `text` as the inside of a JSON string (no quotes), escaped as
/// [`string`]: runs that need nothing are copied whole.
pub fn escaped(out: &mut Vec<u8>, text: &str) {
    let mut rest = text.as_bytes();
    while let Some(at) = first_to_escape(rest) {
        let (plain, from) = rest.split_at(at);
        out.extend_from_slice(plain);
        let Some((&byte, after)) = from.split_first() else {
            return;
        };
        escape(out, byte);
        rest = after;
    }
    out.extend_from_slice(rest);
}

/// Where the first byte JSON escapes is: a quote, a backslash or a
/// control character (below 0x20). Eight bytes at a time: a lane is
/// flagged when it is below 0x20 or equal to either (the usual
/// "has a zero byte" test on the word and its two XORs). The same bytes
/// end a plain run inside a JSON string being read.
#[inline]
pub(crate) fn first_to_escape(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in chunks.by_ref() {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        // A lane's high bit is set where it is below 0x20 or zero after a
        // XOR; a borrow can also flag a lane, but only one above a lane
        // truly flagged, so the lowest flag (the first byte, the word
        // read little-endian) is always a true one.
        let flagged = (word.wrapping_sub(ONES * 0x20)
            | quote.wrapping_sub(ONES)
            | backslash.wrapping_sub(ONES))
            & !word
            & HIGHS;
        if flagged != 0 {
            return Some(offset + (flagged.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| needs_escape(b))
        .map(|at| offset + at)
}

fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// One byte escaped as `serde_json` escapes it.
fn escape(out: &mut Vec<u8>, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match byte {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x0c => b'f',
        b'\n' => b'n',
        b'\r' => b'r',
        b'\t' => b't',
        _ => {
            let (high, low) = (usize::from(byte >> 4), usize::from(byte & 0xf));
            out.extend_from_slice(b"\\u00");
            out.push(HEX.get(high).copied().unwrap_or(b'0'));
            out.push(HEX.get(low).copied().unwrap_or(b'0'));
            return;
        }
    };
    out.extend_from_slice(&[b'\\', short]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ours(text: &str) -> String {
        let mut out = Vec::new();
        string(&mut out, text);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_byte_that_needs_escaping_is_escaped_as_serde_json_does() {
        for byte in 0..=0x7fu8 {
            let text = String::from(char::from(byte));
            assert_eq!(
                ours(&text),
                serde_json::to_string(&text).unwrap(),
                "{byte:#x}"
            );
            // At every position of a word, and past the last whole word.
            for at in 0..17 {
                let mut padded = "a".repeat(17);
                padded.replace_range(at..=at, &text);
                assert_eq!(ours(&padded), serde_json::to_string(&padded).unwrap());
            }
        }
    }

    fn any_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(any::<String>(), inner, 0..4)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_value_is_written_as_serde_json_writes_it(value in any_value()) {
            let mut out = Vec::new();
            self::value(&mut out, &value);
            prop_assert_eq!(out, serde_json::to_vec(&value).unwrap());
        }

        #[test]
        fn any_text_is_written_as_serde_json_writes_it(text in any::<String>()) {
            prop_assert_eq!(ours(&text), serde_json::to_string(&text).unwrap());
        }

        #[test]
        fn text_near_the_escapes_is_written_as_serde_json_writes_it(
            text in "[\\x00-\\x21\\x22\\x5b-\\x5d\\x7f-\\u{a0}é€😀]{0,40}",
        ) {
            prop_assert_eq!(ours(&text), serde_json::to_string(&text).unwrap());
            let mut shown = vec![b'"'];
            display_inside(&mut shown, &text);
            shown.push(b'"');
            prop_assert_eq!(String::from_utf8(shown).unwrap(), serde_json::to_string(&text).unwrap());
        }

        #[test]
        fn the_first_byte_to_escape_is_found_in_any_bytes(
            bytes in proptest::collection::vec(
                prop_oneof![any::<u8>(), Just(b'"'), Just(b'\\'), 0x1fu8..=0x21, 0x80u8..=0xa1],
                0..40,
            ),
        ) {
            // Bytes at or above 0x80 beside a flagged one are where a
            // borrow could flag a lane falsely.
            prop_assert_eq!(first_to_escape(&bytes), bytes.iter().position(|&b| needs_escape(b)));
        }

        #[test]
        fn numbers_and_lists_are_written_as_serde_json_writes_them(
            value in any::<u64>(),
            items in proptest::collection::vec(any::<String>(), 0..4),
        ) {
            let mut out = Vec::new();
            number(&mut out, value);
            prop_assert_eq!(out, serde_json::to_vec(&value).unwrap());
            let mut out = Vec::new();
            strings(&mut out, items.iter().map(String::as_str));
            prop_assert_eq!(out, serde_json::to_vec(&items).unwrap());
        }
    }
}
