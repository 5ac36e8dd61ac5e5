//! Malformed input: a 4xx with `{"error":{"code","message"}}` naming the
//! field; never a panic, never an allow.

use serde_json::{Value, json};

use crate::support::{Server, config_with, get, post, post_raw};

fn assert_refused(reply: &crate::support::Reply, status: u16, field: &str) {
    assert_eq!(reply.status, status, "{}", reply.json);
    assert!(reply.json["error"]["code"].is_string(), "{}", reply.json);
    assert_eq!(reply.json["error"]["field"], field, "{}", reply.json);
    let message = reply.json["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(field),
        "message `{message}` should name `{field}`"
    );
    assert!(reply.json.get("decision").is_none());
}

#[tokio::test]
async fn malformed_json_is_a_400() {
    let server = Server::demo().await;
    for url in [
        "/access/v1/evaluation",
        "/access/v1/evaluations",
        "/v1/is_authorized",
        "/v1/is_authorized/batch",
    ] {
        let reply = post_raw(&server.url(url), "{\"subject\": ").await;
        assert_eq!(reply.status, 400, "{url}");
        assert_eq!(reply.json["error"]["code"], "invalid_body");
    }
}

#[tokio::test]
async fn a_missing_field_is_named() {
    let server = Server::demo().await;
    let reply = post(
        &server.url("/access/v1/evaluation"),
        &json!({"subject": {"type": "user"}, "action": {"name": "view_account"}, "resource": {"type": "account", "id": "a"}}),
    )
    .await;
    assert_refused(&reply, 400, "subject.id");
}

#[tokio::test]
async fn a_mistyped_field_is_named() {
    let server = Server::demo().await;
    let reply = post(
        &server.url("/access/v1/evaluation"),
        &json!({"subject": {"type": "user", "id": "carol"}, "action": {"name": ["view_account"]}, "resource": {"type": "account", "id": "a"}}),
    )
    .await;
    assert_refused(&reply, 400, "action.name");
}

fn withdraw(context: Value) -> Value {
    json!({
        "subject": {"type": "user", "id": "erin"},
        "action": {"name": "withdraw"},
        "resource": {"type": "account", "id": "alice-personal"},
        "context": context
    })
}

#[tokio::test]
async fn a_context_attribute_of_the_wrong_type_is_named() {
    let server = Server::demo().await;
    let destination = json!({"type": "Brokerage::Destination", "id": "alice-bank"});
    // `amount` is a decimal: a string, never a JSON number.
    let reply = post(
        &server.url("/access/v1/evaluation"),
        &withdraw(json!({"destination": destination, "amount": 1250})),
    )
    .await;
    assert_refused(&reply, 400, "context.amount");
    let reply = post(
        &server.url("/access/v1/evaluation"),
        &withdraw(json!({"destination": destination, "amount": "1250.00"})),
    )
    .await;
    assert_eq!(reply.json["decision"], true);
    let extn = json!({"__extn": {"fn": "decimal", "arg": "1250.00"}});
    let reply = post(
        &server.url("/access/v1/evaluation"),
        &withdraw(json!({"destination": destination, "amount": extn})),
    )
    .await;
    assert_eq!(reply.json["decision"], true);
}

#[tokio::test]
async fn an_entity_reference_of_the_wrong_type_is_named() {
    let server = Server::demo().await;
    let reply = post(
        &server.url("/access/v1/evaluation"),
        &withdraw(json!({"destination": {"type": "Brokerage::User", "id": "alice"}})),
    )
    .await;
    assert_refused(&reply, 400, "context.destination");
}

#[tokio::test]
async fn a_missing_context_attribute_is_named() {
    let server = Server::demo().await;
    let reply = post(&server.url("/access/v1/evaluation"), &withdraw(json!({}))).await;
    assert_refused(&reply, 400, "context.destination");
}

#[tokio::test]
async fn properties_for_a_store_served_type_are_refused() {
    let server = Server::demo().await;
    let reply = post(
        &server.url("/access/v1/evaluation"),
        &json!({
            "subject": {"type": "user", "id": "mallory"},
            "action": {"name": "view_account"},
            "resource": {"type": "account", "id": "alice-personal", "properties": {"owner": {"type": "Brokerage::User", "id": "mallory"}}}
        }),
    )
    .await;
    assert_refused(&reply, 400, "resource.properties");
}

#[tokio::test]
async fn an_oversized_body_is_a_413() {
    let server = Server::start(config_with(&[("MANDATE_SERVER_MAX_BODY_BYTES", "1024")])).await;
    let big = json!({"subject": {"type": "user", "id": "x".repeat(4096)}});
    let reply = post(&server.url("/access/v1/evaluation"), &big).await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.json["error"]["code"], "body_too_large");
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_are_json_errors() {
    let server = Server::demo().await;
    let reply = get(&server.url("/nope")).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json["error"]["code"], "not_found");
    let reply = get(&server.url("/access/v1/evaluation")).await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.json["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn arbitrary_bodies_never_allow() {
    let server = Server::demo().await;
    let bodies = [
        "null",
        "[]",
        "42",
        "\"x\"",
        "{}",
        "{\"subject\":null}",
        "{\"subject\":{\"type\":\"user\",\"id\":\"alice\"},\"action\":{\"name\":\"view_account\"},\"resource\":{\"type\":\"account\",\"id\":\"alice-personal\"},\"context\":[]}",
        "{\"subject\":{\"type\":\"user\",\"id\":\"alice\"},\"action\":{\"name\":\"view_account\"},\"resource\":{\"type\":\"account\",\"id\":\"alice-personal\"},\"context\":{\"x\":{\"__extn\":{\"fn\":\"nope\",\"arg\":1}}}}",
        "\u{0}\u{1}\u{2}",
    ];
    for url in [
        "/access/v1/evaluation",
        "/access/v1/evaluations",
        "/v1/is_authorized",
        "/v1/is_authorized/batch",
    ] {
        for body in bodies {
            let reply = post_raw(&server.url(url), body).await;
            assert!(
                reply.status == 400 || reply.status == 200,
                "{url} {body}: {}",
                reply.status
            );
            assert_ne!(reply.json["decision"], true, "{url} {body}");
            assert_ne!(reply.json["decision"], "Allow", "{url} {body}");
        }
    }
}
