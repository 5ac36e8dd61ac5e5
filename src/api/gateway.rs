//! Gateway forward-auth, `/gateway/authorize` (any method): the way nginx
//! `auth_request`, Envoy `ext_authz` (HTTP), Traefik `ForwardAuth` and Caddy
//! `forward_auth` ask. The original method and URI come from the one source
//! `gateway.original` names: `X-Original-Method`/`X-Original-URI` (nginx),
//! `X-Forwarded-Method`/`X-Forwarded-Uri` (Traefik, Caddy), or the request
//! line itself below the `/gateway/authorize` prefix (Envoy); never a
//! fallback from one to another. 2xx allows, 403 denies or refuses an
//! ambiguous request, 401 when the trusted principal header is missing or
//! sent twice.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;

use super::{Explanation, json};
use crate::engine::{Decision, DecisionRequest, Engine, EntityRef, RequestError};
use crate::routes::{OriginalRequest, Refusal, RouteTable, original_headers};

/// The path prefix of forward-auth; Envoy appends the original path to it.
pub const PREFIX: &str = "/gateway/authorize";

/// The outcome of one forward-auth question, independent of the wire.
pub enum Verdict {
    /// allowed
    Allow(Decision),
    /// denied by the policies, or failed closed
    Deny(Decision),
    /// refused before deciding: `status` with a `code` and `message`
    Refuse {
        /// 401, 403 or 404
        status: StatusCode,
        /// stable code
        code: &'static str,
        /// for a person
        message: String,
    },
}

impl From<Refusal> for Verdict {
    fn from(refusal: Refusal) -> Self {
        Verdict::Refuse {
            status: StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::FORBIDDEN),
            code: refusal.code,
            message: refusal.message,
        }
    }
}

/// What a deny tells the gateway, which often hands it to the end user:
/// with `gateway.deny_detail` off, a status and the request id, nothing that
/// says who is related to whom.
pub enum DenyBody {
    /// the explanation or refusal, as the decision log has it
    Detailed(serde_json::Value),
    /// `{"decision": false, "request_id": …}`
    Generic(serde_json::Value),
}

/// A verdict as the gateway is answered, on HTTP and gRPC alike.
pub enum Answer<'v> {
    /// allowed: the headers gateways copy come from the decision
    Allow(&'v Decision),
    /// denied or refused
    Deny {
        /// 401, 403 or 404
        status: StatusCode,
        /// what the body says
        body: DenyBody,
        /// the gRPC status message (Envoy logs it, and may pass it on):
        /// `denied` unless `gateway.deny_detail` is on
        message: String,
    },
}

impl Verdict {
    /// How this verdict is answered under `routes`' `gateway.deny_detail`.
    pub fn answer(&self, routes: &RouteTable, request_id: &str) -> Answer<'_> {
        let (status, detail, message) = match self {
            Verdict::Allow(decision) => return Answer::Allow(decision),
            Verdict::Deny(decision) => (
                StatusCode::FORBIDDEN,
                serde_json::json!({"decision": false, "context": Explanation::of(decision)}),
                decision.summary().to_string(),
            ),
            Verdict::Refuse {
                status,
                code,
                message,
            } => (
                *status,
                serde_json::json!({"decision": false, "error": {"code": code, "message": message}}),
                message.clone(),
            ),
        };
        if routes.deny_detail() {
            Answer::Deny {
                status,
                body: DenyBody::Detailed(detail),
                message,
            }
        } else {
            Answer::Deny {
                status,
                body: DenyBody::Generic(
                    serde_json::json!({"decision": false, "request_id": request_id}),
                ),
                message: "denied".to_owned(),
            }
        }
    }
}

/// The decision a matched route asks for `principal`.
fn route_request<'r>(
    principal: EntityRef<'r>,
    route: &'r crate::routes::Resolved<'_>,
    request_id: Option<&'r str>,
) -> DecisionRequest<'r> {
    DecisionRequest {
        principal,
        action: route.action,
        resource: EntityRef {
            type_name: route.resource_type,
            id: &route.resource_id,
            properties: None,
        },
        context: Some(&route.context),
        entities: crate::engine::RequestEntities::None,
        request_id,
    }
}

