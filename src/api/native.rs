//! The native Cedar API, shaped after cedar-agent's and Amazon Verified
//! Permissions' is-authorized calls: Cedar-JSON uids, a context, optional
//! request-supplied entities; `{decision, reasons, errors, policy_version}`.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{decode, decode_value};
use super::{ApiError, Explanation, FieldNames, json};
use crate::engine::{Decision, DecisionRequest, Engine, EntityRef};

const NAMES: FieldNames = FieldNames {
    principal: "principal",
    principal_properties: "principal",
    resource: "resource",
    resource_properties: "resource",
    context: "context",
    entities: "entities",
};

/// An entity uid: `{"type","id"}`, `{"__entity":{"type","id"}}`, or the
/// Cedar string `Type::"id"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Uid {
    Plain {
        #[serde(rename = "type")]
        type_name: String,
        id: String,
    },
    Escaped {
        __entity: Box<Uid>,
    },
    Cedar(String),
}

impl Uid {
    /// (type, id), or `None` for a malformed Cedar string.
    fn parts(&self) -> Option<(&str, &str)> {
        match self {
            Self::Plain { type_name, id } => Some((type_name, id)),
            Self::Escaped { __entity } => __entity.parts(),
            Self::Cedar(text) => {
                let (type_name, quoted) = text.rsplit_once("::\"")?;
                Some((type_name, quoted.strip_suffix('"')?))
            }
        }
    }
}

#[derive(Deserialize)]
struct IsAuthorized {
    principal: Uid,
    action: Uid,
    resource: Uid,
    #[serde(default)]
    context: Option<Value>,
    #[serde(default)]
    entities: Option<Vec<Value>>,
}

#[derive(Deserialize)]
struct Batch {
    requests: Vec<Value>,
    /// entities shared by every request that does not bring its own
    #[serde(default)]
    entities: Option<Vec<Value>>,
}

#[derive(Serialize)]
struct Answer<'a> {
    decision: &'static str,
    #[serde(flatten)]
    explanation: Explanation<'a>,
}

impl<'a> Answer<'a> {
    fn of(decision: &'a Decision) -> Self {
        Self {
            decision: if decision.allowed() { "Allow" } else { "Deny" },
            explanation: Explanation::of(decision),
        }
    }
}

fn uid_parts<'a>(uid: &'a Uid, field: &str) -> Result<(&'a str, &'a str), ApiError> {
    uid.parts().ok_or_else(|| ApiError::InvalidBody {
        field: field.to_owned(),
        message: format!("`{field}`: expected `{{\"type\": …, \"id\": …}}` or `Type::\"id\"`"),
    })
}

async fn decide(
    engine: &Engine,
    request: &IsAuthorized,
    shared: &[Value],
    prefix: &str,
    request_id: Option<&str>,
) -> Result<Decision, ApiError> {
    let at = |name: &str| {
        if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}.{name}")
        }
    };
    let (principal_type, principal_id) = uid_parts(&request.principal, &at("principal"))?;
    let (action_type, action_id) = uid_parts(&request.action, &at("action"))?;
    let (resource_type, resource_id) = uid_parts(&request.resource, &at("resource"))?;
    let action = format!("{action_type}::\"{action_id}\"");
    let entities = request.entities.as_deref().unwrap_or(shared);
    let decision_request = DecisionRequest {
        principal: EntityRef {
            type_name: principal_type,
            id: principal_id,
            properties: None,
        },
        action: &action,
        resource: EntityRef {
            type_name: resource_type,
            id: resource_id,
            properties: None,
        },
        context: request.context.as_ref(),
        entities,
        request_id,
    };
    engine
        .decide(&decision_request)
        .await
        .map_err(|e| NAMES.refuse(e, prefix))
}

/// `POST /v1/is_authorized`
pub(super) async fn is_authorized(
    engine: &Engine,
    body: &Bytes,
    request_id: Option<&str>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let request: IsAuthorized = decode(body)?;
    let decision = decide(engine, &request, &[], "", request_id).await?;
    Ok(json(StatusCode::OK, &Answer::of(&decision)))
}

/// `POST /v1/is_authorized/batch`: `{"requests": [...], "entities"?}` →
/// `{"results": [...]}`, in order; a malformed item is a deny with its error.
pub(super) async fn batch(
    engine: &Engine,
    body: &Bytes,
    max_items: usize,
    request_id: Option<&str>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let batch: Batch = decode(body)?;
    if batch.requests.len() > max_items {
        return Err(ApiError::BatchTooLarge {
            field: "requests",
            count: batch.requests.len(),
            limit: max_items,
        });
    }
    let shared = batch.entities.unwrap_or_default();
    let mut decisions = Vec::with_capacity(batch.requests.len());
    for (index, item) in batch.requests.iter().enumerate() {
        let prefix = format!("requests[{index}]");
        let outcome = match decode_value::<IsAuthorized>(item, &prefix) {
            Ok(request) => decide(engine, &request, &shared, &prefix, request_id).await,
            Err(error) => Err(error),
        };
        decisions.push(outcome.unwrap_or_else(|error| {
            Decision::refused(
                error.code(),
                error.to_string(),
                engine.policies().current().version().clone(),
            )
        }));
    }
    let results: Vec<Answer<'_>> = decisions.iter().map(Answer::of).collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "results": results }),
    ))
}
