//! What one search costs the HTTP store (issue 30, finding 2): over the
//! reference store with 5,000 users, counting its calls, "who may view
//! `alice-personal`" takes a few store calls, not one per candidate; its
//! next page none; a revocation (the admin endpoint's invalidation) is seen
//! by the next search; a store that pages in smaller steps than asked is
//! refused within the listing budget rather than asked page after page;
//! past `search.max_concurrent`, a search waits its turn within its budget.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mandate::tools::refstore::RefStore;
use serde_json::{Value, json};

use crate::support::{Server, config_with, post, root, send};

const USERS: usize = 5_000;

fn user(id: &str, primary: Option<&str>) -> Value {
    let mut user = json!({"uid": {"type": "Brokerage::User", "id": id},
           "attrs": {"active": true, "verified": true, "employee": false, "marketData": []},
           "parents": []});
    if let Some(primary) = primary {
        user["attrs"]["primaryUser"] = json!({"type": "Brokerage::User", "id": primary});
    }
    user
}

/// The demo's entities and 5,000 more users: `alice-app-<n>` her second
/// users, `grace-app-<n>` Grace's (a POA user of `alice-personal`), and
/// `user-<n>`, one in ten the second user of another.
fn entities(dir: &Path) -> PathBuf {
    let demo = std::fs::read_to_string(root().join("examples/demo/entities.json")).unwrap();
    let mut all: Vec<Value> = serde_json::from_str(&demo).unwrap();
    for n in 0..USERS {
        all.push(match n {
            0..5 => user(&format!("alice-app-{n}"), Some("alice")),
            5..10 => user(&format!("grace-app-{n}"), Some("grace")),
            _ if n % 10 == 0 => user(&format!("user-{n:05}"), Some(&format!("user-{:05}", n + 1))),
            _ => user(&format!("user-{n:05}"), None),
        });
    }
    let path = dir.join("entities.json");
    std::fs::write(&path, serde_json::to_vec(&all).unwrap()).unwrap();
    path
}

