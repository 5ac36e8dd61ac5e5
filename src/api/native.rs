//! The native Cedar API, shaped after cedar-agent's and Amazon Verified
//! Permissions' is-authorized calls: Cedar-JSON uids, a context, optional
//! request-supplied entities; `{decision, reasons, errors, policy_version}`.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{decode, decode_value};
use super::{ApiError, ApiLimits, Explanation, FieldNames, json};
use crate::engine::{Decision, DecisionRequest, Engine, EntityRef, PolicyTrace, RequestEntities};

const NAMES: FieldNames = FieldNames {
    principal: "principal",
    principal_properties: "principal",
    resource: "resource",
    resource_properties: "resource",
    context: "context",
    entities: "entities",
};

/// An entity uid: exactly `{"type","id"}`, exactly
/// `{"__entity":{"type","id"}}`, or the Cedar string `Type::"id"`. Any
/// other key beside them is refused: two readers could take two entities.
#[derive(Deserialize)]
#[serde(untagged)]
enum Uid {
    Plain(PlainUid),
    Escaped(EscapedUid),
    Cedar(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainUid {
    #[serde(rename = "type")]
    type_name: String,
    id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EscapedUid {
    __entity: PlainUid,
}

impl Uid {
    /// (type, id), or `None` for a malformed Cedar string.
    fn parts(&self) -> Option<(&str, &str)> {
        match self {
            Self::Plain(PlainUid { type_name, id })
            | Self::Escaped(EscapedUid {
                __entity: PlainUid { type_name, id },
            }) => Some((type_name, id)),
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
    /// also answer, policy by policy, why (`explanation`)
    #[serde(default)]
    explain: bool,
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
    reasons: Explanation<'a>,
    /// each policy of the action, when the request asked (`explain`)
    #[serde(skip_serializing_if = "Option::is_none")]
    explanation: Option<&'a [PolicyTrace]>,
}

/// A decision, with its policy-by-policy trace when one was asked for.
type Decided = (Decision, Option<Vec<PolicyTrace>>);

impl<'a> Answer<'a> {
    fn of((decision, trace): &'a Decided) -> Self {
        Self {
            decision: if decision.allowed() { "Allow" } else { "Deny" },
            reasons: Explanation::of(decision),
            explanation: trace.as_deref(),
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
    shared: RequestEntities<'_>,
    prefix: &str,
    request_id: Option<&str>,
) -> Result<Decided, ApiError> {
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
    let entities = request
        .entities
        .as_deref()
        .map_or(shared, RequestEntities::Json);
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
    let decision = engine
        .decide(&decision_request)
        .await
        .map_err(|e| NAMES.refuse(e, prefix))?;
    // A request that never reached the policies has its errors for a why.
    let trace = if request.explain {
        Some(engine.trace(&decision_request).await.unwrap_or_default())
    } else {
        None
    };
    Ok((decision, trace))
}

/// Refuses more explained items than `api.max_explain_items` (none when
/// `api.explain` is off): an explanation costs ~50x a decision's CPU.
fn explained_within(limits: &ApiLimits, explained: usize, field: &str) -> Result<(), ApiError> {
    if explained == 0 || explained <= limits.max_explain_items {
        return Ok(());
    }
    let message = if limits.max_explain_items == 0 {
        format!(
            "`{field}`: explanations are off on this server (`api.explain`); ask without `explain`"
        )
    } else {
        format!(
            "`{field}`: {explained} items ask for an explanation; at most {} may (`api.max_explain_items`)",
            limits.max_explain_items
        )
    };
    Err(ApiError::InvalidBody {
        field: field.to_owned(),
        message,
    })
}

/// `POST /v1/is_authorized`
pub(super) async fn is_authorized(
    engine: &Engine,
    body: &Bytes,
    limits: &ApiLimits,
    request_id: Option<&str>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let request: IsAuthorized = decode(body)?;
    explained_within(limits, usize::from(request.explain), "explain")?;
    let count = request.entities.as_ref().map_or(0, Vec::len);
    if count > limits.max_request_entities {
        return Err(ApiError::TooManyEntities {
            count,
            limit: limits.max_request_entities,
        });
    }
    let decision = decide(engine, &request, RequestEntities::None, "", request_id).await?;
    Ok(json(StatusCode::OK, &Answer::of(&decision)))
}

/// `POST /v1/is_authorized/batch`: `{"requests": [...], "entities"?}` →
/// `{"results": [...]}`, in order; a malformed item is a deny with its error.
pub(super) async fn batch(
    engine: &Engine,
    body: &Bytes,
    limits: &ApiLimits,
    request_id: Option<&str>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let max_items = limits.max_batch_items;
    let batch: Batch = decode(body)?;
    if batch.requests.len() > max_items {
        return Err(ApiError::BatchTooLarge {
            field: "requests",
            count: batch.requests.len(),
            limit: max_items,
        });
    }
    let explained = batch
        .requests
        .iter()
        .filter(|item| item.get("explain") == Some(&Value::Bool(true)))
        .count();
    explained_within(limits, explained, "requests[].explain")?;
    // Each item's entities cost their number, so shared entities count once
    // per item that uses them: the bound is on the work, not the bytes.
    let shared_count = batch.entities.as_ref().map_or(0, Vec::len);
    let count: usize = batch
        .requests
        .iter()
        .map(
            |item| match item.get("entities").and_then(Value::as_array) {
                Some(own) => own.len(),
                None => shared_count,
            },
        )
        .sum();
    if count > limits.max_request_entities {
        return Err(ApiError::TooManyEntities {
            count,
            limit: limits.max_request_entities,
        });
    }
    // The shared entities are parsed once for every item that uses them;
    // when they are malformed, each such item is a deny naming them.
    let shared = batch
        .entities
        .map(|json| engine.parse_entities(json).map_err(|e| NAMES.refuse(e, "")));
    fn uid_of<'v>(item: &'v Value, part: &str) -> Option<(&'v str, &'v str)> {
        let uid = item.get(part)?;
        let uid = uid.get("__entity").unwrap_or(uid);
        Some((uid.get("type")?.as_str()?, uid.get("id")?.as_str()?))
    }
    engine
        .prefetch(batch.requests.iter().flat_map(|item| {
            [uid_of(item, "principal"), uid_of(item, "resource")]
                .into_iter()
                .flatten()
        }))
        .await;
    let mut decisions = Vec::with_capacity(batch.requests.len());
    for (index, item) in batch.requests.iter().enumerate() {
        let prefix = format!("requests[{index}]");
        let outcome = match (decode_value::<IsAuthorized>(item, &prefix), &shared) {
            (Err(error), _) => Err(error),
            (Ok(request), Some(Err(error))) if request.entities.is_none() => Err(error.clone()),
            (Ok(request), shared) => {
                let shared = match shared {
                    Some(Ok(parsed)) => RequestEntities::Parsed(parsed),
                    _ => RequestEntities::None,
                };
                decide(engine, &request, shared, &prefix, request_id).await
            }
        };
        // Long batches give the timer a chance: `server.request_timeout`
        // bounds the whole request, not only its waits.
        tokio::task::yield_now().await;
        decisions.push(outcome.unwrap_or_else(|error| {
            let refused = Decision::refused(
                error.code(),
                error.to_string(),
                engine.policies().current().version().clone(),
            );
            (refused, None)
        }));
    }
    let results: Vec<Answer<'_>> = decisions.iter().map(Answer::of).collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "results": results }),
    ))
}
