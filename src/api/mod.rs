//! The HTTP interfaces: route a request, decode its wire format into a
//! [`DecisionRequest`](crate::engine::DecisionRequest), encode the
//! [`Decision`] back. One file per wire format; `error.rs` is the one map
//! from error to status.
//!
//! Knows HTTP, never sockets or TLS.

mod admin;
mod authzen;
mod error;
pub mod gateway;
mod native;
mod openapi;
mod quick;
mod search;
mod strict;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde::Serialize;

pub use error::ApiError;
pub use gateway::{GrpcHandler, RouteError, RouteTable};
pub use search::{SearchSettings, results as search_results, skipped_context};

use crate::engine::{Decision, DecisionError, Engine, Field, RequestError, Searched, StoreHealth};
use crate::support::json as encode;
use crate::telemetry::metrics;
use crate::telemetry::trace::{self, TraceParent};
use tracing::Instrument;

/// Limits the API enforces on each request.
#[derive(Debug, Clone, Copy)]
pub struct ApiLimits {
    /// largest body accepted, bytes
    pub max_body_bytes: usize,
    /// most items in one batch
    pub max_batch_items: usize,
    /// deepest JSON nesting accepted
    pub max_json_depth: usize,
    /// most request-supplied entities one request may use
    pub max_request_entities: usize,
    /// most explained items in one request; 0: explanations are off
    /// (`api.explain`)
    pub max_explain_items: usize,
    /// time a refused body is read and dropped, at most
    pub lingering_time: std::time::Duration,
    /// lingering stops after a read waits this long
    pub lingering_timeout: std::time::Duration,
}

/// Who may call the admin endpoints (cache invalidation, policy reload).
#[derive(Debug, Clone)]
pub enum AdminAccess {
    /// anyone who reaches the listener (it is bound to loopback)
    Open,
    /// callers presenting `Authorization: Bearer <token>`
    Token(String),
    /// nobody on this listener
    Closed,
}

/// Which endpoints a listener answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// everything (no separate admin listener)
    All,
    /// decisions, health and metrics (an admin listener exists)
    Decisions,
    /// admin, health and metrics (the admin listener)
    Admin,
}

/// The identities a client's TLS certificate names, attached to each
/// request by the listener (mutual TLS only; a request with none carries
/// none).
#[derive(Debug, Clone, Default)]
pub struct ClientIdentity(pub Vec<String>);

/// How one listener's API behaves.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// per-request limits
    pub limits: ApiLimits,
    /// who may call admin endpoints
    pub admin: AdminAccess,
    /// which endpoints this listener answers
    pub surface: Surface,
    /// client identities allowed on decisions (empty: any)
    pub decision_clients: Vec<String>,
    /// client identities allowed on admin (empty: any)
    pub admin_clients: Vec<String>,
    /// `http` or `https`, for the metadata document's URLs
    pub scheme: &'static str,
    /// the base URL the metadata document names (`server.public_url`);
    /// without it, a well-formed `Host`, else the listener's address
    pub public_url: Option<String>,
    /// the listener's address, as `host:port`
    pub listen_authority: String,
    /// the search APIs' bound and token key
    pub search: SearchSettings,
}

/// An HTTP service a listener serves: answers each request, and refuses a
/// request the listener will not serve (too many connections, too slow) in
/// its own wire format. The server knows only this.
pub trait Handler: Send + Sync + 'static {
    /// The response body.
    type Body: hyper::body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static;

    /// Answers one request; never fails.
    fn handle(
        &self,
        request: Request<hyper::body::Incoming>,
    ) -> impl std::future::Future<Output = Response<Self::Body>> + Send;

    /// The answer to a request the listener refuses.
    fn refuse(&self, error: &ApiError) -> Response<Self::Body>;
}

impl Handler for Api {
    type Body = Full<Bytes>;

    fn handle(
        &self,
        request: Request<hyper::body::Incoming>,
    ) -> impl std::future::Future<Output = Response<Self::Body>> + Send {
        Api::handle(self, request)
    }

