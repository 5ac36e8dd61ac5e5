//! The HTTP entity store behind the cache, against a real HTTP upstream
//! started by each test on a real port, whose calls are counted.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

use crate::support::{Server, config_with, post, root};

/// How the fake store behaves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Normal,
    Malformed,
    Unavailable,
    /// every answer also carries `alice-personal` with mallory as its owner
    Forge,
    /// every entity of an answer is sent twice
    Duplicate,
    /// the honest answer, padded past 64 KiB
    Huge,
}

/// The platform's entity service, as far as Mandate can tell.
pub struct Upstream {
    pub addr: SocketAddr,
    pub calls: Arc<AtomicUsize>,
    pub asked: Arc<Mutex<Vec<Vec<String>>>>,
    pub authorization: Arc<Mutex<Option<String>>>,
    pub delay_ms: Arc<AtomicU64>,
    pub mode: Arc<Mutex<Mode>>,
    /// the first `fail_first` calls answer 503
    pub fail_first: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

/// The uids a `POST /entities/batch` body asks for, as `Type::id`.
pub(crate) fn asked_keys(body: &[u8]) -> Vec<String> {
    let body: Value = serde_json::from_slice(body).unwrap();
    body["uids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            format!(
                "{}::{}",
                u["type"].as_str().unwrap(),
                u["id"].as_str().unwrap()
            )
        })
        .collect()
}

/// The demo's entities by `Type::id`, as the test stores serve them.
pub(crate) fn demo_entities() -> HashMap<String, Value> {
    let text = std::fs::read_to_string(root().join("examples/demo/entities.json")).unwrap();
    let list: Vec<Value> = serde_json::from_str(&text).unwrap();
    list.into_iter()
        .map(|e| {
            (
                format!(
                    "{}::{}",
                    e["uid"]["type"].as_str().unwrap(),
                    e["uid"]["id"].as_str().unwrap()
                ),
                e,
            )
        })
        .collect()
}

