//! The OpenAPI document is the contract: the examples of the README and of
//! docs/api.md and the live server's answers on every endpoint conform to
//! it, and the server serves the document itself.

use serde_json::{Value, json};

use crate::support::{Server, get, get_text, post, post_raw, root};

/// `openapi.yaml`, read as JSON Schema (OpenAPI 3.1's schemas are JSON
/// Schema 2020-12), checking bodies against the schema an operation names.
struct Contract {
    document: Value,
}

impl Contract {
    fn load() -> Self {
        let text = std::fs::read_to_string(root().join("openapi.yaml")).unwrap();
        Self {
            document: serde_norway::from_str(&text).unwrap(),
        }
    }

    /// Follows a local `$ref` (`#/components/...`), if `value` is one.
    fn resolve<'v>(&'v self, value: &'v Value) -> &'v Value {
        match value.get("$ref").and_then(Value::as_str) {
            Some(reference) => self
                .document
                .pointer(reference.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("dangling {reference}")),
            None => value,
        }
    }

    fn operation(&self, method: &str, path: &str) -> &Value {
        let escaped = path.replace('~', "~0").replace('/', "~1");
        self.document
            .pointer(&format!("/paths/{escaped}/{method}"))
            .unwrap_or_else(|| panic!("{method} {path} is not in openapi.yaml"))
    }

    /// Whether `body` fits `schema`, a schema of the document: errors, if any.
    fn errors(&self, schema: &Value, body: &Value) -> Vec<String> {
        let mut root = self.document.clone();
        let map = root.as_object_mut().unwrap();
        for (key, value) in schema.as_object().unwrap() {
            map.insert(key.clone(), value.clone());
        }
        let validator = jsonschema::draft202012::options()
            .build(&root)
            .unwrap_or_else(|e| panic!("schema does not compile: {e}"));
        validator
            .iter_errors(body)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect()
    }

    fn request_schema(&self, method: &str, path: &str) -> &Value {
        let body = self.resolve(&self.operation(method, path)["requestBody"]);
        &body["content"]["application/json"]["schema"]
    }

    fn response_schema(&self, method: &str, path: &str, status: u16) -> &Value {
        let responses = &self.operation(method, path)["responses"];
        let response = responses
            .get(status.to_string())
            .unwrap_or_else(|| panic!("{method} {path} documents no {status}"));
        &self.resolve(response)["content"]["application/json"]["schema"]
    }

    fn check_request(&self, method: &str, path: &str, body: &Value) {
        if self.operation(method, path).get("requestBody").is_none() {
            assert_eq!(body, &Value::Null, "{method} {path} takes no body");
            return;
        }
        let errors = self.errors(self.request_schema(method, path), body);
        assert!(
            errors.is_empty(),
            "{method} {path} request {body}: {errors:?}"
        );
    }

    fn check_response(&self, method: &str, path: &str, status: u16, body: &Value) {
        let errors = self.errors(self.response_schema(method, path, status), body);
        assert!(
            errors.is_empty(),
            "{method} {path} answered {status} {body}: {errors:?}"
        );
    }
}

#[tokio::test]
async fn the_readme_examples_and_their_live_answers_conform() {
    let contract = Contract::load();
    let server = Server::demo().await;
    let examples = crate::readme::examples();
    assert!(examples.len() >= 4);
    for (path, body, shown) in examples {
        let request: Value = serde_json::from_str(&body).unwrap();
        contract.check_request("post", &path, &request);
        contract.check_response("post", &path, 200, &shown);
        let live = post_raw(&server.url(&path), body).await;
        contract.check_response("post", &path, live.status, &live.json);
    }
}