    fn refuse(&self, error: &ApiError) -> Response<Self::Body> {
        let mut response = refusal(error);
        if matches!(error, ApiError::TooManyConnections(_)) {
            response
                .headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// The HTTP API over one [`Engine`].
pub struct Api {
    engine: Arc<Engine>,
    routes: Arc<RouteTable>,
    settings: ApiSettings,
}

/// The header a caller may set to correlate a decision; echoed back, and
/// made up when the caller sends none.
pub const REQUEST_ID: &str = "x-request-id";

/// [`REQUEST_ID`] as a header name, made at compile time: a `&str` name is
/// parsed again on every lookup.
const REQUEST_ID_HEADER: http::HeaderName = http::HeaderName::from_static(REQUEST_ID);

/// The caller's `X-Request-ID`, when it sent exactly one acceptable value.
fn caller_request_id(headers: &http::HeaderMap) -> Option<&HeaderValue> {
    let mut values = headers.get_all(&REQUEST_ID_HEADER).iter();
    match (values.next(), values.next()) {
        (Some(id), None) => id
            .to_str()
            .is_ok_and(crate::engine::acceptable_request_id)
            .then_some(id),
        _ => None,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Decision,
    Admin,
}

impl Api {
    /// The API of one listener.
    pub fn new(engine: Arc<Engine>, routes: Arc<RouteTable>, settings: ApiSettings) -> Self {
        Self {
            engine,
            routes,
            settings,
        }
    }

    /// Answers one request. Never fails: every error is a JSON response.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        // Every request has an id: the caller's when it is one plain short
        // value, else one made here (the caller's never logged), so that its
        // decision log line and its answer carry the same one.
        let request_id = match caller_request_id(request.headers()) {
            // A copy: a value borrowed from hyper's read buffer, held until
            // the answer, would keep that buffer alive beside the new one
            // the connection reads into.
            Some(id) => HeaderValue::from_bytes(id.as_bytes()).ok(),
            None => HeaderValue::from_bytes(&crate::engine::new_request_id_digits()).ok(),
        };
        let route = route_label(request.uri().path());
        let http1 = request.version() <= http::Version::HTTP_11;
        // The caller's trace, joined by our span when spans are exported;
        // the decision lines carry its id either way.
        let parent = TraceParent::from_headers(request.headers());
        let span = tracing::info_span!(
            target: trace::SPANS,
            "request",
            otel.kind = "server",
            http.route = route,
            http.request.method = %request.method(),
        );
        let tracestate = (!span.is_disabled())
            .then(|| trace::tracestate(request.headers()))
            .flatten();
        let (trace_id, sampled) = crate::telemetry::otel::begin(&span, parent.as_ref(), tracestate);
        // Boxed where it is made: the routing future holds every endpoint's
        // state (kilobytes); wrapped unboxed, the span, the trace scope, the
        // server's timeout and hyper would each copy it whole.
        let id = request_id.as_ref().and_then(|id| id.to_str().ok());
        let routed = Box::pin(self.route(request, id));
        let mut response = match trace::within(trace_id, sampled, routed.instrument(span)).await {
            Ok(response) => response,
            Err(error) => refusal(&error),
        };
        metrics().http_request(route, response.status().as_u16());
        if http1 && response.status() == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body is not read: the connection cannot carry
            // another request, and closing it says so before the client
            // sends more.
            response
                .headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(id) = request_id {
            response.headers_mut().insert(&REQUEST_ID_HEADER, id);
        }
        response
    }

    /// Whether this listener answers `kind`, and the caller may ask it.
    fn admit<B>(&self, kind: Kind, request: &Request<B>) -> Result<(), ApiError> {
        let path = request.uri().path();
        let answered = match (self.settings.surface, kind) {
            (Surface::All, _) => true,
            (Surface::Decisions, Kind::Decision) | (Surface::Admin, Kind::Admin) => true,
            (Surface::Decisions, Kind::Admin) | (Surface::Admin, Kind::Decision) => false,
        };
        if !answered {
            return Err(ApiError::NotFound(path.to_owned()));
        }
        let allowed = match kind {
            Kind::Decision => &self.settings.decision_clients,
            Kind::Admin => &self.settings.admin_clients,
        };
        if !allowed.is_empty() {
            let identity = request.extensions().get::<ClientIdentity>();
            let known = identity.is_some_and(|id| id.0.iter().any(|name| allowed.contains(name)));
            if !known {
                return Err(ApiError::Forbidden(
                    "the client certificate names no identity allowed here",
                ));
            }
        }
        if kind == Kind::Admin {
            admin::authorize(&self.settings.admin, request.headers())?;
        }
        Ok(())
    }

    /// Answers `request` under `request_id` ([`Self::handle`]'s, the
    /// caller's or made there).
    async fn route<B>(
        &self,
        request: Request<B>,
        request_id: Option<&str>,
    ) -> Result<Response<Full<Bytes>>, ApiError>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        // The path outlives the request moved into an endpoint: the URI's
        // bytes are shared with it, not copied.
        let uri = request.uri().clone();
        let path = uri.path();
        let method = request.method().clone();
        let expect = |allowed: &'static str, wanted: Method| {
            if method == wanted {
                Ok(())
            } else {
                Err(ApiError::MethodNotAllowed {
                    method: method.to_string(),
                    path: path.to_owned(),
                    allowed,
                })
            }
        };
        if path == gateway::PREFIX || path.starts_with("/gateway/authorize/") {
            self.admit(Kind::Decision, &request)?;
            // A route may read the request's headers: they carry the id
            // answered (one made in place of a caller's unusable one).
            let mut request = request;
            let headers = request.headers_mut();
            match request_id.and_then(|id| HeaderValue::from_str(id).ok()) {
                Some(id) => drop(headers.insert(&REQUEST_ID_HEADER, id)),
                None => drop(headers.remove(&REQUEST_ID_HEADER)),
            }
            let path_and_query = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
            return Ok(Box::pin(gateway::authorize(
                &self.engine,
                &self.routes,
                &method,
                path_and_query,
                request.headers(),
                request_id.unwrap_or_default(),
            ))
            .await);
        }
        let limits = &self.settings.limits;
        // Every endpoint but the common evaluation is awaited boxed: this
        // future is as large as its largest arm, and every request's is
        // made and moved whole.
        match path {
            "/access/v1/evaluation" => {
                self.admit(Kind::Decision, &request)?;
                expect("POST", Method::POST)?;
                let body = self.json_body_unchecked(request).await?;
                let max_depth = limits.max_json_depth;
                authzen::evaluation(&self.engine, &self.routes, &body, max_depth, request_id).await
            }
            "/access/v1/evaluations" => {
                self.admit(Kind::Decision, &request)?;
                expect("POST", Method::POST)?;
                let body = self.json_body(request).await?;
                Box::pin(authzen::evaluations(
                    &self.engine,
                    &self.routes,
                    &body,
                    limits.max_batch_items,
                    request_id,
                ))
                .await
            }
            "/access/v1/search/subject"
            | "/access/v1/search/resource"
            | "/access/v1/search/action" => {
                self.admit(Kind::Decision, &request)?;
                expect("POST", Method::POST)?;
                let searched = match path {
                    "/access/v1/search/subject" => Searched::Subject,
                    "/access/v1/search/resource" => Searched::Resource,
                    _ => Searched::Action,
                };
                let body = self.json_body(request).await?;
                Box::pin(search::search(
                    &self.engine,
                    &self.settings.search,
                    searched,
                    &body,
                    request_id,
                ))
                .await
            }
            "/.well-known/authzen-configuration" => {
                self.admit(Kind::Decision, &request)?;
                expect("GET", Method::GET)?;
                Ok(authzen::metadata(&request, &self.settings))
            }
            "/v1/is_authorized" => {
                self.admit(Kind::Decision, &request)?;
                expect("POST", Method::POST)?;
                let body = self.body(request).await?;
                Box::pin(native::is_authorized(
                    &self.engine,
                    &body,
                    limits,
                    request_id,
                ))
                .await
            }
            "/v1/is_authorized/batch" => {
                self.admit(Kind::Decision, &request)?;
                expect("POST", Method::POST)?;
                let body = self.body(request).await?;
                Box::pin(native::batch(&self.engine, &body, limits, request_id)).await
            }
            "/openapi.yaml" => {
                expect("GET", Method::GET)?;
                Ok(openapi::yaml())
            }
            "/openapi.json" => {
                expect("GET", Method::GET)?;
                Ok(openapi::json())
            }
            "/healthz" => {
                expect("GET", Method::GET)?;
                Ok(json(StatusCode::OK, &serde_json::json!({"status": "ok"})))
            }
            "/readyz" => {
                expect("GET", Method::GET)?;
                Ok(Box::pin(self.readiness()).await)
            }
            "/metrics" => {
                expect("GET", Method::GET)?;
                metrics().observe_bus_age();
                let cached = self.engine.cached_entities().await;
                metrics()
                    .cache_entries
                    .set(i64::try_from(cached).unwrap_or(i64::MAX));
                let mut response = Response::new(Full::new(Bytes::from(metrics().render())));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                Ok(response)
            }
            "/admin/v1/policies/reload" => {
                self.admit(Kind::Admin, &request)?;
                expect("POST", Method::POST)?;
                Ok(admin::reload(&self.engine))
            }
            "/admin/v1/cache/invalidate" => {
                self.admit(Kind::Admin, &request)?;
                expect("POST", Method::POST)?;
                let body = self.body(request).await?;
                Box::pin(admin::invalidate(&self.engine, &body)).await
            }
            _ => Err(ApiError::NotFound(path.to_owned())),
        }
    }

    async fn readiness(&self) -> Response<Full<Bytes>> {
        let readiness = self.engine.readiness().await;
        let snapshot = &readiness.snapshot;
        let (status, store) = match readiness.store {
            StoreHealth::Answering => (StatusCode::OK, "ready"),
            StoreHealth::Degraded => (StatusCode::OK, "degraded"),
            StoreHealth::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        };
        let mut body = serde_json::json!({
            "status": if status == StatusCode::OK { "ready" } else { "not_ready" },
            "policy_version": snapshot.version().as_ref(),
            "policies": snapshot.policy_count(),
            "entity_store": store,
        });
        // The bus never makes a replica unready: without it, entities are
        // kept for `cache.ttl_without_bus` only, and decisions go on.
        if let (Some(bus), Some(fields)) = (readiness.bus, body.as_object_mut()) {
            fields.insert("bus".to_owned(), serde_json::json!(bus.label()));
        }
        json(status, &body)
    }

    /// The body of an AuthZEN request: as [`Self::body`], and refused with
    /// a 400 when it declares a media type other than `application/json`
    /// (parameters such as `charset` aside), as the AuthZEN certification
    /// scenario requires. A body that declares none is read as JSON.
    fn json_body<B>(&self, request: Request<B>) -> impl Future<Output = Result<Bytes, ApiError>>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        self.json_read(request, true)
    }

