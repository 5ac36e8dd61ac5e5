//! Micro-benchmarks, in process, no sockets:
//! - `engine/<group>/<store>`: one decision through the engine for each
//!   action group of the pack, the HTTP store with a warm cache (no upstream
//!   call inside the loop) and the file store;
//! - `api/authzen`, `api/native`: a whole request through the API (decode,
//!   decide, encode) — minus the engine's time for the same decision, what
//!   decoding and encoding cost;
//! - `engine/<group>/file_store_shadow`: the same with shadow mode on (the
//!   shipped pack as candidate), the shadow's spawned decision included;
//! - `gather/warm_cache`: the entities of a withdrawal from the warm cache;
//! - `hostile/…`: the requests whose cost once grew with the square of
//!   their size, each within the limits (a context of 3,000 keys, a 1 MiB
//!   object with a repeated key, 2,000 request entities, a batch of 40
//!   items sharing 50 entities): what one such request costs now.
//!
//! `cargo bench --bench decision`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Full};
use mandate::api::Surface;
use mandate::config::Config;
use mandate::engine::{DecisionRequest, Engine, EntityRef};
use mandate::tools::refstore::RefStore;
use serde_json::{Value, json};

fn config(upstream: Option<String>) -> Config {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let text = |value: String| toml::Value::String(value);
    let mut flags = vec![
        (
            "policy.dir",
            text(root.join("policies").display().to_string()),
        ),
        (
            "policy.schema",
            text(root.join("schema").display().to_string()),
        ),
    ];
    match upstream {
        Some(upstream) => {
            flags.push(("store.kind", text("http".to_owned())));
            flags.push(("store.upstream", text(upstream)));
        }
        None => flags.push((
            "store.entities",
            text(
                root.join("examples/demo/entities.json")
                    .display()
                    .to_string(),
            ),
        )),
    }
    let mut config = Config::load(None, std::iter::empty(), &flags).unwrap();
    config.cache.ttl = Duration::from_secs(3600);
    config
}

/// One decision per action group: (group, principal, action, resource type,
/// resource, context, allowed).
fn groups() -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Value,
    bool,
)> {
    vec![
        (
            "trade",
            "carol",
            "place_order",
            "account",
            "alice-personal",
            json!({"side": "buy", "instrument": "AAPL"}),
            true,
        ),
        (
            "view",
            "bob",
            "view_account",
            "account",
            "alice-personal",
            json!({}),
            true,
        ),
        (
            "funding",
            "erin",
            "withdraw",
            "account",
            "alice-personal",
            json!({"destination": {"type": "Brokerage::Destination", "id": "alice-bank"}, "amount": "100.00"}),
            true,
        ),
        (
            "users",
            "alice",
            "add_sub_user",
            "account",
            "alice-personal",
            json!({"role": "viewer"}),
            true,
        ),
        (
            "market_data",
            "alice",
            "view_market_data",
            "marketdata",
            "nasdaq-l1",
            json!({}),
            true,
        ),
    ]
}

