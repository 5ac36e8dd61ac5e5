//! The AuthZEN 1.0 certification scenario (openid/authzen,
//! `certification/authorization-api-1_0-scenario.md`), test id by test id,
//! against `examples/authzen-cert/` served over HTTPS on a real port. The
//! per-level table is printed (`cargo test --test e2e authzen_cert --
//! --nocapture`) and is the one docs/compatibility.md publishes. Then the
//! rules the scenario sets for every pack, checked on the shipped one.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use crate::pki::{Ca, client, write};
use crate::support::{Server, path, post, post_raw, root, text};

const BASIC_CORE: &str = "Basic Core";
const BASIC_PROPERTIES: &str = "Basic Properties";
const BATCH_CORE: &str = "Batch Core";
const BATCH_PROPERTIES: &str = "Batch Properties";
const SEARCH_CORE: &str = "Search Core";
const SEARCH_PROPERTIES: &str = "Search Properties";
const DISCOVERY: &str = "Discovery";
const TRANSPORT: &str = "Transport (every level)";
const LEVELS: [&str; 8] = [
    BASIC_CORE,
    BASIC_PROPERTIES,
    BATCH_CORE,
    BATCH_PROPERTIES,
    SEARCH_CORE,
    SEARCH_PROPERTIES,
    DISCOVERY,
    TRANSPORT,
];

const EVALUATION: &str = "/access/v1/evaluation";
const EVALUATIONS: &str = "/access/v1/evaluations";
const SUBJECTS: &str = "/access/v1/search/subject";
const RESOURCES: &str = "/access/v1/search/resource";
const ACTIONS: &str = "/access/v1/search/action";

type Outcome = Result<(), String>;

fn ensure(holds: bool, why: impl FnOnce() -> String) -> Outcome {
    if holds { Ok(()) } else { Err(why()) }
}

/// An answer: status, headers, the body as JSON (`Null` when it is none).
struct Answer {
    status: u16,
    headers: http::HeaderMap,
    json: Value,
}

impl Answer {
    fn is_json(&self) -> bool {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"))
    }

    fn status(&self, status: u16) -> Outcome {
        ensure(self.status == status, || {
            format!("HTTP {} (wanted {status}): {}", self.status, self.json)
        })
    }

    /// HTTP 200, JSON, a boolean `decision` (the one wanted, if any) and
    /// a `context`, if any, that is an object.
    fn decision(&self, wanted: Option<bool>) -> Outcome {
        self.status(200)?;
        ensure(self.is_json(), || "not application/json".to_owned())?;
        let decision = self.json["decision"]
            .as_bool()
            .ok_or_else(|| format!("no boolean `decision`: {}", self.json))?;
        ensure(wanted.is_none_or(|w| w == decision), || {
            format!("decision {decision}, wanted {wanted:?}")
        })?;
        ensure(
            self.json.get("context").is_none_or(Value::is_object),
            || "`context` is not an object".to_owned(),
        )
    }

    /// HTTP 200, JSON, `evaluations` as many as `wanted`, each a boolean
    /// `decision` (the one wanted, if any), in order.
    fn batch(&self, wanted: &[Option<bool>]) -> Outcome {
        self.status(200)?;
        ensure(self.is_json(), || "not application/json".to_owned())?;
        let items = self.json["evaluations"]
            .as_array()
            .ok_or_else(|| format!("no `evaluations` array: {}", self.json))?;
        ensure(items.len() == wanted.len(), || {
            format!("{} evaluations, wanted {}", items.len(), wanted.len())
        })?;
        for (index, (item, wanted)) in items.iter().zip(wanted).enumerate() {
            let decision = item["decision"]
                .as_bool()
                .ok_or_else(|| format!("evaluations[{index}] has no boolean `decision`"))?;
            ensure(wanted.is_none_or(|w| w == decision), || {
                format!("evaluations[{index}]: {decision}, wanted {wanted:?}")
            })?;
        }
        Ok(())
    }

    /// HTTP 200, JSON, `results` of `type` (or `name`s for actions), a
    /// `page`, if any, an object with a string `next_token`; the ids (or
    /// names) found.
    fn results(&self, searched_type: Option<&str>) -> Result<Vec<String>, String> {
        self.status(200)?;
        ensure(self.is_json(), || "not application/json".to_owned())?;
        let results = self.json["results"]
            .as_array()
            .ok_or_else(|| format!("no `results` array: {}", self.json))?;
        if let Some(page) = self.json.get("page") {
            ensure(page.is_object(), || "`page` is not an object".to_owned())?;
            ensure(page.get("next_token").is_none_or(Value::is_string), || {
                "`page.next_token` is not a string".to_owned()
            })?;
        }
        results
            .iter()
            .map(|result| match searched_type {
                Some(ty) => {
                    ensure(result["type"] == ty, || {
                        format!("{result} is not of type `{ty}`")
                    })?;
                    result["id"]
                        .as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| format!("{result} has no `id`"))
                }
                None => result["name"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{result} has no `name`")),
            })
            .collect()
    }

    /// As [`Self::results`], holding at least `wanted`.
    fn includes(
        &self,
        searched_type: Option<&str>,
        wanted: &[&str],
    ) -> Result<Vec<String>, String> {
        let found = self.results(searched_type)?;
        for id in wanted {
            ensure(found.iter().any(|f| f == id), || {
                format!("`{id}` missing from {found:?}")
            })?;
        }
        Ok(found)
    }
}

