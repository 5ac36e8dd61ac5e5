//! Property tests on every request decoder: arbitrary bytes and arbitrary
//! JSON (built from the contracts' own words) never panic, never answer 5xx,
//! and never decode to an allow. The only login in the vocabulary is one no
//! policy allows anything, so any allow would be a decoding bug.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use mandate::api::{Api, Surface};
use proptest::prelude::*;
use serde_json::Value;

const ENDPOINTS: [&str; 4] = [
    "/access/v1/evaluation",
    "/access/v1/evaluations",
    "/v1/is_authorized",
    "/v1/is_authorized/batch",
];

fn api() -> Api {
    let config = crate::support::demo_config();
    let engine = Arc::new(mandate::app::engine(&config).unwrap());
    let routes = mandate::app::routes(&config, &engine).unwrap();
    mandate::app::api(&config, engine, routes, Surface::All)
}

fn ask(runtime: &tokio::runtime::Runtime, api: &Api, path: &str, body: Vec<u8>) -> (u16, Value) {
    runtime.block_on(async {
        let request = http::Request::post(path)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = api.handle(request).await;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&body).expect("every answer is JSON"),
        )
    })
}

fn never_allows(status: u16, answer: &Value) {
    assert!(status < 500, "status {status}: {answer}");
    let allowed = |v: &Value| {
        v.get("decision") == Some(&Value::Bool(true))
            || v.get("decision") == Some(&Value::from("Allow"))
    };
    assert!(!allowed(answer), "{answer}");
    for list in ["evaluations", "results"] {
        for item in answer
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            assert!(!allowed(item), "{answer}");
        }
    }
}