fn bench_decisions(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let upstream = rt.block_on(async {
        let store = Arc::new(
            RefStore::open(&root.join("examples/demo/entities.json"), Duration::ZERO).unwrap(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(store.serve(listener, std::future::pending()));
        format!("http://{addr}")
    });
    let file = Arc::new(mandate::app::engine(&config(None)).unwrap());
    let http_config = config(Some(upstream));
    let http = Arc::new(mandate::app::engine(&http_config).unwrap());
    // Nothing remembered: every decision builds its request and slice and
    // evaluates the policies (what a first sight of a question costs).
    let mut unmemoized = http_config.clone();
    unmemoized.cache.max_slices = 0;
    let http_no_memo = Arc::new(mandate::app::engine(&unmemoized).unwrap());
    // Nothing remembered and nothing kept built: every decision builds its
    // entities again from the cache's JSON (the cold tier).
    let mut cold = http_config.clone();
    cold.cache.max_slices = 0;
    cold.cache.max_built = 0;
    let http_cold_tier = Arc::new(mandate::app::engine(&cold).unwrap());
    let mut unmemoized = config(None);
    unmemoized.cache.max_slices = 0;
    let file_no_memo = Arc::new(mandate::app::engine(&unmemoized).unwrap());

    // Shadow mode with the same pack as candidate (no divergence, the
    // usual case): the live decision plus the shadow's, whose spawned task
    // runs on the same one-thread runtime between iterations, so its CPU is
    // in the figure.
    let mut shadowed = config(None);
    shadowed.policy.shadow_dir = Some(root.join("policies"));
    let file_shadow = Arc::new(mandate::app::engine(&shadowed).unwrap());

    // The decision log on (to a file): each decision writes its
    // replayable line (the entities' digest remembered with the slice);
    // and with the entities read captured in it too.
    let logs = tempfile::tempdir().unwrap();
    let logged = |capture: bool, name: &str| {
        let mut engine = mandate::app::engine(&config(None)).unwrap();
        engine.set_decision_log(
            mandate::telemetry::DecisionLog::start(mandate::telemetry::DecisionLogSettings {
                sink: mandate::telemetry::LogSink::File(logs.path().join(name)),
                queue: 1 << 20,
                max_bytes: 1 << 30,
                mask: Vec::new(),
                capture_entities: capture,
                keep: Arc::new(mandate::telemetry::keep::KeepRules::keep_all()),
                history: None,
            })
            .unwrap(),
        );
        Arc::new(engine)
    };
    let file_logged = logged(false, "logged.log");
    let file_captured = logged(true, "captured.log");

    let engines: [(&str, &Arc<Engine>); 8] = [
        ("http_store_warm_cache", &http),
        ("file_store", &file),
        ("http_store_warm_cache_no_memo", &http_no_memo),
        ("http_store_cold_tier_no_memo", &http_cold_tier),
        ("file_store_no_memo", &file_no_memo),
        ("file_store_shadow", &file_shadow),
        ("file_store_logged", &file_logged),
        ("file_store_logged_captured", &file_captured),
    ];
    for (group, principal, action, resource_type, resource, context, allowed) in groups() {
        let request = DecisionRequest {
            principal: EntityRef {
                type_name: "user",
                id: principal,
                properties: None,
            },
            action,
            resource: EntityRef {
                type_name: resource_type,
                id: resource,
                properties: None,
            },
            context: Some(&context),
            entities: mandate::engine::RequestEntities::None,
            request_id: None,
        };
        let mut bench = c.benchmark_group(format!("engine/{group}"));
        for (name, engine) in engines {
            let warm = rt.block_on(engine.decide(&request)).unwrap();
            assert_eq!(warm.allowed(), allowed, "{group}: {}", warm.summary());
            bench.bench_function(name, |b| {
                b.to_async(&rt).iter(|| async {
                    let decision = engine.decide(&request).await.unwrap();
                    assert_eq!(decision.allowed(), allowed);
                });
            });
        }
        bench.finish();
    }

    // The entity slice and context-free answer remembered, the whole answer
    // not: each decision brings side values the memo has not seen lately
    // (32 in turn, more than it keeps per slice), so the policies that read
    // the context are evaluated every time.
    let contexts: Vec<serde_json::Value> = (0..32)
        .map(|n| json!({"side": format!("s{n:02}"), "instrument": "AAPL"}))
        .collect();
    let mut bench = c.benchmark_group("engine/trade_new_context");
    for (name, engine) in [("http_store_warm_cache", &http), ("file_store", &file)] {
        let mut turn = 0;
        bench.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                turn = (turn + 1) % contexts.len();
                let request = DecisionRequest {
                    principal: EntityRef {
                        type_name: "user",
                        id: "carol",
                        properties: None,
                    },
                    action: "place_order",
                    resource: EntityRef {
                        type_name: "account",
                        id: "alice-personal",
                        properties: None,
                    },
                    context: contexts.get(turn),
                    entities: mandate::engine::RequestEntities::None,
                    request_id: None,
                };
                let engine = Arc::clone(engine);
                async move {
                    let decision = engine.decide(&request).await.unwrap();
                    assert!(!decision.allowed());
                }
            });
        });
    }
    bench.finish();

    let routes = mandate::app::routes(&http_config, &http).unwrap();
    let api = Arc::new(mandate::app::api(
        &http_config,
        Arc::clone(&http),
        routes,
        Surface::All,
    ));
    let calls = [
        (
            "authzen",
            "/access/v1/evaluation",
            r#"{"subject":{"type":"user","id":"carol"},"action":{"name":"place_order"},"resource":{"type":"account","id":"alice-personal"},"context":{"side":"buy","instrument":"AAPL"}}"#,
        ),
        (
            "native",
            "/v1/is_authorized",
            r#"{"principal":{"type":"Brokerage::User","id":"carol"},"action":{"type":"Brokerage::Action","id":"place_order"},"resource":{"type":"Brokerage::Account","id":"alice-personal"},"context":{"side":"buy","instrument":"AAPL"}}"#,
        ),
    ];
    let mut bench = c.benchmark_group("api");
    for (name, path, body) in calls {
        let request = || {
            hyper::Request::post(path)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap()
        };
        let answer = rt.block_on(async {
            let response = api.handle(request()).await;
            response.into_body().collect().await.unwrap().to_bytes()
        });
        assert!(
            String::from_utf8_lossy(&answer).contains("S2"),
            "{name}: {}",
            String::from_utf8_lossy(&answer)
        );
        bench.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let response = api.handle(request()).await;
                assert_eq!(response.status(), 200);
            });
        });
    }
    bench.finish();

    let snapshot = http.policies().current();
    let uids = [
        http.parse_uid("user", "erin").unwrap(),
        http.parse_uid("account", "alice-personal").unwrap(),
        http.parse_uid("Brokerage::Destination", "alice-bank")
            .unwrap(),
    ];
    let mut bench = c.benchmark_group("gather");
    bench.bench_function("warm_cache", |b| {
        b.to_async(&rt).iter(|| async {
            let mut out = Vec::with_capacity(4);
            http.store()
                .gather(&uids, snapshot.schema(), &mut out)
                .await
                .unwrap();
            assert_eq!(out.len(), 3);
        });
    });
    // The same three from the cold tier: each built again from its JSON,
    // under the schema its own engine checked them against.
    let cold_snapshot = http_cold_tier.policies().current();
    bench.bench_function("cold_tier", |b| {
        b.to_async(&rt).iter(|| async {
            let mut out = Vec::with_capacity(4);
            http_cold_tier
                .store()
                .gather(&uids, cold_snapshot.schema(), &mut out)
                .await
                .unwrap();
            assert_eq!(out.len(), 3);
        });
    });
    bench.finish();
}