/// `examples/authzen-cert` over HTTPS (a CA made for the test), as
/// `mandate serve --config examples/authzen-cert/mandate.toml` serves it.
struct Pdp {
    _server: Server,
    _dir: tempfile::TempDir,
    base: String,
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
}

impl Pdp {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("cert CA");
        let leaf = ca.leaf("mandate", &["localhost"], false);
        let flags = [
            ("server.listen", text("127.0.0.1:0")),
            (
                "tls.cert",
                path(&write(dir.path(), "server.pem", &leaf.cert_pem)),
            ),
            (
                "tls.key",
                path(&write(dir.path(), "server.key", &leaf.key_pem)),
            ),
        ];
        let quiet = std::iter::once(("MANDATE_LOG_DECISIONS".to_owned(), "off".to_owned()));
        let config = mandate::config::Config::load(
            Some(&root().join("examples/authzen-cert/mandate.toml")),
            quiet,
            &flags,
        )
        .unwrap();
        let server = Server::start(config).await;
        Self {
            base: format!("https://localhost:{}", server.addr.port()),
            _server: server,
            _dir: dir,
            client: client(&ca, None, false),
        }
    }

    async fn send(
        &self,
        method: http::Method,
        path: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::copy_from_slice(body)))
            .unwrap();
        let response = self.client.request(request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            json: serde_json::from_slice(&body).unwrap_or(Value::Null),
        }
    }

    /// A JSON body, sent as `application/json`.
    async fn post(&self, path: &str, body: &Value) -> Answer {
        let body = serde_json::to_vec(body).unwrap();
        self.raw(path, &body, "application/json").await
    }

    async fn raw(&self, path: &str, body: &[u8], content_type: &str) -> Answer {
        let headers = [("content-type", content_type)];
        self.send(http::Method::POST, path, body, &headers).await
    }
}

/// Each check's test id, level, what it asserts, and its outcome.
#[derive(Default)]
struct Report {
    rows: Vec<(&'static str, &'static str, &'static str, Outcome)>,
}

impl Report {
    fn check(
        &mut self,
        id: &'static str,
        level: &'static str,
        what: &'static str,
        outcome: Outcome,
    ) {
        self.rows.push((id, level, what, outcome));
    }

