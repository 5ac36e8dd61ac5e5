//! What an AuthZEN resource search costs over a wide store: which of
//! 10,000 accounts may `grace` trade on (she trades on one in fifty),
//! through the engine, over the file store and over the HTTP store (whose
//! candidates come from the upstream's `POST /entities/search`, its
//! entities from a warm cache), each a new search (never an answer
//! remembered from the last). Also the definite deny that never lists
//! (a second user asking where it may withdraw).
//!
//! And who may view `alice-personal` among 5,000 users over the HTTP store
//! (the reference store on loopback), the cache cold for every search (each
//! iteration forgets everything first), and asked again (a later page);
//! also with a permit that names no one (employees may view every account),
//! so every user is a candidate, gathered in batches.
//!
//! `cargo bench --bench search`
//! `cargo bench --bench search -- subject_5000_users`

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use mandate::config::Config;
use mandate::engine::{SearchQuery, Searched};
use mandate::tools::refstore::RefStore;
use serde_json::{Value, json};

const ACCOUNTS: usize = 10_000;
const TRADES_ON_EVERY: usize = 50;

fn user(id: &str) -> Value {
    json!({"uid": {"type": "Brokerage::User", "id": id},
           "attrs": {"active": true, "verified": true, "employee": false, "marketData": []},
           "parents": []})
}

/// 10,000 accounts, each with its own owner; `grace` a trader on one in
/// fifty; `grace-app` her second user.
fn entities(dir: &Path) -> PathBuf {
    let mut all = vec![
        user("grace"),
        json!({"uid": {"type": "Brokerage::Destination", "id": "grace-bank"},
               "attrs": {"account": {"type": "Brokerage::Account", "id": "account-00000"},
                         "holder": {"type": "Brokerage::User", "id": "grace"},
                         "kind": "bank", "previouslyUsed": true},
               "parents": []}),
    ];
    let mut app = user("grace-app");
    app["attrs"]["primaryUser"] = json!({"type": "Brokerage::User", "id": "grace"});
    all.push(app);
    for n in 0..ACCOUNTS {
        let owner = format!("owner-{n:05}");
        all.push(user(&owner));
        let traders = if n % TRADES_ON_EVERY == 0 {
            json!([{"type": "Brokerage::User", "id": "grace"}])
        } else {
            json!([])
        };
        all.push(json!({
            "uid": {"type": "Brokerage::Account", "id": format!("account-{n:05}")},
            "attrs": {"kind": "personal", "owner": {"type": "Brokerage::User", "id": owner},
                      "marginEnabled": false, "withdrawalApproval": false,
                      "viewers": [], "traders": traders, "restrictedWithdrawers": [],
                      "withdrawers": [], "administrators": [], "poaUsers": [], "fundingUsers": [],
                      "roleCounts": {"viewer": 0, "trader": 0, "traderRestrictedWithdrawals": 0,
                                     "traderWithWithdrawals": 0, "administrator": 0},
                      "poaCount": 0},
            "parents": []
        }));
    }
    let path = dir.join("entities.json");
    std::fs::write(&path, serde_json::to_vec(&all).unwrap()).unwrap();
    path
}

fn config(entities: &Path, upstream: Option<String>) -> Config {
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
        ("search.max_candidates", toml::Value::Integer(10_000)),
    ];
    match upstream {
        Some(upstream) => {
            flags.push(("store.kind", text("http".to_owned())));
            flags.push(("store.upstream", text(upstream)));
        }
        None => flags.push(("store.entities", text(entities.display().to_string()))),
    }
    let mut config = Config::load(None, std::iter::empty(), &flags).unwrap();
    config.cache.ttl = Duration::from_secs(3600);
    config.cache.max_entries = 4 * ACCOUNTS as u64;
    config
}

fn bench_search(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = entities(dir.path());
    let upstream = rt.block_on(async {
        let store = Arc::new(RefStore::open(&file, Duration::ZERO).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(store.serve(listener, std::future::pending()));
        format!("http://{addr}")
    });
    let engines = [
        (
            "file_store",
            Arc::new(mandate::app::engine(&config(&file, None)).unwrap()),
        ),
        (
            "http_store_warm_cache",
            Arc::new(mandate::app::engine(&config(&file, Some(upstream))).unwrap()),
        ),
    ];
    let trade = json!({"side": "buy", "instrument": "AAPL"});
    let withdraw = json!({"destination": {"type": "Brokerage::Destination", "id": "grace-bank"},
                          "amount": "10.00"});
    let query =
        |subject: &'static str, action: &'static str, context: &'static Value| SearchQuery {
            subject: ("user", subject),
            action,
            resource: ("account", ""),
            context: Some(context),
        };
    let trade: &'static Value = Box::leak(Box::new(trade));
    let withdraw: &'static Value = Box::leak(Box::new(withdraw));
    let mut bench = c.benchmark_group("search/resource_10000_accounts");
    bench.sample_size(10);
    bench.measurement_time(Duration::from_secs(10));
    for (name, engine) in &engines {
        let trades = query("grace", "place_order", trade);
        let found = rt
            .block_on(engine.search(&trades, Searched::Resource, ACCOUNTS))
            .unwrap();
        assert_eq!(found.ids.len(), ACCOUNTS / TRADES_ON_EVERY, "{name}");
        // Each iteration asks with another `max_candidates`, so neither a
        // remembered answer nor a kept listing serves it: what a new search
        // costs (the entities stay cached).
        let asked = std::sync::atomic::AtomicUsize::new(ACCOUNTS);
        bench.bench_function(*name, |b| {
            b.to_async(&rt).iter(|| async {
                let max = asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let found = engine
                    .search(&trades, Searched::Resource, max)
                    .await
                    .unwrap();
                assert_eq!(found.ids.len(), ACCOUNTS / TRADES_ON_EVERY);
            });
        });
        let second_user = query("grace-app", "withdraw", withdraw);
        bench.bench_function(format!("{name}/definite_deny"), |b| {
            b.to_async(&rt).iter(|| async {
                let found = engine
                    .search(&second_user, Searched::Resource, ACCOUNTS)
                    .await
                    .unwrap();
                assert!(found.pruned && found.ids.is_empty());
            });
        });
    }
    bench.finish();
}

