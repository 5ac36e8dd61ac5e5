//! Gateway forward-auth, one unit: the way nginx `auth_request`, Envoy
//! `ext_authz` (HTTP and gRPC), Traefik `ForwardAuth` and Caddy
//! `forward_auth` ask. A gateway's [`Question`] goes down the route table
//! once ([`RouteTable::resolve`]: the original request from the one source
//! `gateway.original` names — `X-Original-Method`/`X-Original-URI`
//! (nginx), `X-Forwarded-Method`/`X-Forwarded-Uri` (Traefik, Caddy), or
//! the request line below the `/gateway/authorize` prefix (Envoy), never a
//! fallback from one to another — the principal, the route), is decided,
//! and becomes one [`Answer`], which the HTTP endpoint (here) and the gRPC
//! service (`grpc.rs`) only copy onto their wire. 2xx allows; 403 denies or
//! refuses an ambiguous request; 401 when the trusted principal header is
//! missing or sent twice.
//!
//! `table.rs` holds the routes and the one trip down, `template.rs` the
//! path-template compiler, `trust.rs` the trust rules.

mod grpc;
mod table;
mod template;
mod trust;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;

use super::{ApiError, Explanation};
use crate::engine::{Decision, DecisionRequest, Engine, EntityRef, RequestEntities, RequestError};
pub use grpc::GrpcHandler;
pub use table::{Resolved, RouteError, RouteTable};
pub use trust::{Ambiguous, OriginalRequest};

/// The path prefix of forward-auth; Envoy appends the original path to it.
pub const PREFIX: &str = "/gateway/authorize";

/// What a gateway asks, as its wire carries it.
pub enum Question<'r, H> {
    /// HTTP forward-auth: the request to `/gateway/authorize[/…]`; the
    /// original request is in the headers `gateway.original` names, or in
    /// this request line below [`PREFIX`].
    Forwarded {
        /// this request's method
        method: &'r Method,
        /// this request's path and query
        path_and_query: &'r str,
        /// this request's headers
        headers: &'r H,
    },
    /// Envoy's gRPC `CheckRequest`: its attributes are the original request.
    Attributes {
        /// the original method, as Envoy wrote it
        method: &'r str,
        /// the original path and query
        path: &'r str,
        /// the original headers
        headers: &'r H,
    },
}

/// What one forward-auth question came to.
pub enum Verdict {
    /// decided by the policies (allowed, or denied, or failed closed)
    Decided(Decision),
    /// refused before deciding, or what the route made does not fit the schema
    Refused(ApiError),
}

/// A verdict as a gateway is answered, built once here for every wire: the
/// HTTP endpoint and the gRPC service copy it, neither decides what it says.
/// With `gateway.deny_detail` off a deny says nothing beyond its status and
/// the request id (the gateway often hands it to the end user).
pub struct Answer {
    /// 200, or the deny's 401, 403 or 404
    pub status: StatusCode,
    /// the gRPC code: `OK`, `PERMISSION_DENIED` or `UNAUTHENTICATED`
    pub grpc: tonic::Code,
    /// the gRPC status message (Envoy logs it, and may pass it on)
    pub message: String,
    /// the `x-mandate-…` headers gateways copy
    pub headers: Vec<(&'static str, String)>,
    /// the JSON body
    pub body: String,
}

impl Answer {
    /// How `verdict` is answered, with `deny_detail`, under `request_id`.
    pub fn of(verdict: &Verdict, deny_detail: bool, request_id: &str) -> Self {
        let (status, grpc, detail, message) = match verdict {
            Verdict::Decided(decision) if decision.allowed() => {
                return Self {
                    status: StatusCode::OK,
                    grpc: tonic::Code::Ok,
                    message: "allowed".to_owned(),
                    headers: vec![
                        ("x-mandate-decision", "allow".to_owned()),
                        (
                            "x-mandate-reasons",
                            decision.reasons().collect::<Vec<_>>().join(","),
                        ),
                        (
                            "x-mandate-policy-version",
                            decision.policy_version().to_owned(),
                        ),
                    ],
                    body: r#"{"decision":true}"#.to_owned(),
                };
            }
            Verdict::Decided(decision) => (
                StatusCode::FORBIDDEN,
                tonic::Code::PermissionDenied,
                serde_json::json!({"decision": false, "context": Explanation::of(decision)}),
                decision.summary().to_string(),
            ),
            Verdict::Refused(error) => {
                let (status, grpc) = error.answered();
                (
                    status,
                    grpc,
                    serde_json::json!({"decision": false, "error": {"code": error.code(), "message": error.to_string()}}),
                    error.to_string(),
                )
            }
        };
        if deny_detail {
            Self {
                status,
                grpc,
                message,
                headers: vec![("x-mandate-decision", "deny".to_owned())],
                body: detail.to_string(),
            }
        } else {
            Self {
                status,
                grpc,
                message: "denied".to_owned(),
                headers: Vec::new(),
                body: serde_json::json!({"decision": false, "request_id": request_id}).to_string(),
            }
        }
    }
}

/// The decision a matched route asks for `principal`.
fn route_request<'r>(
    principal: EntityRef<'r>,
    route: &'r Resolved<'_>,
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
        entities: RequestEntities::None,
        request_id,
    }
}

