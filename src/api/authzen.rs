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
use super::quick::Reader;
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
#[cfg_attr(test, derive(Debug, PartialEq))]
struct Entity<'a> {
    #[serde(rename = "type", borrow)]
    type_name: Cow<'a, str>,
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(default)]
    properties: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
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
#[cfg_attr(test, derive(Debug, PartialEq))]
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

/// Deepest nesting the one-pass read takes; a deeper body (allowed by a
/// raised `server.max_json_depth`) goes the usual way, where serde_json's
/// own recursion limit (128) applies.
const QUICK_DEPTH: usize = 64;

impl<'a> Evaluation<'a> {
    /// The evaluation read in one pass ([`Reader`]), or `None` for
    /// anything unusual (an unknown field, a key twice, too deep, not
    /// JSON): the usual checks and decode then read it and name the fault.
    fn quick(body: &'a [u8], max_depth: usize) -> Option<Self> {
        let mut reader = Reader::new(body, max_depth.min(QUICK_DEPTH))?;
        let (mut subject, mut action, mut resource, mut context) = (None, None, None, None);
        reader.object(|name, reader| {
            match name {
                "subject" if subject.is_none() => subject = Some(Entity::quick(reader)?),
                "resource" if resource.is_none() => resource = Some(Entity::quick(reader)?),
                "action" if action.is_none() => action = Some(Action::quick(reader)?),
                // `null` is no context, as serde reads an `Option`.
                "context" if context.is_none() => {
                    context = Some(Some(reader.value()?).filter(|value| !value.is_null()));
                }
                _ => return None,
            }
            Some(())
        })?;
        reader.end()?;
        Some(Self {
            subject: subject?,
            action: action?,
            resource: resource?,
            context: context.flatten(),
        })
    }
}

impl<'a> Entity<'a> {
    fn quick(reader: &mut Reader<'a>) -> Option<Self> {
        let ([type_name, id], properties) = quick_named(reader, ["type", "id"])?;
        Some(Self {
            type_name,
            id,
            properties,
        })
    }
}

impl<'a> Action<'a> {
    fn quick(reader: &mut Reader<'a>) -> Option<Self> {
        let ([name], properties) = quick_named(reader, ["name"])?;
        Some(Self { name, properties })
    }
}

/// A part's `properties`, when it has some.
type Properties = Option<Map<String, Value>>;

