//! AuthZEN search over the brokerage pack and over a pack with an action
//! no policy permits, on real sockets: the three brokerage questions, each
//! result asked back; pages of one with a tampered and a reused token; the
//! definite deny answered by partial evaluation, counted and logged once
//! per search with the context masked; a search over its time budget
//! refused whole.

use std::path::Path;

use serde_json::{Value, json};

use crate::operations::{metric, scrape};
use crate::support::{Server, config_with, path, post, text};

fn withdrawal() -> Value {
    json!({"destination": {"type": "Brokerage::Destination", "id": "alice-bank"}, "amount": "500.00"})
}

fn ids(results: &Value, key: &str) -> Vec<String> {
    results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[key].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_brokerage_questions_are_answered_and_every_result_asked_back_is_allowed() {
    let server = Server::demo().await;
    let evaluate = |subject: &str, action: &str, resource: &str, context: &Value| {
        json!({"subject": {"type": "user", "id": subject}, "action": {"name": action},
               "resource": {"type": "account", "id": resource}, "context": context})
    };
    // Who can withdraw from alice-personal?
    let who = post(
        &server.url("/access/v1/search/subject"),
        &json!({"subject": {"type": "user"}, "action": {"name": "withdraw"},
                "resource": {"type": "account", "id": "alice-personal"}, "context": withdrawal()}),
    )
    .await;
    assert_eq!(who.status, 200, "{}", who.json);
    let withdrawers = ids(&who.json["results"], "id");
    for expected in ["alice", "erin", "grace"] {
        assert!(
            withdrawers.contains(&expected.to_owned()),
            "{withdrawers:?}"
        );
    }
    for never in ["carol", "alice-api", "bob"] {
        assert!(!withdrawers.contains(&never.to_owned()), "{withdrawers:?}");
    }
    for user in &withdrawers {
        let reply = post(
            &server.url("/access/v1/evaluation"),
            &evaluate(user, "withdraw", "alice-personal", &withdrawal()),
        )
        .await;
        assert_eq!(reply.json["decision"], true, "{user}: {}", reply.json);
    }
    // Which accounts can grace trade on?
    let trade = json!({"side": "buy", "instrument": "AAPL"});
    let accounts = post(
        &server.url("/access/v1/search/resource"),
        &json!({"subject": {"type": "user", "id": "grace"}, "action": {"name": "place_order"},
                "resource": {"type": "account"}, "context": trade}),
    )
    .await;
    assert_eq!(
        accounts.json["results"],
        json!([{"type": "account", "id": "alice-personal"}])
    );
    // Which actions may carol perform on alice-personal?
    let actions = post(
        &server.url("/access/v1/search/action"),
        &json!({"subject": {"type": "user", "id": "carol"},
                "resource": {"type": "account", "id": "alice-personal"}, "context": trade}),
    )
    .await;
    let names = ids(&actions.json["results"], "name");
    assert_eq!(names, ["cancel_order", "place_order", "view_account"]);
    for action in &names {
        // Each action was decided with the attributes its own context
        // declares: only an order's are `side` and `instrument`.
        let context = if action == "place_order" {
            trade.clone()
        } else {
            json!({})
        };
        let reply = post(
            &server.url("/access/v1/evaluation"),
            &evaluate("carol", action, "alice-personal", &context),
        )
        .await;
        assert_eq!(reply.json["decision"], true, "{action}: {}", reply.json);
    }
    // The actions this context cannot decide (a withdrawal's needs a
    // destination) are named in the response's context, with what is
    // missing: never silently left out.
    let skipped = &actions.json["context"]["skipped"];
    let withdraw = skipped
        .as_array()
        .unwrap_or_else(|| panic!("{}", actions.json))
        .iter()
        .find(|s| s["name"] == "withdraw")
        .unwrap_or_else(|| panic!("{}", actions.json));
    assert!(
        withdraw["reason"].as_str().unwrap().contains("destination"),
        "{withdraw}"
    );
    assert!(
        !skipped
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "place_order"),
        "{skipped}"
    );
}

