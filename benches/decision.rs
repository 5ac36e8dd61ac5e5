//! One decision through the engine: the file store against the HTTP store
//! with a warm cache (no upstream call inside the measured loop).
//!
//! `cargo bench --bench decision`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use mandate::config::{Config, Overrides};
use mandate::engine::{DecisionRequest, Engine, EntityRef};
use mandate::refstore::RefStore;
use serde_json::json;

fn config(upstream: Option<String>) -> Config {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let overrides = Overrides {
        policies: Some(root.join("policies")),
        schema: Some(root.join("schema")),
        entities: upstream
            .is_none()
            .then(|| root.join("examples/demo/entities.json")),
        upstream,
        ..Overrides::default()
    };
    Config::load(None, std::iter::empty(), &overrides).unwrap()
}

fn bench_decisions(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
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
    let http = Arc::new(mandate::app::engine(&config(Some(upstream))).unwrap());

    let context = json!({"destination": {"type": "Brokerage::Destination", "id": "alice-bank"}, "amount": "100.00"});
    let withdraw = DecisionRequest {
        principal: EntityRef {
            type_name: "user",
            id: "erin",
            properties: None,
        },
        action: "withdraw",
        resource: EntityRef {
            type_name: "account",
            id: "alice-personal",
            properties: None,
        },
        context: Some(&context),
        entities: &[],
        request_id: None,
    };
    let warm = rt.block_on(http.decide(&withdraw)).unwrap();
    assert!(warm.allowed(), "{}", warm.summary());

    let mut group = c.benchmark_group("decision/withdraw");
    let engines: [(&str, &Arc<Engine>); 2] =
        [("file_store", &file), ("http_store_warm_cache", &http)];
    for (name, engine) in engines {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let decision = engine.decide(&withdraw).await.unwrap();
                assert!(decision.allowed());
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_decisions);
criterion_main!(benches);