/// An object of the strings `names`, each once, and optional
/// `properties`: an object, or `null` for none (as serde reads an
/// `Option`); `None` for anything else.
fn quick_named<'a, const N: usize>(
    reader: &mut Reader<'a>,
    names: [&str; N],
) -> Option<([Cow<'a, str>; N], Properties)> {
    let mut strings: [Option<Cow<'a, str>>; N] = std::array::from_fn(|_| None);
    let mut properties = None;
    reader.object(|field, reader| {
        if field == "properties" && properties.is_none() {
            properties = Some(match reader.value()? {
                Value::Object(fields) => Some(fields),
                Value::Null => None,
                _ => return None,
            });
            return Some(());
        }
        let at = names.iter().position(|name| *name == field)?;
        let slot = strings.get_mut(at)?;
        if slot.is_some() {
            return None;
        }
        *slot = Some(reader.string()?);
        Some(())
    })?;
    // Every name present: a missing one the usual way names.
    if strings.iter().any(Option::is_none) {
        return None;
    }
    Some((strings.map(Option::unwrap_or_default), properties.flatten()))
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
    // Written into this thread's buffer, then copied out at its length: a
    // buffer with room to spare would cost `Bytes` a second allocation.
    let body = ANSWER.with_borrow_mut(|out| {
        out.clear();
        answer.write_json(out);
        let body = Bytes::copy_from_slice(out);
        // A long answer (errors naming long ids) leaves no large buffer.
        if out.capacity() > 64 * 1024 {
            *out = Vec::with_capacity(512);
        }
        body
    });
    json_bytes(StatusCode::OK, body)
}

thread_local! {
    /// Each thread's answer being written, reused from answer to answer.
    static ANSWER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(512));
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
///
/// `body` is not checked yet: read in one pass when it is plain, else
/// checked ([`super::check_json`]) and decoded as every other body.
pub(super) async fn evaluation(
    engine: &Engine,
    routes: &RouteTable,
    body: &Bytes,
    max_depth: usize,
    request_id: Option<&str>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let evaluation = match Evaluation::quick(body, max_depth) {
        Some(evaluation) => evaluation,
        None => {
            super::check_json(body, max_depth)?;
            decode(body)?
        }
    };
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
    // Boxed: every evaluation's future holds this one, and few are routes.
    let decided = Box::pin(super::gateway::route_question(
        engine,
        routes,
        entity_ref(subject),
        &action.name,
        &resource.id,
        request_id,
    ))
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

    /// JSON text of a value: nested, with keys that may repeat, escapes,
    /// odd numbers, varied space, and now and then a fault.
    fn any_value_text() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            prop_oneof![
                4 => Just("0"),
                4 => Just("7"),
                4 => Just("-3"),
                4 => Just("-0"),
                4 => Just("1.5"),
                4 => Just("1e3"),
                4 => Just("2E-2"),
                4 => Just("123456789012345678"),
                4 => Just("1234567890123456789012"),
                1 => Just("01"),
                1 => Just("1e400"),
                1 => Just("1."),
                1 => Just("--1"),
            ]
            .prop_map(str::to_owned),
            any_string_text(),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec((space(), inner.clone()), 0..4).prop_map(|items| {
                    let items: Vec<String> =
                        items.into_iter().map(|(s, v)| format!("{s}{v}")).collect();
                    format!("[{}]", items.join(","))
                }),
                proptest::collection::vec((any_key_text(), space(), inner), 0..4).prop_map(
                    |fields| {
                        let fields: Vec<String> = fields
                            .into_iter()
                            .map(|(k, s, v)| format!("{k}{s}:{s}{v}"))
                            .collect();
                        format!("{{{}}}", fields.join(","))
                    }
                ),
            ]
        })
    }

    fn space() -> impl Strategy<Value = &'static str> {
        prop_oneof![4 => Just(""), 1 => Just(" "), 1 => Just("\n\t "), 1 => Just("\r")]
    }

    fn any_key_text() -> impl Strategy<Value = String> {
        prop_oneof![
            2 => Just(r#""a""#.to_owned()),
            1 => Just(r#""\u0061""#.to_owned()),
            1 => Just(r#""""#.to_owned()),
            2 => any_string_text(),
            6 => "[a-z]{1,5}".prop_map(|key| format!("\"{key}\"")),
        ]
    }

    /// A string's text: valid ones mostly, now and then one serde_json
    /// refuses (a lone surrogate, an unknown escape, a raw tab).
    fn any_string_text() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => Just(r#""carol""#.to_owned()),
            8 => Just(r#""é€""#.to_owned()),
            8 => Just(r#""a\"b\\c\n""#.to_owned()),
            8 => Just(r#""\u00e9\ud83d\ude00""#.to_owned()),
            1 => Just(r#""\ud800""#.to_owned()),
            1 => Just("\"tab\there\"".to_owned()),
            1 => Just(r#""\x""#.to_owned()),
            16 => "[a-z]{0,6}".prop_map(|text| format!("\"{text}\"")),
        ]
    }

    /// An entity's (or with the same name twice, an action's) text: its
    /// fields once each, in either order, with properties now and then; or
    /// (one time in four) one field too many, twice, or missing.
    fn entity_text(names: [&'static str; 2]) -> impl Strategy<Value = String> {
        (
            any_string_text(),
            any_string_text(),
            proptest::option::of(any_value_text()),
            any::<bool>(),
            0..12usize,
        )
            .prop_map(move |(first, second, properties, swap, fault)| {
                let mut fields = vec![format!(r#""{}":{first}"#, names[0])];
                if names[1] != names[0] {
                    fields.push(format!(r#""{}":{second}"#, names[1]));
                }
                if let Some(properties) = properties {
                    fields.push(format!(r#""properties":{properties}"#));
                }
                match fault {
                    0 => fields.push(r#""other":1"#.to_owned()),
                    1 => fields.push(format!(r#""{}":{second}"#, names[0])),
                    2 => drop(fields.remove(0)),
                    _ => {}
                }
                if swap {
                    fields.reverse();
                }
                format!("{{{}}}", fields.join(","))
            })
    }

    /// An evaluation's text: its parts in any order, some repeated or
    /// missing, now and then spelled with an escape, cut short or followed
    /// by more.
    fn evaluation_text() -> impl Strategy<Value = String> {
        let field = prop_oneof![
            3 => entity_text(["type", "id"]).prop_map(|e| format!(r#""subject":{e}"#)),
            3 => entity_text(["type", "id"]).prop_map(|e| format!(r#""resource":{e}"#)),
            3 => entity_text(["name", "name"]).prop_map(|e| format!(r#""action":{e}"#)),
            2 => any_value_text().prop_map(|v| format!(r#""context":{v}"#)),
            1 => entity_text(["type", "id"]).prop_map(|e| format!(r#""\u0073ubject":{e}"#)),
            1 => any_value_text().prop_map(|v| format!(r#""extra":{v}"#)),
        ];
        (
            proptest::collection::vec((space(), field), 0..6),
            0..10usize,
        )
            .prop_map(|(fields, ending)| {
                let fields: Vec<String> =
                    fields.into_iter().map(|(s, f)| format!("{s}{f}")).collect();
                let text = format!("{{{}}}", fields.join(","));
                match ending {
                    0 => String::from_utf8_lossy(&text.as_bytes()[..text.len() / 2]).into_owned(),
                    1 => format!("{text} x"),
                    2 => format!(" {text}\n"),
                    _ => text,
                }
            })
    }

    /// A complete evaluation, every part present once.
    fn complete_text() -> impl Strategy<Value = String> {
        (
            entity_text(["type", "id"]),
            entity_text(["name", "name"]),
            entity_text(["type", "id"]),
            proptest::option::of(any_value_text()),
        )
            .prop_map(|(subject, action, resource, context)| {
                let context = context
                    .map(|c| format!(r#","context":{c}"#))
                    .unwrap_or_default();
                format!(
                    r#"{{"subject":{subject},"action":{action},"resource":{resource}{context}}}"#
                )
            })
    }

    /// The usual way: the checks, then serde's decode.
    fn usual(body: &[u8], max_depth: usize) -> Result<Evaluation<'_>, ApiError> {
        super::super::check_json(body, max_depth)?;
        decode(body)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever the one-pass read takes, the usual way takes too, and
        /// reads the same.
        #[test]
        fn the_one_pass_read_takes_only_what_the_usual_way_reads_the_same(
            body in prop_oneof![1 => evaluation_text(), 3 => complete_text()],
            max_depth in prop_oneof![Just(32usize), 1..6usize],
        ) {
            if let Some(quick) = Evaluation::quick(body.as_bytes(), max_depth) {
                match usual(body.as_bytes(), max_depth) {
                    Ok(usual) => prop_assert_eq!(quick, usual, "{}", body),
                    Err(error) => prop_assert!(false, "{body}: read in one pass, refused the usual way: {error}"),
                }
            }
        }
    }

    #[test]
    fn the_generated_bodies_hold_both_kinds() {
        // Not vacuous: of the generated bodies, many are read in one pass,
        // many are refused, and some only the usual way reads.
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = prop_oneof![1 => evaluation_text(), 3 => complete_text()];
        let (mut quick, mut refused, mut usual_only) = (0, 0, 0);
        for _ in 0..2000 {
            let body =
                proptest::strategy::ValueTree::current(&strategy.new_tree(&mut runner).unwrap());
            let read = Evaluation::quick(body.as_bytes(), 32).is_some();
            match (read, usual(body.as_bytes(), 32).is_ok()) {
                (true, _) => quick += 1,
                (false, false) => refused += 1,
                (false, true) => usual_only += 1,
            }
        }
        assert!(
            quick > 100 && refused > 200 && usual_only > 20,
            "{quick} {refused} {usual_only}"
        );
    }

    #[test]
    fn the_common_body_is_read_in_one_pass_and_faults_go_the_usual_way() {
        let body = br#"{"subject":{"type":"user","id":"carol"},"action":{"name":"place_order"},"resource":{"type":"account","id":"alice-personal"},"context":{"side":"buy","instrument":"AAPL"}}"#;
        let quick = Evaluation::quick(body, 32).unwrap();
        assert!(matches!(quick.subject.id, Cow::Borrowed("carol")));
        assert_eq!(quick, usual(body, 32).unwrap());
        for faulty in [
            r#"{"subject":{"type":"user","id":"carol"},"action":{"name":"a"},"resource":{"type":"account","id":"x"},"context":{"a":1,"a":2}}"#,
            r#"{"subject":{"type":"user","id":"carol","id":"erin"},"action":{"name":"a"},"resource":{"type":"account","id":"x"}}"#,
            r#"{"subject":{"type":"user","id":"carol"},"action":{"name":"a"},"resource":{"type":"account","id":"x"},"context":[[[[1]]]]}"#,
        ] {
            assert!(
                Evaluation::quick(faulty.as_bytes(), 4).is_none(),
                "{faulty}"
            );
            assert!(usual(faulty.as_bytes(), 4).is_err(), "{faulty}");
        }
    }

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