    /// As [`Self::json_body`], but the JSON checks ([`check_json`]) left to
    /// the caller, who may read the body in one pass instead; a body
    /// refused for its media type is checked first, so its faults are
    /// named in the same order as any other body's.
    fn json_body_unchecked<B>(
        &self,
        request: Request<B>,
    ) -> impl Future<Output = Result<Bytes, ApiError>>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        self.json_read(request, false)
    }

    /// [`Self::json_body`] when `checked`, else [`Self::json_body_unchecked`].
    fn json_read<B>(
        &self,
        request: Request<B>,
        checked: bool,
    ) -> impl Future<Output = Result<Bytes, ApiError>>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let refused = not_json(request.headers());
        let max_depth = self.settings.limits.max_json_depth;
        self.read_body(request, move |body| {
            let body = refused_media_type(body, refused, max_depth)?;
            if checked {
                check_json(&body, max_depth)?;
            }
            Ok(body)
        })
    }

    /// A body, read within `limits.max_body_bytes`, and checked
    /// ([`check_json`]).
    fn body<B>(&self, request: Request<B>) -> impl Future<Output = Result<Bytes, ApiError>>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let max_depth = self.settings.limits.max_json_depth;
        self.read_body(request, move |body| {
            check_json(&body, max_depth)?;
            Ok(body)
        })
    }

    /// A body, read within `limits.max_body_bytes` (a larger one refused,
    /// and lingered over on HTTP/1.1), then handed to `then`, the caller's
    /// check: read whole first, so a body `then` refuses leaves the
    /// connection clean. The request's head is read and dropped at once:
    /// the one future, which every request's own future holds, holds only
    /// the body (an `async fn` would keep the whole request in it, and
    /// each caller wrapping it a copy of it again).
    fn read_body<B>(
        &self,
        request: Request<B>,
        then: impl FnOnce(Bytes) -> Result<Bytes, ApiError>,
    ) -> impl Future<Output = Result<Bytes, ApiError>>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let limits = &self.settings.limits;
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        // HTTP/2 ends the stream with the answer (RST_STREAM NO_ERROR) and
        // the connection lives on: nothing to linger for.
        let http1 = request.version() < http::Version::HTTP_2;
        // Reading its body would answer `100 Continue`, inviting it whole.
        let waits_for_continue = request
            .headers()
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let body = request.into_body();
        async move {
            let limit = limits.max_body_bytes;
            let mut body = std::pin::pin!(body);
            if declared.is_some_and(|len| len > limit) {
                return Err(too_large(body, http1 && !waits_for_continue, limits).await);
            }
            // Read frame by frame (most bodies are one): the first kept as
            // it came, any more appended to a buffer of our own.
            let (mut first, mut more, mut total) = (None::<Bytes>, Vec::new(), 0usize);
            while let Some(frame) = body.as_mut().frame().await {
                let frame = frame.map_err(|e| ApiError::BodyRead(e.to_string()))?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                total = total.saturating_add(data.len());
                if total > limit {
                    return Err(too_large(body, http1, limits).await);
                }
                match first.take() {
                    None if more.is_empty() => first = Some(data),
                    kept => {
                        more.extend_from_slice(kept.as_deref().unwrap_or_default());
                        more.extend_from_slice(&data);
                    }
                }
            }
            // A copy of our own: a slice of hyper's read buffer, held while
            // the request is decided, would keep the connection's old
            // buffer alive beside the new one its next read takes.
            then(match first {
                Some(data) => Bytes::copy_from_slice(&data),
                None => Bytes::from(more),
            })
        }
    }
}

