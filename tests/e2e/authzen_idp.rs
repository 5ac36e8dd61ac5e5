//! The AuthZEN IdP interop (`interop/authzen-idp` of openid/authzen): an
//! identity provider asks `search/resource` which records a user may
//! delete, and mints the answer into a token. Its six vectors
//! (`examples/authzen-search/interop/idp.json`, the harness's
//! `results.json`) run against `examples/authzen-search`, whose data is the
//! IdP interop's (same users, same record owners), sent as the IdP sends
//! them: one request, no page, an `Authorization` header the PDP ignores.

use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;

use crate::support::{Server, root, send};

async fn pack() -> Server {
    let config = mandate::config::Config::load(
        Some(&root().join("examples/authzen-search/mandate.toml")),
        [
            ("MANDATE_SERVER_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
            ("MANDATE_LOG_DECISIONS".to_owned(), "off".to_owned()),
        ],
        &[],
    )
    .unwrap();
    Server::start(config).await
}

/// The harness's pass rule (`test-harness/src/runner.ts`, `status`): the
/// results sorted by type then id, compared as JSON with null members left
/// out.
fn harness_form(results: &Value) -> String {
    let mut items: Vec<Value> = results
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut item| {
            if let Some(object) = item.as_object_mut() {
                object.retain(|_, value| !value.is_null());
            }
            item
        })
        .collect();
    items.sort_by(|a, b| {
        let key = |v: &Value| (v["type"].to_string(), v["id"].to_string());
        key(a).cmp(&key(b))
    });
    serde_json::to_string(&items).unwrap()
}

#[tokio::test]
async fn the_six_idp_vectors_pass_by_the_harness_rule_and_exactly() {
    let server = pack().await;
    let file = root().join("examples/authzen-search/interop/idp.json");
    let vectors: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let vectors = vectors["search"].as_array().unwrap();
    assert_eq!(vectors.len(), 6);
    for vector in vectors {
        let (request, expected) = (&vector["request"], &vector["expected"]["results"]);
        let http = http::Request::post(server.url("/access/v1/search/resource"))
            .header("content-type", "application/json")
            // The harness sends its API key (unset: `undefined`) this way.
            .header("authorization", "undefined")
            .body(Full::new(Bytes::from(serde_json::to_vec(request).unwrap())))
            .unwrap();
        let reply = send(http, false).await;
        assert_eq!(reply.status, 200, "{request}: {}", reply.json);
        let results = &reply.json["results"];
        assert_eq!(
            harness_form(results),
            harness_form(expected),
            "{request}: {}",
            reply.json
        );
        // Stricter: one page holds the whole answer (the IdP follows no
        // token), and every result is exactly `{type: "record", id}`, the
        // claim's name and value.
        assert_eq!(reply.json["page"]["next_token"], "", "{}", reply.json);
        for result in results.as_array().unwrap() {
            let mut keys: Vec<&String> = result.as_object().unwrap().keys().collect();
            keys.sort();
            assert_eq!(keys, ["id", "type"], "{result}");
            assert_eq!(result["type"], "record", "{result}");
        }
    }
}
