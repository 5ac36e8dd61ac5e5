//! TLS, mutual TLS, limits and shutdown, with certificates made in the test.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::json;

use crate::pki::{Ca, Leaf, client, write};
use crate::support::{Server, config_with, get, post, post_raw};

struct Tls {
    _dir: tempfile::TempDir,
    ca: Ca,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    client_ca: std::path::PathBuf,
    client_ca_authority: Ca,
}

fn material() -> Tls {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server CA");
    let leaf = ca.leaf("mandate", &["localhost"], false);
    let cert = write(dir.path(), "server.pem", &leaf.cert_pem);
    let key = write(dir.path(), "server.key", &leaf.key_pem);
    let client_ca_authority = Ca::new("client CA");
    let client_ca = write(dir.path(), "client-ca.pem", &client_ca_authority.cert_pem);
    Tls {
        _dir: dir,
        ca,
        cert,
        key,
        client_ca,
        client_ca_authority,
    }
}

fn tls_config(tls: &Tls, mutual: bool, extra: &[(&str, &str)]) -> mandate::config::Config {
    let mut config = config_with(extra);
    config.tls.cert = Some(tls.cert.clone());
    config.tls.key = Some(tls.key.clone());
    if mutual {
        config.tls.client_ca = Some(tls.client_ca.clone());
    }
    config
}

async fn https_get(
    server: &Server,
    ca: &Ca,
    identity: Option<&Leaf>,
    http2: bool,
    path: &str,
) -> Result<(u16, http::Version), String> {
    let url = format!("https://localhost:{}{path}", server.addr.port());
    let request = http::Request::get(url)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client(ca, identity, http2)
        .request(request)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let version = response.version();
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((status, version))
}

#[tokio::test]
async fn tls_serves_http2_and_http1_over_alpn() {
    let tls = material();
    let server = Server::start(tls_config(&tls, false, &[])).await;
    let (status, version) = https_get(&server, &tls.ca, None, true, "/healthz")
        .await
        .unwrap();
    assert_eq!((status, version), (200, http::Version::HTTP_2));
    let (status, version) = https_get(&server, &tls.ca, None, false, "/healthz")
        .await
        .unwrap();
    assert_eq!((status, version), (200, http::Version::HTTP_11));
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_no_answer() {
    let tls = material();
    let server = Server::start(tls_config(&tls, false, &[])).await;
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "a plain request must not be served"
    );
}

#[tokio::test]
async fn mutual_tls_refuses_no_certificate_another_ca_and_an_expired_one() {
    let tls = material();
    let server = Server::start(tls_config(&tls, true, &[])).await;
    let good = tls
        .client_ca_authority
        .leaf("gateway", &["gateway.internal"], false);
    assert_eq!(
        https_get(&server, &tls.ca, Some(&good), false, "/healthz")
            .await
            .unwrap()
            .0,
        200
    );
    assert!(
        https_get(&server, &tls.ca, None, false, "/healthz")
            .await
            .is_err(),
        "no certificate"
    );
    let stranger = Ca::new("another CA").leaf("gateway", &["gateway.internal"], false);
    assert!(
        https_get(&server, &tls.ca, Some(&stranger), false, "/healthz")
            .await
            .is_err(),
        "another CA"
    );
    let expired = tls
        .client_ca_authority
        .leaf("gateway", &["gateway.internal"], true);
    assert!(
        https_get(&server, &tls.ca, Some(&expired), false, "/healthz")
            .await
            .is_err(),
        "expired"
    );
}