/// `body`, or the 400 for a body that declared a media type other than
/// JSON (`refused`'s message), its JSON checked first so that its faults
/// are named in the same order as any other body's.
fn refused_media_type(
    body: Bytes,
    refused: Option<String>,
    max_depth: usize,
) -> Result<Bytes, ApiError> {
    match refused {
        Some(message) => {
            check_json(&body, max_depth)?;
            Err(ApiError::InvalidRequest {
                field: String::new(),
                code: "unsupported_content_type",
                message,
            })
        }
        None => Ok(body),
    }
}

/// The checks every JSON body passes before it is read: nested at most
/// `max_depth` deep, and no key twice in one object (one reading only).
///
/// # Errors
/// [`ApiError::TooDeep`], or `duplicate_key` naming the key.
fn check_json(body: &[u8], max_depth: usize) -> Result<(), ApiError> {
    if json_depth_exceeds(body, max_depth) {
        return Err(ApiError::TooDeep { limit: max_depth });
    }
    if let Some(field) = strict::duplicate_key(body) {
        return Err(ApiError::InvalidRequest {
            message: format!("`{field}` is sent more than once; each key may appear once"),
            field,
            code: "duplicate_key",
        });
    }
    Ok(())
}

/// Why the declared media type is refused, if it is: another than
/// `application/json`, or two of them (which one would the body be?).
fn not_json(headers: &http::HeaderMap) -> Option<String> {
    let mut declared = headers.get_all(CONTENT_TYPE).iter();
    match (declared.next(), declared.next()) {
        (None, _) => None,
        (Some(value), None) if is_json(value) => None,
        (Some(value), None) => Some(format!(
            "`Content-Type` is `{}`; send `application/json`",
            String::from_utf8_lossy(value.as_bytes())
        )),
        (Some(_), Some(_)) => {
            Some("`Content-Type` is sent twice; send one, `application/json`".to_owned())
        }
    }
}