#[tokio::test]
async fn pages_of_one_follow_their_token_and_a_tampered_or_reused_token_is_refused() {
    let server = Server::demo().await;
    let url = server.url("/access/v1/search/subject");
    let mut request = json!({"subject": {"type": "user"}, "action": {"name": "withdraw"},
        "resource": {"type": "account", "id": "alice-personal"}, "context": withdrawal(),
        "page": {"limit": 1}});
    let whole = post(
        &url,
        &json!({"subject": {"type": "user"}, "action": {"name": "withdraw"},
        "resource": {"type": "account", "id": "alice-personal"}, "context": withdrawal()}),
    )
    .await;
    let mut paged = Vec::new();
    let first = post(&url, &request).await;
    let token = first.json["page"]["next_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!token.is_empty());
    paged.extend(ids(&first.json["results"], "id"));
    request["page"]["token"] = json!(token);
    loop {
        let page = post(&url, &request).await;
        assert_eq!(page.status, 200, "{}", page.json);
        paged.extend(ids(&page.json["results"], "id"));
        let next = page.json["page"]["next_token"].as_str().unwrap().to_owned();
        if next.is_empty() {
            break;
        }
        request["page"]["token"] = json!(next);
    }
    assert_eq!(paged, ids(&whole.json["results"], "id"));

    let mut tampered = request.clone();
    let flipped: String = token
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == token.len() - 1 {
                if c == '0' { '1' } else { '0' }
            } else {
                c
            }
        })
        .collect();
    tampered["page"]["token"] = json!(flipped);
    let refused = post(&url, &tampered).await;
    assert_eq!(refused.status, 400, "{}", refused.json);
    assert_eq!(
        refused.json["error"]["field"], "page.token",
        "{}",
        refused.json
    );

    let mut reused = request.clone();
    reused["page"]["token"] = json!(token);
    reused["context"]["amount"] = json!("900.00");
    let refused = post(&url, &reused).await;
    assert_eq!(refused.status, 400, "{}", refused.json);
    assert_eq!(
        refused.json["error"]["field"], "page.token",
        "{}",
        refused.json
    );
}

#[tokio::test]
async fn a_definite_deny_is_pruned_counted_and_logged_once_with_the_context_masked() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.log");
    let log_path = log.display().to_string();
    let server = Server::start(config_with(&[
        ("MANDATE_LOG_DECISIONS", "file"),
        ("MANDATE_LOG_DECISIONS_FILE", log_path.as_str()),
        ("MANDATE_LOG_MASK", "[\"amount\"]"),
    ]))
    .await;
    let pruned = r#"mandate_search_requests_total{outcome="pruned",searched="resource"}"#;
    let answered = r#"mandate_search_requests_total{outcome="answered",searched="resource"}"#;
    let before = scrape(&server.url("/metrics")).await;
    // A second user never withdraws: partial evaluation knows it from the
    // principal alone, before any account is listed.
    let context = json!({"destination": {"type": "Brokerage::Destination", "id": "alice-bank"},
                         "amount": "12345.67"});
    let reply = post(
        &server.url("/access/v1/search/resource"),
        &json!({"subject": {"type": "user", "id": "alice-api"}, "action": {"name": "withdraw"},
                "resource": {"type": "account"}, "context": context}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.json);
    assert_eq!(reply.json["results"], json!([]));
    let listed = post(
        &server.url("/access/v1/search/resource"),
        &json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": "withdraw"},
                "resource": {"type": "account"}, "context": context}),
    )
    .await;
    assert_eq!(ids(&listed.json["results"], "id"), ["alice-personal"]);
    let after = scrape(&server.url("/metrics")).await;
    assert!(
        metric(&after, pruned) >= metric(&before, pruned) + 1.0,
        "{after}"
    );
    assert!(
        metric(&after, answered) >= metric(&before, answered) + 1.0,
        "{after}"
    );
    assert!(
        after.contains("mandate_search_duration_seconds_bucket"),
        "{after}"
    );
    assert!(
        after.contains("mandate_search_candidates_bucket"),
        "{after}"
    );

    let lines = wait_for_lines(&log, 2).await;
    let searches: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|line| line.get("search").is_some())
        .collect();
    assert_eq!(
        searches.len(),
        2,
        "one line per search, none per candidate: {lines:?}"
    );
    let first = &searches[0];
    assert_eq!(first["search"], "resource");
    assert_eq!(first["outcome"], "pruned");
    assert_eq!(first["results"], 0);
    assert_eq!(first["candidates"], 0);
    assert_eq!(first["subject"], r#"Brokerage::User::"alice-api""#);
    assert_eq!(first["resource"], "Brokerage::Account");
    assert_eq!(first["action"], "withdraw");
    assert_eq!(first["context"]["amount"], "***");
    assert!(first["policy_version"].as_str().unwrap().len() > 4);
    let second = &searches[1];
    assert_eq!(second["outcome"], "answered");
    assert_eq!(second["results"], 1);
    // Every permit left for alice names her: only the accounts that refer
    // to her are decided (one of the demo's four).
    assert_eq!(second["candidates"], 1, "{second}");
    assert!(
        !lines.iter().any(|line| line.contains("12345.67")),
        "the masked amount never appears: {lines:?}"
    );
}