#[tokio::test]
async fn client_identities_are_allowed_per_surface() {
    let tls = material();
    let mut config = tls_config(&tls, true, &[]);
    config.tls.allowed_clients.decisions = vec!["gateway.internal".to_owned()];
    config.tls.allowed_clients.admin = vec!["ops.internal".to_owned()];
    let server = Server::start(config).await;
    let gateway = tls
        .client_ca_authority
        .leaf("gw", &["gateway.internal"], false);
    let ops = tls
        .client_ca_authority
        .leaf("ops", &["ops.internal"], false);
    let ask = |identity: &Leaf, path: &str, body: &str| {
        let url = format!("https://localhost:{}{path}", server.addr.port());
        let request = http::Request::post(url)
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let client = client(&tls.ca, Some(identity), false);
        async move { client.request(request).await.unwrap().status().as_u16() }
    };
    let evaluation = r#"{"subject":{"type":"user","id":"alice"},"action":{"name":"view_account"},"resource":{"type":"account","id":"alice-personal"}}"#;
    assert_eq!(
        ask(&gateway, "/access/v1/evaluation", evaluation).await,
        200
    );
    assert_eq!(
        ask(&ops, "/access/v1/evaluation", evaluation).await,
        403,
        "ops may not ask decisions"
    );
    assert_eq!(
        ask(&ops, "/admin/v1/cache/invalidate", r#"{"all":true}"#).await,
        200
    );
    assert_eq!(
        ask(&gateway, "/admin/v1/cache/invalidate", r#"{"all":true}"#).await,
        403
    );
    // With subject alternative names present, they alone name the client:
    // a common name claiming an allowed identity is not one.
    let impostor = tls
        .client_ca_authority
        .leaf("gateway.internal", &["evil.internal"], false);
    assert_eq!(
        ask(&impostor, "/access/v1/evaluation", evaluation).await,
        403,
        "the CN is ignored beside SANs"
    );
}

fn common_name_of_served_certificate(port: u16, ca_pem: &str) -> String {
    use std::sync::Arc;
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut stream = rustls::Stream::new(&mut connection, &mut socket);
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let cert = connection.peer_certificates().unwrap()[0].clone();
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).unwrap();
    parsed
        .subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_certificate_swapped_on_disk_is_picked_up() {
    let tls = material();
    let mut config = tls_config(&tls, false, &[]);
    config.tls.reload_interval = Duration::from_millis(50);
    let server = Server::start(config).await;
    let port = server.addr.port();
    let ca = tls.ca.cert_pem.clone();
    let first = tokio::task::spawn_blocking(move || common_name_of_served_certificate(port, &ca))
        .await
        .unwrap();
    assert_eq!(first, "mandate");
    let renewed = tls.ca.leaf("mandate-renewed", &["localhost"], false);
    std::fs::write(&tls.key, &renewed.key_pem).unwrap();
    std::fs::write(&tls.cert, &renewed.cert_pem).unwrap();
    let mut served = String::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ca = tls.ca.cert_pem.clone();
        served = tokio::task::spawn_blocking(move || common_name_of_served_certificate(port, &ca))
            .await
            .unwrap();
        if served == "mandate-renewed" {
            break;
        }
    }
    assert_eq!(served, "mandate-renewed");
}

#[tokio::test]
async fn a_slow_header_client_is_cut_off() {
    let server = Server::start(config_with(&[(
        "MANDATE_SERVER_HEADER_READ_TIMEOUT",
        "200ms",
    )]))
    .await;
    let addr = server.addr;
    let closed = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: local")
            .unwrap();
        let started = std::time::Instant::now();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        (
            started.elapsed(),
            String::from_utf8_lossy(&answer).into_owned(),
        )
    })
    .await
    .unwrap();
    assert!(
        closed.0 < Duration::from_secs(4),
        "the connection was closed by the server, not by our read timeout"
    );
    assert!(!closed.1.contains("200 OK"));
    // On a first request the accept-to-request deadline and the header
    // read timeout are one time; either counts the cut-off.
    let metrics = mandate::telemetry::metrics().render();
    let count = |limit: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!(r#"mandate_refusals_total{{limit="{limit}"}} "#)))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let cut = count("header_read_timeout") + count("first_request_timeout");
    assert!(cut >= 1, "the cut-off is counted");
}

#[tokio::test]
async fn deeply_nested_json_is_refused() {
    let server = Server::demo().await;
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let reply = post_raw(&server.url("/access/v1/evaluation"), deep).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json["error"]["code"], "too_deep");
}

