//! Hostile bodies: nothing that two parsers could read two ways is decided
//! (a key sent twice, an entity reference with keys beside it), and the
//! requests whose cost used to grow with the square of their size (a
//! context of thousands of keys, thousands of request entities, a batch's
//! shared entities) are answered correctly in one pass. Their CPU cost is
//! measured in `benches/decision.rs` (`hostile/…`), not asserted here.

use serde_json::{Value, json};

use crate::support::{Server, demo_config, get, post, post_raw};

fn evaluation(context: &str) -> String {
    format!(
        r#"{{"subject": {{"type": "user", "id": "erin"}}, "action": {{"name": "withdraw"}},
            "resource": {{"type": "account", "id": "alice-personal"}}, "context": {context}}}"#
    )
}

#[tokio::test]
async fn a_key_sent_twice_in_the_context_is_a_400_naming_it() {
    let server = Server::start(demo_config()).await;
    // Either order: a last-wins parser would pay the wallet in the first.
    for context in [
        r#"{"destination": {"type": "Destination", "id": "alice-bank"}, "destination": {"type": "Destination", "id": "mallory-wallet"}}"#,
        r#"{"destination": {"type": "Destination", "id": "mallory-wallet"}, "destination": {"type": "Destination", "id": "alice-bank"}}"#,
        r#"{"destination": {"type": "Destination", "id": "alice-bank", "id": "mallory-wallet"}}"#,
    ] {
        let reply = post_raw(&server.url("/access/v1/evaluation"), evaluation(context)).await;
        assert_eq!(reply.status, 400, "{context}: {}", reply.json);
        assert_eq!(reply.json["error"]["code"], "duplicate_key");
        let field = reply.json["error"]["field"].as_str().unwrap();
        assert!(field.starts_with("context.destination"), "{field}");
    }
}

#[tokio::test]
async fn a_key_sent_twice_anywhere_in_any_body_is_a_400() {
    let server = Server::start(demo_config()).await;
    let cases = [
        (
            "/access/v1/evaluations",
            r#"{"evaluations": [{"subject": {"type": "user", "id": "carol", "id": "alice"}, "action": {"name": "view_account"}, "resource": {"type": "account", "id": "alice-personal"}}]}"#,
            "evaluations[0].subject.id",
        ),
        (
            "/access/v1/evaluation",
            r#"{"subject": {"type": "user", "id": "carol", "properties": {"a": 1, "a": 2}}, "action": {"name": "view_account"}, "resource": {"type": "account", "id": "alice-personal"}}"#,
            "subject.properties.a",
        ),
        (
            "/v1/is_authorized",
            r#"{"principal": {"type": "Brokerage::User", "id": "bob"}, "action": {"type": "Brokerage::Action", "id": "view_account"}, "resource": {"type": "Brokerage::Account", "id": "alice-personal"}, "entities": [{"uid": {"type": "X", "id": "a"}, "attrs": {}, "attrs": {}, "parents": []}]}"#,
            "entities[0].attrs",
        ),
        (
            "/admin/v1/cache/invalidate",
            r#"{"all": false, "all": true}"#,
            "all",
        ),
    ];
    for (path, body, field) in cases {
        let reply = post_raw(&server.url(path), body).await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.json);
        assert_eq!(reply.json["error"]["code"], "duplicate_key", "{path}");
        assert_eq!(reply.json["error"]["field"], field, "{path}");
    }
}

#[tokio::test]
async fn an_entity_reference_with_keys_beside_it_is_a_400() {
    let server = Server::start(demo_config()).await;
    for context in [
        r#"{"destination": {"type": "Destination", "id": "alice-bank", "account": "x"}}"#,
        r#"{"destination": {"__entity": {"type": "Brokerage::Destination", "id": "alice-bank"}, "type": "Brokerage::Destination", "id": "mallory-wallet"}}"#,
        r#"{"destination": {"__entity": {"type": "Brokerage::Destination", "id": "alice-bank", "x": 1}}}"#,
    ] {
        let reply = post_raw(&server.url("/access/v1/evaluation"), evaluation(context)).await;
        assert_eq!(reply.status, 400, "{context}: {}", reply.json);
        assert_eq!(
            reply.json["error"]["field"], "context.destination",
            "{context}"
        );
    }
    // The native API's uids too: `type`/`id` beside `__entity` or another key.
    for principal in [
        json!({"__entity": {"type": "Brokerage::User", "id": "mallory"}, "type": "Brokerage::User", "id": "grace"}),
        json!({"type": "Brokerage::User", "id": "grace", "as": "mallory"}),
    ] {
        let body = json!({
            "principal": principal,
            "action": {"type": "Brokerage::Action", "id": "view_account"},
            "resource": {"type": "Brokerage::Account", "id": "alice-personal"},
        });
        let reply = post(&server.url("/v1/is_authorized"), &body).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.json);
    }
    // A well-formed reference still decides.
    let reply = post_raw(
        &server.url("/access/v1/evaluation"),
        evaluation(r#"{"destination": {"__entity": {"type": "Brokerage::Destination", "id": "alice-bank"}}}"#),
    )
    .await;
    assert_eq!(reply.json["decision"], true, "{}", reply.json);
}

