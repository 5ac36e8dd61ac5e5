//! OpenTelemetry export: Mandate's spans ([`super::trace::SPANS`]) sent over
//! OTLP by the OpenTelemetry SDK, configured only by the standard variables
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `…_TRACES_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf` by default, `http/json`,
//! `grpc`), `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER` and `…_ARG`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`). With no
//! endpoint set, nothing is built and spans cost one cached check each.

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::trace::{TraceId, TraceParent};

/// The tracer provider exporting Mandate's spans; flushed at shutdown.
pub struct Otel {
    provider: SdkTracerProvider,
    /// where spans go, for the start-up log
    pub endpoint: String,
    /// the OTLP protocol
    pub protocol: &'static str,
}

/// The OTLP transport, from `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` or
/// `OTEL_EXPORTER_OTLP_PROTOCOL`.
fn protocol(env: &dyn Fn(&str) -> Option<String>) -> Result<&'static str, String> {
    let set =
        env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"));
    match set.as_deref().map(str::trim) {
        None | Some("" | "http/protobuf") => Ok("http/protobuf"),
        Some("http/json") => Ok("http/json"),
        Some("grpc") => Ok("grpc"),
        Some(other) => Err(format!(
            "OTEL_EXPORTER_OTLP_PROTOCOL `{other}`: write `http/protobuf` (the default), `http/json` or `grpc`"
        )),
    }
}

impl Otel {
    /// The exporter the standard variables ask for, or `None` when they ask
    /// for none (no endpoint, `OTEL_SDK_DISABLED=true` or
    /// `OTEL_TRACES_EXPORTER=none`). Call inside the runtime (gRPC's
    /// channel lives on it).
    ///
    /// # Errors
    /// A protocol the exporter does not speak, an endpoint it cannot use
    /// (an `https` endpoint over gRPC: this build's gRPC exporter has no
    /// TLS; use `http/protobuf`), or the exporter's own refusal.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let on = |name: &str| env(name).is_some_and(|v| !v.trim().is_empty());
        let disabled =
            env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let exporter_none = env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "none");
        if disabled
            || exporter_none
            || !(on("OTEL_EXPORTER_OTLP_ENDPOINT") || on("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        {
            return Ok(None);
        }
        let endpoint = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .filter(|v| !v.trim().is_empty())
            .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .unwrap_or_default();
        let protocol = protocol(env)?;
        let exporter = if protocol == "grpc" {
            if endpoint.trim().starts_with("https://") {
                return Err(format!(
                    "OTEL_EXPORTER_OTLP_ENDPOINT `{endpoint}`: the gRPC exporter of this build has no TLS; \
                     use OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf for an https collector"
                ));
            }
            opentelemetry_otlp::SpanExporter::builder().with_tonic().build()
        } else {
            // The HTTP exporter's TLS is rustls over the process's provider.
            let _ = rustls::crypto::ring::default_provider().install_default();
            // Set, not left to the crate: with both encodings built in it
            // would default to JSON.
            let encoding = if protocol == "http/json" {
                opentelemetry_otlp::Protocol::HttpJson
            } else {
                opentelemetry_otlp::Protocol::HttpBinary
            };
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(encoding)
                .build()
        }
        .map_err(|error| format!("the OTLP exporter ({protocol} to {endpoint}): {error}"))?;
        let mut resource = Resource::builder();
        if !on("OTEL_SERVICE_NAME") {
            resource = resource.with_service_name("mandate");
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        Ok(Some(Self {
            provider,
            endpoint,
            protocol,
        }))
    }

    /// The `tracing` layer turning Mandate's spans into OpenTelemetry
    /// spans (filter it to [`super::trace::SPANS`]).
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("mandate"))
            .with_tracked_inactivity(false)
    }

    /// Sends the spans still buffered (at shutdown).
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown();
    }
}

/// Begins a request's trace: makes `span` a child of the caller's span when
/// it sent one (its trace state passed on), and answers the request's trace
/// id (the caller's, else the one OpenTelemetry began, else, with spans
/// off, a new one) and whether its spans are sampled.
pub fn begin(
    span: &tracing::Span,
    parent: Option<&TraceParent>,
    tracestate: Option<&str>,
) -> (TraceId, bool) {
    let caller = parent.map(|p| p.trace_id);
    if span.is_disabled() {
        return (caller.unwrap_or_else(TraceId::random), false);
    }
    if let Some(parent) = parent {
        let state = tracestate
            .and_then(|s| s.parse::<TraceState>().ok())
            .unwrap_or_default();
        let remote = SpanContext::new(
            opentelemetry::trace::TraceId::from(parent.trace_id.get()),
            SpanId::from(parent.parent_id),
            TraceFlags::new(parent.flags),
            true,
            state,
        );
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    let began = TraceId::new(u128::from_be_bytes(span_context.trace_id().to_bytes()));
    (
        caller.or(began).unwrap_or_else(TraceId::random),
        span_context.is_sampled(),
    )
}

/// The `traceparent` of the span being run, for a request Mandate makes
/// (the entity store's): `None` when spans are not exported.
pub fn current_traceparent() -> Option<String> {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}
