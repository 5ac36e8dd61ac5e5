//! OpenTelemetry over OTLP: a real `mandate serve` exporting to a receiver
//! in the test (an HTTP server decoding OTLP/protobuf), its spans in the
//! caller's trace and joined to the decision log line by its trace id.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::json;

use crate::cli::{mandate, serving, terminate};
use crate::support::{decision_lines, send};
use crate::upstream::Upstream;

/// One span as received.
#[derive(Debug, Clone)]
struct Received {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    service: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP/HTTP receiver: `POST /v1/traces` with protobuf, every span kept.
async fn receiver() -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let spans = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&spans);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let kept = Arc::clone(&kept);
            tokio::spawn(async move {
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let kept = Arc::clone(&kept);
                    async move {
                        let path = request.uri().path().to_owned();
                        let body = request.into_body().collect().await?.to_bytes();
                        let status = match ExportTraceServiceRequest::decode(body) {
                            Ok(export) if path == "/v1/traces" => {
                                let mut kept = kept.lock().unwrap();
                                for resource in export.resource_spans {
                                    let service = resource
                                        .resource
                                        .iter()
                                        .flat_map(|r| &r.attributes)
                                        .find(|a| a.key == "service.name")
                                        .and_then(|a| a.value.as_ref())
                                        .map(|v| format!("{:?}", v.value))
                                        .unwrap_or_default();
                                    for scope in resource.scope_spans {
                                        for span in scope.spans {
                                            kept.push(Received {
                                                trace_id: hex(&span.trace_id),
                                                span_id: hex(&span.span_id),
                                                parent_span_id: hex(&span.parent_span_id),
                                                name: span.name,
                                                service: service.clone(),
                                            });
                                        }
                                    }
                                }
                                200
                            }
                            _ => 400,
                        };
                        Ok::<_, hyper::Error>(
                            http::Response::builder()
                                .status(status)
                                .header("content-type", "application/x-protobuf")
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), spans)
}

async fn evaluate(base: &str, traceparent: Option<&str>) -> u16 {
    let body = json!({
        "subject": {"type": "user", "id": "carol"},
        "action": {"name": "view_account"},
        "resource": {"type": "account", "id": "alice-personal"},
    });
    let mut request = http::Request::post(format!("{base}/access/v1/evaluation"))
        .header("content-type", "application/json");
    if let Some(parent) = traceparent {
        request = request.header("traceparent", parent);
    }
    send(
        request
            .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
            .unwrap(),
        false,
    )
    .await
    .status
}

/// The spans of `trace`, once those named `names` have all arrived.
async fn spans_of(spans: &Mutex<Vec<Received>>, trace: &str, names: &[&str]) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found: Vec<Received> = spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == trace)
            .cloned()
            .collect();
        if names.iter().all(|n| found.iter().any(|s| s.name == *n)) || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_join_the_callers_trace_and_the_decision_line_carries_its_id() {
    let (endpoint, spans) = receiver().await;
    let store = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.log");
    let served = serving(
        mandate()
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                &store.url(),
            ])
            .env("MANDATE_STORE_KIND", "http")
            .env("MANDATE_LOG_DECISIONS", "file")
            .env("MANDATE_LOG_DECISIONS_FILE", &log)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env("OTEL_SERVICE_NAME", "mandate-under-test")
            .stdout(std::process::Stdio::null()),
    );
    let base = served.base.clone();

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    assert_eq!(
        evaluate(&base, Some(&format!("00-{trace}-{parent}-01"))).await,
        200
    );
    let found = spans_of(
        &spans,
        trace,
        &[
            "request",
            "decision",
            "entities.gather",
            "store.fetch",
            "evaluate",
        ],
    )
    .await;
    let named = |name: &str| {
        found
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no `{name}` span in {found:#?}"))
    };
    // The request is a child of the caller's span; the stages nest under it.
    assert_eq!(named("request").parent_span_id, parent);
    assert_eq!(named("decision").parent_span_id, named("request").span_id);
    assert_eq!(
        named("entities.gather").parent_span_id,
        named("decision").span_id
    );
    assert_eq!(named("evaluate").parent_span_id, named("decision").span_id);
    assert!(named("request").service.contains("mandate-under-test"));

    // Without a traceparent, the trace is Mandate's own, and the line says which.
    assert_eq!(evaluate(&base, None).await, 200);
    let lines = decision_lines(&log, 2);
    assert_eq!(lines[0]["trace_id"], trace);
    let own = lines[1]["trace_id"].as_str().unwrap().to_owned();
    assert_ne!(own, trace);
    let own_spans = spans_of(&spans, &own, &["request", "decision"]).await;
    assert!(
        own_spans
            .iter()
            .any(|s| s.name == "request" && s.parent_span_id.is_empty()),
        "the line's trace id is the exported root span's: {own_spans:#?}"
    );
    terminate(&served.child);
}

#[tokio::test]
async fn an_otlp_protocol_it_does_not_speak_is_refused_at_start() {
    let output = mandate()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("http/protobuf"), "{stderr}");
}
