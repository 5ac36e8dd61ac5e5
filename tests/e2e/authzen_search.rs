//! AuthZEN 1.0 search over the public search interop scenario
//! (`examples/authzen-search`): every expected answer, whole and in pages
//! of two; every result asked back as an evaluation; tokens bound to their
//! request; a search too wide refused, never truncated.

use serde_json::{Value, json};

use crate::support::{Server, get, post, root};

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

fn cases(kind: &str) -> Vec<(Value, Value)> {
    let file = root().join(format!("examples/authzen-search/interop/{kind}.json"));
    let all: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    all["evaluation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| (case["request"].clone(), case["expected"]["results"].clone()))
        .collect()
}

fn sorted(results: &Value) -> Vec<String> {
    let mut items: Vec<String> = results
        .as_array()
        .unwrap()
        .iter()
        .map(Value::to_string)
        .collect();
    items.sort();
    items
}

/// Every result of `request`, following `next_token` with pages of `limit`.
async fn all_pages(server: &Server, kind: &str, request: &Value, limit: Option<u64>) -> Value {
    let url = server.url(&format!("/access/v1/search/{kind}"));
    let mut request = request.clone();
    if let Some(limit) = limit {
        request["page"] = json!({"limit": limit});
    }
    let mut results = Vec::new();
    for _ in 0..100 {
        let reply = post(&url, &request).await;
        assert_eq!(reply.status, 200, "{request}: {}", reply.json);
        let page = reply.json["results"].as_array().unwrap();
        if let Some(limit) = limit {
            assert!(page.len() as u64 <= limit);
        }
        results.extend(page.iter().cloned());
        let next = reply.json["page"]["next_token"]
            .as_str()
            .unwrap()
            .to_owned();
        if next.is_empty() {
            assert_eq!(reply.json["page"]["total"], results.len(), "{}", reply.json);
            return Value::Array(results);
        }
        request["page"]["token"] = json!(next);
    }
    panic!("more than 100 pages");
}

#[tokio::test]
async fn the_interop_expectations_pass_whole_and_in_pages() {
    let server = pack().await;
    let mut checked = 0;
    for kind in ["subject", "resource", "action"] {
        for (request, expected) in cases(kind) {
            for limit in [None, Some(7), Some(2), Some(1)] {
                let got = all_pages(&server, kind, &request, limit).await;
                assert_eq!(
                    sorted(&got),
                    sorted(&expected),
                    "{kind} {request} (limit {limit:?})"
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} interop cases");
}

/// Soundness and completeness over the whole demo: every subject × action ×
/// resource is evaluated, and each of the three searches finds exactly the
/// allowed ones.
#[tokio::test]
async fn every_search_agrees_with_every_evaluation_of_the_demo() {
    let server = pack().await;
    let users = ["alice", "bob", "carol", "dan", "erin", "felix"];
    let actions = ["view", "edit", "delete"];
    let records: Vec<String> = (101..=120).map(|n| n.to_string()).collect();
    let mut allowed = std::collections::HashSet::new();
    for user in users {
        for action in actions {
            for record in &records {
                let evaluation = json!({"subject": {"type": "user", "id": user},
                    "action": {"name": action}, "resource": {"type": "record", "id": record}});
                let reply = post(&server.url("/access/v1/evaluation"), &evaluation).await;
                assert_eq!(reply.status, 200, "{}", reply.json);
                if reply.json["decision"] == true {
                    allowed.insert((user.to_owned(), action.to_owned(), record.clone()));
                }
            }
        }
    }
    assert!(
        allowed.len() > 20 && allowed.len() < 300,
        "{} allowed",
        allowed.len()
    );
    let ids = |found: Value, key: &str| -> std::collections::BTreeSet<String> {
        found
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[key].as_str().unwrap().to_owned())
            .collect()
    };
    let mut searches = 0;
    for user in users {
        for action in actions {
            let request = json!({"subject": {"type": "user", "id": user}, "action": {"name": action},
                                 "resource": {"type": "record"}});
            let found = ids(all_pages(&server, "resource", &request, None).await, "id");
            let expected = records
                .iter()
                .filter(|r| allowed.contains(&(user.to_owned(), action.to_owned(), (*r).clone())))
                .cloned()
                .collect();
            assert_eq!(found, expected, "resource search: {user} {action}");
            searches += 1;
        }
    }
    for action in actions {
        for record in &records {
            let request = json!({"subject": {"type": "user"}, "action": {"name": action},
                                 "resource": {"type": "record", "id": record}});
            let found = ids(all_pages(&server, "subject", &request, None).await, "id");
            let expected = users
                .iter()
                .filter(|u| {
                    allowed.contains(&((**u).to_owned(), action.to_owned(), record.clone()))
                })
                .map(|u| (*u).to_owned())
                .collect();
            assert_eq!(found, expected, "subject search: {action} {record}");
            searches += 1;
        }
    }
    for user in users {
        for record in &records {
            let request = json!({"subject": {"type": "user", "id": user},
                                 "resource": {"type": "record", "id": record}});
            let found = ids(all_pages(&server, "action", &request, None).await, "name");
            let expected = actions
                .iter()
                .filter(|a| allowed.contains(&(user.to_owned(), (**a).to_owned(), record.clone())))
                .map(|a| (*a).to_owned())
                .collect();
            assert_eq!(found, expected, "action search: {user} {record}");
            searches += 1;
        }
    }
    assert_eq!(searches, 6 * 3 + 3 * 20 + 6 * 20);
}

#[tokio::test]
async fn a_token_is_bound_to_its_request_and_the_metadata_advertises_search() {
    let server = pack().await;
    let url = server.url("/access/v1/search/resource");
    let request = json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": "view"},
                         "resource": {"type": "record"}, "page": {"limit": 3}});
    let first = post(&url, &request).await;
    let token = first.json["page"]["next_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!token.is_empty());
    assert_eq!(first.json["page"]["count"], 3);

    let mut other = request.clone();
    other["subject"]["id"] = json!("bob");
    other["page"]["token"] = json!(token);
    let refused = post(&url, &other).await;
    assert_eq!(refused.status, 400, "{}", refused.json);
    assert_eq!(refused.json["error"]["field"], "page.token");

    let mut tampered = request.clone();
    tampered["page"]["token"] = json!(token.replacen(char::is_alphanumeric, "f", 1));
    assert_eq!(post(&url, &tampered).await.status, 400);

    // The same body at another endpoint: a token is bound to its endpoint,
    // never accepted there to skip results silently.
    // (A body naming both ids fits both endpoints.)
    let mut both = request.clone();
    both["resource"]["id"] = json!("any");
    let page = post(&url, &both).await;
    let mut elsewhere = both.clone();
    elsewhere["page"]["token"] = page.json["page"]["next_token"].clone();
    assert!(!elsewhere["page"]["token"].as_str().unwrap().is_empty());
    let refused = post(&server.url("/access/v1/search/subject"), &elsewhere).await;
    assert_eq!(refused.status, 400, "{}", refused.json);
    assert_eq!(refused.json["error"]["field"], "page.token");
    assert!(
        refused.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("start again"),
        "{}",
        refused.json
    );

    let mut next = request.clone();
    next["page"]["token"] = json!(token);
    let second = post(&url, &next).await;
    assert_eq!(second.status, 200);
    assert_ne!(second.json["results"], first.json["results"]);

    let meta = get(&server.url("/.well-known/authzen-configuration")).await;
    for endpoint in ["subject", "resource", "action"] {
        assert!(
            meta.json[format!("search_{endpoint}_endpoint")]
                .as_str()
                .unwrap()
                .ends_with(&format!("/access/v1/search/{endpoint}")),
            "{}",
            meta.json
        );
    }
}

#[tokio::test]
async fn a_search_too_wide_is_refused_never_truncated_and_bad_requests_name_the_field() {
    let mut config = mandate::config::Config::load(
        Some(&root().join("examples/authzen-search/mandate.toml")),
        [
            ("MANDATE_SERVER_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
            ("MANDATE_LOG_DECISIONS".to_owned(), "off".to_owned()),
            ("MANDATE_SEARCH_MAX_CANDIDATES".to_owned(), "10".to_owned()),
        ],
        &[],
    )
    .unwrap();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    let server = Server::start(config).await;
    let wide = post(
        &server.url("/access/v1/search/resource"),
        &json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": "view"}, "resource": {"type": "record"}}),
    )
    .await;
    assert_eq!(wide.status, 400);
    assert!(
        wide.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("more than 10 candidates (`search.max_candidates`); narrow it"),
        "{}",
        wide.json
    );
    let no_action = post(
        &server.url("/access/v1/search/subject"),
        &json!({"subject": {"type": "user"}, "resource": {"type": "record", "id": "101"}}),
    )
    .await;
    assert_eq!(no_action.status, 400);
    assert_eq!(no_action.json["error"]["field"], "action");
    let unknown = post(
        &server.url("/access/v1/search/action"),
        &json!({"subject": {"type": "usr", "id": "alice"}, "resource": {"type": "record", "id": "101"}}),
    )
    .await;
    // An unknown type matches nothing: `[]`, not an error (the AuthZEN
    // certification scenario, C.4.6.2).
    assert_eq!(unknown.status, 200);
    assert_eq!(unknown.json["results"], json!([]), "{}", unknown.json);
    assert_eq!(unknown.json["page"]["next_token"], "");
}

#[tokio::test]
async fn convert_py_turns_any_dataset_of_the_interop_shape_into_entities_mandate_serves() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    let records = dir.path().join("records.json");
    std::fs::write(
        &users,
        r#"[{"id": "ann", "role": "manager", "department": "Ops"}, {"id": 7, "role": "employee", "department": "Ops"}]"#,
    )
    .unwrap();
    std::fs::write(
        &records,
        r#"[{"id": 1, "title": "One", "department": "Ops", "owner": 7}, {"id": "two", "title": "Two", "department": "Law", "owner": "ann"}]"#,
    )
    .unwrap();
    let output = std::process::Command::new("python3")
        .arg(root().join("examples/authzen-search/convert.py"))
        .args([&users, &records])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let entities = dir.path().join("entities.json");
    std::fs::write(&entities, &output.stdout).unwrap();
    let config = mandate::config::Config::load(
        Some(&root().join("examples/authzen-search/mandate.toml")),
        [
            ("MANDATE_SERVER_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
            ("MANDATE_LOG_DECISIONS".to_owned(), "off".to_owned()),
        ],
        &[(
            "store.entities",
            toml::Value::String(entities.display().to_string()),
        )],
    )
    .unwrap();
    let server = Server::start(config).await;
    let editors = all_pages(
        &server,
        "subject",
        &json!({"subject": {"type": "user"}, "action": {"name": "edit"}, "resource": {"type": "record", "id": "1"}}),
        None,
    )
    .await;
    assert_eq!(
        sorted(&editors),
        sorted(&json!([{"type": "user", "id": "7"}, {"type": "user", "id": "ann"}])),
        "the owner (numeric id 7) and the department's manager"
    );
}

#[tokio::test]
async fn over_the_http_store_candidates_come_from_its_search_endpoint() {
    let store = std::sync::Arc::new(
        mandate::tools::refstore::RefStore::open(
            &root().join("examples/authzen-search/entities.json"),
            std::time::Duration::ZERO,
        )
        .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(store.serve(listener, std::future::pending()));
    let config = mandate::config::Config::load(
        Some(&root().join("examples/authzen-search/mandate.toml")),
        [
            ("MANDATE_SERVER_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
            ("MANDATE_LOG_DECISIONS".to_owned(), "off".to_owned()),
        ],
        &[
            ("store.kind", toml::Value::String("http".to_owned())),
            ("store.upstream", toml::Value::String(upstream)),
        ],
    )
    .unwrap();
    let server = Server::start(config).await;
    for kind in ["subject", "resource"] {
        for (request, expected) in cases(kind) {
            let got = all_pages(&server, kind, &request, Some(2)).await;
            assert_eq!(
                sorted(&got),
                sorted(&expected),
                "{kind} {request} over HTTP"
            );
        }
    }
}