/// Decides a gateway's `question` as the route table maps it, under
/// `request_id`.
pub async fn decide<H: OriginalRequest>(
    engine: &Engine,
    routes: &RouteTable,
    question: &Question<'_, H>,
    request_id: &str,
) -> Verdict {
    let (principal, route) = match routes.resolve(question) {
        Ok(resolved) => resolved,
        Err(refusal) => return Verdict::Refused(refusal),
    };
    match engine
        .decide(&route_request(principal, &route, Some(request_id)))
        .await
    {
        Ok(decision) => Verdict::Decided(decision),
        // What the gateway sent does not fit the schema: fail closed.
        Err(error) => Verdict::Refused(ApiError::Refused {
            code: error.code,
            message: error.message,
        }),
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
    engine
        .decide(&route_request(subject, &route, request_id))
        .await
}

/// `/gateway/authorize[/…]`, any method: the [`Answer`] on HTTP, under the
/// request id [`super::Api::handle`] accepted or made.
pub(super) async fn authorize(
    engine: &Engine,
    routes: &RouteTable,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    request_id: &str,
) -> Response<Full<Bytes>> {
    let question = Question::Forwarded {
        method,
        path_and_query,
        headers,
    };
    let verdict = decide(engine, routes, &question, request_id).await;
    let answer = Answer::of(&verdict, routes.deny_detail(), request_id);
    let mut response = Response::new(Full::new(Bytes::from(answer.body)));
    *response.status_mut() = answer.status;
    let out = response.headers_mut();
    out.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in answer.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            out.insert(name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied() -> Verdict {
        Verdict::Decided(Decision::refused(
            "no_route",
            "no gateway route is `GET /x`".to_owned(),
            "v1".into(),
        ))
    }

    fn unauthenticated() -> Verdict {
        Verdict::Refused(ApiError::Unauthenticated {
            code: "no_principal",
            message: "the gateway sent no authenticated principal header".to_owned(),
        })
    }

    #[test]
    fn a_deny_says_why_only_with_deny_detail() {
        for verdict in [denied(), unauthenticated()] {
            let detailed = Answer::of(&verdict, true, "r-1");
            assert_eq!(
                detailed.headers,
                [("x-mandate-decision", "deny".to_owned())]
            );
            assert!(
                detailed.body.contains(r#""decision":false"#),
                "{}",
                detailed.body
            );
            assert_ne!(detailed.message, "denied");
            let generic = Answer::of(&verdict, false, "r-1");
            assert_eq!(
                (generic.status, generic.grpc),
                (detailed.status, detailed.grpc)
            );
            assert!(generic.headers.is_empty());
            assert_eq!(generic.body, r#"{"decision":false,"request_id":"r-1"}"#);
            assert_eq!(generic.message, "denied");
        }
    }

    #[test]
    fn each_verdict_has_one_status_and_grpc_code() {
        let denied = Answer::of(&denied(), true, "r");
        assert_eq!(
            (denied.status, denied.grpc),
            (StatusCode::FORBIDDEN, tonic::Code::PermissionDenied)
        );
        let unauthenticated = Answer::of(&unauthenticated(), true, "r");
        assert_eq!(
            (unauthenticated.status, unauthenticated.grpc),
            (StatusCode::UNAUTHORIZED, tonic::Code::Unauthenticated)
        );
        assert!(
            unauthenticated.body.contains(r#""code":"no_principal""#),
            "{}",
            unauthenticated.body
        );
    }
}