#[tokio::test]
async fn the_admin_listener_answers_admin_and_the_main_one_no_longer_does() {
    let mut config = config_with(&[]);
    config.server.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    let server = Server::start(config).await;
    let admin = format!("http://{}", server.admin.unwrap());
    let reply = post(
        &format!("{admin}/admin/v1/cache/invalidate"),
        &json!({"all": true}),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(get(&format!("{admin}/healthz")).await.status, 200);
    let evaluation = json!({"subject":{"type":"user","id":"alice"},"action":{"name":"view_account"},"resource":{"type":"account","id":"alice-personal"}});
    assert_eq!(
        post(&format!("{admin}/access/v1/evaluation"), &evaluation)
            .await
            .status,
        404
    );
    assert_eq!(
        post(
            &server.url("/admin/v1/cache/invalidate"),
            &json!({"all": true})
        )
        .await
        .status,
        404
    );
    assert_eq!(
        post(&server.url("/access/v1/evaluation"), &evaluation)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn one_connection_over_the_limit_is_answered_503() {
    let server = Server::start(config_with(&[("MANDATE_SERVER_MAX_CONNECTIONS", "1")])).await;
    let addr = server.addr;
    let answers = tokio::task::spawn_blocking(move || {
        let mut first = std::net::TcpStream::connect(addr).unwrap();
        first
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buffer = [0u8; 512];
        let n = first.read(&mut buffer).unwrap();
        let first_answer = String::from_utf8_lossy(&buffer[..n]).into_owned();
        // Busy (a body still coming): an idle one would make way instead.
        first
            .write_all(
                b"POST /access/v1/evaluation HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n{",
            )
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let mut second = std::net::TcpStream::connect(addr).unwrap();
        second
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        second
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        let _ = second.read_to_end(&mut answer);
        drop(first);
        (first_answer, String::from_utf8_lossy(&answer).into_owned())
    })
    .await
    .unwrap();
    assert!(answers.0.starts_with("HTTP/1.1 200"), "{}", answers.0);
    assert!(answers.1.starts_with("HTTP/1.1 503"), "{}", answers.1);
    assert!(answers.1.contains("too_many_connections"));
}

#[tokio::test]
async fn a_request_over_its_time_is_a_503_and_shutdown_drains_one_in_flight() {
    let upstream = crate::upstream::Upstream::start().await;
    upstream
        .delay_ms
        .store(600, std::sync::atomic::Ordering::SeqCst);
    let url = upstream.url();
    let view = json!({"subject":{"type":"user","id":"carol"},"action":{"name":"view_account"},"resource":{"type":"account","id":"alice-personal"}});

    let hasty = Server::start(config_with(&[
        ("MANDATE_STORE_KIND", "http"),
        ("MANDATE_STORE_UPSTREAM", url.as_str()),
        ("MANDATE_SERVER_REQUEST_TIMEOUT", "200ms"),
    ]))
    .await;
    let reply = post(&hasty.url("/access/v1/evaluation"), &view).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.json["error"]["code"], "request_timeout");

    let server = Server::start(config_with(&[
        ("MANDATE_STORE_KIND", "http"),
        ("MANDATE_STORE_UPSTREAM", url.as_str()),
    ]))
    .await;
    let endpoint = server.url("/access/v1/evaluation");
    let in_flight = tokio::spawn(async move { post(&endpoint, &view).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.stop().await;
    let reply = in_flight.await.unwrap();
    assert_eq!(
        reply.status, 200,
        "the in-flight request finished during the drain"
    );
    assert_eq!(reply.json["decision"], true);
}

#[tokio::test]
async fn the_store_client_presents_its_certificate_when_the_store_requires_one() {
    use tokio_rustls::rustls;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("store CA");
    let leaf = ca.leaf("store", &["localhost"], false);
    let client_leaf = ca.leaf("mandate", &["mandate.internal"], false);
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.cert_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let upstream =
        crate::upstream::Upstream::start_with(Some(std::sync::Arc::new(server_config))).await;
    let url = format!("https://localhost:{}", upstream.addr.port());
    let path = |p: &Path| p.display().to_string();
    let ca_file = path(&write(dir.path(), "ca.pem", &ca.cert_pem));
    let cert_file = path(&write(dir.path(), "client.pem", &client_leaf.cert_pem));
    let key_file = path(&write(dir.path(), "client.key", &client_leaf.key_pem));
    let view = json!({"subject":{"type":"user","id":"carol"},"action":{"name":"view_account"},"resource":{"type":"account","id":"alice-personal"}});

    let with_cert = Server::start(config_with(&[
        ("MANDATE_STORE_KIND", "http"),
        ("MANDATE_STORE_UPSTREAM", url.as_str()),
        ("MANDATE_STORE_UPSTREAM_CA", ca_file.as_str()),
        ("MANDATE_STORE_UPSTREAM_CLIENT_CERT", cert_file.as_str()),
        ("MANDATE_STORE_UPSTREAM_CLIENT_KEY", key_file.as_str()),
    ]))
    .await;
    assert_eq!(
        post(&with_cert.url("/access/v1/evaluation"), &view)
            .await
            .json["decision"],
        true
    );

    let without = Server::start(config_with(&[
        ("MANDATE_STORE_KIND", "http"),
        ("MANDATE_STORE_UPSTREAM", url.as_str()),
        ("MANDATE_STORE_UPSTREAM_CA", ca_file.as_str()),
        ("MANDATE_STORE_RETRIES", "0"),
    ]))
    .await;
    let reply = post(&without.url("/access/v1/evaluation"), &view).await;
    assert_eq!(reply.json["decision"], false);
    assert_eq!(
        reply.json["context"]["errors"][0]["code"],
        "entity_store_unavailable"
    );
}
