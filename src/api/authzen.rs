//! OpenID AuthZEN Authorization API 1.0: the access evaluation endpoint, its
//! batch form, and the PDP metadata document.
//!
//! The response `context` carries `reasons` (the `@id` of each determining
//! policy), `errors`, `policy_version` and a one-line `summary`; a batch item
//! that was malformed on its own is a deny whose context also holds
//! `error: {status, code, message, field}`.

use std::borrow::Cow;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::RouteTable;
use super::error::{decode, decode_at};
use super::{ApiError, Explanation, FieldNames, encode, json, json_bytes};
use crate::engine::{Decision, DecisionRequest, Engine, EntityRef};

/// Batch items decided between two yields to the runtime: a long batch
/// lets the timer (and other connections) in, a short one pays nothing.
const YIELD_EVERY: usize = 16;

const NAMES: FieldNames = FieldNames {
    principal: "subject",
    principal_properties: "subject.properties",
    resource: "resource",
    resource_properties: "resource.properties",
    context: "context",
    entities: "entities",
};

/// An entity as the request names it; its names borrowed from the body
/// when they hold no escape.
#[derive(Deserialize)]
struct Entity<'a> {
    #[serde(rename = "type", borrow)]
    type_name: Cow<'a, str>,
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(default)]
    properties: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct Action<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    /// read by the policies as `context.action_properties`, when the
    /// action's context declares it; ignored otherwise (no policy could
    /// read it)
    #[serde(default)]
    properties: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct Evaluation<'a> {
    #[serde(borrow)]
    subject: Entity<'a>,
    #[serde(borrow)]
    action: Action<'a>,
    #[serde(borrow)]
    resource: Entity<'a>,
    #[serde(default)]
    context: Option<Value>,
}

/// The batch, read in one pass, or one of its items: every part optional,
/// the batch's parts the items' defaults. An empty object (`"resource": {}`,
/// as PEPs send for "no default") counts as absent. Only the batch's own
/// `evaluations` and `options` are read; each item is kept as its own slice
/// of the body and read on its own, so a malformed item is that item's
/// error.
#[derive(Deserialize, Default)]
struct Partial<'a> {
    #[serde(default, borrow)]
    subject: Option<Part<Entity<'a>>>,
    #[serde(default, borrow)]
    action: Option<Part<Action<'a>>>,
    #[serde(default, borrow)]
    resource: Option<Part<Entity<'a>>>,
    #[serde(default)]
    context: Option<Value>,
    #[serde(default, borrow)]
    evaluations: Option<Vec<&'a serde_json::value::RawValue>>,
    #[serde(default)]
    options: Option<Options>,
}

impl Partial<'_> {
    fn subject(&self) -> Option<&Entity<'_>> {
        Part::given(self.subject.as_ref())
    }

    fn action(&self) -> Option<&Action<'_>> {
        Part::given(self.action.as_ref())
    }

    fn resource(&self) -> Option<&Entity<'_>> {
        Part::given(self.resource.as_ref())
    }
}

/// A part of a batch item (`subject`, `action`, `resource`) where an empty
/// object counts as absent. Read in one pass with the rest of the item,
/// the path to a field at fault kept (`evaluations[1].action.name`).
enum Part<T> {
    Absent,
    Given(T),
}

impl<T> Part<T> {
    fn given(part: Option<&Self>) -> Option<&T> {
        match part? {
            Self::Absent => None,
            Self::Given(given) => Some(given),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Part<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(PartVisitor(std::marker::PhantomData))
    }
}

struct PartVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for PartVisitor<T> {
    type Value = Part<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Part<T>, A::Error> {
        // The first key tells an empty object from a part; the part is then
        // read from that key on, as if nothing had been taken.
        let Some(first) = map.next_key::<String>()? else {
            return Ok(Part::Absent);
        };
        T::deserialize(serde::de::value::MapAccessDeserializer::new(Replay {
            first: Some(first),
            rest: map,
        }))
        .map(Part::Given)
    }
}

/// A map whose first key was read already.
struct Replay<A> {
    first: Option<String>,
    rest: A,
}

impl<'de, A: serde::de::MapAccess<'de>> serde::de::MapAccess<'de> for Replay<A> {
    type Error = A::Error;

    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        use serde::de::IntoDeserializer;
        match self.first.take() {
            Some(first) => seed.deserialize(first.into_deserializer()).map(Some),
            None => self.rest.next_key_seed(seed),
        }
    }

    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, A::Error> {
        self.rest.next_value_seed(seed)
    }
}

