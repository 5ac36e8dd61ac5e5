//! AuthZEN 1.0: single evaluations, the batch form in each semantic, metadata.

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};

use crate::support::{Server, get, post, send};

fn order(subject: &str) -> Value {
    json!({
        "subject": {"type": "user", "id": subject},
        "action": {"name": "place_order"},
        "resource": {"type": "account", "id": "alice-personal"},
        "context": {"side": "buy", "instrument": "AAPL"}
    })
}

fn reasons(answer: &Value) -> Vec<String> {
    answer["context"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_trader_may_place_an_order_and_the_reason_names_the_rule() {
    let server = Server::demo().await;
    let reply = post(&server.url("/access/v1/evaluation"), &order("carol")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json["decision"], true);
    assert_eq!(reasons(&reply.json), ["S2"]);
    assert_eq!(
        reply.json["context"]["policy_version"]
            .as_str()
            .unwrap()
            .len(),
        12
    );
}

#[tokio::test]
async fn a_viewer_may_not_place_an_order_and_is_told_no_policy_allowed_it() {
    let server = Server::demo().await;
    let reply = post(&server.url("/access/v1/evaluation"), &order("bob")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json["decision"], false);
    assert!(reasons(&reply.json).is_empty());
    assert_eq!(
        reply.json["context"]["summary"],
        "denied: no policy allowed the request"
    );
}

#[tokio::test]
async fn an_inactive_trader_is_denied_by_the_forbid_that_names_g2() {
    let server = Server::demo().await;
    let reply = post(&server.url("/access/v1/evaluation"), &order("ivan")).await;
    assert_eq!(reply.json["decision"], false);
    assert_eq!(reasons(&reply.json), ["G2"]);
    assert_eq!(reply.json["context"]["summary"], "denied by G2");
}

#[tokio::test]
async fn fully_qualified_and_differently_cased_types_resolve_alike() {
    let server = Server::demo().await;
    let mut request = order("carol");
    request["subject"]["type"] = json!("Brokerage::User");
    request["resource"]["type"] = json!("ACCOUNT");
    let reply = post(&server.url("/access/v1/evaluation"), &request).await;
    assert_eq!(reply.json["decision"], true);
}

#[tokio::test]
async fn the_request_id_is_echoed() {
    let server = Server::demo().await;
    let request = http::Request::post(server.url("/access/v1/evaluation"))
        .header("x-request-id", "bfe9eb29-ab87")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(&order("carol")).unwrap(),
        )))
        .unwrap();
    let reply = send(request, false).await;
    assert_eq!(reply.headers.get("x-request-id").unwrap(), "bfe9eb29-ab87");
}

#[tokio::test]
async fn http2_without_tls_answers_the_same() {
    let server = Server::demo().await;
    let request = http::Request::post(server.url("/access/v1/evaluation"))
        .body(Full::new(Bytes::from(
            serde_json::to_vec(&order("carol")).unwrap(),
        )))
        .unwrap();
    let reply = send(request, true).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json["decision"], true);
}

#[tokio::test]
async fn a_missing_principal_is_a_deny_with_an_error() {
    let server = Server::demo().await;
    let reply = post(&server.url("/access/v1/evaluation"), &order("nobody")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json["decision"], false);
    assert_eq!(
        reply.json["context"]["errors"][0]["code"],
        "entity_not_found"
    );
    assert!(
        reply.json["context"]["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nobody")
    );
}

#[tokio::test]
async fn an_unknown_type_or_action_is_a_deny_with_an_error() {
    let server = Server::demo().await;
    let mut request = order("carol");
    request["resource"]["type"] = json!("spaceship");
    let reply = post(&server.url("/access/v1/evaluation"), &request).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json["decision"], false);
    assert_eq!(
        reply.json["context"]["errors"][0]["code"],
        "unknown_entity_type"
    );

    let mut request = order("carol");
    request["action"]["name"] = json!("launch_rocket");
    let reply = post(&server.url("/access/v1/evaluation"), &request).await;
    assert_eq!(reply.json["decision"], false);
    assert_eq!(reply.json["context"]["errors"][0]["code"], "unknown_action");
}

