//! A common body read in one pass: the depth bound, the one-reading rule
//! (no key twice in an object) and the typed decode at once, where the
//! usual path reads the body three times (`json_depth_exceeds`,
//! `strict::duplicate_key`, serde). It reads only what it is sure of: a
//! body well formed, within the depth, with no key twice and no field it
//! does not know. Anything else is `None`, and the usual path reads the
//! body again and names the fault, so an error reads the same either way.
//! The tests hold the two to the same result on generated bodies.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::strict::Scan;

/// Reads one JSON document from the front; every method is `None` where
/// the body is anything but what it expects.
pub(super) struct Reader<'b> {
    /// the body, UTF-8 throughout (checked once, so every string between
    /// two quotes is too)
    text: &'b str,
    scan: Scan<'b>,
    /// containers open at the point reached
    depth: usize,
    /// most containers open at once (`limits.max_json_depth`)
    max_depth: usize,
}

impl<'b> Reader<'b> {
    /// A reader at the start of `body`, nesting at most `max_depth` deep;
    /// `None` for a body that is not UTF-8 (serde_json refuses it in a
    /// string, and outside one it is no JSON).
    pub fn new(body: &'b [u8], max_depth: usize) -> Option<Self> {
        let text = std::str::from_utf8(body).ok()?;
        Some(Self {
            text,
            scan: Scan { body, at: 0 },
            depth: 0,
            max_depth,
        })
    }

    /// Nothing but white space is left.
    pub fn end(mut self) -> Option<()> {
        self.scan.skip_space();
        (self.scan.at == self.scan.body.len()).then_some(())
    }

    /// An object, each field handed to `field` with its name (unescaped);
    /// `field` reads the value, or is `None` to give up.
    pub fn object(&mut self, mut field: impl FnMut(&str, &mut Self) -> Option<()>) -> Option<()> {
        self.scan.skip_space();
        self.expect(b'{')?;
        self.enter()?;
        self.scan.skip_space();
        if self.scan.peek()? == b'}' {
            self.scan.at += 1;
            self.depth -= 1;
            return Some(());
        }
        loop {
            self.scan.skip_space();
            let name = self.string()?;
            self.scan.skip_space();
            self.expect(b':')?;
            field(&name, self)?;
            self.scan.skip_space();
            match self.scan.next()? {
                b',' => {}
                b'}' => break,
                _ => return None,
            }
        }
        self.depth -= 1;
        Some(())
    }

    /// A string: borrowed from the body when it holds no escape.
    pub fn string(&mut self) -> Option<Cow<'b, str>> {
        self.scan.skip_space();
        self.expect(b'"')?;
        let start = self.scan.at;
        let mut escaped = false;
        loop {
            let rest = self.scan.body.get(self.scan.at..)?;
            // The first quote, backslash or control character (which
            // serde_json refuses raw in a string), eight bytes at a time:
            // the rest of the body, not just the string, is in reach.
            let stop = crate::support::json::first_to_escape(rest)?;
            self.scan.at += stop;
            match self.scan.next()? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.scan.next()?;
                }
                _ => return None,
            }
        }
        if escaped {
            // The escapes as serde_json reads them (a lone surrogate refused).
            let quoted = self.scan.body.get(start - 1..self.scan.at)?;
            return serde_json::from_slice::<String>(quoted)
                .ok()
                .map(Cow::Owned);
        }
        self.text.get(start..self.scan.at - 1).map(Cow::Borrowed)
    }

    /// Any value, as `serde_json::Value` holds it.
    pub fn value(&mut self) -> Option<Value> {
        self.scan.skip_space();
        match self.scan.peek()? {
            b'{' => {
                let mut fields = Map::new();
                self.object(|name, reader| {
                    let value = reader.value()?;
                    // A key twice: the usual path refuses it by name.
                    fields
                        .insert(name.to_owned(), value)
                        .is_none()
                        .then_some(())
                })?;
                Some(Value::Object(fields))
            }
            b'[' => {
                self.scan.at += 1;
                self.enter()?;
                let mut items = Vec::new();
                self.scan.skip_space();
                if self.scan.peek()? == b']' {
                    self.scan.at += 1;
                } else {
                    loop {
                        items.push(self.value()?);
                        self.scan.skip_space();
                        match self.scan.next()? {
                            b',' => {}
                            b']' => break,
                            _ => return None,
                        }
                    }
                }
                self.depth -= 1;
                Some(Value::Array(items))
            }
            b'"' => self.string().map(|text| Value::String(text.into_owned())),
            b't' => self.literal(b"true", Value::Bool(true)),
            b'f' => self.literal(b"false", Value::Bool(false)),
            b'n' => self.literal(b"null", Value::Null),
            _ => self.number(),
        }
    }

    /// A number: a small non-negative integer read here, any other as
    /// serde_json reads it.
    fn number(&mut self) -> Option<Value> {
        let start = self.scan.at;
        while self
            .scan
            .peek()
            .is_some_and(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
        {
            self.scan.at += 1;
        }
        let token = self.scan.body.get(start..self.scan.at)?;
        let small = (1..=18).contains(&token.len())
            && token.iter().all(u8::is_ascii_digit)
            && (token.len() == 1 || token.first() != Some(&b'0'));
        if small {
            let value = token
                .iter()
                .fold(0u64, |value, digit| value * 10 + u64::from(digit - b'0'));
            return Some(Value::from(value));
        }
        match serde_json::from_slice::<Value>(token).ok()? {
            number @ Value::Number(_) => Some(number),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8], value: Value) -> Option<Value> {
        self.scan.literal(word).map(|()| value)
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= self.max_depth).then_some(())
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.scan.next()? == byte).then_some(())
    }
}
