//! The shared cases (`clients/cases.json`) against a real `mandate serve`,
//! and every fault against a stub: `allowed` is `false` within the
//! deadline, `evaluate` fails with the error the case names.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mandate_client::{Client, Config, Entity, Error, Request, Semantic, Tls};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket};

fn cases() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../cases.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The `mandate` binary: `MANDATE_BIN`, or the one built beside this test.
fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("MANDATE_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let bin = dir.join("mandate");
    assert!(
        bin.exists(),
        "{} is missing: build it (`cargo build`) or set MANDATE_BIN",
        bin.display()
    );
    bin
}

/// A real `mandate serve` on its embedded defaults, on a free port.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start() -> Self {
        use std::io::BufRead;
        let mut command = Command::new(binary());
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // The server runs on its embedded defaults, and refuses `MANDATE_…`
        // variables it does not know: none of the caller's reaches it
        // (`MANDATE_BIN`, which names it; the client's `MANDATE_URL`).
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("MANDATE_") {
                command.env_remove(key);
            }
        }
        let mut child = command.spawn().unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut said = Vec::new();
        let url = lines.by_ref().map_while(Result::ok).find_map(|line| {
            let url = line
                .strip_prefix("mandate listening on ")
                .map(str::to_owned);
            said.push(line);
            url
        });
        let Some(url) = url else {
            let _ = child.kill();
            panic!("the server printed no address:\n{}", said.join("\n"));
        };
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, url }
    }

    fn client(&self) -> Client {
        Client::new(
            Config::default()
                .url(&self.url)
                .timeout(Duration::from_secs(5)),
        )
        .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn entity(value: &Value) -> Entity {
    let mut entity = Entity::new(
        value["type"].as_str().unwrap(),
        value.get("id").and_then(Value::as_str).unwrap_or(""),
    );
    if let Some(properties) = value.get("properties").and_then(Value::as_object) {
        entity = entity.properties(properties.clone());
    }
    entity
}

fn request(body: &Value) -> Request {
    let subject = entity(&body["subject"]);
    let resource = entity(&body["resource"]);
    let mut request = match body.get("action") {
        Some(action) => Request::new(subject, action["name"].as_str().unwrap(), resource),
        None => Request::any_action(subject, resource),
    };
    if let Some(context) = body.get("context") {
        request = request.context(context.clone());
    }
    request
}

#[tokio::test]
async fn every_shared_case_is_decided_by_the_real_server() {
    let server = Server::start();
    let client = server.client();
    let cases = cases();
    for case in cases["decisions"].as_array().unwrap() {
        let question = request(&case["request"]);
        let decision = client.evaluate(&question).await.unwrap();
        assert_eq!(decision.decision, case["decision"], "{case}");
        assert_eq!(json!(decision.reasons), case["reasons"], "{case}");
        assert_eq!(json!(decision.errors), case["errors"], "{case}");
        assert!(decision.policy_version.is_some());
        assert_eq!(client.allowed(&question).await, case["decision"], "{case}");
    }
    for max in [1000, 1] {
        let client = Client::new(Config::default().url(&server.url).max_batch_items(max)).unwrap();
        for case in cases["batches"].as_array().unwrap() {
            let mut defaults = case["request"].clone();
            let items = defaults["evaluations"].as_array().unwrap().clone();
            let semantic = match defaults
                .pointer("/options/evaluations_semantic")
                .and_then(Value::as_str)
            {
                Some("deny_on_first_deny") => Semantic::DenyOnFirstDeny,
                Some("permit_on_first_permit") => Semantic::PermitOnFirstPermit,
                _ => Semantic::ExecuteAll,
            };
            let object = defaults.as_object_mut().unwrap();
            object.remove("evaluations");
            object.remove("options");
            let decided = client
                .evaluations(&defaults, &items, semantic)
                .await
                .unwrap();
            let decisions: Vec<bool> = decided.iter().map(|d| d.decision).collect();
            assert_eq!(json!(decisions), case["decisions"], "max {max}: {case}");
        }
    }
    for case in cases["searches"].as_array().unwrap() {
        let question = request(&case["request"]);
        let found: Vec<Value> = match case["kind"].as_str().unwrap() {
            "subject" => all(client.search_subjects(&question)).await,
            "resource" => all(client.search_resources(&question)).await,
            _ => all(client.search_actions(&question)).await,
        };
        assert_eq!(json!(found), case["results"], "{case}");
    }
    // An action search without the order's context says what it skipped.
    let bare = Request::any_action(
        Entity::new("user", "carol"),
        Entity::new("account", "alice-personal"),
    );
    let page = client.search_actions_page(&bare, None).await.unwrap();
    assert!(
        page.skipped
            .iter()
            .any(|s| s.name == "place_order" && s.reason.contains("instrument")),
        "{page:?}"
    );
    for case in cases["bad_requests"].as_array().unwrap() {
        let question = request(&case["request"]);
        match client.evaluate(&question).await {
            Err(Error::Server {
                status,
                code,
                field,
                ..
            }) => {
                assert_eq!(json!(status), case["status"]);
                assert_eq!(json!(code), case["code"]);
                assert_eq!(json!(field), case["field"]);
            }
            other => panic!("{case}: {other:?}"),
        }
    }
}

async fn all(stream: impl futures_util::Stream<Item = Result<Value, Error>>) -> Vec<Value> {
    stream.map(Result::unwrap).collect().await
}

#[tokio::test]
async fn search_follows_pages_to_the_last() {
    let server = Server::start();
    let client = server.client();
    let question = Request::new(
        Entity::of_type("user"),
        "withdraw",
        Entity::new("account", "alice-personal"),
    )
    .context(json!({"destination": {"type": "Brokerage::Destination", "id": "alice-bank"}, "amount": "500.00"}));
    let whole = all(client.search_subjects(&question)).await;
    assert!(whole.len() > 2, "{whole:?}");
    let paged = all(client.search_subjects(&question.clone().page_limit(1))).await;
    assert_eq!(paged, whole, "pages of one, followed to the last");

    // The stream asks for each page with the token the last one gave.
    let Stub { url, seen, .. } = stub(|n, _| {
        let body = match n {
            1 => r#"{"page":{"next_token":"t2","count":1,"total":3},"results":[{"type":"user","id":"a"}]}"#,
            2 => r#"{"page":{"next_token":"t3","count":1,"total":3},"results":[{"type":"user","id":"b"}]}"#,
            _ => r#"{"page":{"next_token":"","count":1,"total":3},"results":[{"type":"user","id":"c"}]}"#,
        };
        Some((200, String::new(), body.to_owned()))
    })
    .await;
    let client = Client::new(Config::default().url(&url)).unwrap();
    let ids: Vec<Value> = all(client.search_subjects(&question.clone().page_limit(1))).await;
    assert_eq!(ids.len(), 3);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].body["page"], json!({"limit": 1}));
    assert_eq!(seen[1].body["page"], json!({"limit": 1, "token": "t2"}));
    assert_eq!(seen[2].body["page"], json!({"limit": 1, "token": "t3"}));
}

