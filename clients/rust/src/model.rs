//! What is asked and what is answered, in AuthZEN's shapes.

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::call::CallOptions;
use crate::error::Error;

/// A subject or resource: AuthZEN's `{type, id, properties?}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entity {
    /// the entity type (`user`, `Brokerage::Account`)
    #[serde(rename = "type")]
    pub type_name: String,
    /// its id (empty for the searched side of a search)
    #[serde(skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// attributes, for a type the requests describe
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<Map<String, Value>>,
}

impl Entity {
    /// `{type, id}`.
    pub fn new(type_name: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            type_name: type_name.into(),
            id: id.into(),
            properties: None,
        }
    }

    /// A type alone: the side a search looks for.
    pub fn of_type(type_name: impl Into<String>) -> Self {
        Self::new(type_name, "")
    }

    /// With `properties`.
    #[must_use]
    pub fn properties(mut self, properties: Map<String, Value>) -> Self {
        self.properties = Some(properties);
        self
    }
}

/// An action: a name, and AuthZEN `properties`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Action {
    /// the action's name (`withdraw`)
    pub name: String,
    /// its properties
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<Map<String, Value>>,
}

impl From<&str> for Action {
    fn from(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            properties: None,
        }
    }
}

impl From<String> for Action {
    fn from(name: String) -> Self {
        Self {
            name,
            properties: None,
        }
    }
}

/// One question: subject, action, resource, context, and how to send it.
#[derive(Debug, Clone)]
pub struct Request {
    subject: Entity,
    action: Option<Action>,
    resource: Entity,
    context: Option<Value>,
    page_limit: Option<u64>,
    call: CallOptions,
}

impl Request {
    /// May `subject` do `action` on `resource`?
    pub fn new(subject: Entity, action: impl Into<Action>, resource: Entity) -> Self {
        Self {
            subject,
            action: Some(action.into()),
            resource,
            context: None,
            page_limit: None,
            call: CallOptions::default(),
        }
    }

    /// A search question without an action: which actions may `subject`
    /// do on `resource`?
    pub fn any_action(subject: Entity, resource: Entity) -> Self {
        Self {
            subject,
            action: None,
            resource,
            context: None,
            page_limit: None,
            call: CallOptions::default(),
        }
    }

    /// With a context (a JSON object).
    #[must_use]
    pub fn context(mut self, context: Value) -> Self {
        self.context = Some(context);
        self
    }

    /// For a search: at most `limit` results a page (the stream still
    /// yields every result, page after page).
    #[must_use]
    pub fn page_limit(mut self, limit: u64) -> Self {
        self.page_limit = Some(limit);
        self
    }

    pub(crate) fn page(&self, token: Option<&str>) -> Option<Value> {
        let mut page = serde_json::Map::new();
        if let Some(limit) = self.page_limit {
            page.insert("limit".to_owned(), json!(limit));
        }
        if let Some(token) = token {
            page.insert("token".to_owned(), json!(token));
        }
        (!page.is_empty()).then_some(Value::Object(page))
    }

    /// Sent with this W3C `traceparent`.
    #[must_use]
    pub fn traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.call.traceparent = Some(traceparent.into());
        self
    }

    /// Sent with this `X-Request-ID` (else one is made up).
    #[must_use]
    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        self.call.request_id = Some(id.into());
        self
    }

    pub(crate) fn call(&self) -> &CallOptions {
        &self.call
    }

    /// The AuthZEN body.
    pub(crate) fn to_json(&self) -> Value {
        let mut body = json!({"subject": self.subject, "resource": self.resource});
        if let (Some(action), Some(object)) = (&self.action, body.as_object_mut()) {
            object.insert("action".to_owned(), json!(action));
        }
        if let (Some(context), Some(object)) = (&self.context, body.as_object_mut()) {
            object.insert("context".to_owned(), context.clone());
        }
        body
    }
}

/// Mandate's answer: the decision and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// allowed?
    pub decision: bool,
    /// the `@id` of each deciding policy
    pub reasons: Vec<String>,
    /// error codes met while deciding (any makes it a deny)
    pub errors: Vec<String>,
    /// the policy version that decided
    pub policy_version: Option<String>,
    /// one sentence
    pub summary: Option<String>,
}

impl Decision {
    /// Reads `{decision, context}`; anything else is a protocol error.
    pub(crate) fn from_answer(answer: &Value) -> Result<Self, Error> {
        let decision = answer
            .get("decision")
            .and_then(Value::as_bool)
            .ok_or_else(|| Error::Protocol(format!("no boolean `decision` in {answer}")))?;
        let context = answer.get("context");
        let strings = |key: &str, inner: Option<&str>| -> Vec<String> {
            context
                .and_then(|c| c.get(key))
                .and_then(Value::as_array)
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|item| match inner {
                            Some(field) => item.get(field).and_then(Value::as_str),
                            None => item.as_str(),
                        })
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let text = |key: &str| {
            context
                .and_then(|c| c.get(key))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Ok(Self {
            decision,
            reasons: strings("reasons", None),
            errors: strings("errors", Some("code")),
            policy_version: text("policy_version"),
            summary: text("summary"),
        })
    }
}
