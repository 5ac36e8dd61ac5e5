//! The AuthZEN API-gateway interop (`interop/authzen-api-gateways` of
//! openid/authzen): `examples/authzen-gateway/convert.py` turns a users file
//! and a routes file into a pack, the real `mandate serve` serves it on a
//! real port, and each vector is asked as a gateway asks it
//! (`{type: "route", id: <template>}`, the method as `action.name`), judged
//! by the upstream harness's own pass rule and by a stricter one (HTTP 200,
//! a Boolean decision). The 25 public vectors, then a made-up application
//! with other users, roles, routes and permissions.

use std::path::Path;

use serde_json::{Value, json};

use crate::cli::{Served, mandate, serving, terminate};
use crate::support::{post, root};

const PUBLIC: &str = "examples/authzen-gateway/interop";

/// Runs convert.py on `users` and `routes` into a new directory.
fn convert(users: &Path, routes: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new("python3")
        .arg(root().join("examples/authzen-gateway/convert.py"))
        .args([users, routes, dir.path()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    dir
}

/// `mandate serve --config DIR/mandate.toml` on a port of its own.
fn serve(dir: &Path) -> Served {
    serving(
        mandate()
            .args(["serve", "--config"])
            .arg(dir.join("mandate.toml"))
            .args(["--listen", "127.0.0.1:0"])
            .env("MANDATE_LOG_DECISIONS", "off"),
    )
}

/// The harness's verdict (`test-harness/test/runner.ts`): the answer's
/// `data.decision || false`, compared with the expected value as JSON.
fn harness_passes(answer: &Value, expected: bool) -> bool {
    let decision = match answer.get("decision") {
        // JavaScript's falsy values become `false`
        None | Some(Value::Null) | Some(Value::Bool(false)) => json!(false),
        Some(Value::Number(n)) if n.as_f64() == Some(0.0) => json!(false),
        Some(Value::String(s)) if s.is_empty() => json!(false),
        Some(other) => other.clone(),
    };
    decision == json!(expected)
}

/// Asks every `(request, expected)` at `base`, as sent and with what
/// gateways add (resource properties, a context of headers, subject
/// properties), one by one and as one batch; both rules must pass.
async fn ask_all(base: &str, vectors: &[(Value, bool)]) {
    let one = format!("{base}/access/v1/evaluation");
    for (request, expected) in vectors {
        let reply = post(&one, request).await;
        assert!(
            harness_passes(&reply.json, *expected),
            "harness rule: {request} → {} {}",
            reply.status,
            reply.json
        );
        assert_eq!(reply.status, 200, "{request}: {}", reply.json);
        assert_eq!(
            reply.json["decision"],
            json!(*expected),
            "{request}: {}",
            reply.json
        );

        // The batch endpoint without `evaluations` is one evaluation.
        let reply = post(&format!("{base}/access/v1/evaluations"), request).await;
        assert_eq!(reply.status, 200, "{request}: {}", reply.json);
        assert_eq!(reply.json["decision"], json!(*expected), "{request}");

        // What Envoy's and others' plugins add never changes the answer.
        let mut decorated = request.clone();
        let template = request["resource"]["id"].as_str().unwrap_or_default();
        decorated["resource"]["properties"] = json!({
            "uri": format!("https://todo.example.com{template}"),
            "schema": "https",
            "hostname": "todo.example.com",
            "path": template.replace("{todoId}", "1").replace("{userId}", "rick"),
            "params": {"todoId": "1"},
            "ip": "203.0.113.9",
        });
        decorated["context"] = json!({"headers": {"authorization": "Bearer eyJ…",
            "x-forwarded-for": "203.0.113.9", "user-agent": "curl/8"}});
        decorated["subject"]["properties"] = json!({"roles": ["admin", "editor"]});
        let reply = post(&one, &decorated).await;
        assert_eq!(reply.status, 200, "{decorated}: {}", reply.json);
        assert_eq!(
            reply.json["decision"],
            json!(*expected),
            "{decorated}: {}",
            reply.json
        );
    }
    let batch = json!({"evaluations": vectors.iter().map(|(r, _)| r).collect::<Vec<_>>()});
    let reply = post(&format!("{base}/access/v1/evaluations"), &batch).await;
    assert_eq!(reply.status, 200, "{}", reply.json);
    let answers = reply.json["evaluations"].as_array().unwrap();
    assert_eq!(answers.len(), vectors.len());
    for ((request, expected), answer) in vectors.iter().zip(answers) {
        assert_eq!(
            answer["decision"],
            json!(*expected),
            "batch {request}: {answer}"
        );
    }
}

#[tokio::test]
async fn the_25_public_gateway_vectors_pass_by_the_harness_rule_and_strictly() {
    let public = root().join(PUBLIC);
    let dir = convert(&public.join("users.json"), &public.join("routes.json"));
    let file = std::fs::read_to_string(public.join("decisions.json")).unwrap();
    let decisions: Value = serde_json::from_str(&file).unwrap();
    let vectors: Vec<(Value, bool)> = decisions["evaluation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["request"].clone(), v["expected"].as_bool().unwrap()))
        .collect();
    assert_eq!(vectors.len(), 25);

    let Served {
        mut child, base, ..
    } = serve(dir.path());
    ask_all(&base, &vectors).await;
    terminate(&child);
    assert!(child.wait().unwrap().success());

    // The shipped pack is convert.py's output for the public files.
    for name in ["mandate.toml", "schema.cedarschema", "entities.json"] {
        let made = std::fs::read_to_string(dir.path().join(name)).unwrap();
        let shipped =
            std::fs::read_to_string(root().join("examples/authzen-gateway").join(name)).unwrap();
        assert_eq!(
            made, shipped,
            "examples/authzen-gateway/{name} is stale: rerun convert.py"
        );
    }
}

/// Who holds a permission, by the scenario's rules read literally.
fn holds(roles: &[&str], permission: &str) -> bool {
    let any = |wanted: &[&str]| roles.iter().any(|r| wanted.contains(r));
    match permission {
        "can_read_user" | "can_read_todos" => true,
        "can_create_todo" | "can_delete_todo" => any(&["admin", "editor"]),
        "can_update_todo" => any(&["evil_genius", "editor"]),
        _ => false,
    }
}

#[tokio::test]
async fn another_application_is_only_another_users_and_routes_file() {
    let data = tempfile::tempdir().unwrap();
    let users: Vec<(&str, Vec<&str>)> = vec![
        ("auth0|ada", vec!["admin"]),
        ("sub-ed", vec!["editor", "auditor"]),
        ("gen/ius", vec!["evil_genius"]),
        ("plain", vec![]),
        ("one-role-as-text", vec!["editor"]),
        ("Auditor-Only", vec!["auditor", "Admin"]),
    ];
    let users_file: serde_json::Map<String, Value> = users
        .iter()
        .map(|(sub, roles)| {
            let mut user = json!({"id": format!("{sub}@example.org"), "name": sub,
                "email": format!("{sub}@example.org"), "roles": roles});
            if *sub == "one-role-as-text" {
                // a single role written as text, not a list
                user["roles"] = json!("editor");
            }
            ((*sub).to_owned(), user)
        })
        .collect();
    let routes = [
        ("GET", "/projects", "can_read_todos"),
        ("POST", "/projects", "can_create_todo"),
        ("PATCH", "/projects/{projectId}", "can_update_todo"),
        (
            "DELETE",
            "/projects/{projectId}/tasks/{taskId}",
            "can_delete_todo",
        ),
        ("GET", "/people/{personId}", "can_read_user"),
        ("GET", "/people/{personId}/secrets", "can_see_secrets"),
        ("put", "/projects/{projectId}/archive", "can_update_todo"),
    ];
    let routes_file: Vec<Value> = routes
        .iter()
        .map(|(method, route, permission)| {
            json!({"method": method, "route": route, "permission": permission})
        })
        .collect();
    let users_path = data.path().join("users.json");
    let routes_path = data.path().join("routes.json");
    std::fs::write(&users_path, Value::Object(users_file).to_string()).unwrap();
    std::fs::write(&routes_path, Value::Array(routes_file).to_string()).unwrap();
    let dir = convert(&users_path, &routes_path);

    let ask = |sub: &str, method: &str, route: &str| {
        json!({"subject": {"type": "identity", "id": sub}, "action": {"name": method},
               "resource": {"type": "route", "id": route}})
    };
    let mut vectors = Vec::new();
    for (sub, roles) in &users {
        for (method, route, permission) in routes {
            let expected = holds(roles, permission);
            vectors.push((ask(sub, &method.to_uppercase(), route), expected));
        }
        // An unknown route, method, or a concrete path instead of a template.
        vectors.push((ask(sub, "GET", "/todos"), false));
        vectors.push((ask(sub, "PUT", "/projects/{projectId}"), false));
        vectors.push((ask(sub, "PATCH", "/projects/42"), false));
        vectors.push((ask(sub, "PATCH", "/projects/{id}"), false));
    }
    // An unknown subject, and subjects of the public data.
    vectors.push((ask("nobody", "GET", "/projects"), false));
    vectors.push((
        ask(
            "CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
            "GET",
            "/projects",
        ),
        false,
    ));
    assert!(vectors.iter().filter(|(_, allowed)| *allowed).count() >= 15);

    let Served {
        mut child, base, ..
    } = serve(dir.path());
    ask_all(&base, &vectors).await;

    // The same table serves forward-auth (nginx's `auth_request`), on
    // concrete paths.
    let forward = |method: &str, uri: &str, sub: &str| {
        http::Request::get(format!("{base}/gateway/authorize"))
            .header("x-original-method", method)
            .header("x-original-uri", uri)
            .header("x-user-id", sub)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap()
    };
    let allowed = crate::support::send(forward("PATCH", "/projects/7", "sub-ed"), false).await;
    assert_eq!(allowed.status, 200, "{}", allowed.json);
    let denied = crate::support::send(forward("PATCH", "/projects/7", "plain"), false).await;
    assert_eq!(denied.status, 403, "{}", denied.json);
    terminate(&child);
    assert!(child.wait().unwrap().success());
}

#[tokio::test]
async fn a_route_type_without_routes_is_refused_at_start() {
    let refused = mandate::config::Config::load(
        None,
        [("MANDATE_GATEWAY_ROUTE_TYPE".to_owned(), "route".to_owned())],
        &[],
    )
    .unwrap_err();
    assert!(
        refused.to_string().contains("gateway.route_type")
            || format!("{refused:?}").contains("gateway.route_type"),
        "{refused:?}"
    );
}