/// Whether a `Content-Type` names `application/json`, in any case, with
/// or without parameters (`application/json; charset=utf-8`).
fn is_json(value: &HeaderValue) -> bool {
    let media = value
        .as_bytes()
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default();
    media.trim_ascii().eq_ignore_ascii_case(b"application/json")
}

/// The refusal of a body over `limits.max_body_bytes`, after lingering
/// over the rest of it when `lingers` (HTTP/1.1). The lingering is awaited
/// boxed: its timers would make every request's body-reading future larger.
async fn too_large<B: hyper::body::Body<Data = Bytes>>(
    body: std::pin::Pin<&mut B>,
    lingers: bool,
    limits: &ApiLimits,
) -> ApiError {
    if lingers {
        Box::pin(linger(
            body,
            limits.lingering_time,
            limits.lingering_timeout,
        ))
        .await;
    }
    ApiError::BodyTooLarge {
        limit: limits.max_body_bytes,
    }
}

/// Reads and drops the rest of a refused (too large) `body` until it ends,
/// for at most `time` in all and `timeout` a read, as nginx's lingering
/// close: a client still sending when the connection closed would get a
/// reset instead of the 413. Bounded by time, not bytes: a client sending
/// fast must be read to its end, however much that is.
async fn linger<B: hyper::body::Body<Data = Bytes>>(
    mut body: std::pin::Pin<&mut B>,
    time: std::time::Duration,
    timeout: std::time::Duration,
) {
    let until = tokio::time::Instant::now() + time;
    loop {
        let by = until.min(tokio::time::Instant::now() + timeout);
        match tokio::time::timeout_at(by, body.as_mut().frame()).await {
            Ok(Some(Ok(_))) => {}
            _ => return,
        }
    }
}

/// The JSON answer for a refused request: status and `{"error": {...}}`;
/// a refusal by a limit is counted.
pub fn refusal(error: &ApiError) -> Response<Full<Bytes>> {
    if error.is_limit() {
        metrics().refusal(error.code());
    }
    json(error.status(), &error.body())
}