const USERS: usize = 5_000;

/// The demo's entities and 5,000 more users: one in ten the second user of
/// another generated user, and `alice-app-<n>` (five) hers, `grace-app-<n>`
/// (five) Grace's (a POA user of `alice-personal`).
fn users(dir: &Path) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let demo = std::fs::read_to_string(root.join("examples/demo/entities.json")).unwrap();
    let mut all: Vec<Value> = serde_json::from_str(&demo).unwrap();
    for n in 0..USERS {
        let id = match n {
            0..5 => format!("alice-app-{n}"),
            5..10 => format!("grace-app-{n}"),
            _ => format!("user-{n:05}"),
        };
        let mut user = user(&id);
        let primary = match n {
            0..5 => Some("alice".to_owned()),
            5..10 => Some("grace".to_owned()),
            _ if n % 10 == 0 => Some(format!("user-{:05}", n + 1)),
            _ => None,
        };
        if let Some(primary) = primary {
            user["attrs"]["primaryUser"] = json!({"type": "Brokerage::User", "id": primary});
        }
        all.push(user);
    }
    let path = dir.join("users.json");
    std::fs::write(&path, serde_json::to_vec(&all).unwrap()).unwrap();
    path
}

/// Who may view `alice-personal`, among 5,000 users, over the HTTP store.
fn bench_subject_search(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = users(dir.path());
    let store = Arc::new(RefStore::open(&file, Duration::ZERO).unwrap());
    let upstream = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(Arc::clone(&store).serve(listener, std::future::pending()));
        format!("http://{addr}")
    });
    let engine = mandate::app::engine(&config(&file, Some(upstream.clone()))).unwrap();
    // The shipped pack and one permit naming no one: nothing narrows.
    let open_pack = dir.path().join("policies");
    std::fs::create_dir(&open_pack).unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for entry in std::fs::read_dir(root.join("policies")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "cedar") {
            std::fs::copy(&path, open_pack.join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(
        open_pack.join("employees.cedar"),
        "@id(\"E1\")\npermit (principal, action == Brokerage::Action::\"view_account\", resource)\nwhen { principal.employee };\n",
    )
    .unwrap();
    let mut open_config = config(&file, Some(upstream));
    open_config.policy.dir = open_pack;
    let open = mandate::app::engine(&open_config).unwrap();
    let query = SearchQuery {
        subject: ("user", ""),
        action: "view_account",
        resource: ("account", "alice-personal"),
        context: None,
    };
    let cold = || async {
        engine.store().invalidate_all();
        engine
            .search(&query, Searched::Subject, 10_000)
            .await
            .unwrap()
    };
    let before = store.calls();
    let found = rt.block_on(cold());
    let after = store.calls();
    println!(
        "who may view alice-personal: {} users of {} candidates; store calls, cold: {} batch, {} search",
        found.ids.len(),
        found.candidates,
        after.0 - before.0,
        after.1 - before.1
    );
    let before = store.calls();
    rt.block_on(engine.search(&query, Searched::Subject, 10_000))
        .unwrap();
    let again = store.calls();
    println!(
        "asked again: {} batch, {} search",
        again.0 - before.0,
        again.1 - before.1
    );
    let open_cold = || async {
        open.store().invalidate_all();
        open.search(&query, Searched::Subject, 10_000)
            .await
            .unwrap()
    };
    let before = store.calls();
    let every = rt.block_on(open_cold());
    let after = store.calls();
    println!(
        "nothing narrowing: {} users of {} candidates; store calls, cold: {} batch, {} search",
        every.ids.len(),
        every.candidates,
        after.0 - before.0,
        after.1 - before.1
    );
    let mut bench = c.benchmark_group("search/subject_5000_users");
    bench.sample_size(10);
    bench.measurement_time(Duration::from_secs(10));
    bench.bench_function("http_store_cold_cache", |b| {
        b.to_async(&rt).iter(|| async {
            assert_eq!(cold().await.ids, found.ids);
        });
    });
    bench.bench_function("http_store_cold_cache_nothing_narrowing", |b| {
        b.to_async(&rt).iter(|| async {
            assert_eq!(open_cold().await.ids, every.ids);
        });
    });
    bench.bench_function("http_store_asked_again", |b| {
        b.to_async(&rt).iter(|| async {
            let again = engine
                .search(&query, Searched::Subject, 10_000)
                .await
                .unwrap();
            assert_eq!(again.ids, found.ids);
        });
    });
    bench.finish();
}

criterion_group!(benches, bench_search, bench_subject_search);
criterion_main!(benches);