/// What a stub saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A stub server: its URL, the requests it saw, the connections it accepted.
struct Stub {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
}

impl Stub {
    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A stub HTTP/1.1 server (keep-alive) answering each request with
/// `answer(n, seen)`: (status, extra headers, body); `None` keeps the
/// connection silent.
async fn stub(
    answer: impl Fn(usize, &Seen) -> Option<(u16, String, String)> + Send + Sync + 'static,
) -> Stub {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let connections = Arc::new(AtomicUsize::new(0));
    let answer = Arc::new(answer);
    let log = Arc::clone(&seen);
    let accepted = Arc::clone(&connections);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            accepted.fetch_add(1, Ordering::SeqCst);
            let (answer, log) = (Arc::clone(&answer), Arc::clone(&log));
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut reader = BufReader::new(read);
                loop {
                    let mut head = Vec::new();
                    while !head.ends_with(b"\r\n\r\n") {
                        match reader.read_u8().await {
                            Ok(byte) => head.push(byte),
                            Err(_) => return,
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let path = head
                        .lines()
                        .next()
                        .and_then(|line| line.split(' ').nth(1))
                        .unwrap_or_default()
                        .to_owned();
                    let headers: Vec<(String, String)> = head
                        .lines()
                        .skip(1)
                        .filter_map(|l| l.split_once(':'))
                        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                        .collect();
                    let length: usize = headers
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let seen = Seen {
                        path,
                        headers,
                        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    };
                    let number = {
                        let mut log = log.lock().unwrap();
                        log.push(seen.clone());
                        log.len()
                    };
                    let Some((status, extra, body)) = answer(number, &seen) else {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    };
                    let response = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}",
                        body.len()
                    );
                    if write.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Stub {
        url,
        seen,
        connections,
    }
}

fn question() -> Request {
    Request::new(
        Entity::new("user", "carol"),
        "view_account",
        Entity::new("account", "alice-personal"),
    )
}

/// The default deadline, which the faults are asked with.
const DEADLINE: Duration = Duration::from_millis(500);
/// The contract's "within the deadline (plus 100 ms)".
const SLACK: Duration = Duration::from_millis(100);

/// An allow, as Mandate answers it.
const ALLOW: &str = r#"{"decision":true,"context":{"reasons":["stub"],"errors":[]}}"#;

/// What a call gave, and how long it took.
async fn timed<T>(call: impl std::future::Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let value = call.await;
    (value, started.elapsed())
}

/// The error kinds `cases.json` names (`evaluate_raises`, …).
fn kind(error: &Error) -> &'static str {
    match error {
        Error::Transport(_) => "transport",
        Error::Timeout(_) => "timeout",
        Error::Protocol(_) => "protocol",
        Error::Server { .. } => "server",
        Error::Config(_) => "config",
    }
}

/// The stub a fault case names. A closed port is a socket bound and never
/// listening: every connect is refused, and no one else gets the port.
async fn fault_stub(case: &Value) -> (String, Option<Stub>, Option<TcpSocket>) {
    let error = |code: &str, message: &str| {
        json!({"error": {"code": code, "message": message}}).to_string()
    };
    let answer = |status: u16, body: &str| Some((status, String::new(), body.to_owned()));
    let stub = match case["stub"].as_str().unwrap() {
        "closed_port" => {
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let url = format!("http://{}", socket.local_addr().unwrap());
            return (url, None, Some(socket));
        }
        "silent" => stub(|_, _| None).await,
        "status_500" => {
            let body = error("internal", "stub failure");
            stub(move |_, _| answer(500, &body)).await
        }
        "bad_json" => stub(move |_, _| answer(200, "<html>not json</html>")).await,
        "bad_decision" => stub(move |_, _| answer(200, r#"{"decision":"yes","context":{}}"#)).await,
        "short_batch" => {
            stub(move |_, seen| {
                if seen.path.ends_with("/evaluations") {
                    answer(200, &format!(r#"{{"evaluations":[{ALLOW}]}}"#))
                } else {
                    answer(200, ALLOW)
                }
            })
            .await
        }
        "unavailable_then_allow" => {
            // The first try of each request id is a 503 `Retry-After: 0`.
            let tried: Mutex<Vec<String>> = Mutex::default();
            let body = error("unavailable", "busy");
            stub(move |_, seen| {
                let id = seen.header("x-request-id").unwrap_or_default().to_owned();
                let mut tried = tried.lock().unwrap();
                if tried.contains(&id) {
                    answer(200, ALLOW)
                } else {
                    tried.push(id);
                    Some((503, "Retry-After: 0\r\n".to_owned(), body.clone()))
                }
            })
            .await
        }
        "unavailable_long" => {
            let seconds = case["retry_after_seconds"].as_u64().unwrap();
            let body = error("unavailable", "busy");
            stub(move |_, _| Some((503, format!("Retry-After: {seconds}\r\n"), body.clone()))).await
        }
        other => panic!("no stub for the fault `{other}`: add one to fault_stub"),
    };
    (stub.url.clone(), Some(stub), None)
}

/// One fault of `cases.json`, read as the Python and TypeScript suites
/// read it: `allowed` (the answer, within the deadline plus 100 ms; a
/// `false` is a counted failure the hook is told of, of the kind
/// `evaluate_raises` names), `evaluate_raises` (that error, its `status`
/// and `code`, in time), `evaluate_decision`, `evaluations_raises` (a
/// batch of two, in time), `retried` (each call retried once, or none),
/// `same_request_id` (the retry repeats its try's `X-Request-ID`).
async fn fails_closed(case: &Value) {
    let name = case["name"].as_str().unwrap();
    let (url, stub, _closed) = fault_stub(case).await;
    let hooked: Arc<Mutex<Vec<Error>>> = Arc::default();
    let told = Arc::clone(&hooked);
    let client = Client::new(
        Config::default()
            .url(&url)
            .on_error(move |e| told.lock().unwrap().push(e.clone())),
    )
    .unwrap();
    let fault_question = request(&cases()["decisions"][0]["request"]);
    let mut calls = 0; // the calls made, retries not counted
    let mut failures = 0;

    if let Some(expected) = case.get("allowed") {
        let (allowed, took) = timed(client.allowed(&fault_question)).await;
        calls += 1;
        assert_eq!(json!(allowed), *expected, "{name}: allowed");
        assert!(took < DEADLINE + SLACK, "{name}: allowed took {took:?}");
        if !allowed {
            failures += 1;
            let hooked = hooked.lock().unwrap();
            assert_eq!(hooked.len(), failures, "{name}: the hook is told");
            assert_eq!(
                json!(kind(hooked.last().unwrap())),
                case["evaluate_raises"],
                "{name}: {hooked:?}"
            );
        }
    }
    if let Some(expected) = case.get("evaluate_raises") {
        let (result, took) = timed(client.evaluate(&fault_question)).await;
        calls += 1;
        failures += 1;
        let error = result.expect_err(name);
        assert_eq!(json!(kind(&error)), *expected, "{name}: {error:?}");
        assert!(took < DEADLINE + SLACK, "{name}: evaluate took {took:?}");
        if let Some(status) = case.get("status") {
            assert!(
                matches!(&error, Error::Server { status: s, .. } if json!(s) == *status),
                "{name}: {error:?}"
            );
        }
        if let Some(code) = case.get("code") {
            assert!(
                matches!(&error, Error::Server { code: Some(c), .. } if json!(c) == *code),
                "{name}: {error:?}"
            );
        }
        if let Error::Timeout(after) = error {
            assert_eq!(after, DEADLINE, "{name}: the call's deadline passed");
        }
    }
    if let Some(expected) = case.get("evaluate_decision") {
        let (decision, took) = timed(client.evaluate(&fault_question)).await;
        calls += 1;
        assert_eq!(json!(decision.unwrap().decision), *expected, "{name}");
        assert!(took < DEADLINE + SLACK, "{name}: evaluate took {took:?}");
    }
    if let Some(expected) = case.get("evaluations_raises") {
        let defaults = json!({"subject": {"type": "user", "id": "bob"}, "resource": {"type": "account", "id": "alice-personal"}});
        let items = [
            json!({"action": {"name": "view_account"}}),
            json!({"action": {"name": "cancel_order"}}),
        ];
        let (result, took) =
            timed(client.evaluations(&defaults, &items, Semantic::ExecuteAll)).await;
        calls += 1;
        failures += 1;
        let error = result.expect_err(name);
        assert_eq!(json!(kind(&error)), *expected, "{name}: {error:?}");
        assert!(took < DEADLINE + SLACK, "{name}: evaluations took {took:?}");
    }

    assert!(calls > 0, "{name}: the case asks nothing");
    assert_eq!(client.failures(), failures as u64, "{name}: failures");
    assert_eq!(hooked.lock().unwrap().len(), failures, "{name}: hook");
    let retries = if case["retried"].as_bool().unwrap() {
        calls
    } else {
        0
    };
    assert_eq!(client.retries(), retries as u64, "{name}: retries");
    if let Some(stub) = stub {
        let seen = stub.requests();
        assert_eq!(seen.len(), calls + retries, "{name}: requests");
        if case.get("same_request_id") == Some(&json!(true)) {
            let ids: Vec<&str> = seen
                .iter()
                .map(|s| s.header("x-request-id").unwrap())
                .collect();
            for pair in ids.chunks(2) {
                assert!(!pair[0].is_empty() && pair[0].len() <= 128, "{ids:?}");
                assert_eq!(pair[0], pair[1], "{name}: the retry repeats the id");
            }
            let distinct: std::collections::BTreeSet<&str> = ids.iter().copied().collect();
            assert_eq!(distinct.len(), calls, "{name}: each call has its own id");
        }
    }
}

#[tokio::test]
async fn every_fault_of_the_shared_cases_fails_closed_within_the_deadline() {
    assert_eq!(Config::default().timeout, DEADLINE);
    let cases = cases();
    let faults = cases["faults"].as_array().unwrap();
    assert!(faults.len() >= 7, "{faults:?}");
    for case in faults {
        fails_closed(case).await;
    }
}

#[tokio::test]
async fn odd_answers_fail_closed_too() {
    // A Retry-After no clock can add: no retry, and no panic.
    let server = stub(|_, _| {
        Some((
            503,
            "Retry-After: 10000000000000000000\r\n".to_owned(),
            "{}".to_owned(),
        ))
    })
    .await;
    let client = Client::new(Config::default().url(&server.url)).unwrap();
    let (allowed, took) = timed(client.allowed(&question())).await;
    assert!(!allowed);
    assert!(took < DEADLINE + SLACK, "{took:?}");
    let error = client.evaluate(&question()).await.unwrap_err();
    assert!(
        matches!(error, Error::Server { status: 503, .. }),
        "{error:?}"
    );
    assert_eq!(client.retries(), 0);
    assert_eq!(server.requests().len(), 2);

    // A search whose pages never end: the same token again is refused.
    let server = stub(|_, _| {
        Some((
            200,
            String::new(),
            r#"{"page":{"next_token":"again"},"results":[]}"#.to_owned(),
        ))
    })
    .await;
    let client = Client::new(Config::default().url(&server.url)).unwrap();
    let question = Request::new(
        Entity::of_type("user"),
        "view_account",
        Entity::new("account", "alice-personal"),
    );
    let ended: Vec<Result<Value, Error>> = client.search_subjects(&question).collect().await;
    assert!(
        matches!(ended.as_slice(), [Err(Error::Protocol(_))]),
        "{ended:?}"
    );
}

/// A listener whose accept queue is full: Linux drops a further SYN, so a
/// connect to it hangs (on loopback nothing else does). Returns it, the
/// connection that fills it, and its URL.
async fn a_port_that_never_accepts() -> (TcpListener, Vec<tokio::net::TcpStream>, String) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let address = listener.local_addr().unwrap();
    let mut filled = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(address),
        )
        .await
        {
            Ok(stream) => filled.push(stream.unwrap()),
            // A connect that hangs: the queue is full.
            Err(_) => return (listener, filled, format!("http://{address}")),
        }
    }
    panic!(
        "{} connections to a listener of backlog 0 were all accepted by the kernel \
         (net.ipv4.tcp_abort_on_overflow?): no port that never answers a SYN here",
        filled.len()
    );
}

#[tokio::test]
async fn the_connect_has_its_own_limit_inside_the_deadline() {
    let (_listener, _filled, url) = a_port_that_never_accepts().await;
    let limit = Duration::from_millis(100);
    let client = Client::new(
        Config::default()
            .url(&url)
            .timeout(Duration::from_secs(2))
            .connect_timeout(limit),
    )
    .unwrap();
    let (result, took) = timed(client.evaluate(&question())).await;
    let error = result.unwrap_err();
    assert!(
        matches!(error, Error::Timeout(after) if after == limit),
        "{error:?}"
    );
    assert!(
        took >= limit - Duration::from_millis(5) && took < limit + SLACK,
        "the connect limit, not the 2 s deadline: {took:?}"
    );
    assert_eq!(client.retries(), 0, "never a retry after a timeout");
    let (allowed, took) = timed(client.allowed(&question())).await;
    assert!(!allowed);
    assert!(took < limit + SLACK, "{took:?}");
    assert_eq!(client.failures(), 2);
}

#[tokio::test]
async fn connections_are_kept_alive_and_reused() {
    let server = stub(|_, _| Some((200, String::new(), ALLOW.to_owned()))).await;
    let client = Client::new(Config::default().url(&server.url)).unwrap();
    assert!(client.allowed(&question()).await);
    // The first connection goes back to the pool once its answer is read.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(client.evaluate(&question()).await.unwrap().decision);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(client.allowed(&question()).await);
    assert_eq!(server.requests().len(), 3);
    assert_eq!(
        server.connections.load(Ordering::SeqCst),
        1,
        "three calls, one connection"
    );
}

#[tokio::test]
async fn a_batch_answer_of_the_wrong_length_or_past_its_stop_is_refused() {
    let Stub { url, .. } = stub(|_, _| {
        Some((
            200,
            String::new(),
            r#"{"evaluations":[{"decision":true}]}"#.to_owned(),
        ))
    })
    .await;
    let client = Client::new(Config::default().url(&url)).unwrap();
    let items = vec![
        json!({"action": {"name": "view_account"}}),
        json!({"action": {"name": "cancel_order"}}),
    ];
    let defaults = json!({"subject": {"type": "user", "id": "bob"}, "resource": {"type": "account", "id": "alice-personal"}});
    let error = client
        .evaluations(&defaults, &items, Semantic::ExecuteAll)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Protocol(_)), "{error:?}");

