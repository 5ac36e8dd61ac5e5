//! The floor: a bare hyper HTTP/1.1 + h2 server on one thread that reads
//! the body and answers a fixed AuthZEN response. What the transport alone
//! costs; every other server is measured against it.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// What a PDP that does no work would say.
const ANSWER: &str = r#"{"decision":true,"context":{"reasons":["S2"],"errors":[],"policy_version":"000000000000","summary":"allowed by S2"}}"#;

/// Serves the fixed answer on `addr` until killed.
pub fn serve(addr: SocketAddr) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: hyper::Request<hyper::body::Incoming>| async move {
                        // Also an OTLP sink (the tracing run's): an empty
                        // ExportTraceServiceResponse is a success.
                        let otlp = request.uri().path() == "/v1/traces";
                        let _ = request.into_body().collect().await;
                        let (content_type, body) = if otlp {
                            ("application/x-protobuf", "")
                        } else {
                            ("application/json", ANSWER)
                        };
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .header("content-type", content_type)
                                .body(Full::new(Bytes::from_static(body.as_bytes())))
                                .unwrap(),
                        )
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
}
