//! AuthZEN 1.0 search: `POST /access/v1/search/{subject,resource,action}`.
//! The searched entity has a type only; the engine decides every candidate.
//! Pages are cut from the sorted answer by `page.limit`; a page's token is
//! the next offset and the page size (a later page may send the token
//! alone), signed (HMAC-SHA256) over the request it continues, its page
//! size aside, and the policy version, so a token is refused with another
//! request, after a policy change, or when tampered with. At most `search.max_concurrent`
//! searches decide at once; a later page is answered from the engine's
//! memory of the whole answer without waiting.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use ring::hmac;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::decode;
use super::{ApiError, json};
use crate::engine::{Engine, Found, SearchError, SearchQuery, Searched};
use crate::policy::PolicySnapshot;
use crate::telemetry::{SearchEntry, Text, metrics};

/// How searches are bounded and their tokens signed.
#[derive(Clone)]
pub struct SearchSettings {
    /// most candidates one search decides
    pub max_candidates: usize,
    /// signs page tokens
    pub token_key: hmac::Key,
    /// longest one search may take
    pub time_budget: std::time::Duration,
    /// searches deciding at once (`search.max_concurrent`)
    pub concurrent: std::sync::Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for SearchSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchSettings")
            .field("max_candidates", &self.max_candidates)
            .field("token_key", &"…")
            .field("time_budget", &self.time_budget)
            .field("concurrent", &self.concurrent.available_permits())
            .finish()
    }
}

impl SearchSettings {
    /// From `search.token_key`, or a random key for this process; at
    /// least one search at a time.
    pub fn new(
        max_candidates: usize,
        token_key: Option<&str>,
        time_budget: std::time::Duration,
        max_concurrent: usize,
    ) -> Self {
        let token_key = match token_key {
            Some(secret) => hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
            None => {
                let rng = ring::rand::SystemRandom::new();
                hmac::Key::generate(hmac::HMAC_SHA256, &rng).unwrap_or_else(|_| {
                    // No system randomness: a key no client can know anyway.
                    let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
                    hmac::Key::new(hmac::HMAC_SHA256, seed.as_bytes())
                })
            }
        };
        Self {
            max_candidates,
            token_key,
            time_budget,
            concurrent: std::sync::Arc::new(tokio::sync::Semaphore::new(max_concurrent.max(1))),
        }
    }
}

