//! Every listener bounds what a connection may hold: silent sockets,
//! half-sent HTTP/2 prefaces, idle HTTP/2 and TLS connections that never
//! ask are closed at the first-request deadline, idle keep-alive
//! connections at the idle timeout, a kept-alive client dribbling its next
//! request's head at the header read timeout, so they cannot hold
//! `max_connections`;
//! the gRPC listener has the same limits and the same TLS and client
//! identities as HTTP; a 413 reaches a client still sending over TLS, even
//! one sending fast and reading only once it is done.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;

use crate::pki::{Ca, client, client_config, write};
use crate::support::{Server, config_with, gateway_config};

/// Reads until the peer closes; `true` when it did within `wait`.
fn closed_by_peer(stream: &mut impl Read, wait: Duration) -> bool {
    let deadline = std::time::Instant::now() + wait;
    let mut buffer = [0u8; 4096];
    while std::time::Instant::now() < deadline {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    stream
}

fn healthz(addr: SocketAddr) -> String {
    let mut stream = connect(addr);
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn silent_sockets_and_half_prefaces_cannot_hold_every_connection() {
    let server = Server::start(config_with(&[
        ("MANDATE_SERVER_MAX_CONNECTIONS", "6"),
        ("MANDATE_SERVER_HEADER_READ_TIMEOUT", "400ms"),
    ]))
    .await;
    let addr = server.addr;
    let (closed, answer) = tokio::task::spawn_blocking(move || {
        let mut held = Vec::new();
        // Two silent sockets, two partial HTTP/2 prefaces, two whole
        // prefaces with SETTINGS and no request: every permit taken.
        for _ in 0..2 {
            held.push(connect(addr));
        }
        for _ in 0..2 {
            let mut stream = connect(addr);
            stream.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
            held.push(stream);
        }
        for _ in 0..2 {
            let mut stream = connect(addr);
            stream
                .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
                .unwrap();
            held.push(stream);
        }
        let closed = held
            .iter_mut()
            .map(|s| closed_by_peer(s, Duration::from_secs(3)))
            .filter(|closed| *closed)
            .count();
        (closed, healthz(addr))
    })
    .await
    .unwrap();
    assert_eq!(closed, 6, "every connection that asked nothing was closed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let metrics = mandate::telemetry::metrics().render();
    let cut = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"mandate_refusals_total{limit="first_request_timeout"} "#))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(cut >= 6, "the cut-offs are counted: {cut}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let server = Server::start(config_with(&[("MANDATE_SERVER_IDLE_TIMEOUT", "300ms")])).await;
    let addr = server.addr;
    let closed = tokio::task::spawn_blocking(move || {
        let mut stream = connect(addr);
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buffer = [0u8; 1024];
        let n = stream.read(&mut buffer).unwrap();
        assert!(buffer[..n].starts_with(b"HTTP/1.1 200"));
        // Kept alive, then idle: closed by the server.
        closed_by_peer(&mut stream, Duration::from_secs(3))
    })
    .await
    .unwrap();
    assert!(closed);
}

/// The `mandate_refusals_total` count for `limit`, in this process.
fn refusals(limit: &str) -> u64 {
    mandate::telemetry::metrics()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(&format!(r#"mandate_refusals_total{{limit="{limit}"}} "#)))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_kept_alive_client_dribbling_its_next_head_is_cut_off_at_the_header_read_timeout() {
    let server = Server::start(config_with(&[
        ("MANDATE_SERVER_HEADER_READ_TIMEOUT", "400ms"),
        ("MANDATE_SERVER_IDLE_TIMEOUT", "60s"),
    ]))
    .await;
    let addr = server.addr;
    let before = refusals("header_read_timeout");
    let (cut_after, answered) = tokio::task::spawn_blocking(move || {
        let mut stream = connect(addr);
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buffer = [0u8; 1024];
        let n = stream.read(&mut buffer).unwrap();
        let answered = buffer[..n].starts_with(b"HTTP/1.1 200");
        // The next head, a byte every 50 ms: it never ends, and every byte
        // is news, so only the header read timeout can end it.
        let started = std::time::Instant::now();
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
            .iter()
            .cycle()
        {
            if stream.write_all(&[*byte]).is_err() || started.elapsed() > Duration::from_secs(5) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (started.elapsed(), answered)
    })
    .await
    .unwrap();
    assert!(answered, "the first request was answered");
    assert!(
        cut_after < Duration::from_millis(1500),
        "cut off at the header read timeout, not after {cut_after:?}"
    );
    assert!(
        refusals("header_read_timeout") > before,
        "counted as a header read timeout"
    );
}

struct Material {
    _dir: tempfile::TempDir,
    ca: Ca,
    client_ca: Ca,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    client_ca_file: std::path::PathBuf,
}

fn material() -> Material {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server CA");
    let leaf = ca.leaf("mandate", &["localhost"], false);
    let client_ca = Ca::new("client CA");
    Material {
        cert: write(dir.path(), "server.pem", &leaf.cert_pem),
        key: write(dir.path(), "server.key", &leaf.key_pem),
        client_ca_file: write(dir.path(), "client-ca.pem", &client_ca.cert_pem),
        _dir: dir,
        ca,
        client_ca,
    }
}

/// A client config for `ca` and `identity`, offering h2 (gRPC, raw TLS).
fn rustls_client(ca: &Ca, identity: Option<&crate::pki::Leaf>) -> Arc<rustls::ClientConfig> {
    let mut config = client_config(ca, identity);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

#[tokio::test]
async fn a_mutual_tls_connection_that_asks_nothing_is_closed() {
    let tls = material();
    let mut config = config_with(&[("MANDATE_SERVER_HEADER_READ_TIMEOUT", "400ms")]);
    config.tls.cert = Some(tls.cert.clone());
    config.tls.key = Some(tls.key.clone());
    config.tls.client_ca = Some(tls.client_ca_file.clone());
    let server = Server::start(config).await;
    let leaf = tls.client_ca.leaf("gw", &["gateway.internal"], false);
    let client = rustls_client(&tls.ca, Some(&leaf));
    let addr = server.addr;
    let closed = tokio::task::spawn_blocking(move || {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut connection = rustls::ClientConnection::new(client, name).unwrap();
        let mut socket = connect(addr);
        while connection.is_handshaking() {
            connection.complete_io(&mut socket).unwrap();
        }
        let mut stream = rustls::Stream::new(&mut connection, &mut socket);
        closed_by_peer(&mut stream, Duration::from_secs(3))
    })
    .await
    .unwrap();
    assert!(
        closed,
        "the handshake done, silence is cut off like any other"
    );
}

async fn grpc_check(channel: tonic::transport::Channel) -> Result<i32, tonic::Status> {
    use envoy_types::ext_authz::v3::pb::CheckRequest;
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
    use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".to_owned(),
                    path: "/accounts/alice-personal".to_owned(),
                    headers: [("x-user-id".to_owned(), "grace".to_owned())].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let response = AuthorizationClient::new(channel).check(request).await?;
    Ok(response.into_inner().status.map_or(0, |s| s.code))
}

/// A gRPC channel to `addr` over TLS with `identity`, through our own
/// rustls client (tonic's transport here is plaintext only).
async fn tls_channel(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> tonic::transport::Channel {
    let connector = tower::service_fn(move |_: http::Uri| {
        let config = Arc::clone(&config);
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(connector)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_grpc_listener_speaks_tls_and_admits_only_allowed_clients() {
    let tls = material();
    let mut config = gateway_config();
    config.tls.cert = Some(tls.cert.clone());
    config.tls.key = Some(tls.key.clone());
    config.tls.client_ca = Some(tls.client_ca_file.clone());
    config.tls.allowed_clients.decisions = vec!["gateway.internal".to_owned()];
    let server = Server::start(config).await;
    let grpc = server.grpc.unwrap();

    // Plaintext to the TLS gRPC port: no answer.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2));
    let refused = match plain.connect().await {
        Err(_) => true,
        Ok(channel) => grpc_check(channel).await.is_err(),
    };
    assert!(refused, "a plaintext oracle");

    let gateway = tls.client_ca.leaf("gw", &["gateway.internal"], false);
    let channel = tls_channel(grpc, rustls_client(&tls.ca, Some(&gateway))).await;
    assert_eq!(grpc_check(channel).await.unwrap(), 0, "allowed: OK");

    let stranger = tls.client_ca.leaf("other", &["other.internal"], false);
    let channel = tls_channel(grpc, rustls_client(&tls.ca, Some(&stranger))).await;
    let status = grpc_check(channel).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
}

#[tokio::test]
async fn the_grpc_listener_closes_silent_connections_too() {
    let mut config = gateway_config();
    config.server.header_read_timeout = Duration::from_millis(400);
    config.server.max_connections = 3;
    let server = Server::start(config).await;
    let grpc = server.grpc.unwrap();
    let closed = tokio::task::spawn_blocking(move || {
        let mut held: Vec<TcpStream> = (0..3).map(|_| connect(grpc)).collect();
        held.iter_mut()
            .map(|s| closed_by_peer(s, Duration::from_secs(3)))
            .filter(|closed| *closed)
            .count()
    })
    .await
    .unwrap();
    assert_eq!(closed, 3);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_eq!(grpc_check(channel).await.unwrap(), 0);
}

#[tokio::test]
async fn a_413_reaches_a_client_still_sending_over_tls_http1() {
    let tls = material();
    let mut config = config_with(&[("MANDATE_SERVER_MAX_BODY_BYTES", "65536")]);
    config.tls.cert = Some(tls.cert.clone());
    config.tls.key = Some(tls.key.clone());
    let server = Server::start(config).await;
    let client = client(&tls.ca, None, false);
    // Bodies of 8 MiB, 128 times the limit, sent as fast as the machine
    // can: read and dropped for as long as the client keeps sending (within
    // `server.lingering_time`), not up to a byte count.
    for declared in [true, false] {
        for _ in 0..8 {
            let url = format!(
                "https://localhost:{}/access/v1/evaluation",
                server.addr.port()
            );
            let mut request = http::Request::post(url);
            if !declared {
                // chunked: the limit is found while reading
                request = request.header("transfer-encoding", "chunked");
            }
            let body = Bytes::from(vec![b' '; 8 * 1024 * 1024]);
            let request = request.body(Full::new(body)).unwrap();
            let response = client
                .request(request)
                .await
                .expect("an answer, not a reset");
            assert_eq!(response.status(), 413);
        }
    }
}

#[tokio::test]
async fn a_413_reaches_an_http2_client_over_tls_without_waiting_for_its_body() {
    let tls = material();
    let mut config = config_with(&[
        ("MANDATE_SERVER_MAX_BODY_BYTES", "65536"),
        ("MANDATE_SERVER_LINGERING_TIME", "5s"),
    ]);
    config.tls.cert = Some(tls.cert.clone());
    config.tls.key = Some(tls.key.clone());
    let server = Server::start(config).await;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_config(&tls.ca, None))
        .https_only()
        .enable_http2()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build::<_, Endless>(connector);
    let url = format!(
        "https://localhost:{}/access/v1/evaluation",
        server.addr.port()
    );
    for _ in 0..4 {
        // A body that never ends: HTTP/2 ends the stream with the answer
        // (RST_STREAM NO_ERROR), so there is nothing to linger for.
        let request = http::Request::post(&url).body(Endless).unwrap();
        let asked = std::time::Instant::now();
        let response = client.request(request).await.expect("an answer");
        assert_eq!(response.status(), 413);
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "{:?}",
            asked.elapsed()
        );
    }
}

/// A request body that never ends: 64 KiB as fast as it is taken.
struct Endless;

impl hyper::body::Body for Endless {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        static CHUNK: [u8; 64 * 1024] = [b' '; 64 * 1024];
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(
            &CHUNK,
        )))))
    }
}

/// Posts an 8 MiB body over TLS at about 20 MB/s, chunked or declared,
/// without `Expect: 100-continue`, and reads the answer once it has sent
/// everything: its status line, or the error that ended the connection
/// first (a client whose write fails sees a reset, whatever the server
/// had written).
async fn paced_upload(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    chunked: bool,
) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    let (mut reader, mut writer) = tokio::io::split(tls);
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 128;
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_owned()
    } else {
        format!("Content-Length: {}", CHUNK * CHUNKS)
    };
    let head = format!(
        "POST /access/v1/evaluation HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
    );
    let sender = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        let mut pace = tokio::time::interval(Duration::from_micros(3_200));
        for _ in 0..CHUNKS {
            pace.tick().await;
            if chunked {
                writer
                    .write_all(format!("{CHUNK:x}\r\n").as_bytes())
                    .await?;
            }
            writer.write_all(&[b' '; CHUNK]).await?;
            if chunked {
                writer.write_all(b"\r\n").await?;
            }
        }
        if chunked {
            writer.write_all(b"0\r\n\r\n").await?;
        }
        writer.flush().await
    });
    sender.await??;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let status = loop {
        let read = reader.read(&mut buffer).await?;
        answer.extend_from_slice(&buffer[..read]);
        if let Some(end) = answer.iter().position(|b| *b == b'\n') {
            break String::from_utf8_lossy(&answer[..end]).trim().to_owned();
        }
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    };
    Ok(status)
}

#[tokio::test]
async fn a_413_reaches_a_paced_sender_over_tls_every_time() {
    let tls = material();
    let mut config = config_with(&[("MANDATE_SERVER_MAX_BODY_BYTES", "65536")]);
    config.tls.cert = Some(tls.cert.clone());
    config.tls.key = Some(tls.key.clone());
    let server = Server::start(config).await;
    let client = Arc::new(client_config(&tls.ca, None));
    // 20 MB/s for 8 MiB: the body is still coming 400 ms after the limit,
    // 7 MiB past it; the server reads on until the client is done.
    for chunked in [true, false] {
        for attempt in 0..6 {
            let status = paced_upload(server.addr, Arc::clone(&client), chunked).await;
            assert_eq!(
                status.as_deref().ok(),
                Some("HTTP/1.1 413 Payload Too Large"),
                "attempt {attempt}, chunked {chunked}: {status:?}"
            );
        }
    }
}
