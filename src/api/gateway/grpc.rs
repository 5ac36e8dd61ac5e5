//! Envoy's gRPC `ext_authz` (`envoy.service.auth.v3.Authorization/Check`),
//! the way Envoy and Istio meshes call an authorizer. The same question,
//! decision and [`Answer`] as HTTP forward-auth, copied onto gRPC: `OK`,
//! `PERMISSION_DENIED` (403 to the client) or `UNAUTHENTICATED` (401).

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HttpStatusCode,
};
use envoy_types::ext_authz::v3::{
    CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use tonic::codegen::Service;
use tracing::Instrument;

use super::{Answer, Question, RouteTable, decide};
use crate::api::{ApiError, ClientIdentity, Handler, REQUEST_ID};
use crate::engine::Engine;
use crate::telemetry::trace::{self, TraceParent};

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
        error.grpc().into_http()
    }
}

/// The [`Answer`] as Envoy takes it: allowed, the headers it copies
/// upstream; denied, the HTTP answer it gives the client (status, body,
/// request id, headers) under the answer's gRPC status.
fn check_response(answer: Answer, request_id: &str) -> CheckResponse {
    let status = tonic::Status::new(answer.grpc, answer.message);
    if answer.grpc == tonic::Code::Ok {
        let mut ok = OkHttpResponseBuilder::new();
        for (name, value) in answer.headers {
            ok.add_header(name, value, None, false);
        }
        let mut response = CheckResponse::with_status(status);
        response.set_http_response(ok.build());
        return response;
    }
    let mut denied = DeniedHttpResponseBuilder::new();
    let code = HttpStatusCode::try_from(i32::from(answer.status.as_u16()))
        .unwrap_or(HttpStatusCode::Forbidden);
    denied
        .set_http_status(code)
        .add_header("content-type", "application/json", None, false)
        .add_header(REQUEST_ID, request_id, None, false);
    for (name, value) in answer.headers {
        denied.add_header(name, value, None, false);
    }
    denied.set_body(answer.body);
    let mut response = CheckResponse::with_status(status);
    response.set_http_response(denied.build());
    response
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
        let request_id = match headers.get(REQUEST_ID) {
            Some(id) if crate::engine::acceptable_request_id(id) => id.clone(),
            _ => crate::engine::new_request_id(),
        };
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
        let question = Question::Attributes {
            method,
            path,
            headers,
        };
        let decided = decide(&self.engine, &self.routes, &question, &request_id);
        let verdict = trace::within(trace_id, sampled, decided.instrument(span)).await;
        let answer = Answer::of(&verdict, self.routes.deny_detail(), &request_id);
        let response = check_response(answer, &request_id);
        Ok(tonic::Response::new(response))
    }
}