    /// The per-level table (Markdown), and each failure.
    fn table(&self) -> String {
        let mut out = String::from("| level | test ids | passed |\n|---|---|---|\n");
        for level in LEVELS {
            let rows: Vec<_> = self.rows.iter().filter(|row| row.1 == level).collect();
            let mut ids: Vec<&str> = rows.iter().map(|row| row.0).collect();
            ids.dedup();
            let passed = rows.iter().filter(|row| row.3.is_ok()).count();
            out.push_str(&format!(
                "| {level} | {} | {passed}/{} |\n",
                ids.join(", "),
                rows.len()
            ));
        }
        for (id, level, what, outcome) in &self.rows {
            if let Err(why) = outcome {
                out.push_str(&format!("FAILED {id} ({level}) {what}: {why}\n"));
            }
        }
        out
    }
}

fn alice() -> Value {
    json!({"type": "user", "id": "alice"})
}

fn bob() -> Value {
    json!({"type": "user", "id": "bob"})
}

fn admin_bob() -> Value {
    json!({"type": "user", "id": "bob", "properties": {"role": "admin"}})
}

fn record(id: &str) -> Value {
    json!({"type": "record", "id": id})
}

fn archived() -> Value {
    json!({"type": "record", "id": "record-2", "properties": {"status": "archived"}})
}

fn act(name: &str) -> Value {
    json!({"name": name})
}

fn ask(subject: Value, action: &str, resource: Value) -> Value {
    json!({"subject": subject, "action": act(action), "resource": resource})
}

fn scenario_context() -> Value {
    json!({"time": "2025-06-27T18:03-07:00", "ip": "192.168.1.1"})
}

fn with(mut body: Value, key: &str, value: Value) -> Value {
    body[key] = value;
    body
}

fn without(mut body: Value, key: &str) -> Value {
    body.as_object_mut().unwrap().remove(key);
    body
}

async fn basic(pdp: &Pdp, report: &mut Report) {
    let rule_1 = ask(alice(), "read", record("record-1"));
    let decide = |body: Value| async move { pdp.post(EVALUATION, &body).await };
    let answer = decide(rule_1.clone()).await;
    report.check(
        "C.2.2.1",
        BASIC_CORE,
        "rule 1: alice read record-1 is true",
        answer.decision(Some(true)),
    );
    report.check(
        "C.2.3.1",
        BASIC_CORE,
        "`decision` is a boolean",
        answer.decision(None),
    );
    report.check(
        "C.2.3.2",
        BASIC_CORE,
        "`context`, if any, is an object",
        answer.decision(None),
    );
    let answer = decide(ask(bob(), "write", record("record-1"))).await;
    report.check(
        "C.2.2.2",
        BASIC_CORE,
        "rule 4: bob write record-1 is false",
        answer.decision(Some(false)),
    );
    let answer = decide(with(rule_1.clone(), "context", scenario_context())).await;
    report.check(
        "C.2.2.3",
        BASIC_CORE,
        "an optional context changes nothing",
        answer.decision(Some(true)),
    );
    let answer = decide(json!({
        "subject": {"type": "user", "id": "alice", "properties": {"department": "Sales", "role": "manager"}},
        "action": {"name": "read", "properties": {"method": "GET"}},
        "resource": {"type": "record", "id": "record-1", "properties": {"status": "active", "owner": "bob"}}
    }))
    .await;
    report.check(
        "C.2.2.8",
        BASIC_CORE,
        "additional properties are accepted",
        answer.decision(Some(true)),
    );
    let unknown = with(
        with(rule_1.clone(), "foo", json!("bar")),
        "futureField",
        json!({"nested": true}),
    );
    let answer = decide(unknown).await;
    report.check(
        "C.2.2.9",
        BASIC_CORE,
        "unknown fields are ignored",
        answer.decision(Some(true)),
    );

    let mut missing = Ok(());
    for key in ["subject", "action", "resource"] {
        missing = missing.and(decide(without(rule_1.clone(), key)).await.status(400));
    }
    report.check(
        "C.2.4.1",
        BASIC_CORE,
        "a missing subject, action or resource is a 400",
        missing,
    );
    let mut missing = Ok(());
    for body in [
        ask(json!({"id": "alice"}), "read", record("record-1")),
        ask(json!({"type": "user"}), "read", record("record-1")),
        json!({"subject": alice(), "action": {}, "resource": record("record-1")}),
        ask(alice(), "read", json!({"id": "record-1"})),
        ask(alice(), "read", json!({"type": "record"})),
    ] {
        missing = missing.and(decide(body).await.status(400));
    }
    report.check(
        "C.2.4.2",
        BASIC_CORE,
        "a missing type, id or name is a 400",
        missing,
    );
    let body = serde_json::to_vec(&rule_1).unwrap();
    let mut wrong_type = Ok(());
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
    ] {
        wrong_type = wrong_type.and(pdp.raw(EVALUATION, &body, content_type).await.status(400));
    }
    report.check(
        "C.2.4.3",
        BASIC_CORE,
        "a Content-Type other than application/json is a 400",
        wrong_type,
    );
    let answer = pdp
        .raw(EVALUATION, b"{\"subject\": {", "application/json")
        .await;
    report.check(
        "C.2.4.4",
        BASIC_CORE,
        "malformed JSON is a 400",
        answer.status(400),
    );
    let answer = pdp.raw(EVALUATION, b"", "application/json").await;
    report.check(
        "C.2.4.5",
        BASIC_CORE,
        "an empty body is a 400",
        answer.status(400),
    );
    let mut types = Ok(());
    for body in [
        json!({"subject": "alice", "action": act("read"), "resource": record("record-1")}),
        json!({"subject": alice(), "action": {"name": 123}, "resource": record("record-1")}),
    ] {
        types = types.and(decide(body).await.status(400));
    }
    report.check(
        "C.2.4.6",
        BASIC_CORE,
        "a field of the wrong type is a 400",
        types,
    );
    let headers = [
        ("content-type", "application/json"),
        ("x-request-id", "cert-2.5.1"),
    ];
    let answer = pdp
        .send(http::Method::POST, EVALUATION, &body, &headers)
        .await;
    report.check(
        "C.2.5.1",
        BASIC_CORE,
        "X-Request-ID is echoed",
        answer.decision(Some(true)).and(ensure(
            answer
                .headers
                .get("x-request-id")
                .is_some_and(|v| v == "cert-2.5.1"),
            || format!("X-Request-ID {:?}", answer.headers.get("x-request-id")),
        )),
    );
    let answer = decide(rule_1.clone()).await;
    report.check(
        "C.2.5.2",
        BASIC_CORE,
        "no X-Request-ID is no failure",
        answer.decision(Some(true)),
    );
    let mut same = Ok(());
    for _ in 0..5 {
        same = same.and(decide(rule_1.clone()).await.decision(Some(true)));
        same = same.and(
            decide(ask(bob(), "write", record("record-1")))
                .await
                .decision(Some(false)),
        );
    }
    report.check(
        "C.2.6",
        BASIC_CORE,
        "the same request, the same decision",
        same,
    );

    let answer = decide(ask(alice(), "write", archived())).await;
    report.check(
        "C.2.2.4",
        BASIC_PROPERTIES,
        "rule 5: write on status archived is false",
        answer.decision(Some(false)),
    );
    let answer = decide(ask(admin_bob(), "write", archived())).await;
    report.check(
        "C.2.2.5",
        BASIC_PROPERTIES,
        "rule 6: role admin writes archived",
        answer.decision(Some(true)),
    );
    let delete = |soft: bool| json!({"subject": alice(), "action": {"name": "delete", "properties": {"soft": soft}}, "resource": record("record-1")});
    let answer = decide(delete(true)).await;
    report.check(
        "C.2.2.6",
        BASIC_PROPERTIES,
        "rule 7: delete with soft true is true",
        answer.decision(Some(true)),
    );
    let answer = decide(delete(false)).await;
    report.check(
        "C.2.2.7",
        BASIC_PROPERTIES,
        "rule 8: delete with soft false is false",
        answer.decision(Some(false)),
    );
}

