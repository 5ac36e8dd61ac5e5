//! Gateway forward-auth, `/gateway/authorize` (any method): the way nginx
//! `auth_request`, Envoy `ext_authz` (HTTP), Traefik `ForwardAuth` and Caddy
//! `forward_auth` ask. The original method and URI come from
//! `X-Original-Method`/`X-Original-URI` (nginx), `X-Forwarded-Method`/
//! `X-Forwarded-Uri` (Traefik, Caddy), or the request line itself below the
//! `/gateway/authorize` prefix (Envoy). 2xx allows, 403 denies, 401 when the
//! trusted principal header is missing.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;

use super::{Explanation, json};
use crate::engine::{Decision, DecisionRequest, Engine, EntityRef};
use crate::routes::RouteTable;

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

/// Decides the original request described by `method`, `path_and_query`
/// and `headers`, as the route table maps it.
pub async fn decide(
    engine: &Engine,
    routes: &RouteTable,
    method: &Method,
    path_and_query: &str,
    headers: &impl crate::routes::OriginalRequest,
) -> Verdict {
    let Some(principal) = routes.principal(headers) else {
        return Verdict::Refuse {
            status: StatusCode::UNAUTHORIZED,
            code: "no_principal",
            message: "the gateway sent no authenticated principal header".to_owned(),
        };
    };
    let Some(resolved) = routes.resolve(method, path_and_query, headers) else {
        return Verdict::Refuse {
            status: StatusCode::from_u16(routes.unmatched_status())
                .unwrap_or(StatusCode::NOT_FOUND),
            code: "no_route",
            message: format!("no gateway route matches `{method} {path_and_query}`"),
        };
    };
    let request = DecisionRequest {
        principal: EntityRef {
            type_name: routes.principal_type(),
            id: principal,
            properties: None,
        },
        action: resolved.action,
        resource: EntityRef {
            type_name: resolved.resource_type,
            id: &resolved.resource_id,
            properties: None,
        },
        context: Some(&resolved.context),
        entities: &[],
        request_id: headers.header(super::REQUEST_ID),
    };
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

/// The original method and path-and-query a gateway asks about.
fn original(method: &Method, path_and_query: &str, headers: &HeaderMap) -> (Method, String) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let claimed_method = header("x-original-method").or_else(|| header("x-forwarded-method"));
    let claimed_uri = header("x-original-uri").or_else(|| header("x-forwarded-uri"));
    let method = claimed_method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .unwrap_or_else(|| method.clone());
    let uri = claimed_uri.map_or_else(
        || {
            let below = path_and_query.strip_prefix(PREFIX).unwrap_or_default();
            if below.is_empty() || below.starts_with('?') {
                format!("/{below}")
            } else {
                below.to_owned()
            }
        },
        str::to_owned,
    );
    (method, uri)
}

/// `/gateway/authorize[/…]`, any method.
pub(super) async fn authorize(
    engine: &Engine,
    routes: &RouteTable,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
) -> Response<Full<Bytes>> {
    let (method, uri) = original(method, path_and_query, headers);
    match decide(engine, routes, &method, &uri, headers).await {
        Verdict::Allow(decision) => {
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
        Verdict::Deny(decision) => {
            let body =
                serde_json::json!({"decision": false, "context": Explanation::of(&decision)});
            let mut response = json(StatusCode::FORBIDDEN, &body);
            response
                .headers_mut()
                .insert("x-mandate-decision", HeaderValue::from_static("deny"));
            response
        }
        Verdict::Refuse {
            status,
            code,
            message,
        } => {
            let body =
                serde_json::json!({"decision": false, "error": {"code": code, "message": message}});
            let mut response = json(status, &body);
            response
                .headers_mut()
                .insert("x-mandate-decision", HeaderValue::from_static("deny"));
            response
        }
    }
}