#[derive(Deserialize, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Semantic {
    #[default]
    ExecuteAll,
    DenyOnFirstDeny,
    PermitOnFirstPermit,
}

#[derive(Deserialize, Default)]
struct Options {
    #[serde(default)]
    evaluations_semantic: Semantic,
}

/// The batch's answer, as `serde_json` would write it: the model
/// [`answered_all`] is held to.
#[cfg(test)]
#[derive(Serialize)]
struct Evaluations<'a> {
    evaluations: Vec<Answer<'a>>,
}

#[derive(Serialize)]
struct Answer<'a> {
    decision: bool,
    context: AnswerContext<'a>,
}

#[derive(Serialize)]
struct AnswerContext<'a> {
    #[serde(flatten)]
    explanation: Explanation<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ItemError>,
}

#[derive(Serialize)]
struct ItemError {
    status: u16,
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

impl<'a> Answer<'a> {
    fn of(decision: &'a Decision, error: Option<ItemError>) -> Self {
        Self {
            decision: decision.allowed(),
            context: AnswerContext {
                explanation: Explanation::of(decision),
                error,
            },
        }
    }
}

impl Answer<'_> {
    /// The answer written by hand, as `serde_json` writes it: every
    /// decision answers one.
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"decision\":");
        encode::boolean(out, self.decision);
        out.extend_from_slice(b",\"context\":{");
        self.context.explanation.write_fields(out);
        if let Some(error) = &self.context.error {
            out.extend_from_slice(b",\"error\":{\"status\":");
            encode::number(out, u64::from(error.status));
            out.extend_from_slice(b",\"code\":");
            encode::string(out, error.code);
            out.extend_from_slice(b",\"message\":");
            encode::string(out, &error.message);
            if let Some(field) = &error.field {
                out.extend_from_slice(b",\"field\":");
                encode::string(out, field);
            }
            out.push(b'}');
        }
        out.extend_from_slice(b"}}");
    }
}

/// A 200 carrying one answer.
fn answered(answer: &Answer<'_>) -> Response<Full<Bytes>> {
    let mut out = Vec::with_capacity(256);
    answer.write_json(&mut out);
    json_bytes(StatusCode::OK, out)
}

/// A 200 carrying a batch's answers (`{"evaluations": […]}`).
fn answered_all(answers: &[Answer<'_>]) -> Response<Full<Bytes>> {
    let mut out = Vec::with_capacity(32 + 256 * answers.len());
    out.extend_from_slice(b"{\"evaluations\":[");
    for (index, answer) in answers.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        answer.write_json(&mut out);
    }
    out.extend_from_slice(b"]}");
    json_bytes(StatusCode::OK, out)
}

fn entity_ref<'a>(entity: &'a Entity<'_>) -> EntityRef<'a> {
    EntityRef {
        type_name: &entity.type_name,
        id: &entity.id,
        properties: entity.properties.as_ref(),
    }
}

fn request<'a>(
    subject: &'a Entity,
    action: &'a Action,
    resource: &'a Entity,
    context: Option<&'a Value>,
    request_id: Option<&'a str>,
) -> DecisionRequest<'a> {
    DecisionRequest {
        principal: entity_ref(subject),
        action: &action.name,
        resource: entity_ref(resource),
        context,
        entities: crate::engine::RequestEntities::None,
        request_id,
    }
}