#[tokio::test]
async fn a_context_of_thousands_of_keys_is_refused_naming_one() {
    let server = Server::start(demo_config()).await;
    let mut context = serde_json::Map::new();
    context.insert(
        "destination".to_owned(),
        json!({"type": "Destination", "id": "alice-bank"}),
    );
    for i in 0..3000 {
        context.insert(format!("k{i:04}"), json!(i));
    }
    let body = evaluation(&Value::Object(context).to_string());
    let (evaluation_url, health_url) =
        (server.url("/access/v1/evaluation"), server.url("/healthz"));
    let (reply, health) = tokio::join!(post_raw(&evaluation_url, body), get(&health_url));
    assert_eq!(health.status, 200);
    assert_eq!(reply.status, 400, "{}", reply.json);
    let field = reply.json["error"]["field"].as_str().unwrap();
    assert!(field.starts_with("context.k"), "{field}");
}

#[tokio::test]
async fn thousands_of_request_entities_are_taken_once_each_up_to_the_limit() {
    // The Todo pack's documents are request-described: the caller sends them.
    let config = crate::support::todo_config();
    let server = Server::start(config).await;
    let mut entities = Vec::new();
    for i in 0..1990 {
        let owner = if i == 7 { "morty" } else { "rick" };
        entities.push(json!({
            "uid": {"type": "Todo::Todo", "id": format!("t{i}")},
            "attrs": {"ownerID": format!("{owner}@the-citadel.com")}, "parents": []
        }));
    }
    // Morty, an editor, deletes his own todos only.
    let delete = |todo: &str, entities: &[Value]| {
        json!({
            "principal": {"type": "Todo::User", "id": "CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"},
            "action": {"type": "Todo::Action", "id": "can_delete_todo"},
            "resource": {"type": "Todo::Todo", "id": todo},
            "entities": entities,
        })
    };
    let reply = post(&server.url("/v1/is_authorized"), &delete("t7", &entities)).await;
    assert_eq!(reply.status, 200, "{}", reply.json);
    assert_eq!(reply.json["decision"], "Allow", "{}", reply.json);
    let reply = post(&server.url("/v1/is_authorized"), &delete("t8", &entities)).await;
    assert_eq!(reply.json["decision"], "Deny", "{}", reply.json);
    // A second copy of a uid (one owned by Rick, one by Morty) is two
    // descriptions of one entity: refused, naming the second.
    let mut twice = entities.clone();
    twice.push(json!({
        "uid": {"type": "Todo::Todo", "id": "t8"},
        "attrs": {"ownerID": "morty@the-citadel.com"}, "parents": []
    }));
    let reply = post(&server.url("/v1/is_authorized"), &delete("t8", &twice)).await;
    assert_eq!(reply.status, 400, "{}", reply.json);
    assert_eq!(reply.json["error"]["code"], "duplicate_entity");
    assert_eq!(reply.json["error"]["field"], "entities[1990]");
    // Past `server.max_request_entities` (2,000): refused, naming the field.
    entities.extend((0..20).map(|i| json!({"uid": {"type": "Todo::Todo", "id": format!("u{i}")}, "attrs": {"ownerID": "x"}, "parents": []})));
    let reply = post(&server.url("/v1/is_authorized"), &delete("t7", &entities)).await;
    assert_eq!(reply.status, 400, "{}", reply.json);
    assert_eq!(reply.json["error"]["code"], "too_many_entities");
    assert_eq!(reply.json["error"]["field"], "entities");
}

#[tokio::test]
async fn a_batch_parses_its_shared_entities_once_and_names_a_bad_one() {
    let server = Server::start(crate::support::todo_config()).await;
    let requests: Vec<Value> = (0..40)
        .map(|i| {
            json!({
                "principal": {"type": "Todo::User", "id": "CiRmZDE1ZjIxNi0wNGM0LTQ0ZjYtOTU1MC1jZWU3YzhjODVlMTgSBWxvY2Fs"},
                "action": {"type": "Todo::Action", "id": "can_read_todos"},
                "resource": {"type": "Todo::Todo", "id": format!("t{i}")},
            })
        })
        .collect();
    let entities: Vec<Value> = (0..50)
        .map(|i| json!({"uid": {"type": "Todo::Todo", "id": format!("t{i}")}, "attrs": {"ownerID": "x"}, "parents": []}))
        .collect();
    let body = json!({"requests": requests, "entities": entities});
    let reply = post(&server.url("/v1/is_authorized/batch"), &body).await;
    assert_eq!(reply.status, 200, "{}", reply.json);
    assert_eq!(reply.json["results"].as_array().unwrap().len(), 40);
    // 40 items sharing 51 entities use 2,040: past the limit.
    let mut more = entities.clone();
    more.push(json!({"uid": {"type": "Todo::Todo", "id": "extra"}, "attrs": {"ownerID": "x"}, "parents": []}));
    let reply = post(
        &server.url("/v1/is_authorized/batch"),
        &json!({"requests": requests, "entities": more}),
    )
    .await;
    assert_eq!(reply.status, 400, "{}", reply.json);
    assert_eq!(reply.json["error"]["code"], "too_many_entities");

    let body = json!({"requests": requests, "entities": [{"uid": {"type": "Todo::Todo", "id": "t0"}, "attrs": {"ownerID": 5}, "parents": []}]});
    let reply = post(&server.url("/v1/is_authorized/batch"), &body).await;
    assert_eq!(reply.status, 200);
    let first = &reply.json["results"][0];
    assert_eq!(first["decision"], "Deny");
    let message = first["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("entities[0]"), "{message}");
}