fn word() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "subject",
        "action",
        "resource",
        "context",
        "type",
        "id",
        "name",
        "properties",
        "evaluations",
        "options",
        "evaluations_semantic",
        "execute_all",
        "deny_on_first_deny",
        "permit_on_first_permit",
        "principal",
        "entities",
        "requests",
        "uid",
        "attrs",
        "parents",
        "__entity",
        "__extn",
        "fn",
        "arg",
        "decimal",
        "user",
        "User",
        "Brokerage::User",
        "account",
        "Brokerage::Account",
        "Brokerage::Action",
        "Brokerage::Destination",
        "marketdata",
        "mallory",
        "nobody",
        "",
        "alice-personal",
        "nasdaq-l1",
        "alice-bank",
        "view_account",
        "place_order",
        "withdraw",
        "add_sub_user",
        "view_market_data",
        "destination",
        "amount",
        "side",
        "buy",
        "role",
        "administrator",
        "target",
        "owner",
        "active",
        "1250.00",
    ])
    .prop_map(str::to_owned)
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        word().prop_map(Value::String),
        ".*".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(word(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Requests of the contracts' shape with arbitrary parts, to reach the engine.
fn shaped() -> impl Strategy<Value = Value> {
    let entity = || {
        (word(), word(), prop::option::of(json())).prop_map(|(ty, id, properties)| {
            let mut entity = serde_json::json!({"type": ty, "id": id});
            if let Some(properties) = properties {
                entity["properties"] = properties;
            }
            entity
        })
    };
    (entity(), word(), entity(), prop::option::of(json())).prop_map(|(subject, action, resource, context)| {
        let mut request = serde_json::json!({"subject": subject, "action": {"name": action}, "resource": resource});
        if let Some(context) = context {
            request["context"] = context;
        }
        request
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_and_never_allow(body in prop::collection::vec(any::<u8>(), 0..400), endpoint in 0..4usize) {
        thread_local! {
            static FIXTURE: (tokio::runtime::Runtime, Api) =
                (tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(), api());
        }
        FIXTURE.with(|(runtime, api)| {
            let (status, answer) = ask(runtime, api, ENDPOINTS[endpoint], body);
            never_allows(status, &answer);
        });
    }

    #[test]
    fn shaped_requests_with_arbitrary_parts_never_allow(value in shaped()) {
        thread_local! {
            static FIXTURE: (tokio::runtime::Runtime, Api) =
                (tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(), api());
        }
        FIXTURE.with(|(runtime, api)| {
            let batch = serde_json::json!({"evaluations": [value.clone()]});
            for (endpoint, body) in [(ENDPOINTS[0], &value), (ENDPOINTS[1], &batch)] {
                let (status, answer) = ask(runtime, api, endpoint, serde_json::to_vec(body).unwrap());
                never_allows(status, &answer);
            }
        });
    }

    #[test]
    fn arbitrary_json_never_panics_and_never_allows(value in json(), endpoint in 0..4usize) {
        thread_local! {
            static FIXTURE: (tokio::runtime::Runtime, Api) =
                (tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(), api());
        }
        FIXTURE.with(|(runtime, api)| {
            let (status, answer) = ask(runtime, api, ENDPOINTS[endpoint], serde_json::to_vec(&value).unwrap());
            never_allows(status, &answer);
        });
    }

    #[test]
    fn a_key_sent_twice_anywhere_in_an_allowed_request_is_refused_by_name(
        base in 0..3usize,
        object in 0..64usize,
        key in 0..16usize,
        front in any::<bool>(),
        other in json(),
    ) {
        thread_local! {
            static FIXTURE: (tokio::runtime::Runtime, Api) =
                (tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(), api());
        }
        let (endpoint, request) = allowed_request(base);
        FIXTURE.with(|(runtime, api)| {
            // As sent, the request is allowed: the duplicate alone refuses it.
            let (_, answer) = ask(runtime, api, endpoint, serde_json::to_vec(&request).unwrap());
            let allowed = answer["decision"] == Value::Bool(true)
                || answer["decision"] == "Allow"
                || answer["evaluations"][0]["decision"] == Value::Bool(true);
            assert!(allowed, "{answer}");
            let objects = count_objects(&request);
            let mut text = String::new();
            let mut seen = 0;
            let mut path = None;
            render(&request, object % objects, key, front, &other, &mut seen, "", &mut text, &mut path);
            let (status, answer) = ask(runtime, api, endpoint, text.clone().into_bytes());
            match path {
                Some(path) => {
                    assert_eq!(status, 400, "{text}: {answer}");
                    assert_eq!(answer["error"]["code"], "duplicate_key", "{text}");
                    assert_eq!(answer["error"]["field"], path.as_str(), "{text}");
                }
                // An empty object has no key to repeat.
                None => never_allows_more_than(status, &answer),
            }
        });
    }
}

fn never_allows_more_than(status: u16, answer: &Value) {
    assert!(status < 500, "status {status}: {answer}");
}

/// Requests the demo data allows, on the AuthZEN and native endpoints.
fn allowed_request(which: usize) -> (&'static str, Value) {
    let withdraw = serde_json::json!({
        "subject": {"type": "user", "id": "erin", "properties": {}},
        "action": {"name": "withdraw"},
        "resource": {"type": "account", "id": "alice-personal"},
        "context": {"destination": {"type": "Brokerage::Destination", "id": "alice-bank"}, "amount": "10.00"}
    });
    match which {
        0 => (ENDPOINTS[0], withdraw),
        1 => (ENDPOINTS[1], serde_json::json!({"evaluations": [withdraw]})),
        _ => (
            ENDPOINTS[2],
            serde_json::json!({
                "principal": {"type": "Brokerage::User", "id": "grace"},
                "action": {"type": "Brokerage::Action", "id": "view_account"},
                "resource": {"type": "Brokerage::Account", "id": "alice-personal"},
                "context": {}
            }),
        ),
    }
}

fn count_objects(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(count_objects).sum::<usize>(),
        Value::Array(items) => items.iter().map(count_objects).sum(),
        _ => 0,
    }
}

/// Writes `value` as JSON text, repeating one key of the `target`-th object
/// (pre-order) with `other` as its value, before or after the original;
/// `path` gets the dotted path of the repeated key.
#[allow(clippy::too_many_arguments)]
fn render(
    value: &Value,
    target: usize,
    key: usize,
    front: bool,
    other: &Value,
    seen: &mut usize,
    at: &str,
    out: &mut String,
    path: &mut Option<String>,
) {
    match value {
        Value::Object(map) => {
            let this = *seen;
            *seen += 1;
            let repeated = (this == target && !map.is_empty()).then(|| key % map.len());
            out.push('{');
            let mut first = true;
            let mut pair = |out: &mut String, name: &str, text: &str| {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(&serde_json::to_string(name).unwrap());
                out.push(':');
                out.push_str(text);
            };
            for (index, (name, inner)) in map.iter().enumerate() {
                let child = if at.is_empty() {
                    name.clone()
                } else {
                    format!("{at}.{name}")
                };
                let mut text = String::new();
                render(
                    inner, target, key, front, other, seen, &child, &mut text, path,
                );
                if repeated == Some(index) {
                    *path = Some(child);
                    let extra = other.to_string();
                    if front {
                        pair(out, name, &extra);
                        pair(out, name, &text);
                    } else {
                        pair(out, name, &text);
                        pair(out, name, &extra);
                    }
                } else {
                    pair(out, name, &text);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                render(
                    item,
                    target,
                    key,
                    front,
                    other,
                    seen,
                    &format!("{at}[{index}]"),
                    out,
                    path,
                );
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}
