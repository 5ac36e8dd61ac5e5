//! The AuthZEN interop "Todo" scenario, served from its own example pack
//! (`examples/authzen-todo/`) over a real socket, single and batch, with
//! todo ids made up at random in the test.

use serde_json::{Value, json};

use crate::support::{Server, post, root};

const USERS: [(&str, &str, &[&str]); 5] = [
    (
        "CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
        "rick@the-citadel.com",
        &["admin", "evil_genius"],
    ),
    (
        "CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
        "morty@the-citadel.com",
        &["editor"],
    ),
    (
        "CiRmZDI2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
        "summer@the-smiths.com",
        &["editor"],
    ),
    (
        "CiRmZDM2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
        "beth@the-smiths.com",
        &["viewer"],
    ),
    (
        "CiRmZDQ2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
        "jerry@the-smiths.com",
        &["viewer"],
    ),
];

async fn todo_server() -> Server {
    Server::start(crate::support::todo_config()).await
}

fn random_todo_id() -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        fastrand::u32(..),
        fastrand::u16(..),
        fastrand::u16(..0x1000),
        fastrand::u16(..),
        fastrand::u64(..1 << 48)
    )
}

fn todo(owner: &str) -> Value {
    json!({"type": "todo", "id": random_todo_id(), "properties": {"ownerID": owner}})
}

fn expected(action: &str, roles: &[&str], owns: bool) -> bool {
    let has = |role| roles.contains(&role);
    match action {
        "can_update_todo" => has("evil_genius") || (has("editor") && owns),
        "can_delete_todo" => has("admin") || (has("editor") && owns),
        "can_create_todo" => has("admin") || has("editor"),
        _ => true,
    }
}

#[tokio::test]
async fn every_user_action_and_owner_answers_as_the_scenario_says_single_evaluations() {
    let server = todo_server().await;
    let url = server.url("/access/v1/evaluation");
    let mut asked = 0;
    for (pid, email, roles) in USERS {
        let subject = json!({"type": "user", "id": pid});
        for (_, owner_email, _) in USERS {
            let reply = post(&url, &json!({"subject": subject, "action": {"name": "can_read_user"}, "resource": {"type": "user", "id": owner_email}, "context": {}})).await;
            assert_eq!(
                reply.json["decision"], true,
                "{pid} reads {owner_email}: {}",
                reply.json
            );
            for action in ["can_update_todo", "can_delete_todo"] {
                let reply = post(&url, &json!({"subject": subject, "action": {"name": action}, "resource": todo(owner_email), "context": {}})).await;
                let want = expected(action, roles, email == owner_email);
                assert_eq!(
                    reply.json["decision"], want,
                    "{email} {action} on {owner_email}'s todo: {}",
                    reply.json
                );
                asked += 2;
            }
        }
        for action in ["can_read_todos", "can_create_todo"] {
            let reply = post(&url, &json!({"subject": subject, "action": {"name": action}, "resource": {"type": "todo", "id": random_todo_id()}, "context": {}})).await;
            assert_eq!(
                reply.json["decision"],
                expected(action, roles, false),
                "{email} {action}: {}",
                reply.json
            );
        }
    }
    assert_eq!(asked, 100);
}

#[tokio::test]
async fn the_batch_form_with_only_a_resource_per_item_answers_in_order() {
    let server = todo_server().await;
    let url = server.url("/access/v1/evaluations");
    for (pid, email, roles) in USERS {
        for action in ["can_update_todo", "can_delete_todo"] {
            let owners: Vec<&str> = USERS.iter().map(|(_, owner, _)| *owner).collect();
            let body = json!({
                "subject": {"type": "user", "id": pid},
                "action": {"name": action},
                "resource": {},
                "context": {},
                "evaluations": owners.iter().map(|owner| json!({"resource": todo(owner)})).collect::<Vec<_>>()
            });
            let reply = post(&url, &body).await;
            assert_eq!(reply.status, 200, "{}", reply.json);
            let got: Vec<bool> = reply.json["evaluations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["decision"].as_bool().unwrap())
                .collect();
            let want: Vec<bool> = owners
                .iter()
                .map(|owner| expected(action, roles, *owner == email))
                .collect();
            assert_eq!(got, want, "{email} {action}");
        }
    }
}

#[tokio::test]
async fn request_described_todos_do_not_weaken_store_served_types() {
    let server = todo_server().await;
    let url = server.url("/access/v1/evaluation");
    // A user the store does not know is a deny, whatever the request says.
    let reply = post(&url, &json!({"subject": {"type": "user", "id": "nobody"}, "action": {"name": "can_read_todos"}, "resource": {"type": "todo", "id": "t1"}})).await;
    assert_eq!(reply.json["decision"], false);
    assert_eq!(
        reply.json["context"]["errors"][0]["code"],
        "entity_not_found"
    );
    // And a user cannot describe itself into a role.
    let reply = post(&url, &json!({"subject": {"type": "user", "id": USERS[3].0, "properties": {"roles": ["admin"]}}, "action": {"name": "can_delete_todo"}, "resource": todo("rick@the-citadel.com")})).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json["error"]["field"], "subject.properties");
}

#[test]
fn mandate_test_passes_the_todo_suite() {
    let pack = root().join("examples/authzen-todo");
    let output = std::process::Command::new(crate::support::binary())
        .current_dir(root())
        .args(["test", "--config"])
        .arg(pack.join("mandate.toml"))
        .arg("--policies")
        .arg(pack.join("policies"))
        .arg("--schema")
        .arg(pack.join("schema.cedarschema"))
        .arg(pack.join("tests"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert_eq!(stdout.lines().last(), Some("90 passed, 0 failed"));
}