async fn batch(pdp: &Pdp, report: &mut Report) {
    let decide = |body: Value| async move { pdp.post(EVALUATIONS, &body).await };
    let answer = decide(json!({
        "subject": alice(), "action": act("read"),
        "evaluations": [{"resource": record("record-1")}, {"resource": record("record-2")}]
    }))
    .await;
    report.check(
        "C.3.2.1",
        BATCH_CORE,
        "an evaluations array gets one decision per item",
        answer.batch(&[None, None]),
    );
    let answer = decide(json!({
        "subject": bob(), "resource": record("record-1"),
        "evaluations": [{"action": act("read")}, {"action": act("write")}]
    }))
    .await;
    report.check(
        "C.3.2.2",
        BATCH_CORE,
        "rules 3 and 4, in order",
        answer.batch(&[Some(true), Some(false)]),
    );
    let answer = decide(json!({"evaluations": [
        ask(alice(), "read", record("record-1")),
        ask(bob(), "write", record("record-1")),
    ]}))
    .await;
    report.check(
        "C.3.2.5",
        BATCH_CORE,
        "fully specified items, no defaults",
        answer.batch(&[Some(true), Some(false)]),
    );
    let answer = decide(json!({
        "subject": alice(), "action": act("read"), "context": {"time": "2025-06-27T18:03-07:00"},
        "evaluations": [
            {"resource": record("record-1")},
            {"resource": record("record-2"), "context": {"time": "2025-06-27T19:00-07:00", "source": "batch-override"}}
        ]
    }))
    .await;
    report.check(
        "C.3.2.6",
        BATCH_CORE,
        "top-level context, overridden per item",
        answer.batch(&[None, None]),
    );
    let order = [
        ask(bob(), "write", record("record-1")),
        ask(alice(), "read", record("record-1")),
        ask(bob(), "write", record("record-1")),
        ask(bob(), "read", record("record-1")),
    ];
    let answer = decide(json!({"evaluations": order})).await;
    let wanted = [Some(false), Some(true), Some(false), Some(true)];
    report.check(
        "C.3.3.1",
        BATCH_CORE,
        "as many answers as items",
        answer.batch(&[None; 4]),
    );
    report.check(
        "C.3.3.2",
        BATCH_CORE,
        "answers in the items' order",
        answer.batch(&wanted),
    );
    report.check(
        "C.3.3.3",
        BATCH_CORE,
        "each answer has a boolean decision",
        answer.batch(&[None; 4]),
    );
    report.check(
        "C.3.3.4",
        BATCH_CORE,
        "no top-level decision beside `evaluations`",
        ensure(answer.json.get("decision").is_none(), || {
            "a top-level `decision`".to_owned()
        }),
    );
    let answer = decide(json!({
        "subject": alice(), "action": act("read"), "options": {"evaluations_semantic": "execute_all"},
        "evaluations": [{"resource": record("record-1")}, {}]
    }))
    .await;
    report.check(
        "C.3.4.1",
        BATCH_CORE,
        "execute_all: an item missing a field is a false decision",
        answer.batch(&[Some(true), Some(false)]),
    );
    let single = ask(alice(), "read", record("record-1"));
    let answer = decide(single.clone()).await;
    report.check(
        "C.3.4.2",
        BATCH_CORE,
        "without `evaluations`, a single evaluation",
        answer.decision(Some(true)),
    );
    let answer = decide(with(single, "evaluations", json!([]))).await;
    report.check(
        "C.3.4.3",
        BATCH_CORE,
        "empty `evaluations`, a single evaluation",
        answer.decision(Some(true)),
    );

    let answer = decide(json!({
        "subject": alice(), "action": act("write"),
        "evaluations": [
            {"resource": {"type": "record", "id": "record-1", "properties": {"status": "active"}}},
            {"resource": archived()}
        ]
    }))
    .await;
    report.check(
        "C.3.2.3",
        BATCH_PROPERTIES,
        "rules 2 and 5 on resource properties",
        answer.batch(&[Some(true), Some(false)]),
    );
    let answer = decide(json!({
        "action": act("write"), "resource": archived(),
        "evaluations": [{"subject": alice()}, {"subject": admin_bob()}]
    }))
    .await;
    report.check(
        "C.3.2.4",
        BATCH_PROPERTIES,
        "rules 5 and 6 on subject properties",
        answer.batch(&[Some(false), Some(true)]),
    );
    let answer = decide(json!({
        "subject": alice(), "action": act("write"),
        "resource": {"type": "record", "id": "record-1", "properties": {"status": "active"}},
        "evaluations": [{}, {"resource": archived()}]
    }))
    .await;
    report.check(
        "C.3.2.7",
        BATCH_PROPERTIES,
        "defaults inherited whole, overridden whole",
        answer.batch(&[Some(true), Some(false)]),
    );
}