/// `POST /access/v1/evaluation`
pub(super) async fn evaluation(
    engine: &Engine,
    routes: &RouteTable,
    body: &Bytes,
    request_id: Option<&str>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let evaluation: Evaluation = decode(body)?;
    let asked = (
        &evaluation.subject,
        &evaluation.action,
        &evaluation.resource,
    );
    if let Some(decided) = about_route(engine, routes, asked, request_id, "").await {
        return Ok(answered(&Answer::of(&decided?, None)));
    }
    let context =
        with_action_properties(engine, &evaluation.action, evaluation.context.as_ref(), "")?;
    let request = request(
        &evaluation.subject,
        &evaluation.action,
        &evaluation.resource,
        context.as_ref().or(evaluation.context.as_ref()),
        request_id,
    );
    let decision = engine
        .decide(&request)
        .await
        .map_err(|e| NAMES.refuse(e, ""))?;
    Ok(answered(&Answer::of(&decision, None)))
}

/// `POST /access/v1/evaluations`: top-level defaults, items that override
/// them, and the three `evaluations_semantic`s. Without `evaluations`, the
/// request is a single evaluation.
pub(super) async fn evaluations(
    engine: &Engine,
    routes: &RouteTable,
    body: &Bytes,
    max_items: usize,
    request_id: Option<&str>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let mut defaults: Partial<'_> = decode(body)?;
    let semantic = defaults
        .options
        .take()
        .unwrap_or_default()
        .evaluations_semantic;
    let items = match defaults.evaluations.take() {
        Some(items) if !items.is_empty() => items,
        _ => {
            let (Some(subject), Some(action), Some(resource)) =
                (defaults.subject(), defaults.action(), defaults.resource())
            else {
                return Err(missing_part(
                    defaults.subject().is_some(),
                    defaults.action().is_some(),
                    "",
                ));
            };
            let asked = (subject, action, resource);
            if let Some(decided) = about_route(engine, routes, asked, request_id, "").await {
                return Ok(answered(&Answer::of(&decided?, None)));
            }
            let context = with_action_properties(engine, action, defaults.context.as_ref(), "")?;
            let request = request(
                subject,
                action,
                resource,
                context.as_ref().or(defaults.context.as_ref()),
                request_id,
            );
            let decision = engine
                .decide(&request)
                .await
                .map_err(|e| NAMES.refuse(e, ""))?;
            return Ok(answered(&Answer::of(&decision, None)));
        }
    };
    if items.len() > max_items {
        return Err(ApiError::BatchTooLarge {
            field: "evaluations",
            count: items.len(),
            limit: max_items,
        });
    }

    let items: Vec<Result<Partial<'_>, ApiError>> = items
        .iter()
        .enumerate()
        .map(|(index, item)| decode_at(item.get().as_bytes(), || prefix(index)))
        .collect();
    // Every subject and resource of the batch in one store call per round of
    // misses, before the items are decided one by one.
    fn named<'a>(entity: Option<&'a Entity<'_>>) -> Option<(&'a str, &'a str)> {
        entity.map(|e| (e.type_name.as_ref(), e.id.as_ref()))
    }
    engine
        .prefetch(items.iter().flatten().flat_map(|item| {
            [
                named(item.subject().or(defaults.subject())),
                named(item.resource().or(defaults.resource())),
            ]
            .into_iter()
            .flatten()
        }))
        .await;
    let mut decisions: Vec<(Decision, Option<ItemError>)> = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let (decision, error) =
            match decide_item(engine, routes, &defaults, item, index, request_id).await {
                Ok(decision) => (decision, None),
                Err(error) => {
                    let version = engine.policies().current().version().clone();
                    let decision = Decision::refused(error.code(), error.to_string(), version);
                    let item_error = ItemError {
                        status: error.status().as_u16(),
                        code: error.code(),
                        message: error.to_string(),
                        field: error.field().map(str::to_owned),
                    };
                    (decision, Some(item_error))
                }
            };
        let stop = match semantic {
            Semantic::ExecuteAll => false,
            Semantic::DenyOnFirstDeny => !decision.allowed(),
            Semantic::PermitOnFirstPermit => decision.allowed(),
        };
        decisions.push((decision, error));
        if stop {
            break;
        }
        // Long batches give the timer a chance: `server.request_timeout`
        // bounds the whole request, not only its waits.
        if index % YIELD_EVERY == YIELD_EVERY - 1 {
            tokio::task::yield_now().await;
        }
    }
    let answers: Vec<Answer<'_>> = decisions
        .iter_mut()
        .map(|(decision, error)| Answer::of(decision, error.take()))
        .collect();
    Ok(answered_all(&answers))
}

