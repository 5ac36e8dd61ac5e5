//! The native Cedar API: single and batch, and request-supplied entities.

use serde_json::json;

use crate::support::{Server, config_with, post};

#[tokio::test]
async fn is_authorized_allows_with_reasons_and_the_policy_version() {
    let server = Server::demo().await;
    let reply = post(
        &server.url("/v1/is_authorized"),
        &json!({
            "principal": {"type": "Brokerage::User", "id": "erin"},
            "action": {"type": "Brokerage::Action", "id": "withdraw"},
            "resource": {"type": "Brokerage::Account", "id": "alice-personal"},
            "context": {"destination": {"type": "Brokerage::Destination", "id": "alice-bank"}, "amount": "1250.00"}
        }),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json["decision"], "Allow");
    assert_eq!(reply.json["reasons"], json!(["S3", "S4"]));
    assert_eq!(reply.json["errors"], json!([]));
    assert_eq!(reply.json["policy_version"].as_str().unwrap().len(), 12);
}

#[tokio::test]
async fn cedar_string_uids_and_entity_escapes_are_accepted() {
    let server = Server::demo().await;
    let reply = post(
        &server.url("/v1/is_authorized"),
        &json!({
            "principal": "Brokerage::User::\"erin\"",
            "action": {"__entity": {"type": "Brokerage::Action", "id": "withdraw"}},
            "resource": "Brokerage::Account::\"alice-personal\"",
            "context": {"destination": {"__entity": {"type": "Brokerage::Destination", "id": "mallory-wallet"}}}
        }),
    )
    .await;
    assert_eq!(reply.json["decision"], "Deny");
    assert_eq!(reply.json["reasons"], json!(["F1"]));
}