/// A search's subject or resource; `properties`, like any other key, is
/// ignored: the store describes the entities a search decides.
#[derive(Deserialize)]
struct Entity {
    #[serde(rename = "type")]
    type_name: String,
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize)]
struct Action {
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Page {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    #[allow(dead_code)]
    properties: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct Search {
    subject: Entity,
    #[serde(default)]
    action: Option<Action>,
    resource: Entity,
    #[serde(default)]
    context: Option<Value>,
    #[serde(default)]
    page: Option<Page>,
}

#[derive(Serialize)]
struct PageOut {
    next_token: String,
    count: usize,
    total: usize,
}

#[derive(Serialize)]
struct Answer {
    page: PageOut,
    /// what the PEP should know beside the results: the actions an action
    /// search could not decide with the context given (AuthZEN's optional
    /// response `context`)
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<Value>,
    results: Vec<Value>,
}

/// The response `context` naming the actions skipped, if any: an action
/// search never omits an action silently.
pub fn skipped_context(found: &Found) -> Option<Value> {
    (!found.skipped.is_empty()).then(|| {
        let skipped: Vec<Value> = found
            .skipped
            .iter()
            .map(|s| serde_json::json!({"name": s.action, "reason": s.reason}))
            .collect();
        serde_json::json!({ "skipped": skipped })
    })
}

/// `POST /access/v1/search/{subject,resource,action}`: answered, counted
/// and logged.
pub(super) async fn search(
    engine: &Engine,
    settings: &SearchSettings,
    searched: Searched,
    body: &Bytes,
    request_id: Option<&str>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let started = std::time::Instant::now();
    let request: Search = match decode(body) {
        Ok(request) => request,
        Err(error) => {
            metrics().search(searched_name(searched), "refused", started.elapsed(), 0);
            return Err(error);
        }
    };
    let snapshot = engine.policies().current();
    let answer = answer(engine, settings, searched, body, &request, &snapshot).await;
    let took = started.elapsed();
    let (outcome, found) = match &answer {
        Ok((_, found)) if found.pruned => ("pruned", Some(found)),
        Ok((_, found)) => ("answered", Some(found)),
        Err(ApiError::StoreUnavailable(_)) => ("store_unavailable", None),
        Err(ApiError::SearchOverBudget(_)) => ("over_budget", None),
        Err(_) => ("refused", None),
    };
    let candidates = found.map_or(0, |found| found.candidates);
    metrics().search(searched_name(searched), outcome, took, candidates);
    let log = engine.decision_log();
    if log.enabled() {
        let error = answer.as_ref().err().map(ToString::to_string);
        let named = |entity: &Entity, is_searched: bool| {
            logged_name(
                &snapshot,
                &entity.type_name,
                entity.id.as_deref(),
                is_searched,
            )
        };
        let subject = named(&request.subject, searched == Searched::Subject);
        let resource = named(&request.resource, searched == Searched::Resource);
        let action = request.action.as_ref().map(|action| {
            snapshot
                .action(&action.name)
                .map_or(action.name.as_str(), |uid| uid.id().unescaped())
        });
        let made;
        let request_id = match request_id {
            Some(id) => id,
            None => {
                made = crate::engine::new_request_id();
                &made
            }
        };
        log.record_search(&SearchEntry {
            time: std::time::SystemTime::now(),
            request_id,
            trace_id: crate::telemetry::trace::current_or_random(),
            search: searched_name(searched),
            subject: Text(&subject),
            action,
            resource: Text(&resource),
            outcome,
            results: found.map_or(0, |found| found.ids.len()),
            candidates,
            error: error.as_deref(),
            policy_version: snapshot.version(),
            latency_us: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            context: request.context.as_ref(),
        });
    }
    answer.map(|(response, _)| response)
}

/// The search's page, and what the whole search found.
async fn answer(
    engine: &Engine,
    settings: &SearchSettings,
    searched: Searched,
    body: &Bytes,
    request: &Search,
    snapshot: &PolicySnapshot,
) -> Result<(Response<Full<Bytes>>, Found), ApiError> {
    let missing = |field: &str| ApiError::InvalidBody {
        field: field.to_owned(),
        message: format!("`{field}` is required in this search"),
    };
    let subject_id = request.subject.id.as_deref().unwrap_or("");
    let resource_id = request.resource.id.as_deref().unwrap_or("");
    let action = match (searched, &request.action) {
        (Searched::Action, Some(_)) => {
            return Err(ApiError::InvalidBody {
                field: "action".to_owned(),
                message: "`action`: an action search names no action (it finds them)".to_owned(),
            });
        }
        (Searched::Action, None) => "",
        (_, Some(action)) => action.name.as_str(),
        (_, None) => return Err(missing("action")),
    };
    if searched != Searched::Subject && subject_id.is_empty() {
        return Err(missing("subject.id"));
    }
    if searched != Searched::Resource && resource_id.is_empty() {
        return Err(missing("resource.id"));
    }
    let page = request.page.as_ref();
    let asked_limit = page.and_then(|page| page.limit);
    if asked_limit == Some(0) {
        return Err(ApiError::InvalidBody {
            field: "page.limit".to_owned(),
            message: "`page.limit`: at least 1".to_owned(),
        });
    }
    let data = engine.data_version();
    let binding = binding(searched, body, snapshot.version(), data.as_deref())?;
    // A later page may leave `limit` out (the certification scenario's
    // follow-up sends the token alone): the token's limit holds then.
    let (offset, limit) = match page.and_then(|page| page.token.as_deref()) {
        Some(token) => {
            let (offset, carried) = verify(settings, &binding, token)?;
            (offset, asked_limit.or(carried))
        }
        None => (0, asked_limit),
    };
    let query = SearchQuery {
        subject: (&request.subject.type_name, subject_id),
        action,
        resource: (&request.resource.type_name, resource_id),
        context: request.context.as_ref(),
    };
    let found = match engine.remembered(&query, searched, settings.max_candidates) {
        Some(found) => found,
        None => {
            // Waiting for a turn counts against the time budget.
            let span = crate::telemetry::trace::stage(|| {
                tracing::info_span!(
                    target: crate::telemetry::trace::SPANS,
                    "search",
                    searched = searched_name(searched),
                )
            });
            let search = tracing::Instrument::instrument(
                async {
                    let _turn = settings.concurrent.acquire().await;
                    engine
                        .search(&query, searched, settings.max_candidates)
                        .await
                },
                span,
            );
            match tokio::time::timeout(settings.time_budget, search)
                .await
                .map_err(|_| ApiError::SearchOverBudget(settings.time_budget))?
            {
                Ok(found) => found,
                // No entity of a type the schema does not declare, nor an
                // action it does not name, can match: `[]`, not an error,
                // as the AuthZEN certification scenario requires (C.4.6).
                Err(SearchError::Unknown(_)) => Found {
                    pruned: true,
                    ..Found::default()
                },
                Err(error) => return Err(refusal(error)),
            }
        }
    };
    let total = found.ids.len();
    let start = offset.min(total);
    let end = limit
        .and_then(|limit| usize::try_from(limit).ok())
        .map_or(total, |limit| start.saturating_add(limit).min(total));
    let next_token = if end < total {
        sign(settings, &binding, end, limit)
    } else {
        String::new()
    };
    let results = results(
        searched,
        &request.subject.type_name,
        &request.resource.type_name,
        found.ids.get(start..end).unwrap_or_default(),
    );
    let response = json(
        StatusCode::OK,
        &Answer {
            page: PageOut {
                next_token,
                count: results.len(),
                total,
            },
            context: skipped_context(&found),
            results,
        },
    );
    Ok((response, found))
}

fn searched_name(searched: Searched) -> &'static str {
    match searched {
        Searched::Subject => "subject",
        Searched::Resource => "resource",
        Searched::Action => "action",
    }
}

/// How the log names a search's subject or resource: the canonical uid
/// (`Brokerage::User::"grace"`), or the type alone when it is searched.
fn logged_name(
    snapshot: &PolicySnapshot,
    type_name: &str,
    id: Option<&str>,
    searched: bool,
) -> String {
    match id {
        Some(id) if !searched => crate::engine::canonical_uid(snapshot, type_name, id),
        _ => snapshot
            .entity_type_printed(type_name)
            .map_or(type_name, |(_, printed)| printed)
            .to_owned(),
    }
}

/// The AuthZEN results of a search: `{"type", "id"}` in the type the
/// caller wrote (`user`, as asked), or `{"name"}` for actions.
pub fn results(
    searched: Searched,
    subject_type: &str,
    resource_type: &str,
    found: &[String],
) -> Vec<Value> {
    found
        .iter()
        .map(|id| match searched {
            Searched::Subject => serde_json::json!({"type": subject_type, "id": id}),
            Searched::Resource => serde_json::json!({"type": resource_type, "id": id}),
            Searched::Action => serde_json::json!({"name": id}),
        })
        .collect()
}

fn refusal(error: SearchError) -> ApiError {
    let (field, message) = match &error {
        SearchError::CannotList(_) => return ApiError::StoreUnavailable(error.to_string()),
        SearchError::Request(inner) => (String::from("context"), inner.message.clone()),
        SearchError::TooWide { .. } | SearchError::Unknown(_) => (String::new(), error.to_string()),
    };
    ApiError::InvalidBody { field, message }
}

/// What a token is bound to: the endpoint, the request without its token
/// (keys sorted), the policy version and, with a file store, the data's
/// digest. A `search/subject` token is no `search/resource` token, though
/// the bodies have the same fields. With a file store, a page after the
/// data changed is a 400 that says to start again. The HTTP store has no
/// version every replica shares: a later page is cut from the answer the
/// replica remembers while it is fresh, and after an invalidation from a
/// new answer, whose offsets may differ.
fn binding(
    searched: Searched,
    body: &[u8],
    version: &str,
    data: Option<&str>,
) -> Result<Vec<u8>, ApiError> {
    let mut value: Value = serde_json::from_slice(body).map_err(|e| ApiError::InvalidBody {
        field: String::new(),
        message: e.to_string(),
    })?;
    // The token carries the offset and the page size, so neither binds it.
    if let Some(page) = value.get_mut("page").and_then(Value::as_object_mut) {
        page.remove("token");
        page.remove("limit");
    }
    let mut bound = searched_name(searched).as_bytes().to_vec();
    bound.push(b'\n');
    bound.extend_from_slice(canonical(&value).as_bytes());
    bound.push(b'\n');
    bound.extend_from_slice(version.as_bytes());
    bound.push(b'\n');
    bound.extend_from_slice(data.unwrap_or_default().as_bytes());
    Ok(bound)
}

/// JSON with every object's keys sorted.
fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|key| {
                    format!(
                        "{}:{}",
                        Value::String(key.clone()),
                        map.get(key).map_or_else(String::new, canonical)
                    )
                })
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

