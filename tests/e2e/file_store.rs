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