/// Where batch item `index`'s fields are named: made only for an error.
fn prefix(index: usize) -> String {
    format!("evaluations[{index}]")
}

/// Decides batch item `index` (read already, or its error).
async fn decide_item(
    engine: &Engine,
    routes: &RouteTable,
    defaults: &Partial<'_>,
    item: Result<Partial<'_>, ApiError>,
    index: usize,
    request_id: Option<&str>,
) -> Result<Decision, ApiError> {
    let item = item?;
    let subject = item.subject().or(defaults.subject());
    let action = item.action().or(defaults.action());
    let resource = item.resource().or(defaults.resource());
    let context = item.context.as_ref().or(defaults.context.as_ref());
    let (Some(subject), Some(action), Some(resource)) = (subject, action, resource) else {
        return Err(missing_part(
            subject.is_some(),
            action.is_some(),
            &prefix(index),
        ));
    };
    let asked = (subject, action, resource);
    if let Some(decided) = about_route(engine, routes, asked, request_id, &prefix(index)).await {
        return decided;
    }
    let merged = with_action_properties(engine, action, context, &prefix(index))?;
    let request = request(
        subject,
        action,
        resource,
        merged.as_ref().or(context),
        request_id,
    );
    engine
        .decide(&request)
        .await
        .map_err(|e| NAMES.refuse(e, &prefix(index)))
}

/// The caller's context with the action's `properties` in it as
/// `action_properties`, when the action's context declares that record
/// (Cedar actions carry no attributes); `None` when nothing is added: no
/// properties, or an action that does not declare them (no policy of it
/// could read them, so they are ignored). A context that is not an object
/// is left for the engine to refuse.
///
/// # Errors
/// A 400 when the context holds `action_properties` too: two values, one
/// reading.
fn with_action_properties(
    engine: &Engine,
    action: &Action<'_>,
    context: Option<&Value>,
    prefix: &str,
) -> Result<Option<Value>, ApiError> {
    use crate::policy::ACTION_PROPERTIES;
    let Some(properties) = &action.properties else {
        return Ok(None);
    };
    let snapshot = engine.policies().current();
    let takes = snapshot
        .action(&action.name)
        .and_then(|uid| snapshot.plan(uid))
        .is_some_and(crate::policy::ActionPlan::takes_action_properties);
    if !takes {
        return Ok(None);
    }
    let mut merged = match context {
        None => Map::new(),
        Some(Value::Object(given)) => given.clone(),
        Some(_) => return Ok(None),
    };
    if merged.contains_key(ACTION_PROPERTIES) {
        let field = if prefix.is_empty() {
            "action.properties".to_owned()
        } else {
            format!("{prefix}.action.properties")
        };
        return Err(ApiError::InvalidBody {
            message: format!(
                "`{field}`: also sent as `context.{ACTION_PROPERTIES}`; send the action's properties once"
            ),
            field,
        });
    }
    merged.insert(
        ACTION_PROPERTIES.to_owned(),
        Value::Object(properties.clone()),
    );
    Ok(Some(Value::Object(merged)))
}