fn tag(settings: &SearchSettings, binding: &[u8], offset: usize, limit: u64) -> String {
    let mut message = binding.to_vec();
    message.extend_from_slice(format!("\n{offset}\n{limit}").as_bytes());
    let tag = hmac::sign(&settings.token_key, &message);
    tag.as_ref()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A token for the page at `offset`, carrying the page size (`0`: none).
fn sign(settings: &SearchSettings, binding: &[u8], offset: usize, limit: Option<u64>) -> String {
    let limit = limit.unwrap_or(0);
    format!(
        "{offset:x}.{limit:x}.{}",
        tag(settings, binding, offset, limit)
    )
}

/// The offset and page size a token carries, if it was issued for this
/// request under these policies.
fn verify(
    settings: &SearchSettings,
    binding: &[u8],
    token: &str,
) -> Result<(usize, Option<u64>), ApiError> {
    let refused = || {
        ApiError::InvalidBody {
        field: "page.token".to_owned(),
        message: "`page.token` was not issued for this request (the same endpoint, every field but the token the same as the first page's, and the policies and entity data unchanged): start again without a token".to_owned(),
    }
    };
    let mut parts = token.splitn(3, '.');
    let (Some(offset), Some(limit), Some(mac)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(refused());
    };
    let offset = usize::from_str_radix(offset, 16).map_err(|_| refused())?;
    let limit = u64::from_str_radix(limit, 16).map_err(|_| refused())?;
    let expected = tag(settings, binding, offset, limit);
    // Compared whole, every byte, whatever differs first.
    let same = expected.len() == mac.len()
        && expected
            .bytes()
            .zip(mac.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok((offset, (limit > 0).then_some(limit)))
    } else {
        Err(refused())
    }
}
