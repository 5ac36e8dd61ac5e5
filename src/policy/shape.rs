//! The shape of each action's request, read from the schema once per
//! snapshot: the principal and resource types the action applies to, and
//! what each context attribute must be. The engine converts a caller's
//! context by it without Cedar's schema-directed JSON parser (the costliest
//! step of a decision), and leaves out attributes no policy of the action
//! reads. Whatever a shape cannot vouch for takes the slow path, where Cedar
//! itself checks the request and explains what is wrong.

use foldhash::HashMap;
use std::str::FromStr;

use cedar_policy::{EntityTypeName, EntityUid, PolicySet, Schema};
use serde_json::Value;

use super::reads::ContextReads;

/// What one context attribute holds.
#[derive(Debug, Clone)]
pub enum AttrKind {
    /// a string
    String,
    /// a 64-bit integer
    Long,
    /// `true` or `false`
    Bool,
    /// a reference to an entity of this type; the `String` is the type as
    /// callers must write it (fully qualified)
    Entity(EntityTypeName, String),
    /// Cedar's `decimal` extension type, written as a string
    Decimal,
}

/// One attribute of an action's context.
#[derive(Debug, Clone)]
pub struct Attr {
    /// its name
    pub name: String,
    /// what it holds
    pub kind: AttrKind,
    /// whether the schema requires it
    pub required: bool,
    /// whether some policy of the action may read it; one none reads is
    /// still checked, then left out of Cedar's request
    pub read: bool,
}

/// The request one action takes.
#[derive(Debug, Clone)]
pub struct RequestShape {
    /// the principal types the action applies to
    pub principals: Vec<EntityTypeName>,
    /// the resource types the action applies to
    pub resources: Vec<EntityTypeName>,
    /// every attribute of the context
    pub attrs: Vec<Attr>,
    /// how many attributes are required
    pub required: usize,
}

impl std::fmt::Display for AttrKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::String => f.write_str("String"),
            Self::Long => f.write_str("Long"),
            Self::Bool => f.write_str("Bool"),
            Self::Entity(_, written) => write!(f, "entity {written}"),
            Self::Decimal => f.write_str("decimal (a string, `\"1250.00\"`)"),
        }
    }
}

impl RequestShape {
    /// The context this action takes, one attribute per line
    /// (`  side: String, required`), for a person who left one out.
    pub fn describe_context(&self) -> String {
        let mut text = String::new();
        for attr in &self.attrs {
            let need = if attr.required {
                "required"
            } else {
                "optional"
            };
            text.push_str(&format!("  {}: {}, {need}\n", attr.name, attr.kind));
        }
        if text.is_empty() {
            text.push_str("  (no attributes)\n");
        }
        text
    }

    /// The attribute called `name`.
    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attr_at(name).map(|(_, attr)| attr)
    }

    /// The attribute called `name`, and its place among `attrs`.
    pub fn attr_at(&self, name: &str) -> Option<(usize, &Attr)> {
        self.attrs
            .iter()
            .enumerate()
            .find(|(_, attr)| attr.name == name)
    }
}

/// The shape of each action whose context the fast path can convert, from
/// the schema's JSON form (types resolved) of each schema file. Actions with
/// a context type it does not model (sets, records, other extension types,
/// open records) get none.
pub(super) fn shapes(
    schema: &Schema,
    schema_json: &[Value],
    policies: &HashMap<EntityUid, PolicySet>,
) -> HashMap<EntityUid, RequestShape> {
    let mut shapes = HashMap::default();
    for (uid, declaration) in declared_actions(schema, schema_json) {
        let mut reads = ContextReads::default();
        for policy in policies.get(uid).into_iter().flat_map(PolicySet::policies) {
            reads.merge(ContextReads::of(policy));
        }
        if let Some(shape) = shape(&declaration["appliesTo"], &reads) {
            shapes.insert(uid.clone(), shape);
        }
    }
    shapes
}

/// The actions whose context declares an attribute called `name`, from
/// the schema's JSON form, whatever its type (a record the fast path does
/// not model included).
pub(super) fn declaring(
    schema: &Schema,
    schema_json: &[Value],
    name: &str,
) -> foldhash::HashSet<EntityUid> {
    declared_actions(schema, schema_json)
        .filter(|(_, declaration)| {
            declaration
                .pointer("/appliesTo/context/attributes")
                .and_then(Value::as_object)
                .is_some_and(|attributes| attributes.contains_key(name))
        })
        .map(|(uid, _)| uid.clone())
        .collect()
}