    // deny_on_first_deny: the first chunk stops, no other is sent.
    let Stub { url, seen, .. } = stub(|_, _| {
        Some((
            200,
            String::new(),
            r#"{"evaluations":[{"decision":false}]}"#.to_owned(),
        ))
    })
    .await;
    let client = Client::new(Config::default().url(&url).max_batch_items(1)).unwrap();
    let decided = client
        .evaluations(
            &defaults,
            &[items.clone(), items.clone()].concat(),
            Semantic::DenyOnFirstDeny,
        )
        .await
        .unwrap();
    assert_eq!(decided.len(), 1);
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(
        seen.lock().unwrap()[0].body["options"]["evaluations_semantic"],
        "deny_on_first_deny"
    );
}

#[tokio::test]
async fn the_token_and_the_trace_are_sent() {
    let Stub { url, seen, .. } =
        stub(|_, _| Some((200, String::new(), r#"{"decision":true}"#.to_owned()))).await;
    let client = Client::new(Config::default().url(&url).token("s3cret")).unwrap();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    assert!(
        client
            .allowed(&question().traceparent(traceparent).request_id("order-7"))
            .await
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].header("authorization"), Some("Bearer s3cret"));
    assert_eq!(seen[0].header("traceparent"), Some(traceparent));
    assert_eq!(seen[0].header("x-request-id"), Some("order-7"));
    assert_eq!(
        seen[0].body["subject"],
        json!({"type": "user", "id": "carol"})
    );
}

#[tokio::test]
async fn a_unix_socket_reaches_the_server_and_mandate_url_configures_the_client() {
    let server = Server::start();
    let dir = std::env::temp_dir().join(format!("mandate-client-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("mandate.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let target = server.url.trim_start_matches("http://").to_owned();
    tokio::spawn(async move {
        while let Ok((mut unix, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                let mut tcp = tokio::net::TcpStream::connect(target).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut unix, &mut tcp).await;
            });
        }
    });
    let client = Client::new(Config::default().url(format!("unix:{}", socket.display()))).unwrap();
    assert!(
        client.allowed(&question()).await,
        "carol views over the socket"
    );
    // SAFETY: no other test reads or writes MANDATE_URL.
    unsafe { std::env::set_var("MANDATE_URL", &server.url) };
    let from_env = Client::new(Config::from_env()).unwrap();
    assert!(from_env.allowed(&question()).await);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn mutual_tls_needs_the_client_certificate() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client_cert = CertificateParams::new(vec!["orders".to_owned()])
        .unwrap()
        .signed_by(&client_key, &issuer)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("mandate-client-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ca_file = write("ca.pem", ca.pem());
    let cert_file = write("client.pem", client_cert.pem());
    let key_file = write("client.key", client_key.serialize_pem());

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server_cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(server_key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buffer = vec![0; 4096];
                let _ = tls.read(&mut buffer).await;
                let body = r#"{"decision":true}"#;
                let _ = tls.write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    let url = format!("https://localhost:{port}");
    let with = Client::new(Config::default().url(&url).tls(Tls {
        ca: Some(ca_file.clone()),
        identity: Some((cert_file, key_file)),
    }))
    .unwrap();
    assert!(with.evaluate(&question()).await.unwrap().decision);
    let without = Client::new(Config::default().url(&url).tls(Tls {
        ca: Some(ca_file),
        identity: None,
    }))
    .unwrap();
    let error = without.evaluate(&question()).await.unwrap_err();
    assert!(
        matches!(error, Error::Transport(_) | Error::Protocol(_)),
        "{error:?}"
    );
    assert!(!without.allowed(&question()).await);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_guard_layer_lets_only_an_allow_through() {
    use tower_layer::Layer;
    use tower_service::Service;
    let server = Server::start();
    let client = server.client();
    #[derive(Clone)]
    struct Hello;
    impl Service<http::Request<()>> for Hello {
        type Response = http::Response<String>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            std::future::ready(Ok(http::Response::new("orders".to_owned())))
        }
    }
    let layer = mandate_client::GuardLayer::new(client, |request: &http::Request<()>| {
        let user = request.headers().get("x-user")?.to_str().ok()?;
        Some(Request::new(
            Entity::new("user", user),
            "view_account",
            Entity::new("account", "alice-personal"),
        ))
    });
    let mut guarded = layer.layer(Hello);
    for (user, status) in [(Some("bob"), 200), (Some("mallory"), 403), (None, 403)] {
        let mut request = http::Request::new(());
        if let Some(user) = user {
            request
                .headers_mut()
                .insert("x-user", user.parse().unwrap());
        }
        let response = guarded.call(request).await.unwrap();
        assert_eq!(response.status(), status, "{user:?}");
    }
}