#[tokio::test]
async fn the_batch_answers_each_request_in_order() {
    let server = Server::demo().await;
    let request = |principal: &str| {
        json!({
            "principal": {"type": "Brokerage::User", "id": principal},
            "action": {"type": "Brokerage::Action", "id": "view_account"},
            "resource": {"type": "Brokerage::Account", "id": "alice-personal"}
        })
    };
    let reply = post(
        &server.url("/v1/is_authorized/batch"),
        &json!({"requests": [request("bob"), request("mallory"), {"principal": 1}, request("judy")]}),
    )
    .await;
    assert_eq!(reply.status, 200);
    let results = reply.json["results"].as_array().unwrap();
    let got: Vec<&str> = results
        .iter()
        .map(|r| r["decision"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["Allow", "Deny", "Deny", "Allow"]);
    assert_eq!(results[2]["errors"][0]["code"], "invalid_body");
}

fn destination_entity(id: &str, holder: &str) -> serde_json::Value {
    json!({
        "uid": {"type": "Brokerage::Destination", "id": id},
        "attrs": {
            "account": {"__entity": {"type": "Brokerage::Account", "id": "alice-personal"}},
            "holder": {"__entity": {"type": "Brokerage::User", "id": holder}},
            "kind": "bank",
            "previouslyUsed": true
        },
        "parents": []
    })
}

fn withdrawal(destination: &str, entities: serde_json::Value) -> serde_json::Value {
    json!({
        "principal": {"type": "Brokerage::User", "id": "erin"},
        "action": {"type": "Brokerage::Action", "id": "withdraw"},
        "resource": {"type": "Brokerage::Account", "id": "alice-personal"},
        "context": {"destination": {"type": "Brokerage::Destination", "id": destination}},
        "entities": entities
    })
}

#[tokio::test]
async fn request_supplied_entities_of_a_request_described_type_decide() {
    let server = Server::start(config_with(&[(
        "MANDATE_ENTITIES_SOURCES",
        "{ \"Brokerage::Destination\" = \"request\" }",
    )]))
    .await;
    let url = server.url("/v1/is_authorized");
    let reply = post(
        &url,
        &withdrawal(
            "fresh-bank",
            json!([destination_entity("fresh-bank", "alice")]),
        ),
    )
    .await;
    assert_eq!(reply.json["decision"], "Allow", "{}", reply.json);
    let reply = post(
        &url,
        &withdrawal(
            "fresh-bank",
            json!([destination_entity("fresh-bank", "mallory")]),
        ),
    )
    .await;
    assert_eq!(reply.json["decision"], "Deny");
    assert_eq!(reply.json["reasons"], json!(["F1"]));
    // A request-described entity the request does not supply is missing: a deny.
    let reply = post(&url, &withdrawal("alice-bank", json!([]))).await;
    assert_eq!(reply.json["decision"], "Deny");
    assert_eq!(reply.json["errors"][0]["code"], "entity_not_found");
}

#[tokio::test]
async fn request_data_for_a_store_served_type_is_refused_naming_the_entity() {
    let server = Server::demo().await;
    let forged_account = json!({
        "uid": {"type": "Brokerage::Account", "id": "alice-personal"},
        "attrs": {}, "parents": []
    });
    let reply = post(
        &server.url("/v1/is_authorized"),
        &withdrawal(
            "alice-bank",
            json!([destination_entity("x", "alice"), forged_account]),
        ),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json["error"]["field"], "entities[0]");
    assert_eq!(reply.json["error"]["code"], "store_authoritative");
}

#[tokio::test]
async fn merge_lets_a_trusted_caller_override_stored_attributes() {
    let server = Server::start(config_with(&[(
        "MANDATE_ENTITIES_SOURCES",
        "{ \"Brokerage::Destination\" = \"merge\" }",
    )]))
    .await;
    let url = server.url("/v1/is_authorized");
    // Stored alice-bank is alice's; the trusted caller says it is mallory's now.
    let reply = post(
        &url,
        &withdrawal(
            "alice-bank",
            json!([destination_entity("alice-bank", "mallory")]),
        ),
    )
    .await;
    assert_eq!(reply.json["decision"], "Deny");
    assert_eq!(reply.json["reasons"], json!(["F1"]));
    let reply = post(&url, &withdrawal("alice-bank", json!([]))).await;
    assert_eq!(reply.json["decision"], "Allow");
}

#[tokio::test]
async fn with_no_store_every_entity_comes_from_the_request() {
    let server = Server::start(config_with(&[("MANDATE_STORE_KIND", "none")])).await;
    let user = |id: &str, active: bool| {
        json!({"uid": {"type": "Brokerage::User", "id": id},
               "attrs": {"active": active, "verified": true, "employee": false, "marketData": [{"type": "Brokerage::MarketData", "id": "feed"}]},
               "parents": []})
    };
    let feed =
        json!({"uid": {"type": "Brokerage::MarketData", "id": "feed"}, "attrs": {}, "parents": []});
    let ask = |entities: serde_json::Value| {
        json!({
            "principal": {"type": "Brokerage::User", "id": "zoe"},
            "action": {"type": "Brokerage::Action", "id": "view_market_data"},
            "resource": {"type": "Brokerage::MarketData", "id": "feed"},
            "entities": entities
        })
    };
    let url = server.url("/v1/is_authorized");
    let reply = post(&url, &ask(json!([user("zoe", true), feed.clone()]))).await;
    assert_eq!(reply.json["decision"], "Allow", "{}", reply.json);
    let reply = post(&url, &ask(json!([user("zoe", false), feed]))).await;
    assert_eq!(reply.json["reasons"], json!(["G2"]));
}

#[tokio::test]
async fn explain_answers_policy_by_policy_why_and_is_absent_unless_asked() {
    let server = Server::demo().await;
    let ask = |explain: Option<bool>| {
        let mut body = json!({
            "principal": {"type": "Brokerage::User", "id": "erin"},
            "action": {"type": "Brokerage::Action", "id": "withdraw"},
            "resource": {"type": "Brokerage::Account", "id": "alice-personal"},
            "context": {"destination": {"type": "Brokerage::Destination", "id": "mallory-wallet"}, "amount": "10.00"}
        });
        if let Some(explain) = explain {
            body["explain"] = json!(explain);
        }
        body
    };
    let url = server.url("/v1/is_authorized");
    let plain = post(&url, &ask(None)).await;
    assert_eq!(plain.json["decision"], "Deny");
    assert!(plain.json.get("explanation").is_none(), "{}", plain.json);
    assert!(
        post(&url, &ask(Some(false)))
            .await
            .json
            .get("explanation")
            .is_none()
    );

    let explained = post(&url, &ask(Some(true))).await;
    assert_eq!(explained.status, 200);
    assert_eq!(explained.json["reasons"], json!(["F1"]));
    let trace = explained.json["explanation"].as_array().unwrap();
    let f1 = trace.iter().find(|p| p["policy"] == "F1").unwrap();
    assert_eq!(f1["effect"], "forbid");
    assert_eq!(f1["condition"]["outcome"], "held");
    assert_eq!(f1["determining"], true, "the forbid decided the deny");
    let s4 = trace.iter().find(|p| p["policy"] == "S4").unwrap();
    assert_eq!(s4["condition"]["outcome"], "held", "Erin's role permits…");
    assert_eq!(s4["determining"], false, "…but a forbid overrides it");

    // In a batch, per item.
    let batch = post(
        &server.url("/v1/is_authorized/batch"),
        &json!({"requests": [ask(Some(true)), ask(None)]}),
    )
    .await;
    let results = batch.json["results"].as_array().unwrap();
    assert!(results[0]["explanation"].is_array());
    assert!(results[1].get("explanation").is_none());

    // A wrong type for the flag names it.
    let mut bad = ask(None);
    bad["explain"] = json!("yes");
    let refused = post(&url, &bad).await;
    assert_eq!(refused.status, 400);
    assert_eq!(
        refused.json["error"]["field"], "explain",
        "{}",
        refused.json
    );
}
