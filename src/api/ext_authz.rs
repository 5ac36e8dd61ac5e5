//! Envoy's gRPC `ext_authz` (`envoy.service.auth.v3.Authorization/Check`),
//! the way Envoy and Istio meshes call an authorizer. The same route table
//! and the same decision as HTTP forward-auth; the answer is `OK`,
//! `PERMISSION_DENIED` (403 to the client) or `UNAUTHENTICATED` (401).

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HttpStatusCode,
};
use envoy_types::ext_authz::v3::{
    CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use http::StatusCode;

use tonic::codegen::Service;

use super::gateway::{Answer, DenyBody, Verdict, decide};
use super::{ApiError, ClientIdentity, Handler};
use crate::config::OriginalSource;
use crate::engine::Engine;
use crate::routes::{RouteTable, original_headers};
use crate::telemetry::trace::{self, TraceParent};
use tracing::Instrument;

/// The `Authorization` service over an engine and a route table.
pub struct ExtAuthz {
    engine: Arc<Engine>,
    routes: Arc<RouteTable>,
}

/// The gRPC listener's handler: the `Authorization` service behind the same
/// client-identity check as the HTTP decision endpoints, its refusals as
/// gRPC statuses.
pub struct GrpcHandler {
    service: AuthorizationServer<ExtAuthz>,
    allowed_clients: Vec<String>,
}

impl GrpcHandler {
    /// The handler; `allowed_clients` as `tls.allowed_clients.decisions`
    /// (empty: any client the TLS layer admits).
    pub fn new(engine: Arc<Engine>, routes: Arc<RouteTable>, allowed_clients: Vec<String>) -> Self {
        Self {
            service: AuthorizationServer::new(ExtAuthz { engine, routes }),
            allowed_clients,
        }
    }
}

impl Handler for GrpcHandler {
    type Body = tonic::body::Body;

    async fn handle(
        &self,
        request: http::Request<hyper::body::Incoming>,
    ) -> http::Response<Self::Body> {
        if !self.allowed_clients.is_empty() {
            let known = request
                .extensions()
                .get::<ClientIdentity>()
                .is_some_and(|id| id.0.iter().any(|name| self.allowed_clients.contains(name)));
            if !known {
                return tonic::Status::permission_denied(
                    "the client certificate names no identity allowed here",
                )
                .into_http();
            }
        }
        // The generated server is always ready: no `poll_ready` needed.
        let mut service = self.service.clone();
        match service.call(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    fn refuse(&self, error: &ApiError) -> http::Response<Self::Body> {
        let message = error.to_string();
        let status = match error {
            ApiError::TooManyConnections(_) => tonic::Status::unavailable(message),
            ApiError::RequestTimeout(_) => tonic::Status::deadline_exceeded(message),
            _ => tonic::Status::invalid_argument(message),
        };
        status.into_http()
    }
}

/// The HTTP answer Envoy gives the client: the status, the body, the
/// request id, and (with `gateway.deny_detail`) `x-mandate-decision`.
fn denied(
    status: StatusCode,
    body: &DenyBody,
    request_id: &str,
) -> envoy_types::ext_authz::v3::pb::DeniedHttpResponse {
    let mut builder = DeniedHttpResponseBuilder::new();
    let code =
        HttpStatusCode::try_from(i32::from(status.as_u16())).unwrap_or(HttpStatusCode::Forbidden);
    builder
        .set_http_status(code)
        .add_header("content-type", "application/json", None, false)
        .add_header(super::REQUEST_ID, request_id, None, false);
    match body {
        DenyBody::Detailed(body) => builder
            .add_header("x-mandate-decision", "deny", None, false)
            .set_body(body.to_string()),
        DenyBody::Generic(body) => builder.set_body(body.to_string()),
    };
    builder.build()
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        // The trace: Envoy's own call's (its metadata), else the original
        // request's, exactly one value either way.
        let one = |values: tonic::metadata::GetAll<'_, tonic::metadata::Ascii>| {
            let mut values = values.iter();
            match (values.next(), values.next()) {
                (Some(value), None) => value.to_str().ok().map(str::to_owned),
                _ => None,
            }
        };
        let from_metadata = one(request.metadata().get_all(trace::TRACEPARENT));
        let state_from_metadata = one(request.metadata().get_all(trace::TRACESTATE));
        let check = request.into_inner();
        let empty = HashMap::new();
        let http = check
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        let (method, path, headers) = match http {
            Some(http) => (http.method.as_str(), http.path.as_str(), &http.headers),
            None => ("", "", &empty),
        };
        // Envoy's own attributes are the original request; a header that
        // claims another one, or overrides the method, is refused.
        let request_id = match headers.get(super::REQUEST_ID) {
            Some(id) if crate::engine::acceptable_request_id(id) => id.clone(),
            _ => crate::engine::new_request_id(),
        };
        let verdict = match (
            original_headers(OriginalSource::RequestLine, headers),
            http::Method::from_bytes(method.as_bytes()),
        ) {
            (Err(refusal), _) => refusal.into(),
            (Ok(_), Err(_)) => Verdict::Refuse {
                status: StatusCode::FORBIDDEN,
                code: "ambiguous_request",
                message: format!("`{method}` is not a method"),
            },
            (Ok(_), Ok(method)) => {
                let (parent, tracestate) = match from_metadata {
                    Some(value) => (TraceParent::parse(&value), state_from_metadata),
                    None => (
                        headers
                            .get(trace::TRACEPARENT)
                            .and_then(|value| TraceParent::parse(value)),
                        headers.get(trace::TRACESTATE).cloned(),
                    ),
                };
                let span = tracing::info_span!(
                    target: trace::SPANS,
                    "ext_authz.check",
                    otel.kind = "server",
                    http.request.method = %method,
                );
                let (trace_id, sampled) =
                    crate::telemetry::otel::begin(&span, parent.as_ref(), tracestate.as_deref());
                let decided = decide(
                    &self.engine,
                    &self.routes,
                    &method,
                    path,
                    headers,
                    &request_id,
                );
                trace::within(trace_id, sampled, decided.instrument(span)).await
            }
        };
        let response = match verdict.answer(&self.routes, &request_id) {
            Answer::Allow(decision) => {
                let mut ok = OkHttpResponseBuilder::new();
                ok.add_header("x-mandate-decision", "allow", None, false)
                    .add_header(
                        "x-mandate-reasons",
                        decision.reasons().collect::<Vec<_>>().join(","),
                        None,
                        false,
                    )
                    .add_header(
                        "x-mandate-policy-version",
                        decision.policy_version(),
                        None,
                        false,
                    );
                let mut response = CheckResponse::with_status(tonic::Status::ok("allowed"));
                response.set_http_response(ok.build());
                response
            }
            Answer::Deny {
                status,
                body,
                message,
            } => {
                let rpc = if status == StatusCode::UNAUTHORIZED {
                    tonic::Status::unauthenticated(message)
                } else {
                    tonic::Status::permission_denied(message)
                };
                let mut response = CheckResponse::with_status(rpc);
                response.set_http_response(denied(status, &body, &request_id));
                response
            }
        };
        Ok(tonic::Response::new(response))
    }
}