fn todo_config() -> Config {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let pack = root.join("examples/authzen-todo");
    let text = |value: PathBuf| toml::Value::String(value.display().to_string());
    let flags = [
        ("policy.dir", text(pack.join("policies"))),
        ("policy.schema", text(pack.join("schema.cedarschema"))),
        ("store.entities", text(pack.join("entities.json"))),
    ];
    Config::load(Some(&pack.join("mandate.toml")), std::iter::empty(), &flags).unwrap()
}

fn bench_hostile(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api_of = |config: &Config| {
        let _guard = rt.enter();
        let engine = Arc::new(mandate::app::engine(config).unwrap());
        let routes = mandate::app::routes(config, &engine).unwrap();
        mandate::app::api(config, engine, routes, Surface::All)
    };
    let brokerage = api_of(&config(None));
    let todo = api_of(&todo_config());

    let mut context = serde_json::Map::new();
    context.insert(
        "destination".to_owned(),
        json!({"type": "Destination", "id": "alice-bank"}),
    );
    for i in 0..3000 {
        context.insert(format!("k{i:04}"), json!(i));
    }
    let wide_context = json!({
        "subject": {"type": "user", "id": "erin"}, "action": {"name": "withdraw"},
        "resource": {"type": "account", "id": "alice-personal"}, "context": context,
    })
    .to_string();
    let mut repeated = String::from(r#"{"subject": {"type": "user", "id": "erin"}, "context": {"#);
    let mut i = 0;
    while repeated.len() < 1_000_000 {
        repeated.push_str(&format!(r#""k{i}": {i},"#));
        i += 1;
    }
    repeated.push_str(r#""k7": 0}}"#);
    let morty = "CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs";
    let todos = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"uid": {"type": "Todo::Todo", "id": format!("t{i}")}, "attrs": {"ownerID": "morty@the-citadel.com"}, "parents": []}))
            .collect()
    };
    let many_entities = json!({
        "principal": {"type": "Todo::User", "id": morty},
        "action": {"type": "Todo::Action", "id": "can_delete_todo"},
        "resource": {"type": "Todo::Todo", "id": "t7"},
        "entities": todos(2000),
    })
    .to_string();
    let requests: Vec<Value> = (0..40)
        .map(|i| {
            json!({
                "principal": {"type": "Todo::User", "id": morty},
                "action": {"type": "Todo::Action", "id": "can_delete_todo"},
                "resource": {"type": "Todo::Todo", "id": format!("t{i}")},
            })
        })
        .collect();
    let shared_batch = json!({"requests": requests, "entities": todos(50)}).to_string();

    let cases: [(&str, &mandate::api::Api, &str, String, u16); 4] = [
        (
            "context_3000_keys",
            &brokerage,
            "/access/v1/evaluation",
            wide_context,
            400,
        ),
        (
            "repeated_key_1mib",
            &brokerage,
            "/access/v1/evaluation",
            repeated,
            400,
        ),
        (
            "request_entities_2000",
            &todo,
            "/v1/is_authorized",
            many_entities,
            200,
        ),
        (
            "batch_40_sharing_50",
            &todo,
            "/v1/is_authorized/batch",
            shared_batch,
            200,
        ),
    ];
    let mut bench = c.benchmark_group("hostile");
    bench.sample_size(10);
    for (name, api, path, body, status) in cases {
        let body = Bytes::from(body);
        let request = || {
            hyper::Request::post(path)
                .body(Full::new(body.clone()))
                .unwrap()
        };
        bench.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let response = api.handle(request()).await;
                assert_eq!(response.status(), status, "{name}");
            });
        });
    }
    bench.finish();
}

criterion_group!(benches, bench_decisions, bench_hostile);
criterion_main!(benches);