/// Each action the schema's JSON form declares, as the schema's uid, with
/// its declaration.
fn declared_actions<'s>(
    schema: &'s Schema,
    schema_json: &'s [Value],
) -> impl Iterator<Item = (&'s EntityUid, &'s Value)> {
    let namespaces = schema_json.iter().filter_map(Value::as_object).flatten();
    namespaces.flat_map(move |(namespace, body)| {
        let action_type = if namespace.is_empty() {
            "Action".to_owned()
        } else {
            format!("{namespace}::Action")
        };
        let actions = body
            .get("actions")
            .and_then(Value::as_object)
            .into_iter()
            .flatten();
        actions.filter_map(move |(id, declaration)| {
            let uid = schema.actions().find(|uid| {
                uid.id().unescaped() == id && uid.type_name().to_string() == action_type
            })?;
            Some((uid, declaration))
        })
    })
}

/// Each entity type's declared attribute names (by its full name), from
/// the schema's JSON form.
pub(super) fn attributes(schema_json: &[Value]) -> HashMap<String, foldhash::HashSet<String>> {
    let mut found = HashMap::default();
    for namespaces in schema_json.iter().filter_map(Value::as_object) {
        for (namespace, body) in namespaces {
            let Some(types) = body.get("entityTypes").and_then(Value::as_object) else {
                continue;
            };
            for (name, declaration) in types {
                let full = if namespace.is_empty() {
                    name.clone()
                } else {
                    format!("{namespace}::{name}")
                };
                let names = declaration
                    .pointer("/shape/attributes")
                    .and_then(Value::as_object)
                    .map(|attributes| attributes.keys().cloned().collect())
                    .unwrap_or_default();
                found.insert(full, names);
            }
        }
    }
    found
}

fn shape(applies_to: &Value, reads: &ContextReads) -> Option<RequestShape> {
    let types = |key: &str| -> Option<Vec<EntityTypeName>> {
        applies_to
            .get(key)?
            .as_array()?
            .iter()
            .map(|name| EntityTypeName::from_str(name.as_str()?).ok())
            .collect()
    };
    let principals = types("principalTypes")?;
    let resources = types("resourceTypes")?;
    let mut attrs = Vec::new();
    match applies_to.get("context") {
        None => {}
        Some(context) => {
            if context.get("type")?.as_str()? != "Record"
                || context.get("additionalAttributes") == Some(&Value::Bool(true))
            {
                return None;
            }
            for (name, declared) in context.get("attributes")?.as_object()? {
                attrs.push(Attr {
                    name: name.clone(),
                    kind: kind(declared)?,
                    required: declared.get("required").and_then(Value::as_bool) != Some(false),
                    read: reads.reads(name),
                });
            }
        }
    }
    let required = attrs.iter().filter(|attr| attr.required).count();
    Some(RequestShape {
        principals,
        resources,
        attrs,
        required,
    })
}

fn kind(declared: &Value) -> Option<AttrKind> {
    let ty = declared.get("type")?.as_str()?;
    let name = declared.get("name").and_then(Value::as_str);
    match (ty, name) {
        ("String", _) => Some(AttrKind::String),
        ("Long", _) => Some(AttrKind::Long),
        ("Bool" | "Boolean", _) => Some(AttrKind::Bool),
        ("Entity", Some(name)) => {
            let ty = EntityTypeName::from_str(name).ok()?;
            Some(AttrKind::Entity(ty, name.to_owned()))
        }
        ("decimal", _) | ("Extension", Some("decimal")) => Some(AttrKind::Decimal),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pack_shapes_withdraw_reading_what_its_policies_read() {
        let snapshot = crate::policy::the_pack();
        let withdraw = snapshot.action("withdraw").unwrap();
        let shape = snapshot.plan(withdraw).unwrap().shape().unwrap();
        assert_eq!(shape.principals.len(), 1);
        assert_eq!(shape.required, 1, "destination");
        assert!(shape.attr("destination").unwrap().read);
        assert!(shape.attr("ownerApproved").unwrap().read, "F5 reads it");
        assert!(!shape.attr("amount").unwrap().read, "no policy reads it");
        assert!(matches!(
            shape.attr("destination").unwrap().kind,
            AttrKind::Entity(_, ref written) if written == "Brokerage::Destination"
        ));
    }

    #[test]
    fn a_context_type_the_fast_path_does_not_model_gets_no_shape() {
        let applies = serde_json::json!({
            "principalTypes": ["User"], "resourceTypes": ["Account"],
            "context": {"type": "Record", "attributes": {"tags": {"type": "Set", "element": {"type": "String"}}}}
        });
        assert!(shape(&applies, &ContextReads::default()).is_none());
        let applies = serde_json::json!({
            "principalTypes": ["User"], "resourceTypes": ["Account"],
            "context": {"type": "Record", "attributes": {
                "side": {"type": "String"},
                "amount": {"type": "decimal", "required": false},
            }}
        });
        let policy: cedar_policy::Policy =
            r#"permit (principal, action, resource) when { context.side == "buy" };"#
                .parse()
                .unwrap();
        let shape = shape(&applies, &ContextReads::of(&policy)).unwrap();
        assert_eq!(shape.required, 1);
        assert!(shape.attr("side").unwrap().read);
        assert!(!shape.attr("amount").unwrap().read, "no policy reads it");
    }
}
