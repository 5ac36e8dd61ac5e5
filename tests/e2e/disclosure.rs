//! What a caller can make Mandate write or spend beyond a decision: the
//! request id it echoes and logs, and the explanations it computes.

use std::process::Stdio;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};

use crate::cli::{Served, mandate, serving};
use crate::support::{Server, config_with, post, send};

fn carol_orders() -> Value {
    json!({
        "subject": {"type": "user", "id": "carol"},
        "action": {"name": "place_order"},
        "resource": {"type": "account", "id": "alice-personal"},
        "context": {"side": "buy", "instrument": "AAPL"}
    })
}

#[tokio::test]
async fn a_hostile_request_id_is_replaced_answered_and_never_logged() {
    let Served {
        child,
        base,
        stderr,
    } = serving(
        mandate()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped()),
    );
    let url = format!("{base}/access/v1/evaluation");
    let huge = "h".repeat(60_000);
    let cases: [(&str, &[&str]); 5] = [
        ("huge", &[huge.as_str()]),
        ("a quote", &["x\",\"decision\":true,\"y\":\""]),
        ("too long by one", &[&"z".repeat(129)]),
        ("two of them", &["first-id", "second-id"]),
        ("acceptable", &["trace-1:span.2_x"]),
    ];
    let mut answered = Vec::new();
    for (name, ids) in cases {
        let mut request = http::Request::post(&url).header("content-type", "application/json");
        for id in ids {
            request = request.header("x-request-id", *id);
        }
        let request = request
            .body(Full::new(Bytes::from(carol_orders().to_string())))
            .unwrap();
        let reply = send(request, false).await;
        assert_eq!(reply.status, 200, "{name}");
        let echoed: Vec<_> = reply.headers.get_all("x-request-id").iter().collect();
        assert_eq!(echoed.len(), 1, "{name}");
        let echoed = echoed[0].to_str().unwrap().to_owned();
        if name == "acceptable" {
            assert_eq!(echoed, ids[0]);
        } else {
            assert!(
                echoed.len() == 32 && echoed.bytes().all(|b| b.is_ascii_hexdigit()),
                "{name}: {echoed}"
            );
        }
        answered.push(echoed);
    }
    crate::cli::terminate(&child);
    let output = child.wait_with_output().unwrap();
    stderr.join().unwrap();
    let log = String::from_utf8(output.stdout).unwrap();
    let logged: Vec<String> = log
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap()["request_id"].to_string())
        .map(|id| id.trim_matches('"').to_owned())
        .collect();
    assert_eq!(logged, answered, "each line carries the id answered");
    for leaked in [
        "hhhhhhhh",
        "decision\\\":true",
        "zzzzzzzz",
        "first-id",
        "second-id",
    ] {
        assert!(!log.contains(leaked), "{leaked} in the decision log");
    }
}

#[tokio::test]
async fn explanations_can_be_turned_off_and_are_bounded_per_request() {
    let explained = |items: usize| {
        let request = json!({
            "principal": {"type": "Brokerage::User", "id": "carol"},
            "action": {"type": "Brokerage::Action", "id": "view_account"},
            "resource": {"type": "Brokerage::Account", "id": "alice-personal"},
            "explain": true
        });
        json!({"requests": vec![request; items]})
    };
    let single = json!({
        "principal": {"type": "Brokerage::User", "id": "carol"},
        "action": {"type": "Brokerage::Action", "id": "view_account"},
        "resource": {"type": "Brokerage::Account", "id": "alice-personal"},
        "explain": true
    });

    let off = Server::start(config_with(&[("MANDATE_API_EXPLAIN", "off")])).await;
    let refused = post(&off.url("/v1/is_authorized"), &single).await;
    assert_eq!(refused.status, 400, "{}", refused.json);
    assert_eq!(refused.json["error"]["field"], "explain");
    assert!(
        refused.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("api.explain")
    );
    let mut plain = single.clone();
    plain["explain"] = json!(false);
    assert_eq!(
        post(&off.url("/v1/is_authorized"), &plain).await.status,
        200
    );

    let on = Server::start(config_with(&[])).await;
    let batch = on.url("/v1/is_authorized/batch");
    let ten = post(&batch, &explained(10)).await;
    assert_eq!(ten.status, 200, "{}", ten.json);
    assert!(ten.json["results"][9]["explanation"].is_array());
    let eleven = post(&batch, &explained(11)).await;
    assert_eq!(eleven.status, 400, "{}", eleven.json);
    assert!(
        eleven.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("api.max_explain_items"),
        "{}",
        eleven.json
    );
}