async fn search(pdp: &Pdp, report: &mut Report) {
    let subjects =
        json!({"subject": {"type": "user"}, "action": act("read"), "resource": record("record-1")});
    let first = pdp
        .post(SUBJECTS, &subjects)
        .await
        .includes(Some("user"), &["alice", "bob"]);
    report.check(
        "C.4.2.1",
        SEARCH_CORE,
        "S1: who reads record-1 includes alice and bob",
        first.clone().map(drop),
    );
    let same = |found: Result<Vec<String>, String>, base: &Result<Vec<String>, String>| {
        let found = found?;
        ensure(Ok(&found) == base.as_ref(), || {
            format!("{found:?}, not {base:?}")
        })
    };
    let found = pdp
        .post(
            SUBJECTS,
            &with(subjects.clone(), "context", scenario_context()),
        )
        .await;
    report.check(
        "C.4.2.2",
        SEARCH_CORE,
        "with context, the same results",
        same(found.results(Some("user")), &first),
    );
    let found = pdp
        .post(SUBJECTS, &with(subjects.clone(), "subject", alice()))
        .await;
    report.check(
        "C.4.2.3",
        SEARCH_CORE,
        "subject.id is ignored",
        same(found.results(Some("user")), &first),
    );

    let resources =
        json!({"subject": alice(), "action": act("read"), "resource": {"type": "record"}});
    let first = pdp
        .post(RESOURCES, &resources)
        .await
        .includes(Some("record"), &["record-1"]);
    report.check(
        "C.4.3.1",
        SEARCH_CORE,
        "S2: what alice reads includes record-1",
        first.clone().map(drop),
    );
    let found = pdp
        .post(
            RESOURCES,
            &with(resources.clone(), "context", scenario_context()),
        )
        .await;
    report.check(
        "C.4.3.2",
        SEARCH_CORE,
        "with context, the same results",
        same(found.results(Some("record")), &first),
    );
    let found = pdp
        .post(
            RESOURCES,
            &with(resources.clone(), "resource", record("record-1")),
        )
        .await;
    report.check(
        "C.4.3.3",
        SEARCH_CORE,
        "resource.id is ignored",
        same(found.results(Some("record")), &first),
    );

    let actions = json!({"subject": alice(), "resource": record("record-1")});
    let first = pdp
        .post(ACTIONS, &actions)
        .await
        .includes(None, &["read", "write"]);
    report.check(
        "C.4.4.1",
        SEARCH_CORE,
        "S3: what alice may do on record-1 includes read and write",
        first.clone().map(drop),
    );
    let found = pdp
        .post(
            ACTIONS,
            &with(actions.clone(), "context", scenario_context()),
        )
        .await;
    report.check(
        "C.4.4.2",
        SEARCH_CORE,
        "with context, the same results",
        same(found.results(None), &first),
    );

    // Pagination: limit 1, then each token until the empty one; the pages
    // together are the whole answer.
    let whole = pdp
        .post(SUBJECTS, &subjects)
        .await
        .results(Some("user"))
        .unwrap_or_default();
    let first_page = pdp
        .post(
            SUBJECTS,
            &with(subjects.clone(), "page", json!({"limit": 1})),
        )
        .await;
    let limited = first_page.results(Some("user")).and_then(|found| {
        ensure(found.len() == 1, || {
            format!("{} results under limit 1", found.len())
        })
    });
    report.check("C.4.5.1", SEARCH_CORE, "a page limit is accepted", limited);
    let mut pages = Ok(());
    let mut seen = first_page.results(Some("user")).unwrap_or_default();
    let mut answer = first_page;
    let mut format = Ok(());
    for _ in 0..10 {
        let page = &answer.json["page"];
        format = format.and(ensure(page["next_token"].is_string(), || {
            "no string next_token".to_owned()
        }));
        for key in ["count", "total"] {
            format = format.and(ensure(page.get(key).is_none_or(Value::is_u64), || {
                format!("`page.{key}` is not a number")
            }));
        }
        let token = page["next_token"].as_str().unwrap_or_default().to_owned();
        if token.is_empty() {
            break;
        }
        answer = pdp
            .post(
                SUBJECTS,
                &with(subjects.clone(), "page", json!({"token": token})),
            )
            .await;
        match answer.results(Some("user")) {
            Ok(found) => seen.extend(found),
            Err(why) => pages = Err(why),
        }
    }
    let more = seen.len() < whole.len();
    pages = pages.and(ensure(
        !more && answer.json["page"]["next_token"] == "",
        || format!("pages {seen:?}, whole {whole:?}, last {}", answer.json),
    ));
    report.check(
        "C.4.5.2",
        SEARCH_CORE,
        "tokens continue; \"\" at the end",
        pages.and(ensure(seen == whole, || format!("{seen:?} != {whole:?}"))),
    );
    report.check(
        "C.4.5.3",
        SEARCH_CORE,
        "page: next_token a string, count and total numbers",
        format,
    );

    let mut empty = Ok(());
    for (endpoint, body) in [
        (
            SUBJECTS,
            json!({"subject": {"type": "user"}, "action": act("read"), "resource": record("nonexistent-record")}),
        ),
        (
            RESOURCES,
            json!({"subject": {"type": "user", "id": "nonexistent-user"}, "action": act("read"), "resource": {"type": "record"}}),
        ),
        (
            ACTIONS,
            json!({"subject": {"type": "user", "id": "nonexistent-user"}, "resource": record("record-1")}),
        ),
    ] {
        empty = empty.and(
            pdp.post(endpoint, &body)
                .await
                .includes(None, &[])
                .and_then(|found| ensure(found.is_empty(), || format!("{endpoint}: {found:?}"))),
        );
    }
    report.check(
        "C.4.6.1",
        SEARCH_CORE,
        "an unknown id: 200, no results, on each search",
        empty,
    );
    let mut empty = Ok(());
    for (endpoint, body) in [
        (
            SUBJECTS,
            json!({"subject": {"type": "spaceship"}, "action": act("read"), "resource": record("record-1")}),
        ),
        (
            RESOURCES,
            json!({"subject": alice(), "action": act("read"), "resource": {"type": "spaceship"}}),
        ),
        (
            ACTIONS,
            json!({"subject": {"type": "spaceship", "id": "enterprise"}, "resource": record("record-1")}),
        ),
    ] {
        empty = empty.and(
            pdp.post(endpoint, &body)
                .await
                .includes(None, &[])
                .and_then(|found| ensure(found.is_empty(), || format!("{endpoint}: {found:?}"))),
        );
    }
    report.check(
        "C.4.6.2",
        SEARCH_CORE,
        "an unknown type: 200, no results, on each search",
        empty,
    );
    let mut missing = Ok(());
    for (endpoint, body) in [
        (
            SUBJECTS,
            json!({"subject": {"type": "user"}, "resource": record("record-1")}),
        ),
        (
            RESOURCES,
            json!({"action": act("read"), "resource": {"type": "record"}}),
        ),
        (ACTIONS, json!({"subject": alice()})),
    ] {
        missing = missing.and(pdp.post(endpoint, &body).await.status(400));
    }
    report.check(
        "C.4.7.1",
        SEARCH_CORE,
        "a missing required field is a 400",
        missing,
    );
    let mut missing = Ok(());
    for (endpoint, body) in [
        (
            SUBJECTS,
            json!({"subject": {"type": "user"}, "action": act("read"), "resource": {"type": "record"}}),
        ),
        (
            RESOURCES,
            json!({"subject": {"type": "user"}, "action": act("read"), "resource": {"type": "record"}}),
        ),
        (
            ACTIONS,
            json!({"subject": {"type": "user"}, "resource": record("record-1")}),
        ),
    ] {
        missing = missing.and(pdp.post(endpoint, &body).await.status(400));
    }
    report.check(
        "C.4.7.2",
        SEARCH_CORE,
        "an input entity without id is a 400",
        missing,
    );

    let answer = pdp
        .post(
            SUBJECTS,
            &json!({"subject": {"type": "user"}, "action": act("write"), "resource": archived()}),
        )
        .await;
    report.check(
        "C.4.2.4",
        SEARCH_PROPERTIES,
        "S4: who writes archived record-2 includes bob",
        answer.includes(Some("user"), &["bob"]).map(drop),
    );
    let answer = pdp.post(RESOURCES, &json!({"subject": admin_bob(), "action": act("write"), "resource": {"type": "record"}})).await;
    report.check(
        "C.4.3.4",
        SEARCH_PROPERTIES,
        "S5: what admin bob writes includes record-2",
        answer.includes(Some("record"), &["record-2"]).map(drop),
    );
    let answer = pdp
        .post(
            ACTIONS,
            &json!({"subject": admin_bob(), "resource": archived()}),
        )
        .await;
    report.check(
        "C.4.4.3",
        SEARCH_PROPERTIES,
        "S6: what admin bob may do on archived record-2 includes write",
        answer.includes(None, &["write"]).map(drop),
    );
}