async fn wait_for_lines(log: &Path, at_least: usize) -> Vec<String> {
    for _ in 0..100 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= at_least {
            return lines;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("fewer than {at_least} lines in {}", log.display());
}

/// A pack where `archive` has no permit at all and `read` is open to
/// everyone, over `docs` documents.
fn tiny_pack(dir: &Path, docs: usize) {
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    std::fs::write(
        dir.join("schema.cedarschema"),
        "entity User; entity Doc;\naction read, archive appliesTo { principal: User, resource: Doc };\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("policies/read.cedar"),
        "@id(\"read\")\npermit (principal, action == Action::\"read\", resource);\n",
    )
    .unwrap();
    let mut entities = vec![
        json!({"uid": {"type": "User", "id": "ann"}, "attrs": {}, "parents": []}),
        json!({"uid": {"type": "User", "id": "bo"}, "attrs": {}, "parents": []}),
    ];
    for n in 0..docs {
        entities.push(
            json!({"uid": {"type": "Doc", "id": format!("d{n:05}")}, "attrs": {}, "parents": []}),
        );
    }
    std::fs::write(
        dir.join("entities.json"),
        serde_json::to_vec(&entities).unwrap(),
    )
    .unwrap();
}

fn tiny_server_config(
    dir: &Path,
    extra: &[(&'static str, toml::Value)],
) -> mandate::config::Config {
    let mut flags = vec![
        ("server.listen", text("127.0.0.1:0")),
        ("policy.dir", path(&dir.join("policies"))),
        ("policy.schema", path(&dir.join("schema.cedarschema"))),
        ("store.entities", path(&dir.join("entities.json"))),
        ("log.decisions", text("off")),
    ];
    flags.extend(extra.iter().cloned());
    mandate::config::Config::load(None, std::iter::empty(), &flags).unwrap()
}

#[tokio::test]
async fn an_action_no_policy_permits_finds_nothing_in_every_search() {
    let dir = tempfile::tempdir().unwrap();
    tiny_pack(dir.path(), 3);
    let server = Server::start(tiny_server_config(dir.path(), &[])).await;
    let search = |kind: &str, body: Value| {
        let url = server.url(&format!("/access/v1/search/{kind}"));
        async move { post(&url, &body).await }
    };
    let resources = search(
        "resource",
        json!({"subject": {"type": "User", "id": "ann"}, "action": {"name": "archive"}, "resource": {"type": "Doc"}}),
    )
    .await;
    assert_eq!(resources.status, 200, "{}", resources.json);
    assert_eq!(resources.json["results"], json!([]));
    assert_eq!(resources.json["page"]["next_token"], "");
    let subjects = search(
        "subject",
        json!({"subject": {"type": "User"}, "action": {"name": "archive"}, "resource": {"type": "Doc", "id": "d00001"}}),
    )
    .await;
    assert_eq!(subjects.json["results"], json!([]));
    let actions = search(
        "action",
        json!({"subject": {"type": "User", "id": "ann"}, "resource": {"type": "Doc", "id": "d00001"}}),
    )
    .await;
    assert_eq!(actions.json["results"], json!([{"name": "read"}]));
    // The open action finds every document, not a pruned nothing.
    let readable = search(
        "resource",
        json!({"subject": {"type": "User", "id": "bo"}, "action": {"name": "read"}, "resource": {"type": "Doc"}}),
    )
    .await;
    assert_eq!(
        ids(&readable.json["results"], "id"),
        ["d00000", "d00001", "d00002"]
    );
}

#[tokio::test]
async fn a_search_over_its_time_budget_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    tiny_pack(dir.path(), 20_000);
    let server = Server::start(tiny_server_config(
        dir.path(),
        &[
            ("search.time_budget", text("1ms")),
            ("search.max_candidates", toml::Value::Integer(50_000)),
        ],
    ))
    .await;
    let reply = post(
        &server.url("/access/v1/search/resource"),
        &json!({"subject": {"type": "User", "id": "ann"}, "action": {"name": "read"}, "resource": {"type": "Doc"}}),
    )
    .await;
    assert_eq!(reply.status, 503, "{}", reply.json);
    assert_eq!(
        reply.json["error"]["code"], "search_over_budget",
        "{}",
        reply.json
    );
    assert!(
        reply.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("search.time_budget"),
        "{}",
        reply.json
    );
    assert!(
        reply.json.get("results").is_none(),
        "never a partial answer"
    );
}

/// The residual policies partial evaluation leaves decide as the pack does:
/// over the file store and over the HTTP store, for every demo user and
/// account and an action of each group, the resource and subject searches
/// find exactly what evaluations allow.
#[tokio::test]
async fn searches_agree_with_evaluations_across_the_brokerage_demo_on_both_stores() {
    let demo = crate::support::root().join("examples/demo/entities.json");
    let entities: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&demo).unwrap()).unwrap();
    let of_type = |ty: &str| -> Vec<String> {
        entities
            .iter()
            .filter(|e| e["uid"]["type"] == ty)
            .map(|e| e["uid"]["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (users, accounts) = (of_type("Brokerage::User"), of_type("Brokerage::Account"));
    assert!(users.len() > 10 && accounts.len() > 2);
    let actions = [
        ("view_account", json!({})),
        ("place_order", json!({"side": "buy", "instrument": "AAPL"})),
        ("withdraw", withdrawal()),
        ("add_sub_user", json!({"role": "viewer"})),
    ];
    let store = std::sync::Arc::new(
        mandate::tools::refstore::RefStore::open(&demo, std::time::Duration::ZERO).unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(store.serve(listener, std::future::pending()));
    let dir = tempfile::tempdir().unwrap();
    let logs = [dir.path().join("file.log"), dir.path().join("http.log")];
    let log_to = |log: &Path| log.display().to_string();
    let (file_log, http_log) = (log_to(&logs[0]), log_to(&logs[1]));
    let servers = [
        (
            "file",
            Server::start(config_with(&[
                ("MANDATE_LOG_DECISIONS", "file"),
                ("MANDATE_LOG_DECISIONS_FILE", file_log.as_str()),
            ]))
            .await,
        ),
        (
            "http",
            Server::start(config_with(&[
                ("MANDATE_STORE_KIND", "http"),
                ("MANDATE_STORE_UPSTREAM", upstream.as_str()),
                ("MANDATE_LOG_DECISIONS", "file"),
                ("MANDATE_LOG_DECISIONS_FILE", http_log.as_str()),
            ]))
            .await,
        ),
    ];
    let mut allowed_somewhere = 0;
    for (store, server) in &servers {
        for (action, context) in &actions {
            let mut allowed = std::collections::HashSet::new();
            for user in &users {
                for account in &accounts {
                    let reply = post(
                        &server.url("/access/v1/evaluation"),
                        &json!({"subject": {"type": "user", "id": user}, "action": {"name": action},
                                "resource": {"type": "account", "id": account}, "context": context}),
                    )
                    .await;
                    assert_eq!(reply.status, 200, "{}", reply.json);
                    if reply.json["decision"] == true {
                        allowed.insert((user.clone(), account.clone()));
                    }
                }
            }
            allowed_somewhere += allowed.len();
            for user in &users {
                let found = post(
                    &server.url("/access/v1/search/resource"),
                    &json!({"subject": {"type": "user", "id": user}, "action": {"name": action},
                            "resource": {"type": "account"}, "context": context}),
                )
                .await;
                let mut expected: Vec<String> = accounts
                    .iter()
                    .filter(|a| allowed.contains(&(user.clone(), (*a).clone())))
                    .cloned()
                    .collect();
                expected.sort();
                assert_eq!(
                    ids(&found.json["results"], "id"),
                    expected,
                    "{store}: {user} {action}"
                );
            }
            for account in &accounts {
                let found = post(
                    &server.url("/access/v1/search/subject"),
                    &json!({"subject": {"type": "user"}, "action": {"name": action},
                            "resource": {"type": "account", "id": account}, "context": context}),
                )
                .await;
                let mut expected: Vec<String> = users
                    .iter()
                    .filter(|u| allowed.contains(&((*u).clone(), account.clone())))
                    .cloned()
                    .collect();
                expected.sort();
                assert_eq!(
                    ids(&found.json["results"], "id"),
                    expected,
                    "{store}: {action} {account}"
                );
            }
        }
    }
    assert!(allowed_somewhere > 20, "{allowed_somewhere}");
    // The permits left by partial evaluation name who they allow: far
    // fewer candidates are decided than every account for every search.
    let searches = users.len() * actions.len();
    for ((store, _), log) in servers.iter().zip(&logs) {
        let mut decided = 0;
        for _ in 0..100 {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<Value> = text
                .lines()
                .map(|line| serde_json::from_str::<Value>(line).unwrap())
                .filter(|line| line["search"] == "resource")
                .collect();
            if lines.len() >= searches {
                decided = lines
                    .iter()
                    .map(|l| l["candidates"].as_u64().unwrap())
                    .sum();
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let every = (searches * accounts.len()) as u64;
        assert!(
            decided > 0 && decided < every / 2,
            "{store}: {decided} candidates decided, of {every}"
        );
    }
}

/// The reference store's `related` narrowing: only the entities whose
/// attributes refer to one of the given uids, in any reference form.
#[tokio::test]
async fn the_reference_store_lists_only_the_entities_referring_to_related_ones() {
    let demo = crate::support::root().join("examples/demo/entities.json");
    let store = std::sync::Arc::new(
        mandate::tools::refstore::RefStore::open(&demo, std::time::Duration::ZERO).unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}/entities/search", listener.local_addr().unwrap());
    tokio::spawn(store.serve(listener, std::future::pending()));
    let list = |related: Value| {
        let upstream = upstream.clone();
        async move {
            let reply = post(
                &upstream,
                &json!({"type": "Brokerage::Account", "related": related}),
            )
            .await;
            assert_eq!(reply.status, 200, "{}", reply.json);
            ids(&reply.json["uids"], "id")
        }
    };
    let user = |id: &str| json!({"type": "Brokerage::User", "id": id});
    assert_eq!(list(json!([user("alice")])).await, ["alice-personal"]);
    assert_eq!(list(json!([user("nobody")])).await, Vec::<String>::new());
    let all = list(Value::Null).await;
    assert_eq!(all.len(), 4, "{all:?}");
    // A set's member and an owner, any one of them.
    assert_eq!(
        list(json!([user("bob"), user("rupert"), user("paula")])).await,
        ["acme-corp", "alice-personal", "bare-personal"]
    );
}

/// A store written to the contract before `related`, strict about unknown
/// fields: it answers `/entities/search` with `related` by a 400, and the
/// search asks again for every entity of the type.
#[tokio::test]
async fn a_store_that_refuses_related_is_asked_for_every_entity_instead() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::{BodyExt, Full};

    let demo = crate::support::root().join("examples/demo/entities.json");
    let entities: Arc<Vec<Value>> =
        Arc::new(serde_json::from_str(&std::fs::read_to_string(&demo).unwrap()).unwrap());
    let refused = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    let (served, counted) = (Arc::clone(&entities), Arc::clone(&refused));
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (entities, refused) = (Arc::clone(&served), Arc::clone(&counted));
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let (entities, refused) = (Arc::clone(&entities), Arc::clone(&refused));
                        async move {
                            let path = request.uri().path().to_owned();
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            let body: Value = serde_json::from_slice(&body).unwrap();
                            let uid = |e: &Value| e["uid"].clone();
                            let (status, answer) = if path == "/entities/batch" {
                                let asked = body["uids"].as_array().unwrap();
                                let found: Vec<&Value> = entities
                                    .iter()
                                    .filter(|e| asked.contains(&uid(e)))
                                    .collect();
                                (200, json!({"entities": found}))
                            } else if body.get("related").is_some() {
                                refused.fetch_add(1, Ordering::SeqCst);
                                (400, json!({"error": "unknown field `related`"}))
                            } else {
                                let listed: Vec<Value> = entities
                                    .iter()
                                    .filter(|e| e["uid"]["type"] == body["type"])
                                    .map(uid)
                                    .collect();
                                (200, json!({"uids": listed, "page": {"next_token": ""}}))
                            };
                            let mut response = http::Response::new(Full::new(bytes::Bytes::from(
                                answer.to_string(),
                            )));
                            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(response)
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
    let server = Server::start(config_with(&[
        ("MANDATE_STORE_KIND", "http"),
        ("MANDATE_STORE_UPSTREAM", upstream.as_str()),
    ]))
    .await;
    let found = post(
        &server.url("/access/v1/search/resource"),
        &json!({"subject": {"type": "user", "id": "carol"}, "action": {"name": "place_order"},
                "resource": {"type": "account"}, "context": {"side": "buy", "instrument": "AAPL"}}),
    )
    .await;
    assert_eq!(found.status, 200, "{}", found.json);
    assert_eq!(ids(&found.json["results"], "id"), ["alice-personal"]);
    assert_eq!(
        refused.load(Ordering::SeqCst),
        1,
        "asked with `related` once, then without"
    );
}