async fn reference_store(file: &Path) -> (Arc<RefStore>, String) {
    let store = Arc::new(RefStore::open(file, Duration::ZERO).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(Arc::clone(&store).serve(listener, std::future::pending()));
    (store, url)
}

fn who_may_view(page: Value) -> Value {
    json!({"subject": {"type": "user"}, "action": {"name": "view_account"},
           "resource": {"type": "account", "id": "alice-personal"}, "page": page})
}

fn ids(reply: &Value) -> Vec<String> {
    reply["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every result of the search, page by page.
async fn all_pages(server: &Server, limit: u64) -> (Vec<String>, usize) {
    let url = server.url("/access/v1/search/subject");
    let mut found = Vec::new();
    let mut page = json!({"limit": limit});
    let mut pages = 0;
    loop {
        let reply = post(&url, &who_may_view(page)).await;
        assert_eq!(reply.status, 200, "{}", reply.json);
        found.extend(ids(&reply.json));
        pages += 1;
        let next = reply.json["page"]["next_token"]
            .as_str()
            .unwrap()
            .to_owned();
        if next.is_empty() {
            return (found, pages);
        }
        page = json!({"limit": limit, "token": next});
    }
}

async fn invalidate(server: &Server, body: &Value) {
    let request = http::Request::post(server.url("/admin/v1/cache/invalidate"))
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .unwrap();
    assert_eq!(send(request, false).await.status, 200);
}

#[tokio::test]
async fn a_subject_search_over_5000_users_makes_a_few_store_calls_and_its_next_pages_none() {
    let dir = tempfile::tempdir().unwrap();
    let file = entities(dir.path());
    let (store, upstream) = reference_store(&file).await;
    let server = Server::start(config_with(&[
        ("MANDATE_STORE_KIND", "http"),
        ("MANDATE_STORE_UPSTREAM", upstream.as_str()),
    ]))
    .await;
    let url = server.url("/access/v1/search/subject");
    let first = post(&url, &who_may_view(json!({"limit": 4}))).await;
    assert_eq!(first.status, 200, "{}", first.json);
    let (batch, search) = store.calls();
    assert!(
        batch + search <= 6 && search <= 3,
        "{batch} batch and {search} search calls for one search"
    );
    let token = first.json["page"]["next_token"].as_str().unwrap();
    assert!(!token.is_empty(), "{}", first.json);
    let second = post(&url, &who_may_view(json!({"limit": 4, "token": token}))).await;
    assert_eq!(second.status, 200, "{}", second.json);
    assert_eq!(store.calls(), (batch, search), "the next page asks nothing");

    // Every page, and the same answer as the file store's over the same
    // entities.
    let (found, pages) = all_pages(&server, 4).await;
    assert!(pages > 2, "{pages}");
    assert_eq!(store.calls(), (batch, search), "nor does asking again");
    let file_store = Server::start(config_with(&[(
        "MANDATE_STORE_ENTITIES",
        file.display().to_string().as_str(),
    )]))
    .await;
    let (expected, _) = all_pages(&file_store, 100).await;
    assert_eq!(found, expected);
    for allowed in ["alice", "bob", "grace", "alice-app-0", "grace-app-9"] {
        assert!(found.contains(&allowed.to_owned()), "{allowed}: {found:?}");
    }
    assert!(!found.iter().any(|id| id.starts_with("user-")), "{found:?}");
}

#[tokio::test]
async fn a_revocation_is_seen_by_the_next_search_not_hidden_by_a_remembered_answer() {
    let dir = tempfile::tempdir().unwrap();
    let file = entities(dir.path());
    let (store, upstream) = reference_store(&file).await;
    let server = Server::start(config_with(&[
        ("MANDATE_STORE_KIND", "http"),
        ("MANDATE_STORE_UPSTREAM", upstream.as_str()),
        ("MANDATE_CACHE_TTL", "1h"),
    ]))
    .await;
    let (before, _) = all_pages(&server, 100).await;
    assert!(before.contains(&"bob".to_owned()), "{before:?}");
    assert!(before.contains(&"alice-app-0".to_owned()), "{before:?}");

    // Bob is no longer a viewer, and alice-app-0 no longer her second
    // user: the store changes, the system of record invalidates.
    let mut all: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    for entity in &mut all {
        match entity["uid"]["id"].as_str().unwrap() {
            "alice-personal" => {
                entity["attrs"]["viewers"] = json!([{"type": "Brokerage::User", "id": "judy"}]);
            }
            "alice-app-0" => {
                entity["attrs"]
                    .as_object_mut()
                    .unwrap()
                    .remove("primaryUser");
            }
            _ => {}
        }
    }
    std::fs::write(&file, serde_json::to_vec(&all).unwrap()).unwrap();
    assert!(store.reload_if_changed().is_some());
    let (still, _) = all_pages(&server, 100).await;
    assert_eq!(still, before, "within the TTL, unannounced: as before");
    invalidate(
        &server,
        &json!({"uids": [{"type": "Brokerage::Account", "id": "alice-personal"}]}),
    )
    .await;
    let (after, _) = all_pages(&server, 100).await;
    assert!(!after.contains(&"bob".to_owned()), "{after:?}");
    assert!(after.contains(&"judy".to_owned()), "{after:?}");
    invalidate(
        &server,
        &json!({"uids": [{"type": "Brokerage::User", "id": "alice-app-0"}]}),
    )
    .await;
    let (after, _) = all_pages(&server, 100).await;
    assert!(!after.contains(&"alice-app-0".to_owned()), "{after:?}");
    assert!(after.contains(&"alice-app-1".to_owned()), "{after:?}");
}

/// How the hand-made store below lists.
#[derive(Clone, Copy)]
enum Listing {
    /// one made-up uid a page, whatever the `limit`, never ending
    OneAPage,
    /// every demo entity of the type, once the gate lets it
    Gated,
}

/// A store serving the demo's entities to `/entities/batch`, listing as
/// told, counting its listing requests.
async fn hand_made_store(
    listing: Listing,
    gate: Arc<tokio::sync::Semaphore>,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::{BodyExt, Full};

    let listings = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    let demo = Arc::new(crate::upstream::demo_entities());
    let counted = Arc::clone(&listings);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (demo, listings, gate) =
                (Arc::clone(&demo), Arc::clone(&counted), Arc::clone(&gate));
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let (demo, listings, gate) =
                            (Arc::clone(&demo), Arc::clone(&listings), Arc::clone(&gate));
                        async move {
                            let path = request.uri().path().to_owned();
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            let body: Value = serde_json::from_slice(&body).unwrap();
                            let answer = if path == "/entities/batch" {
                                let found: Vec<&Value> =
                                    crate::upstream::asked_keys(body.to_string().as_bytes())
                                        .iter()
                                        .filter_map(|key| demo.get(key))
                                        .collect();
                                json!({"entities": found})
                            } else {
                                let n = listings.fetch_add(1, Ordering::SeqCst);
                                match listing {
                                    Listing::OneAPage => json!({
                                        "uids": [{"type": body["type"], "id": format!("u{n}")}],
                                        "page": {"next_token": format!("{}", n + 1)}
                                    }),
                                    Listing::Gated => {
                                        gate.acquire().await.unwrap().forget();
                                        let uids: Vec<&Value> = demo
                                            .values()
                                            .map(|entity| &entity["uid"])
                                            .filter(|uid| uid["type"] == body["type"])
                                            .collect();
                                        json!({"uids": uids, "page": {"next_token": ""}})
                                    }
                                }
                            };
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                bytes::Bytes::from(answer.to_string()),
                            )))
                        }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
    (upstream, listings)
}