async fn discovery(pdp: &Pdp, report: &mut Report) {
    let answer = pdp
        .send(
            http::Method::GET,
            "/.well-known/authzen-configuration",
            b"",
            &[],
        )
        .await;
    report.check(
        "C.6.1",
        DISCOVERY,
        "the well-known metadata endpoint answers",
        answer.status(200),
    );
    report.check(
        "C.6.2",
        DISCOVERY,
        "HTTP 200, application/json",
        answer
            .status(200)
            .and(ensure(answer.is_json(), || "not JSON".to_owned())),
    );
    let metadata = &answer.json;
    let required = ensure(
        metadata["policy_decision_point"].is_string()
            && metadata["access_evaluation_endpoint"].is_string(),
        || format!("{metadata}"),
    );
    report.check(
        "C.6.3",
        DISCOVERY,
        "policy_decision_point and access_evaluation_endpoint",
        required,
    );
    let mut valid = ensure(
        metadata["policy_decision_point"] == pdp.base.as_str(),
        || {
            format!(
                "policy_decision_point {}, base {}",
                metadata["policy_decision_point"], pdp.base
            )
        },
    );
    for (key, path) in [
        ("access_evaluation_endpoint", EVALUATION),
        ("access_evaluations_endpoint", EVALUATIONS),
        ("search_subject_endpoint", SUBJECTS),
        ("search_resource_endpoint", RESOURCES),
        ("search_action_endpoint", ACTIONS),
    ] {
        let url = metadata.get(key).and_then(Value::as_str);
        valid = valid.and(ensure(
            url.is_none_or(|url| {
                url.starts_with("https://") && url == format!("{}{path}", pdp.base)
            }),
            || format!("`{key}` is {url:?}"),
        ));
    }
    valid = valid.and(ensure(
        metadata
            .get("capabilities")
            .is_none_or(|c| c.as_array().is_some_and(|a| a.iter().all(Value::is_string))),
        || "`capabilities` is not an array of strings".to_owned(),
    ));
    report.check(
        "C.6.5",
        DISCOVERY,
        "the base URL asked at; endpoints HTTPS URLs",
        valid,
    );
}

