//! The file store re-reads its file when it changes; the admin surface.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};

use crate::support::{Server, config_with, post, root, send};

fn place_order(subject: &str) -> Value {
    json!({
        "subject": {"type": "user", "id": subject},
        "action": {"name": "place_order"},
        "resource": {"type": "account", "id": "alice-personal"},
        "context": {"side": "buy", "instrument": "AAPL"}
    })
}

#[tokio::test]
async fn an_edited_entities_file_is_picked_up_and_a_broken_one_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("entities.json");
    let original = std::fs::read_to_string(root().join("examples/demo/entities.json")).unwrap();
    std::fs::write(&file, &original).unwrap();
    let path = file.display().to_string();
    let server = Server::start(config_with(&[
        ("MANDATE_STORE_ENTITIES", path.as_str()),
        ("MANDATE_STORE_RELOAD_INTERVAL", "50ms"),
    ]))
    .await;
    let url = server.url("/access/v1/evaluation");
    assert_eq!(
        post(&url, &place_order("carol")).await.json["decision"],
        true
    );

    // Carol leaves the traders.
    let mut entities: Vec<Value> = serde_json::from_str(&original).unwrap();
    for entity in &mut entities {
        if entity["uid"]["id"] == "alice-personal" {
            entity["attrs"]["traders"] = json!([{"type": "Brokerage::User", "id": "ivan"}]);
        }
    }
    std::fs::write(&file, serde_json::to_string_pretty(&entities).unwrap()).unwrap();
    let mut decision = Value::Null;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        decision = post(&url, &place_order("carol")).await.json["decision"].clone();
        if decision == false {
            break;
        }
    }
    assert_eq!(decision, false, "the edit reached decisions");

    // A broken edit keeps the last good data.
    std::fs::write(&file, "[{\"uid\": ").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        post(&url, &place_order("dave")).await.json["decision"],
        true
    );
}

async fn invalidate(server: &Server, token: Option<&str>) -> u16 {
    let mut request = http::Request::post(server.url("/admin/v1/cache/invalidate"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::from_static(b"{\"all\": true}")))
        .unwrap();
    send(request, false).await.status
}

#[tokio::test]
async fn admin_endpoints_need_the_token_when_one_is_set() {
    let server = Server::start(config_with(&[("MANDATE_ADMIN_TOKEN", "letmein")])).await;
    assert_eq!(invalidate(&server, None).await, 403);
    assert_eq!(invalidate(&server, Some("guess")).await, 403);
    assert_eq!(invalidate(&server, Some("letmein")).await, 200);
}

async fn invalidate_with(server: &Server, headers: &[(&str, &str)]) -> u16 {
    let mut request = http::Request::post(server.url("/admin/v1/cache/invalidate"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from_static(b"{\"all\": true}")))
        .unwrap();
    send(request, false).await.status
}

#[tokio::test]
async fn the_admin_scheme_is_case_insensitive_and_the_token_exact() {
    let server = Server::start(config_with(&[("MANDATE_ADMIN_TOKEN", "letmein")])).await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let value = format!("{scheme} letmein");
        assert_eq!(
            invalidate_with(&server, &[("authorization", &value)]).await,
            200,
            "{scheme}"
        );
    }
    for wrong in [
        "Bearer letmein2",
        "Bearer letmei",
        "Bearer ",
        "Basic letmein",
        "letmein",
    ] {
        assert_eq!(
            invalidate_with(&server, &[("authorization", wrong)]).await,
            403,
            "{wrong}"
        );
    }
}

#[tokio::test]
async fn a_browser_cannot_reach_the_loopback_admin_endpoints() {
    let server = Server::start(config_with(&[])).await;
    assert_eq!(
        invalidate_with(&server, &[]).await,
        200,
        "loopback, no token: open"
    );
    assert_eq!(
        invalidate_with(&server, &[("origin", "https://evil.example")]).await,
        403
    );
    assert_eq!(
        invalidate_with(&server, &[("sec-fetch-site", "cross-site")]).await,
        403
    );
}

#[tokio::test]
async fn admin_endpoints_are_closed_on_a_non_loopback_listener_without_a_token() {
    let mut config = config_with(&[]);
    config.server.listen = "0.0.0.0:0".parse().unwrap();
    let server = Server::start(config).await;
    assert_eq!(invalidate(&server, None).await, 403);
}

/// A search's page token is bound to the data it paged: after the file
/// changes, the next page is a 400 that says to start again (never a page
/// that skips or repeats), while two servers on the same file (replicas)
/// accept each other's tokens.
#[tokio::test]
async fn a_search_token_is_bound_to_the_data_and_good_on_a_replica_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("entities.json");
    let original = std::fs::read_to_string(root().join("examples/demo/entities.json")).unwrap();
    std::fs::write(&file, &original).unwrap();
    let path = file.display().to_string();
    let settings = [
        ("MANDATE_STORE_ENTITIES", path.as_str()),
        ("MANDATE_STORE_RELOAD_INTERVAL", "50ms"),
        (
            "MANDATE_SEARCH_TOKEN_KEY",
            "a-key-every-replica-shares-0123456789",
        ),
    ];
    let one = Server::start(config_with(&settings)).await;
    let two = Server::start(config_with(&settings)).await;
    let search = json!({"subject": {"type": "user"}, "action": {"name": "view_account"},
                        "resource": {"type": "account", "id": "alice-personal"},
                        "page": {"limit": 2}});
    let first = post(&one.url("/access/v1/search/subject"), &search).await;
    assert_eq!(first.status, 200, "{}", first.json);
    let mut next = search.clone();
    next["page"]["token"] = first.json["page"]["next_token"].clone();
    let on_replica = post(&two.url("/access/v1/search/subject"), &next).await;
    assert_eq!(on_replica.status, 200, "{}", on_replica.json);
    assert_ne!(on_replica.json["results"], first.json["results"]);

    // The data changes (Carol leaves the traders); the old token is refused.
    let mut entities: Vec<Value> = serde_json::from_str(&original).unwrap();
    for entity in &mut entities {
        if entity["uid"]["id"] == "alice-personal" {
            entity["attrs"]["traders"] = json!([]);
        }
    }
    std::fs::write(&file, serde_json::to_string(&entities).unwrap()).unwrap();
    let mut status = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        status = post(&one.url("/access/v1/search/subject"), &next)
            .await
            .status;
        if status == 400 {
            break;
        }
    }
    assert_eq!(status, 400, "a token from before the change");
    let refused = post(&one.url("/access/v1/search/subject"), &next).await;
    assert!(
        refused.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("start again"),
        "{}",
        refused.json
    );
}