/// A store that answers `/entities/search` one uid a page, whatever the
/// `limit`: the search is refused (503) after the listing budget, not
/// answered after thousands of requests.
#[tokio::test]
async fn a_store_paging_in_smaller_steps_than_asked_is_refused_within_the_listing_budget() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (upstream, listings) = hand_made_store(Listing::OneAPage, gate).await;
    let server = Server::start(config_with(&[
        ("MANDATE_STORE_KIND", "http"),
        ("MANDATE_STORE_UPSTREAM", upstream.as_str()),
    ]))
    .await;
    // Narrowed or not, the accounts Alice may view are listed.
    let reply = post(
        &server.url("/access/v1/search/resource"),
        &json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": "view_account"},
                "resource": {"type": "account"}}),
    )
    .await;
    assert_eq!(reply.status, 503, "{}", reply.json);
    assert!(
        reply.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("budget"),
        "{}",
        reply.json
    );
    assert_eq!(listings.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// With `search.max_concurrent = 1`, a search waits while another decides
/// (here: held at the store's listing), within its time budget: it never
/// reaches the store, and is refused whole when the budget runs out.
#[tokio::test]
async fn searches_past_max_concurrent_wait_their_turn_within_the_time_budget() {
    use std::sync::atomic::Ordering;

    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (upstream, listings) = hand_made_store(Listing::Gated, Arc::clone(&gate)).await;
    let server = Server::start(config_with(&[
        ("MANDATE_STORE_KIND", "http"),
        ("MANDATE_STORE_UPSTREAM", upstream.as_str()),
        ("MANDATE_SEARCH_MAX_CONCURRENT", "1"),
        ("MANDATE_SEARCH_TIME_BUDGET", "5s"),
    ]))
    .await;
    let url = server.url("/access/v1/search/subject");
    let who = |account: &str| {
        json!({"subject": {"type": "user"}, "action": {"name": "view_account"},
               "resource": {"type": "account", "id": account}})
    };
    let first = tokio::spawn({
        let (url, body) = (url.clone(), who("alice-personal"));
        async move { post(&url, &body).await }
    });
    while listings.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = tokio::spawn({
        let (url, body) = (url.clone(), who("acme-corp"));
        async move { post(&url, &body).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        listings.load(Ordering::SeqCst),
        1,
        "the second search waits for its turn before asking the store"
    );
    gate.add_permits(100);
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!(first.status, 200, "{}", first.json);
    assert_eq!(second.status, 200, "{}", second.json);
    assert!(
        ids(&first.json).contains(&"alice".to_owned()),
        "{}",
        first.json
    );

    // Held past its budget, a waiting search is refused whole.
    gate.forget_permits(usize::MAX);
    let server = Server::start(config_with(&[
        ("MANDATE_STORE_KIND", "http"),
        ("MANDATE_STORE_UPSTREAM", upstream.as_str()),
        ("MANDATE_SEARCH_MAX_CONCURRENT", "1"),
        ("MANDATE_SEARCH_TIME_BUDGET", "300ms"),
    ]))
    .await;
    let url = server.url("/access/v1/search/subject");
    let held = listings.load(Ordering::SeqCst);
    let first = tokio::spawn({
        let (url, body) = (url.clone(), who("alice-personal"));
        async move { post(&url, &body).await }
    });
    while listings.load(Ordering::SeqCst) == held {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = post(&url, &who("acme-corp")).await;
    assert_eq!(second.status, 503, "{}", second.json);
    assert_eq!(second.json["error"]["code"], "search_over_budget");
    gate.add_permits(100);
    let _ = first.await.unwrap();
}