async fn transport(pdp: &Pdp, report: &mut Report) {
    let every: [(&str, Value); 5] = [
        (EVALUATION, ask(alice(), "read", record("record-1"))),
        (
            EVALUATIONS,
            json!({"subject": alice(), "action": act("read"), "evaluations": [{"resource": record("record-1")}]}),
        ),
        (
            SUBJECTS,
            json!({"subject": {"type": "user"}, "action": act("read"), "resource": record("record-1")}),
        ),
        (
            RESOURCES,
            json!({"subject": alice(), "action": act("read"), "resource": {"type": "record"}}),
        ),
        (
            ACTIONS,
            json!({"subject": alice(), "resource": record("record-1")}),
        ),
    ];
    let (mut accepted, mut typed, mut echoed, mut unknown, mut wrong) =
        (Ok(()), Ok(()), Ok(()), Ok(()), Ok(()));
    for (endpoint, body) in &every {
        let bytes = serde_json::to_vec(body).unwrap();
        let headers = [
            ("content-type", "application/json"),
            ("x-request-id", "cert-5.4"),
        ];
        let answer = pdp
            .send(http::Method::POST, endpoint, &bytes, &headers)
            .await;
        accepted = accepted.and(answer.status(200));
        typed = typed.and(ensure(answer.is_json(), || {
            format!("{endpoint}: not application/json")
        }));
        echoed = echoed.and(ensure(
            answer
                .headers
                .get("x-request-id")
                .is_some_and(|v| v == "cert-5.4"),
            || format!("{endpoint}: X-Request-ID not echoed"),
        ));
        let answer = pdp
            .post(
                endpoint,
                &with(body.clone(), "futureField", json!({"nested": true})),
            )
            .await;
        unknown = unknown.and(answer.status(200));
        wrong = wrong.and(pdp.raw(endpoint, &bytes, "text/plain").await.status(400));
    }
    report.check(
        "C.5.1",
        TRANSPORT,
        "HTTPS with application/json is accepted, every endpoint",
        accepted,
    );
    report.check(
        "C.5.2",
        TRANSPORT,
        "200 with application/json, every endpoint",
        typed,
    );
    let mut missing = Ok(());
    for endpoint in [EVALUATION, EVALUATIONS, SUBJECTS, RESOURCES, ACTIONS] {
        missing = missing.and(pdp.post(endpoint, &json!({})).await.status(400));
    }
    report.check(
        "C.5.3",
        TRANSPORT,
        "missing required fields are a 400, every endpoint",
        missing,
    );
    report.check(
        "C.5.4",
        TRANSPORT,
        "X-Request-ID echoed, every endpoint",
        echoed,
    );
    report.check(
        "C.5.5",
        TRANSPORT,
        "unknown fields ignored, every endpoint",
        unknown,
    );
    report.check(
        "C.2.4.3",
        TRANSPORT,
        "text/plain is a 400, every endpoint",
        wrong,
    );
}

#[tokio::test]
async fn every_must_of_the_certification_scenario_passes_at_every_level() {
    let pdp = Pdp::start().await;
    let mut report = Report::default();
    basic(&pdp, &mut report).await;
    batch(&pdp, &mut report).await;
    search(&pdp, &mut report).await;
    discovery(&pdp, &mut report).await;
    transport(&pdp, &mut report).await;
    let table = report.table();
    println!("AuthZEN 1.0 certification scenario, examples/authzen-cert:\n{table}");
    assert!(report.rows.iter().all(|row| row.3.is_ok()), "{table}");
    assert!(report.rows.len() >= 60, "{} checks", report.rows.len());
}

// The rules the scenario sets for every AuthZEN endpoint, on the shipped pack.

fn withdrawers() -> Value {
    json!({
        "subject": {"type": "user"}, "action": {"name": "withdraw"},
        "resource": {"type": "account", "id": "alice-personal"},
        "context": {"destination": {"type": "Brokerage::Destination", "id": "alice-bank"}, "amount": "500.00"}
    })
}

#[tokio::test]
async fn a_body_declared_as_anything_but_json_is_a_400_on_every_authzen_endpoint() {
    let server = Server::demo().await;
    let evaluation = json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": "view_account"}, "resource": {"type": "account", "id": "alice-personal"}});
    for (endpoint, body) in [
        (EVALUATION, evaluation.clone()),
        (EVALUATIONS, evaluation),
        (SUBJECTS, withdrawers()),
    ] {
        let bytes = serde_json::to_vec(&body).unwrap();
        for (content_type, status) in [
            (Some("text/plain"), 400),
            (Some("application/x-www-form-urlencoded"), 400),
            (Some("application/jsonp"), 400),
            (Some("application/json"), 200),
            (Some("Application/JSON; charset=utf-8"), 200),
            (None, 200),
        ] {
            let mut request = http::Request::post(server.url(endpoint));
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            let request = request.body(Full::new(Bytes::from(bytes.clone()))).unwrap();
            let reply = crate::support::send(request, false).await;
            assert_eq!(
                reply.status, status,
                "{endpoint} {content_type:?}: {}",
                reply.json
            );
            if status == 400 {
                assert_eq!(reply.json["error"]["code"], "unsupported_content_type");
            }
        }
        // Two media types, whichever comes first, are ambiguous: refused.
        for pair in [
            ["application/json", "text/plain"],
            ["text/plain", "application/json"],
            ["application/json", "application/json"],
        ] {
            let request = http::Request::post(server.url(endpoint))
                .header("content-type", pair[0])
                .header("content-type", pair[1])
                .body(Full::new(Bytes::from(bytes.clone())))
                .unwrap();
            let reply = crate::support::send(request, false).await;
            assert_eq!(reply.status, 400, "{endpoint} {pair:?}: {}", reply.json);
            assert_eq!(reply.json["error"]["code"], "unsupported_content_type");
        }
    }
}