impl Upstream {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Serves over TLS with this config when given.
    pub async fn start_with(tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>) -> Self {
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let data = Arc::new(demo_entities());
        let calls = Arc::new(AtomicUsize::new(0));
        let asked = Arc::new(Mutex::new(Vec::new()));
        let authorization = Arc::new(Mutex::new(None));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let mode = Arc::new(Mutex::new(Mode::Normal));
        let fail_first = Arc::new(AtomicUsize::new(0));
        let state = (
            Arc::clone(&calls),
            Arc::clone(&asked),
            Arc::clone(&authorization),
            Arc::clone(&delay_ms),
            Arc::clone(&mode),
            Arc::clone(&fail_first),
        );
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let data = Arc::clone(&data);
                let state = state.clone();
                let acceptor = acceptor.clone();
                connections.spawn(async move {
                    let service =
                        service_fn(move |request: http::Request<hyper::body::Incoming>| {
                            let data = Arc::clone(&data);
                            let (calls, asked, authorization, delay_ms, mode, fail_first) =
                                state.clone();
                            async move {
                                let call = calls.fetch_add(1, Ordering::SeqCst);
                                *authorization.lock().unwrap() = request
                                    .headers()
                                    .get("authorization")
                                    .map(|v| v.to_str().unwrap().to_owned());
                                let body = request.into_body().collect().await.unwrap().to_bytes();
                                let uids = asked_keys(&body);
                                asked.lock().unwrap().push(uids.clone());
                                tokio::time::sleep(Duration::from_millis(
                                    delay_ms.load(Ordering::SeqCst),
                                ))
                                .await;
                                let mode = *mode.lock().unwrap();
                                let (status, text) = if call < fail_first.load(Ordering::SeqCst)
                                    || mode == Mode::Unavailable
                                {
                                    (503, "unavailable".to_owned())
                                } else if mode == Mode::Malformed {
                                    (200, "{\"entities\": [{\"uid\": 12".to_owned())
                                } else {
                                    let mut entities: Vec<Value> =
                                        uids.iter().filter_map(|u| data.get(u).cloned()).collect();
                                    if mode == Mode::Forge {
                                        let mut forged =
                                            data["Brokerage::Account::alice-personal"].clone();
                                        forged["attrs"]["owner"] =
                                            json!({"type": "Brokerage::User", "id": "mallory"});
                                        entities.push(forged);
                                    }
                                    if mode == Mode::Duplicate {
                                        entities.extend(entities.clone());
                                    }
                                    let mut text = json!({"entities": entities}).to_string();
                                    if mode == Mode::Huge {
                                        text.insert_str(
                                            1,
                                            &format!("\"pad\": \"{}\",", "x".repeat(70_000)),
                                        );
                                    }
                                    (200, text)
                                };
                                let mut response =
                                    http::Response::new(Full::new(Bytes::from(text)));
                                *response.status_mut() =
                                    http::StatusCode::from_u16(status).unwrap();
                                Ok::<_, Infallible>(response)
                            }
                        });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            calls,
            asked,
            authorization,
            delay_ms,
            mode,
            fail_first,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Kills the store: the listener and every open connection.
    pub fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn mandate_over(upstream: &Upstream, extra: &[(&str, &str)]) -> Server {
    let url = upstream.url();
    let mut env = vec![
        ("MANDATE_STORE_KIND", "http"),
        ("MANDATE_STORE_UPSTREAM", url.as_str()),
    ];
    env.extend_from_slice(extra);
    Server::start(config_with(&env)).await
}

fn view(subject: &str) -> Value {
    json!({
        "subject": {"type": "user", "id": subject},
        "action": {"name": "view_account"},
        "resource": {"type": "account", "id": "alice-personal"}
    })
}

#[tokio::test]
async fn a_warm_cache_makes_no_upstream_call() {
    let upstream = Upstream::start().await;
    let server = mandate_over(&upstream, &[]).await;
    let url = server.url("/access/v1/evaluation");
    let reply = post(&url, &view("carol")).await;
    assert_eq!(reply.json["decision"], true, "{}", reply.json);
    assert_eq!(
        upstream.calls(),
        1,
        "principal and resource in one batched call"
    );
    assert_eq!(upstream.asked.lock().unwrap()[0].len(), 2);
    for _ in 0..5 {
        let reply = post(&url, &view("carol")).await;
        assert_eq!(reply.json["decision"], true);
    }
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test]
async fn fifty_concurrent_decisions_on_one_cold_uid_make_one_call() {
    let upstream = Upstream::start().await;
    upstream.delay_ms.store(300, Ordering::SeqCst);
    let server = mandate_over(&upstream, &[]).await;
    let url = server.url("/access/v1/evaluation");
    let decisions: Vec<_> = (0..50)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { post(&url, &view("carol")).await.json["decision"].clone() })
        })
        .collect();
    for decision in decisions {
        assert_eq!(decision.await.unwrap(), true);
    }
    assert_eq!(upstream.calls(), 1);
}

/// The TTL's edges (expiry, negative TTL, the stale bound, a remembered
/// slice's lifetime) are unit tests on tokio's paused clock
/// (`entities/cache.rs`, `engine/mod.rs`); this one is about a store
/// process that is really gone.
#[tokio::test]
async fn cached_entities_serve_stale_while_the_store_is_down_and_unseen_ones_deny() {
    let upstream = Upstream::start().await;
    let server = mandate_over(
        &upstream,
        &[
            ("MANDATE_CACHE_TTL", "200ms"),
            ("MANDATE_STORE_RETRIES", "0"),
        ],
    )
    .await;
    let url = server.url("/access/v1/evaluation");
    assert_eq!(post(&url, &view("carol")).await.json["decision"], true);
    upstream.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reply = post(&url, &view("carol")).await;
    assert_eq!(reply.json["decision"], true, "{}", reply.json);
    assert_eq!(reply.json["context"]["stale_data"], true);
    let reply = post(&url, &view("bob")).await;
    assert_eq!(reply.json["decision"], false);
    assert_eq!(
        reply.json["context"]["errors"][0]["code"],
        "entity_store_unavailable"
    );
}

#[tokio::test]
async fn a_slow_store_times_out_into_a_deny_not_a_hang() {
    let upstream = Upstream::start().await;
    upstream.delay_ms.store(5_000, Ordering::SeqCst);
    let server = mandate_over(
        &upstream,
        &[
            ("MANDATE_STORE_REQUEST_TIMEOUT", "200ms"),
            ("MANDATE_STORE_RETRIES", "1"),
        ],
    )
    .await;
    let reply = tokio::time::timeout(
        Duration::from_secs(4),
        post(&server.url("/access/v1/evaluation"), &view("carol")),
    )
    .await
    .expect("the decision must not wait for the slow store");
    assert_eq!(reply.json["decision"], false);
    let message = reply.json["context"]["errors"][0]["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("did not answer within"), "{message}");
    assert_eq!(upstream.calls(), 2, "one retry");
}

#[tokio::test]
async fn an_http1_client_gone_while_its_decision_waits_for_the_store_frees_its_connection() {
    let upstream = Upstream::start().await;
    upstream.delay_ms.store(3_000, Ordering::SeqCst);
    let server = mandate_over(
        &upstream,
        &[
            ("MANDATE_STORE_REQUEST_TIMEOUT", "5s"),
            ("MANDATE_SERVER_MAX_CONNECTIONS", "1"),
        ],
    )
    .await;
    let addr = server.addr;
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        // A whole request, then the client gone while its decision waits
        // for the store (a gateway whose own timeout fired). The server
        // must see it go and cancel the request: held until the store
        // answers, the only permit would refuse everyone else meanwhile.
        let body = view("carol").to_string();
        let mut gone = std::net::TcpStream::connect(addr).unwrap();
        write!(
            gone,
            "POST /access/v1/evaluation HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        drop(gone);
        std::thread::sleep(Duration::from_millis(300));
        let mut next = std::net::TcpStream::connect(addr).unwrap();
        next.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        next.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        let _ = next.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .unwrap();
    assert!(
        upstream.calls() >= 1,
        "the decision was waiting for the store"
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn an_http2_request_reset_while_it_waits_for_the_store_leaves_its_connection_idle() {
    let upstream = Upstream::start().await;
    upstream.delay_ms.store(3_000, Ordering::SeqCst);
    let server = mandate_over(
        &upstream,
        &[
            ("MANDATE_STORE_REQUEST_TIMEOUT", "5s"),
            ("MANDATE_SERVER_IDLE_TIMEOUT", "500ms"),
        ],
    )
    .await;
    let addr = server.addr.to_string();
    let ending = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        // A whole request, then a reset while its decision waits for the
        // store: hyper drops the request there. Were it still counted in
        // flight, this silent connection would never be idle, and a
        // client could hold every permit so.
        let mut attacker = crate::h2c::connect(&addr);
        let block = crate::h2c::request_block(0x83, "/access/v1/evaluation");
        let body = view("carol").to_string();
        attacker
            .write_all(&crate::h2c::frame(crate::h2c::HEADERS, 0x04, 1, &block))
            .unwrap();
        attacker
            .write_all(&crate::h2c::frame(0, 0x01, 1, body.as_bytes()))
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        attacker
            .write_all(&crate::h2c::frame(
                crate::h2c::RST_STREAM,
                0,
                1,
                &8u32.to_be_bytes(),
            ))
            .unwrap();
        crate::h2c::ending(&mut attacker, Duration::from_secs(2))
    })
    .await
    .unwrap();
    assert!(
        upstream.calls() >= 1,
        "the decision was waiting for the store"
    );
    assert!(ending.goaway.is_some(), "told with a GOAWAY: {ending:?}");
    assert!(ending.closed, "and closed: {ending:?}");
}

#[tokio::test]
async fn malformed_store_json_is_a_deny_with_an_error() {
    let upstream = Upstream::start().await;
    *upstream.mode.lock().unwrap() = Mode::Malformed;
    let server = mandate_over(&upstream, &[]).await;
    let reply = post(&server.url("/access/v1/evaluation"), &view("carol")).await;
    assert_eq!(reply.json["decision"], false);
    let message = reply.json["context"]["errors"][0]["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("malformed"), "{message}");
    assert_eq!(upstream.calls(), 1, "malformed data is not retried");
    let health = crate::support::get(&server.url("/healthz")).await;
    assert_eq!(health.status, 200);
}

#[tokio::test]
async fn a_5xx_is_retried_and_the_bearer_token_sent() {
    let upstream = Upstream::start().await;
    upstream.fail_first.store(1, Ordering::SeqCst);
    let server = mandate_over(&upstream, &[("MANDATE_STORE_UPSTREAM_TOKEN", "s3cret")]).await;
    let reply = post(&server.url("/access/v1/evaluation"), &view("carol")).await;
    assert_eq!(reply.json["decision"], true);
    assert_eq!(upstream.calls(), 2);
    assert_eq!(
        upstream.authorization.lock().unwrap().as_deref(),
        Some("Bearer s3cret")
    );
}

#[tokio::test]
async fn invalidation_forces_a_refetch() {
    let upstream = Upstream::start().await;
    let server = mandate_over(&upstream, &[]).await;
    let url = server.url("/access/v1/evaluation");
    post(&url, &view("carol")).await;
    assert_eq!(upstream.calls(), 1);
    let reply = post(
        &server.url("/admin/v1/cache/invalidate"),
        &json!({"uids": [{"type": "user", "id": "carol"}]}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.json);
    assert_eq!(reply.json["invalidated"], 1);
    post(&url, &view("carol")).await;
    assert_eq!(upstream.calls(), 2);
    assert_eq!(
        upstream.asked.lock().unwrap()[1],
        ["Brokerage::User::carol"]
    );
    let reply = post(
        &server.url("/admin/v1/cache/invalidate"),
        &json!({"all": true}),
    )
    .await;
    assert_eq!(reply.json["invalidated"], "all");
    post(&url, &view("carol")).await;
    assert_eq!(upstream.calls(), 3);
    let reply = post(
        &server.url("/admin/v1/cache/invalidate"),
        &json!({"uids": [{"type": "spaceship", "id": "x"}]}),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json["error"]["field"], "uids[0].type");
}

#[tokio::test]
async fn context_entities_are_fetched_with_the_rest() {
    let upstream = Upstream::start().await;
    let server = mandate_over(&upstream, &[]).await;
    let reply = post(
        &server.url("/access/v1/evaluation"),
        &json!({
            "subject": {"type": "user", "id": "erin"},
            "action": {"name": "withdraw"},
            "resource": {"type": "account", "id": "alice-personal"},
            "context": {"destination": {"type": "Brokerage::Destination", "id": "mallory-wallet"}}
        }),
    )
    .await;
    assert_eq!(reply.json["context"]["reasons"], json!(["F1"]));
    assert_eq!(upstream.calls(), 1);
    assert_eq!(upstream.asked.lock().unwrap()[0].len(), 3);
}

#[tokio::test]
async fn a_tls_store_is_trusted_through_the_configured_ca_only() {
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::pki::Ca::new("store test CA");
    let leaf = ca.leaf("localhost", &["localhost", "127.0.0.1"], false);
    let upstream = Upstream::start_with(Some(crate::pki::server_config(&leaf))).await;
    let url = format!("https://localhost:{}", upstream.addr.port());
    let ca_file = crate::pki::write(dir.path(), "ca.pem", &ca.cert_pem);
    let ca_path = ca_file.display().to_string();

    let trusted = Server::start(config_with(&[
        ("MANDATE_STORE_KIND", "http"),
        ("MANDATE_STORE_UPSTREAM", url.as_str()),
        ("MANDATE_STORE_UPSTREAM_CA", ca_path.as_str()),
    ]))
    .await;
    let reply = post(&trusted.url("/access/v1/evaluation"), &view("carol")).await;
    assert_eq!(reply.json["decision"], true, "{}", reply.json);

    // Without the CA (system roots only) the store's certificate is refused.
    let untrusted = Server::start(config_with(&[
        ("MANDATE_STORE_KIND", "http"),
        ("MANDATE_STORE_UPSTREAM", url.as_str()),
        ("MANDATE_STORE_RETRIES", "0"),
    ]))
    .await;
    let reply = post(&untrusted.url("/access/v1/evaluation"), &view("carol")).await;
    assert_eq!(reply.json["decision"], false);
    assert_eq!(
        reply.json["context"]["errors"][0]["code"],
        "entity_store_unavailable"
    );
}

#[tokio::test]
async fn the_policy_suites_pass_with_entities_from_the_http_store() {
    let upstream = Upstream::start().await;
    let output = tokio::process::Command::new(crate::support::binary())
        .current_dir(root())
        .args(["test", "--upstream", &upstream.url()])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    let last = stdout.lines().last().unwrap();
    assert!(last.ends_with(" passed, 0 failed"), "{last}");
    assert!(upstream.calls() > 0);
}

fn cancel_order(subject: &str, account: &str) -> Value {
    json!({
        "subject": {"type": "user", "id": subject},
        "action": {"name": "cancel_order"},
        "resource": {"type": "account", "id": account},
    })
}

#[tokio::test]
async fn an_entity_the_store_was_not_asked_for_is_never_kept() {
    let upstream = Upstream::start().await;
    let server = mandate_over(&upstream, &[]).await;
    // alice-personal is cached honestly (owner alice)...
    let reply = post(
        &server.url("/access/v1/evaluation"),
        &cancel_order("mallory", "alice-personal"),
    )
    .await;
    assert_eq!(reply.json["decision"], false);
    // ...then an answer about bare-personal smuggles in a forged copy.
    *upstream.mode.lock().unwrap() = Mode::Forge;
    let reply = post(
        &server.url("/access/v1/evaluation"),
        &cancel_order("paula", "bare-personal"),
    )
    .await;
    assert_eq!(reply.status, 200);
    let reply = post(
        &server.url("/access/v1/evaluation"),
        &cancel_order("mallory", "alice-personal"),
    )
    .await;
    assert_eq!(reply.json["decision"], false, "{}", reply.json);
    // Asked for it directly, the forged copy beside the real one is a
    // duplicate: malformed, so a deny.
    let reply = post(
        &server.url("/admin/v1/cache/invalidate"),
        &json!({"all": true}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.json);
    let reply = post(
        &server.url("/access/v1/evaluation"),
        &cancel_order("mallory", "alice-personal"),
    )
    .await;
    assert_eq!(reply.json["decision"], false, "{}", reply.json);
}

#[tokio::test]
async fn an_answer_naming_a_uid_twice_is_malformed() {
    let upstream = Upstream::start().await;
    *upstream.mode.lock().unwrap() = Mode::Duplicate;
    let server = mandate_over(&upstream, &[]).await;
    let reply = post(&server.url("/access/v1/evaluation"), &view("carol")).await;
    assert_eq!(reply.json["decision"], false);
    let message = reply.json["context"]["errors"][0]["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("more than once"), "{message}");
}

#[tokio::test]
async fn an_answer_beyond_the_response_limit_is_a_deny() {
    let upstream = Upstream::start().await;
    *upstream.mode.lock().unwrap() = Mode::Huge;
    let server = mandate_over(&upstream, &[("MANDATE_STORE_MAX_RESPONSE_BYTES", "65536")]).await;
    let reply = post(&server.url("/access/v1/evaluation"), &view("carol")).await;
    assert_eq!(reply.json["decision"], false);
    let message = reply.json["context"]["errors"][0]["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("store.max_response_bytes"), "{message}");
    // the same answer under the default limit is read (the pad is ignored)
    let server = mandate_over(&upstream, &[]).await;
    let reply = post(&server.url("/access/v1/evaluation"), &view("carol")).await;
    assert_eq!(reply.json["decision"], true, "{}", reply.json);
}

#[tokio::test]
async fn a_batch_of_unknown_subjects_costs_one_store_call_per_round() {
    let upstream = Upstream::start().await;
    let server = mandate_over(&upstream, &[]).await;
    let evaluations: Vec<Value> = (0..300)
        .map(|i| json!({"subject": {"type": "user", "id": format!("nobody-{i}")}}))
        .collect();
    let body = json!({
        "action": {"name": "view_account"},
        "resource": {"type": "account", "id": "alice-personal"},
        "evaluations": evaluations,
    });
    let reply = post(&server.url("/access/v1/evaluations"), &body).await;
    assert_eq!(reply.status, 200);
    let answers = reply.json["evaluations"].as_array().unwrap();
    assert_eq!(answers.len(), 300);
    assert!(answers.iter().all(|a| a["decision"] == false));
    // One call for every subject and the resource, one for the account's
    // parents at most: not one per item.
    assert!(upstream.calls() <= 3, "{} store calls", upstream.calls());

    let requests: Vec<Value> = (0..300)
        .map(|i| {
            json!({
                "principal": {"type": "Brokerage::User", "id": format!("ghost-{i}")},
                "action": {"type": "Brokerage::Action", "id": "view_account"},
                "resource": {"type": "Brokerage::Account", "id": "bare-personal"},
            })
        })
        .collect();
    let before = upstream.calls();
    let reply = post(
        &server.url("/v1/is_authorized/batch"),
        &json!({"requests": requests}),
    )
    .await;
    assert_eq!(reply.json["results"].as_array().unwrap().len(), 300);
    assert!(
        upstream.calls() - before <= 3,
        "{} store calls",
        upstream.calls() - before
    );
}

#[tokio::test]
async fn a_zero_ttl_asks_the_store_every_time_and_still_decides() {
    let upstream = Upstream::start().await;
    let server = mandate_over(&upstream, &[("MANDATE_CACHE_TTL", "0s")]).await;
    let mut calls = 0;
    for round in 1..=3 {
        let reply = post(&server.url("/access/v1/evaluation"), &view("carol")).await;
        assert_eq!(
            reply.json["decision"], true,
            "round {round}: {}",
            reply.json
        );
        assert!(
            upstream.calls() > calls,
            "round {round}: the store is asked again"
        );
        calls = upstream.calls();
    }
}

#[tokio::test]
async fn metrics_count_the_entities_cached_and_report_the_process() {
    let upstream = Upstream::start().await;
    let server = mandate_over(&upstream, &[]).await;
    let reply = post(&server.url("/access/v1/evaluation"), &view("carol")).await;
    assert_eq!(reply.json["decision"], true, "{}", reply.json);
    let text = crate::operations::scrape(&server.url("/metrics")).await;
    let value = |name: &str| {
        text.lines().find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
    };
    assert!(
        value("mandate_entity_cache_entries").is_some_and(|n| n >= 2.0),
        "carol and the account are cached: {:?}",
        value("mandate_entity_cache_entries")
    );
    assert!(value("process_resident_memory_bytes").is_some_and(|bytes| bytes > 1e6));
    assert!(value("process_open_fds").is_some_and(|fds| fds >= 3.0));
    assert!(value("process_cpu_seconds_total").is_some());
}