/// The route label of a path, from a closed set.
fn route_label(path: &str) -> &'static str {
    match path {
        "/access/v1/evaluation" => "evaluation",
        "/access/v1/evaluations" => "evaluations",
        "/.well-known/authzen-configuration" => "authzen_configuration",
        "/access/v1/search/subject" => "search_subject",
        "/access/v1/search/resource" => "search_resource",
        "/access/v1/search/action" => "search_action",
        "/v1/is_authorized" => "is_authorized",
        "/v1/is_authorized/batch" => "is_authorized_batch",
        "/openapi.yaml" | "/openapi.json" => "openapi",
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        "/metrics" => "metrics",
        "/admin/v1/policies/reload" => "policies_reload",
        "/admin/v1/cache/invalidate" => "cache_invalidate",
        p if p == gateway::PREFIX || p.starts_with("/gateway/authorize/") => "gateway",
        _ => "other",
    }
}

/// Whether `body` nests arrays and objects deeper than `limit`, counted
/// outside strings; checked before parsing, so a deep document costs one scan.
fn json_depth_exceeds(body: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in body {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// A JSON response.
fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    json_bytes(
        status,
        serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec()),
    )
}

/// A JSON response of a body written already.
fn json_bytes(status: StatusCode, bytes: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(bytes.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The reasons and errors of a decision, as both APIs carry them.
#[derive(Serialize)]
struct Explanation<'a> {
    reasons: Vec<&'a str>,
    errors: Vec<ErrorOut<'a>>,
    policy_version: &'a str,
    summary: crate::engine::Summary<'a>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stale_data: bool,
}

#[derive(Serialize)]
struct ErrorOut<'a> {
    code: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<&'a str>,
}

impl<'a> Explanation<'a> {
    fn of(decision: &'a Decision) -> Self {
        Self {
            reasons: decision.reasons().collect(),
            errors: decision.errors().iter().map(ErrorOut::of).collect(),
            policy_version: decision.policy_version(),
            summary: decision.summary(),
            stale_data: decision.stale_data(),
        }
    }
}

impl Explanation<'_> {
    /// The fields (inside an object) written by hand, as `serde_json`
    /// writes them: every answer carries them (`support::json`).
    fn write_fields(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\"reasons\":");
        encode::strings(out, self.reasons.iter().copied());
        out.extend_from_slice(b",\"errors\":[");
        for (index, error) in self.errors.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"code\":");
            encode::string(out, error.code);
            out.extend_from_slice(b",\"message\":");
            encode::string(out, error.message);
            if let Some(policy) = error.policy {
                out.extend_from_slice(b",\"policy\":");
                encode::string(out, policy);
            }
            out.push(b'}');
        }
        out.extend_from_slice(b"],\"policy_version\":");
        encode::string(out, self.policy_version);
        out.extend_from_slice(b",\"summary\":\"");
        self.summary.pieces(|text| encode::escaped(out, text));
        out.push(b'"');
        if self.stale_data {
            out.extend_from_slice(b",\"stale_data\":true");
        }
    }
}

impl<'a> ErrorOut<'a> {
    fn of(error: &'a DecisionError) -> Self {
        Self {
            code: error.code(),
            message: error.message(),
            policy: error.policy(),
        }
    }
}

/// Names an engine field in a wire format's own words.
struct FieldNames {
    principal: &'static str,
    principal_properties: &'static str,
    resource: &'static str,
    resource_properties: &'static str,
    context: &'static str,
    entities: &'static str,
}

impl FieldNames {
    fn name(&self, field: Field) -> String {
        match field {
            Field::Principal => self.principal.to_owned(),
            Field::PrincipalProperties => self.principal_properties.to_owned(),
            Field::Resource => self.resource.to_owned(),
            Field::ResourceProperties => self.resource_properties.to_owned(),
            Field::Context => self.context.to_owned(),
            Field::ContextAttribute(name) => format!("{}.{name}", self.context),
            Field::Entity(index) => format!("{}[{index}]", self.entities),
        }
    }

    /// The engine's refusal as an API error, with the field named under `prefix`.
    fn refuse(&self, error: RequestError, prefix: &str) -> ApiError {
        let name = self.name(error.field);
        let field = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}.{name}")
        };
        ApiError::InvalidRequest {
            message: format!("`{field}`: {}", error.message),
            field,
            code: error.code,
        }
    }
}