/// Decides the original request described by `method`, `path_and_query`
/// and `headers`, as the route table maps it, under `request_id`. The
/// caller has already checked where the original request came from
/// ([`original_headers`]).
pub async fn decide(
    engine: &Engine,
    routes: &RouteTable,
    method: &Method,
    path_and_query: &str,
    headers: &impl OriginalRequest,
    request_id: &str,
) -> Verdict {
    let principal = match routes.principal(headers) {
        Ok(principal) => principal,
        Err(refusal) => return refusal.into(),
    };
    let resolved = match routes.resolve(method, path_and_query, headers) {
        Ok(Some(resolved)) => resolved,
        Ok(None) => {
            return Verdict::Refuse {
                status: StatusCode::from_u16(routes.unmatched_status())
                    .unwrap_or(StatusCode::NOT_FOUND),
                code: "no_route",
                message: format!("no gateway route matches `{method} {path_and_query}`"),
            };
        }
        Err(refusal) => return refusal.into(),
    };
    let principal = EntityRef {
        type_name: routes.principal_type(),
        id: principal,
        properties: None,
    };
    let request = route_request(principal, &resolved, Some(request_id));
    match engine.decide(&request).await {
        Ok(decision) if decision.allowed() => Verdict::Allow(decision),
        Ok(decision) => Verdict::Deny(decision),
        // What the gateway sent does not fit the schema: fail closed.
        Err(error) => Verdict::Refuse {
            status: StatusCode::FORBIDDEN,
            code: error.code,
            message: error.message,
        },
    }
}

/// An AuthZEN evaluation about a route (`gateway.route_type`), as the
/// API-gateway interop asks it: `action.name` is the method and
/// `resource.id` the route's path template, decided as the route table's
/// route, on the action, resource and context it names, for the subject
/// named by its type and id. What a gateway adds (`resource.properties`:
/// the URI, host, parameters, client address; a `context` of headers; any
/// `properties` of the subject, whose data is the store's) is not read, so
/// it never changes the decision; no route with that method and template
/// is a deny (`no_route`), not an error.
///
/// # Errors
/// The engine's [`RequestError`]: a subject that does not fit the schema.
pub async fn route_question(
    engine: &Engine,
    routes: &RouteTable,
    subject: EntityRef<'_>,
    method: &str,
    template: &str,
    request_id: Option<&str>,
) -> Result<Decision, RequestError> {
    let Some(route) = routes.route_question(method, template) else {
        let version = engine.policies().current().version().clone();
        return Ok(Decision::refused(
            "no_route",
            format!("no gateway route is `{method} {template}`"),
            version,
        ));
    };
    let subject = EntityRef {
        properties: None,
        ..subject
    };
    let request = route_request(subject, &route, request_id);
    engine.decide(&request).await
}

/// The original method and path-and-query a gateway asks about, from the
/// one source this deployment configured.
fn original<'r>(
    routes: &RouteTable,
    method: &Method,
    path_and_query: &'r str,
    headers: &'r HeaderMap,
) -> Result<(Method, Cow<'r, str>), Refusal> {
    let Some(source) = routes.original() else {
        return Err(Refusal {
            status: 403,
            code: "no_route",
            message: "no gateway routes are configured".to_owned(),
        });
    };
    if let Some((method, uri)) = original_headers(source, headers)? {
        return Ok((method, Cow::Borrowed(uri)));
    }
    let below = path_and_query.strip_prefix(PREFIX).unwrap_or_default();
    let uri = if below.is_empty() || below.starts_with('?') {
        Cow::Owned(format!("/{below}"))
    } else {
        Cow::Borrowed(below)
    };
    Ok((method.clone(), uri))
}

/// `/gateway/authorize[/…]`, any method. `headers` carry the request id
/// [`super::Api::handle`] accepted or made.
pub(super) async fn authorize(
    engine: &Engine,
    routes: &RouteTable,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
) -> Response<Full<Bytes>> {
    let request_id = headers
        .get(super::REQUEST_ID)
        .and_then(|id| id.to_str().ok())
        .unwrap_or_default();
    let verdict = match original(routes, method, path_and_query, headers) {
        Ok((method, uri)) => decide(engine, routes, &method, &uri, headers, request_id).await,
        Err(refusal) => refusal.into(),
    };
    match verdict.answer(routes, request_id) {
        Answer::Allow(decision) => {
            let mut response = json(StatusCode::OK, &serde_json::json!({"decision": true}));
            let out = response.headers_mut();
            out.insert("x-mandate-decision", HeaderValue::from_static("allow"));
            let reasons = decision.reasons().collect::<Vec<_>>().join(",");
            if let Ok(value) = HeaderValue::from_str(&reasons) {
                out.insert("x-mandate-reasons", value);
            }
            if let Ok(value) = HeaderValue::from_str(decision.policy_version()) {
                out.insert("x-mandate-policy-version", value);
            }
            response
        }
        Answer::Deny {
            status,
            body: DenyBody::Detailed(body),
            ..
        } => {
            let mut response = json(status, &body);
            response
                .headers_mut()
                .insert("x-mandate-decision", HeaderValue::from_static("deny"));
            response
        }
        Answer::Deny {
            status,
            body: DenyBody::Generic(body),
            ..
        } => json(status, &body),
    }
}
