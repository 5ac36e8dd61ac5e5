//! Which parts of `context` a policy reads: the one analysis behind the
//! request shape (attributes no policy of an action reads are left out of
//! Cedar's request) and the verdicts (policies that read none are answered
//! once per principal, resource and entities, then remembered).
//!
//! Read from Cedar's JSON form of the policy, where the only way to reach
//! the context is the variable `{"Var": "context"}`: under an attribute
//! access (`context.x`, `context["x"]`) or a `has` test (`context has x`,
//! `context has x.y`) it reads that attribute; anywhere else (`context ==
//! {…}`, `context` passed to a function) it reads the whole context.

use std::collections::BTreeSet;

use cedar_policy::Policy;
use serde_json::Value;

/// What one policy, or several merged, read of the context.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ContextReads {
    /// the context is read as a whole: no attribute may be left out
    whole: bool,
    /// the attributes read one by one
    attrs: BTreeSet<String>,
}

impl ContextReads {
    /// What `policy` reads. A policy Cedar cannot print as JSON is taken to
    /// read everything (errs towards keeping).
    pub fn of(policy: &Policy) -> Self {
        policy.to_json().map_or_else(
            |_| Self {
                whole: true,
                attrs: BTreeSet::new(),
            },
            |json| Self::of_json(&json),
        )
    }

    /// What an expression or policy in Cedar's JSON form reads.
    pub fn of_json(json: &Value) -> Self {
        let mut reads = Self::default();
        reads.walk(json);
        reads
    }

    /// Whether anything of the context is read.
    pub fn any(&self) -> bool {
        self.whole || !self.attrs.is_empty()
    }

    /// Whether the attribute `name` may be read.
    pub fn reads(&self, name: &str) -> bool {
        self.whole || self.attrs.contains(name)
    }

    /// Adds what `other` reads.
    pub fn merge(&mut self, other: Self) {
        self.whole |= other.whole;
        self.attrs.extend(other.attrs);
    }

    fn walk(&mut self, json: &Value) {
        match json {
            Value::Object(map) => {
                if map.get("Var").is_some_and(|var| var == "context") {
                    self.whole = true;
                    return;
                }
                for (key, value) in map {
                    match (key.as_str(), attribute_of_context(value)) {
                        ("." | "has", Some(name)) => {
                            self.attrs.insert(name.to_owned());
                        }
                        _ => self.walk(value),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| self.walk(item)),
            _ => {}
        }
    }
}

/// For the operand of `.` or `has`: the context attribute it names, when
/// its left side is the context itself (`has` names a path: its first step).
fn attribute_of_context(operand: &Value) -> Option<&str> {
    let left = operand.get("left")?;
    if left.get("Var")? != "context" {
        return None;
    }
    match operand.get("attr")? {
        Value::String(name) => Some(name),
        Value::Array(path) => path.first()?.as_str(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(text: &str) -> ContextReads {
        ContextReads::of(&text.parse::<Policy>().unwrap())
    }

    #[test]
    fn attribute_reads_are_named_and_whole_reads_noticed() {
        let some = reads(
            r#"permit (principal, action, resource) when {
                context.side == "buy" && context has amount && context["x"] == 1 && context has p.q
            } unless { principal.contexts == 1 };"#,
        );
        assert!(!some.whole);
        assert_eq!(
            some.attrs.iter().map(String::as_str).collect::<Vec<_>>(),
            ["amount", "p", "side", "x"]
        );
        assert!(some.reads("side") && !some.reads("contexts"));

        let whole =
            reads(r#"permit (principal, action, resource) when { context == {"side": "buy"} };"#);
        assert!(whole.whole && whole.reads("anything"));

        let none =
            reads(r#"permit (principal, action, resource) when { resource.context == "x" };"#);
        assert!(
            !none.any(),
            "an attribute called `context` is not the context"
        );
    }

    #[test]
    fn reads_merge() {
        let mut all = reads(r#"permit (principal, action, resource) when { context.a };"#);
        all.merge(reads(
            r#"forbid (principal, action, resource) when { context.b };"#,
        ));
        assert!(all.reads("a") && all.reads("b") && !all.reads("c"));
    }
}