#[tokio::test]
async fn every_endpoint_answers_as_documented() {
    let contract = Contract::load();
    let server = Server::demo().await;
    let ask = json!({
        "subject": {"type": "user", "id": "erin"},
        "action": {"name": "withdraw"},
        "resource": {"type": "account", "id": "alice-personal"},
        "context": {"destination": {"type": "Brokerage::Destination", "id": "alice-bank"}, "amount": "10.00"}
    });
    let mut checked = Vec::new();
    let mut post_check = |path: &'static str, body: Value, status: u16| {
        checked.push(path);
        contract.check_request("post", path, &body);
        let server = &server;
        let contract = &contract;
        async move {
            let reply = post(&server.url(path), &body).await;
            assert_eq!(reply.status, status, "{path} {body}: {}", reply.json);
            contract.check_response("post", path, reply.status, &reply.json);
            reply
        }
    };

    post_check("/access/v1/evaluation", ask.clone(), 200).await;
    let malformed = json!({"subject": {"type": "user"}, "action": {"name": "withdraw"}, "resource": {"type": "account", "id": "x"}});
    let bad = post(&server.url("/access/v1/evaluation"), &malformed).await;
    assert_eq!(bad.status, 400);
    contract.check_response("post", "/access/v1/evaluation", 400, &bad.json);

    let batch = json!({
        "subject": {"type": "user", "id": "bob"},
        "resource": {"type": "account", "id": "alice-personal"},
        "evaluations": [{"action": {"name": "view_account"}}, {"action": {"name": "cancel_order"}}],
        "options": {"evaluations_semantic": "execute_all"}
    });
    post_check("/access/v1/evaluations", batch, 200).await;
    // An item refused as malformed: a deny whose context.error says why.
    let with_bad_item = post(
        &server.url("/access/v1/evaluations"),
        &json!({"evaluations": [ask.clone(), {"subject": {"type": "user"}}]}),
    )
    .await;
    assert!(with_bad_item.json["evaluations"][1]["context"]["error"].is_object());
    contract.check_response("post", "/access/v1/evaluations", 200, &with_bad_item.json);

    let native = json!({
        "principal": {"type": "Brokerage::User", "id": "erin"},
        "action": {"type": "Brokerage::Action", "id": "withdraw"},
        "resource": "Brokerage::Account::\"alice-personal\"",
        "context": {"destination": {"type": "Brokerage::Destination", "id": "alice-bank"}, "amount": "10.00"},
        "explain": true
    });
    let explained = post_check("/v1/is_authorized", native.clone(), 200).await;
    assert!(explained.json["explanation"].is_array());
    post_check(
        "/v1/is_authorized/batch",
        json!({"requests": [native.clone()]}),
        200,
    )
    .await;
    // A malformed item (outside the request schema on purpose) is a deny
    // with its error, in a 200 that still fits the contract.
    let with_bad_item = post(
        &server.url("/v1/is_authorized/batch"),
        &json!({"requests": [native, {"principal": "nope"}]}),
    )
    .await;
    assert_eq!(with_bad_item.json["results"][1]["decision"], "Deny");
    contract.check_response("post", "/v1/is_authorized/batch", 200, &with_bad_item.json);

    post_check("/admin/v1/policies/reload", Value::Null, 200).await;
    post_check("/admin/v1/cache/invalidate", json!({"all": true}), 200).await;
    post_check(
        "/admin/v1/cache/invalidate",
        json!({"uids": [{"type": "Brokerage::User", "id": "erin"}]}),
        200,
    )
    .await;
    let who = post_check(
        "/access/v1/search/subject",
        json!({"subject": {"type": "user"}, "action": {"name": "withdraw"},
               "resource": {"type": "account", "id": "alice-personal"},
               "context": {"destination": {"type": "Brokerage::Destination", "id": "alice-bank"}, "amount": "10.00"},
               "page": {"limit": 2}}),
        200,
    )
    .await;
    assert!(!who.json["page"]["next_token"].as_str().unwrap().is_empty());
    post_check(
        "/access/v1/search/resource",
        json!({"subject": {"type": "user", "id": "grace"}, "action": {"name": "view_account"}, "resource": {"type": "account"}}),
        200,
    )
    .await;
    post_check(
        "/access/v1/search/action",
        json!({"subject": {"type": "user", "id": "carol"}, "resource": {"type": "account", "id": "alice-personal"},
               "context": {"side": "buy", "instrument": "AAPL"}}),
        200,
    )
    .await;
    assert_eq!(checked.len(), 10);

    for path in ["/.well-known/authzen-configuration", "/healthz", "/readyz"] {
        let reply = get(&server.url(path)).await;
        assert_eq!(reply.status, 200, "{path}");
        contract.check_response("get", path, 200, &reply.json);
    }

    // No routes are configured here: the gateway refuses, as documented.
    let gateway = get(&server.url("/gateway/authorize")).await;
    assert_eq!(gateway.status, 403);
    contract.check_response("get", "/gateway/authorize", 403, &gateway.json);

    let wrong_method = get(&server.url("/v1/is_authorized")).await;
    assert_eq!(wrong_method.status, 405);
    contract.check_response("post", "/v1/is_authorized", 405, &wrong_method.json);
}

#[test]
fn the_contract_can_fail() {
    let contract = Contract::load();
    let wrong = json!({"decision": "maybe", "context": {"reasons": [], "errors": [], "policy_version": "7533730ddbac", "summary": "x"}});
    assert!(
        !contract
            .errors(
                contract.response_schema("post", "/access/v1/evaluation", 200),
                &wrong
            )
            .is_empty()
    );
    let extra = json!({"decision": true, "context": {"reasons": [], "errors": [], "policy_version": "7533730ddbac", "summary": "x", "surprise": 1}});
    assert!(
        !contract
            .errors(
                contract.response_schema("post", "/access/v1/evaluation", 200),
                &extra
            )
            .is_empty(),
        "an undocumented field is a failure"
    );
}

#[tokio::test]
async fn the_server_serves_the_document_it_answers_by() {
    let server = Server::demo().await;
    let (status, headers, yaml) = get_text(&server.url("/openapi.yaml")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/yaml");
    assert_eq!(
        yaml,
        std::fs::read_to_string(root().join("openapi.yaml")).unwrap()
    );
    let json = get(&server.url("/openapi.json")).await;
    assert_eq!(json.status, 200);
    assert_eq!(json.json, Contract::load().document);
}