/// A question about a route (`resource.type` is `gateway.route_type`, the
/// API-gateway interop), decided through the route table
/// ([`super::gateway::route_question`]); `None` for any other resource.
async fn about_route(
    engine: &Engine,
    routes: &RouteTable,
    (subject, action, resource): (&Entity<'_>, &Action<'_>, &Entity<'_>),
    request_id: Option<&str>,
    prefix: &str,
) -> Option<Result<Decision, ApiError>> {
    if !routes.is_route_type(&resource.type_name) {
        return None;
    }
    let decided = super::gateway::route_question(
        engine,
        routes,
        entity_ref(subject),
        &action.name,
        &resource.id,
        request_id,
    )
    .await;
    Some(decided.map_err(|e| NAMES.refuse(e, prefix)))
}

/// Names the first of subject, action, resource that neither the item nor the defaults gave.
fn missing_part(has_subject: bool, has_action: bool, prefix: &str) -> ApiError {
    let missing = if !has_subject {
        "subject"
    } else if !has_action {
        "action"
    } else {
        "resource"
    };
    let field = if prefix.is_empty() {
        missing.to_owned()
    } else {
        format!("{prefix}.{missing}")
    };
    ApiError::InvalidBody {
        message: format!("`{field}`: missing, and no default given at the top level"),
        field,
    }
}

/// `GET /.well-known/authzen-configuration`
/// Whether `host` is a plain `name[:port]` or `[v6]:port`: letters,
/// digits, `.`, `-`, and a numeric port.
fn plain_authority(host: &str) -> bool {
    let port_ok = |port: Option<&str>| {
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
    };
    if let Some(rest) = host.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        let port = match after {
            "" => None,
            after => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return false,
            },
        };
        return !v6.is_empty()
            && v6
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
            && port_ok(port);
    }
    let (name, port) = match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && port_ok(port)
}

pub(super) fn metadata<B>(
    request: &Request<B>,
    settings: &super::ApiSettings,
) -> Response<Full<Bytes>> {
    let base = match &settings.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            // The caller's Host only when it is a plain host[:port]; a
            // crafted one would make this document point elsewhere.
            let host = request
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| request.uri().authority().map(|a| a.as_str()))
                .filter(|host| plain_authority(host))
                .unwrap_or(&settings.listen_authority);
            format!("{}://{host}", settings.scheme)
        }
    };
    json(
        StatusCode::OK,
        &serde_json::json!({
            "policy_decision_point": base,
            "access_evaluation_endpoint": format!("{base}/access/v1/evaluation"),
            "access_evaluations_endpoint": format!("{base}/access/v1/evaluations"),
            "search_subject_endpoint": format!("{base}/access/v1/search/subject"),
            "search_resource_endpoint": format!("{base}/access/v1/search/resource"),
            "search_action_endpoint": format!("{base}/access/v1/search/action"),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::super::ErrorOut;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn answers_are_written_as_serde_json_writes_them(
            reasons in proptest::collection::vec(any::<String>(), 0..3),
            errors in proptest::collection::vec((any::<String>(), proptest::option::of(any::<String>())), 0..3),
            (version, summary) in (any::<String>(), any::<String>()),
            (allowed, stale) in (any::<bool>(), any::<bool>()),
            error in proptest::option::of((any::<u16>(), any::<String>(), proptest::option::of(any::<String>()))),
        ) {
            let decision = Decision::refused("some_code", summary, version.as_str().into());
            let answer = |error: Option<ItemError>| Answer {
                decision: allowed,
                context: AnswerContext {
                    explanation: Explanation {
                        reasons: reasons.iter().map(String::as_str).collect(),
                        errors: errors
                            .iter()
                            .map(|(message, policy)| ErrorOut {
                                code: "a_code",
                                message,
                                policy: policy.as_deref(),
                            })
                            .collect(),
                        policy_version: &version,
                        summary: decision.summary(),
                        stale_data: stale,
                    },
                    error,
                },
            };
            let item_error = || error.clone().map(|(status, message, field)| ItemError {
                status,
                code: "item_code",
                message,
                field,
            });
            let mut ours = Vec::new();
            answer(item_error()).write_json(&mut ours);
            prop_assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&answer(item_error())).unwrap()
            );
            let batch = [answer(None), answer(item_error())];
            let written = answered_all(&batch);
            let expected = serde_json::to_vec(&Evaluations {
                evaluations: vec![answer(None), answer(item_error())],
            })
            .unwrap();
            let body = http_body_util::BodyExt::collect(written.into_body());
            let body = futures_util::FutureExt::now_or_never(body).unwrap().unwrap().to_bytes();
            prop_assert_eq!(body.as_ref(), expected.as_slice());
        }
    }
}