#[tokio::test]
async fn a_search_for_a_type_or_action_the_schema_does_not_declare_finds_nothing() {
    let server = Server::demo().await;
    let grace = json!({"type": "user", "id": "grace"});
    for (endpoint, body) in [
        (
            SUBJECTS,
            with(withdrawers(), "subject", json!({"type": "spaceship"})),
        ),
        (
            SUBJECTS,
            with(withdrawers(), "action", json!({"name": "beam_up"})),
        ),
        (
            RESOURCES,
            json!({"subject": grace, "action": {"name": "view_account"}, "resource": {"type": "spaceship"}}),
        ),
        (
            ACTIONS,
            json!({"subject": {"type": "spaceship", "id": "x"}, "resource": {"type": "account", "id": "alice-personal"}}),
        ),
    ] {
        let reply = post(&server.url(endpoint), &body).await;
        assert_eq!(reply.status, 200, "{endpoint} {body}: {}", reply.json);
        assert_eq!(reply.json["results"], json!([]));
        assert_eq!(reply.json["page"]["next_token"], "");
    }
}

#[tokio::test]
async fn the_searched_sides_id_is_ignored_and_the_last_page_token_is_empty() {
    let server = Server::demo().await;
    let whole = post(&server.url(SUBJECTS), &withdrawers()).await;
    assert_eq!(whole.json["results"].as_array().unwrap().len(), 5);
    let named = with(
        withdrawers(),
        "subject",
        json!({"type": "user", "id": "alice"}),
    );
    let reply = post(&server.url(SUBJECTS), &named).await;
    assert_eq!(reply.json["results"], whole.json["results"]);
    let resources = json!({"subject": {"type": "user", "id": "grace"}, "action": {"name": "place_order"}, "resource": {"type": "account"}, "context": {"side": "buy", "instrument": "AAPL"}});
    let all = post(&server.url(RESOURCES), &resources).await;
    assert!(
        !all.json["results"].as_array().unwrap().is_empty(),
        "{}",
        all.json
    );
    let named = with(
        resources,
        "resource",
        json!({"type": "account", "id": "alice-personal"}),
    );
    let reply = post(&server.url(RESOURCES), &named).await;
    assert_eq!(reply.json["results"], all.json["results"]);
    // Paged one by one: every page's token but the last one's is set.
    let mut body = with(withdrawers(), "page", json!({"limit": 2}));
    let mut seen = Vec::new();
    loop {
        let reply = post(&server.url(SUBJECTS), &body).await;
        seen.extend(reply.json["results"].as_array().unwrap().clone());
        let token = reply.json["page"]["next_token"]
            .as_str()
            .unwrap()
            .to_owned();
        if token.is_empty() {
            break;
        }
        body["page"] = json!({"limit": 2, "token": token});
    }
    assert_eq!(Value::from(seen), whole.json["results"]);
}

#[tokio::test]
async fn discovery_names_the_base_url_it_was_asked_at() {
    let server = Server::demo().await;
    let reply = crate::support::get(&server.url("/.well-known/authzen-configuration")).await;
    assert_eq!(reply.json["policy_decision_point"], server.url(""));
    assert_eq!(
        reply.json["access_evaluation_endpoint"],
        server.url(EVALUATION)
    );
    let reply = post_raw(&server.url(EVALUATION), "not json").await;
    assert_eq!(reply.status, 400);
}

#[tokio::test]
async fn a_property_the_type_does_not_declare_is_ignored_not_refused() {
    let server = Server::start(crate::support::todo_config()).await;
    let rick = "CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs";
    let ask = |properties: Value| {
        json!({
            "subject": {"type": "user", "id": rick},
            "action": {"name": "can_delete_todo"},
            "resource": {"type": "todo", "id": "7", "properties": properties}
        })
    };
    let plain = post(
        &server.url(EVALUATION),
        &ask(json!({"ownerID": "morty@the-citadel.com"})),
    )
    .await;
    let more = ask(json!({"ownerID": "morty@the-citadel.com", "color": "red", "tags": [1, 2]}));
    let reply = post(&server.url(EVALUATION), &more).await;
    assert_eq!(reply.status, 200, "{}", reply.json);
    assert_eq!(reply.json["decision"], plain.json["decision"]);
    // A declared one of the wrong type is still the caller's mistake.
    let wrong = post(&server.url(EVALUATION), &ask(json!({"ownerID": 7}))).await;
    assert_eq!(wrong.status, 400, "{}", wrong.json);
}

/// On a `merge` type, properties that name nothing the schema declares do
/// not replace the stored entity: bob, an admin in the store, stays one
/// (with his attributes and parents) when a caller sends only noise.
#[tokio::test]
async fn undeclared_properties_alone_do_not_replace_a_stored_entity() {
    let pdp = Pdp::start().await;
    let ask = |properties: Value| {
        json!({
            "subject": {"type": "user", "id": "bob", "properties": properties},
            "action": {"name": "write"},
            "resource": {"type": "record", "id": "record-2"}
        })
    };
    let noise = pdp.post(EVALUATION, &ask(json!({"department": "x"}))).await;
    assert_eq!(noise.status, 200, "{}", noise.json);
    assert_eq!(noise.json["decision"], true, "{}", noise.json);
    let told = pdp.post(EVALUATION, &ask(json!({"role": "viewer"}))).await;
    assert_eq!(
        told.json["decision"], false,
        "a declared property still decides"
    );
}