#[tokio::test]
async fn an_action_on_the_wrong_resource_type_is_a_deny_with_an_error() {
    let server = Server::demo().await;
    let reply = post(
        &server.url("/access/v1/evaluation"),
        &json!({
            "subject": {"type": "user", "id": "alice"},
            "action": {"name": "view_market_data"},
            "resource": {"type": "account", "id": "alice-personal"}
        }),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json["decision"], false);
    assert_eq!(
        reply.json["context"]["errors"][0]["code"],
        "invalid_request"
    );
}

fn batch(semantic: Option<&str>) -> Value {
    // bob (a viewer): view allowed, cancel denied, view allowed.
    let mut body = json!({
        "subject": {"type": "user", "id": "bob"},
        "resource": {"type": "account", "id": "alice-personal"},
        "evaluations": [
            {"action": {"name": "view_account"}},
            {"action": {"name": "cancel_order"}},
            {"action": {"name": "view_account"}}
        ]
    });
    if let Some(semantic) = semantic {
        body["options"] = json!({"evaluations_semantic": semantic});
    }
    body
}

fn decisions(reply: &Value) -> Vec<bool> {
    reply["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["decision"].as_bool().unwrap())
        .collect()
}

#[tokio::test]
async fn a_batch_executes_all_items_by_default_in_order() {
    let server = Server::demo().await;
    let reply = post(&server.url("/access/v1/evaluations"), &batch(None)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(decisions(&reply.json), [true, false, true]);
    let reply = post(
        &server.url("/access/v1/evaluations"),
        &batch(Some("execute_all")),
    )
    .await;
    assert_eq!(decisions(&reply.json), [true, false, true]);
}

#[tokio::test]
async fn deny_on_first_deny_stops_after_the_first_deny() {
    let server = Server::demo().await;
    let reply = post(
        &server.url("/access/v1/evaluations"),
        &batch(Some("deny_on_first_deny")),
    )
    .await;
    assert_eq!(decisions(&reply.json), [true, false]);
}

#[tokio::test]
async fn permit_on_first_permit_stops_after_the_first_permit() {
    let server = Server::demo().await;
    let reply = post(
        &server.url("/access/v1/evaluations"),
        &batch(Some("permit_on_first_permit")),
    )
    .await;
    assert_eq!(decisions(&reply.json), [true]);
    let mut body = batch(Some("permit_on_first_permit"));
    body["evaluations"] = json!([
        {"action": {"name": "cancel_order"}},
        {"action": {"name": "view_action_history"}},
        {"action": {"name": "view_account"}},
        {"action": {"name": "view_account"}}
    ]);
    let reply = post(&server.url("/access/v1/evaluations"), &body).await;
    assert_eq!(decisions(&reply.json), [false, false, true]);
}

#[tokio::test]
async fn an_unknown_semantic_is_a_400_naming_the_option() {
    let server = Server::demo().await;
    let reply = post(
        &server.url("/access/v1/evaluations"),
        &batch(Some("sometimes")),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json["error"]["field"], "options.evaluations_semantic");
}

#[tokio::test]
async fn an_empty_object_part_counts_as_absent_in_the_defaults_and_in_items() {
    let server = Server::demo().await;
    let body = json!({
        "subject": {"type": "user", "id": "carol"},
        "action": {},
        "resource": {"type": "account", "id": "alice-personal"},
        "evaluations": [
            {"action": {"name": "view_account"}, "subject": {}},
            {"action": {"name": "view_account"}, "resource": {}, "subject": {"type": "user", "id": "mallory"}},
            {"subject": {}},
            {"action": {"properties": {}}}
        ]
    });
    let reply = post(&server.url("/access/v1/evaluations"), &body).await;
    assert_eq!(reply.status, 200, "{}", reply.json);
    assert_eq!(decisions(&reply.json), [true, false, false, false]);
    let items = &reply.json["evaluations"];
    assert!(items[1]["context"]["error"].is_null(), "{}", items[1]);
    assert_eq!(
        items[2]["context"]["error"]["field"],
        "evaluations[2].action"
    );
    assert_eq!(
        items[3]["context"]["error"]["field"],
        "evaluations[3].action.name"
    );
}

#[tokio::test]
async fn items_override_the_defaults_field_by_field() {
    let server = Server::demo().await;
    let body = json!({
        "subject": {"type": "user", "id": "bob"},
        "action": {"name": "place_order"},
        "resource": {"type": "account", "id": "alice-personal"},
        "context": {"side": "sell", "instrument": "MSFT"},
        "evaluations": [
            {},
            {"subject": {"type": "user", "id": "carol"}},
            {"subject": {"type": "user", "id": "carol"}, "context": {"side": "short", "instrument": "MSFT"}}
        ]
    });
    let reply = post(&server.url("/access/v1/evaluations"), &body).await;
    assert_eq!(decisions(&reply.json), [false, true, false]);
    assert_eq!(
        reply.json["evaluations"][2]["context"]["reasons"],
        json!(["S2.side"])
    );
}

#[tokio::test]
async fn a_malformed_item_is_a_deny_with_its_error_and_the_batch_still_answers() {
    let server = Server::demo().await;
    let body = json!({
        "subject": {"type": "user", "id": "carol"},
        "resource": {"type": "account", "id": "alice-personal"},
        "evaluations": [
            {"action": {"name": "view_account"}},
            {"action": {"name": 42}},
            {"action": {"name": "place_order"}, "context": {"side": "buy"}},
            {"resource": {"type": "account", "id": "alice-personal"}, "subject": {"type": "user", "id": "carol"}},
            {"action": {"name": "view_account"}}
        ]
    });
    let reply = post(&server.url("/access/v1/evaluations"), &body).await;
    assert_eq!(reply.status, 200);
    assert_eq!(decisions(&reply.json), [true, false, false, false, true]);
    let second = &reply.json["evaluations"][1]["context"]["error"];
    assert_eq!(second["status"], 400);
    assert_eq!(second["field"], "evaluations[1].action.name");
    let third = &reply.json["evaluations"][2]["context"]["error"];
    assert_eq!(third["field"], "evaluations[2].context.instrument");
    let fourth = &reply.json["evaluations"][3]["context"]["error"];
    assert_eq!(fourth["field"], "evaluations[3].action");
}

#[tokio::test]
async fn a_batch_without_evaluations_is_a_single_evaluation() {
    let server = Server::demo().await;
    let reply = post(&server.url("/access/v1/evaluations"), &order("carol")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json["decision"], true);
}

#[tokio::test]
async fn a_batch_over_the_item_limit_is_refused() {
    let server = Server::start(crate::support::config_with(&[(
        "MANDATE_SERVER_MAX_BATCH_ITEMS",
        "2",
    )]))
    .await;
    let reply = post(&server.url("/access/v1/evaluations"), &batch(None)).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json["error"]["code"], "batch_too_large");
}

#[tokio::test]
async fn the_metadata_document_lists_both_endpoints() {
    let server = Server::demo().await;
    let reply = get(&server.url("/.well-known/authzen-configuration")).await;
    assert_eq!(reply.status, 200);
    let base = format!("http://{}", server.addr);
    assert_eq!(reply.json["policy_decision_point"], base);
    assert_eq!(
        reply.json["access_evaluation_endpoint"],
        format!("{base}/access/v1/evaluation")
    );
    assert_eq!(
        reply.json["access_evaluations_endpoint"],
        format!("{base}/access/v1/evaluations")
    );
}

#[tokio::test]
async fn the_metadata_document_never_reflects_a_crafted_host() {
    let server = Server::demo().await;
    let ask = |host: &'static str| {
        let request = http::Request::get(server.url("/.well-known/authzen-configuration"))
            .header("host", host)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        crate::support::send(request, false)
    };
    let reply = ask("pdp.internal:8443").await;
    assert_eq!(
        reply.json["policy_decision_point"],
        "http://pdp.internal:8443"
    );
    for crafted in [
        "evil.example/x?",
        "a@evil.example",
        "evil.example:80:80",
        "ev\"il",
    ] {
        let reply = ask(crafted).await;
        assert_eq!(
            reply.json["policy_decision_point"],
            format!("http://{}", server.addr),
            "{crafted}"
        );
    }
    let mut config = crate::support::demo_config();
    config.server.public_url = Some("https://pdp.example.com/".to_owned());
    let server = Server::start(config).await;
    let reply = get(&server.url("/.well-known/authzen-configuration")).await;
    assert_eq!(
        reply.json["access_evaluation_endpoint"],
        "https://pdp.example.com/access/v1/evaluation"
    );
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let server = Server::demo().await;
    let reply = get(&server.url("/healthz")).await;
    assert_eq!(reply.status, 200);
    let reply = get(&server.url("/readyz")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json["status"], "ready");
    assert!(reply.json["policies"].as_u64().unwrap() > 10);
}
