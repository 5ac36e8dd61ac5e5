//! The `mandate` binary itself: `serve` on its defaults, `check`, `validate`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::json;

use crate::support::{binary, post, root};

pub(crate) fn mandate() -> Command {
    let mut command = Command::new(binary());
    command.current_dir(root()).env("NO_COLOR", "1");
    for (key, _) in std::env::vars() {
        if key.starts_with("MANDATE_") {
            command.env_remove(key);
        }
    }
    command
}

/// A `serve` started by a test: its address, and its whole stderr (the
/// process log) once it exits.
pub(crate) struct Served {
    pub child: std::process::Child,
    pub base: String,
    pub stderr: std::thread::JoinHandle<String>,
}

/// Starts `command` (a `serve`) and reads the address it prints on stderr,
/// then keeps reading stderr so the process log never fills the pipe.
pub(crate) fn serving(command: &mut Command) -> Served {
    let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let base = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            log.push_str(&line);
            log.push('\n');
            line.strip_prefix("mandate listening on ")
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no `mandate listening on` line on stderr: {log}"));
    let stderr = std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    Served {
        child,
        base,
        stderr,
    }
}

pub(crate) fn terminate(child: &std::process::Child) {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
}

#[tokio::test]
async fn serve_on_the_embedded_defaults_prints_its_address_and_decides() {
    let Served {
        child,
        base,
        stderr,
    } = serving(
        mandate()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped()),
    );
    let reply = post(
        &format!("{base}/access/v1/evaluation"),
        &json!({
            "subject": {"type": "user", "id": "alice"},
            "action": {"name": "view_account"},
            "resource": {"type": "account", "id": "alice-personal"}
        }),
    )
    .await;
    assert_eq!(reply.json["decision"], true);
    assert_eq!(reply.json["context"]["reasons"], json!(["O1"]));
    terminate(&child);
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "SIGTERM is a clean exit");
    // The decision log alone on stdout, the process log alone on stderr.
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: `{line}`")))
        .collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert_eq!(lines[0]["principal"], "Brokerage::User::\"alice\"");
    let log = stderr.join().unwrap();
    assert!(log.contains("policies loaded"), "{log}");
    assert!(
        !log.contains("\"principal\""),
        "no decision line on stderr: {log}"
    );
}

#[tokio::test]
async fn serve_works_from_any_directory_on_the_pack_inside_the_binary_and_warns_of_demo_data() {
    let elsewhere = tempfile::tempdir().unwrap();
    let Served {
        child,
        base,
        stderr,
    } = serving(
        mandate()
            .current_dir(elsewhere.path())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null()),
    );
    let reply = post(
        &format!("{base}/access/v1/evaluation"),
        &json!({
            "subject": {"type": "user", "id": "carol"},
            "action": {"name": "place_order"},
            "resource": {"type": "account", "id": "alice-personal"},
            "context": {"side": "buy", "instrument": "AAPL"}
        }),
    )
    .await;
    assert_eq!(reply.json["decision"], true, "{}", reply.json);
    assert_eq!(reply.json["context"]["reasons"], json!(["S2"]));
    terminate(&child);
    child.wait_with_output().unwrap();
    let log = stderr.join().unwrap();
    assert!(log.contains("serving the DEMO entity data"), "{log}");
    // A path given explicitly is never replaced by the embedded copy.
    let status = mandate()
        .current_dir(elsewhere.path())
        .args(["validate", "--policies", "no-such-dir"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_ne!(status.code(), Some(0));
}

#[test]
fn check_exits_0_on_allow_1_on_deny_2_on_error() {
    let allow = mandate()
        .args([
            "check",
            "--principal",
            "user:carol",
            "--action",
            "place_order",
            "--resource",
            "account:alice-personal",
        ])
        .args(["--context", r#"{"side":"buy","instrument":"AAPL"}"#])
        .output()
        .unwrap();
    assert_eq!(allow.status.code(), Some(0));
    let out: serde_json::Value = serde_json::from_slice(&allow.stdout).unwrap();
    assert_eq!(out["decision"], "Allow");

    let deny = mandate()
        .args([
            "check",
            "--principal",
            r#"Brokerage::User::"bob""#,
            "--action",
            "cancel_order",
        ])
        .args(["--resource", r#"Brokerage::Account::"alice-personal""#])
        .output()
        .unwrap();
    assert_eq!(deny.status.code(), Some(1));

    let error = mandate()
        .args([
            "check",
            "--principal",
            "user:carol",
            "--action",
            "place_order",
            "--resource",
            "account:alice-personal",
        ])
        .args(["--context", r#"{"side":"buy"}"#])
        .output()
        .unwrap();
    assert_eq!(error.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&error.stderr);
    assert!(
        stderr.contains(
            "`place_order` takes this context (`--context`):\n  instrument: String, required\n  side: String, required"
        ),
        "the action's context is listed: {stderr}"
    );
}

#[test]
fn check_suggests_the_name_meant_and_exits_as_a_usage_error() {
    let check = |principal: &str, action: &str, resource: &str| {
        let output = mandate()
            .args(["check", "--principal", principal, "--action", action])
            .args(["--resource", resource])
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = check("user:carol", "plce_order", "account:alice-personal");
    assert_eq!(code, Some(2), "{stdout}");
    assert!(stdout.is_empty(), "no decision is printed: {stdout}");
    assert!(
        stderr.contains(
            "`--action`: the schema declares no action `plce_order` (did you mean `place_order`?)"
        ),
        "{stderr}"
    );
    let (code, _, stderr) = check("user:carol", "place_order", "acount:alice-personal");
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("`--resource`: the schema declares no entity type `acount` (did you mean `Brokerage::Account`?)"),
        "{stderr}"
    );
}

#[test]
fn check_explain_says_per_policy_whether_scope_and_condition_held() {
    let output = mandate()
        .args(["check", "--explain", "--principal", "user:bob"])
        .args([
            "--action",
            "place_order",
            "--resource",
            "account:alice-personal",
        ])
        .args(["--context", r#"{"side":"buy","instrument":"AAPL"}"#])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "Bob is a viewer: denied");
    let out: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let explanation = out["explanation"].as_array().unwrap();
    let policy = |id: &str| {
        explanation
            .iter()
            .find(|p| p["policy"] == id)
            .unwrap_or_else(|| panic!("no {id} in {explanation:?}"))
    };
    assert_eq!(
        policy("S2"),
        &json!({
            "policy": "S2", "effect": "permit", "scope_matched": true, "determining": false,
            "condition": {"outcome": "not_held", "clause": "when", "value": false,
                "because": "resource.traders.contains(principal) || resource.restrictedWithdrawers.contains(principal) || resource.withdrawers.contains(principal) || resource.administrators.contains(principal)"}
        })
    );
    assert_eq!(
        policy("O1")["condition"]["because"],
        "resource.owner == principal"
    );
    assert!(
        explanation.iter().all(|p| p["determining"] == false),
        "nothing allowed, nothing forbade"
    );
    assert!(
        explanation.iter().all(|p| p["scope_matched"] == true),
        "only the action's policies are listed"
    );
}

#[test]
fn each_subcommand_lists_only_its_own_flags_with_an_example() {
    let help = |command: &str| {
        let output = mandate().args([command, "--help"]).output().unwrap();
        assert_eq!(output.status.code(), Some(0));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    for command in ["check", "validate", "test"] {
        let text = help(command);
        assert!(text.contains("Examples:\n  mandate "), "{command}: {text}");
        for serve_only in ["--listen", "--tls-cert", "--client-ca", "--admin-listen"] {
            assert!(
                !text.contains(serve_only),
                "{command} lists {serve_only}: {text}"
            );
        }
        assert!(text.contains("--policies"), "{command}: {text}");
    }
    let serve = help("serve");
    assert!(
        serve.contains("--listen") && serve.contains("--tls-cert"),
        "{serve}"
    );
    assert!(help("check").contains("--explain"));
    let test = help("test");
    assert!(
        test.contains("--filter") && test.contains("--format"),
        "{test}"
    );
    assert!(help("serve-store").contains("Examples:"));
}

#[test]
fn validate_accepts_the_shipped_pack() {
    let output = mandate().arg("validate").output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("ok: "));
}

#[test]
fn validate_points_at_the_file_and_line_of_a_bad_policy() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("broken.cedar"),
        "// fine so far\n@id(\"X1\")\npermit (principal, action == Brokerage::Action::\"view_acount\", resource);\n",
    )
    .unwrap();
    let output = mandate()
        .arg("validate")
        .arg("--policies")
        .arg(dir.path())
        .arg("--schema")
        .arg(root().join("schema"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("broken.cedar:3:"), "{stderr}");
    assert!(
        stderr.contains("view_acount") && stderr.contains("did you mean"),
        "Cedar's help is forwarded: {stderr}"
    );

    std::fs::write(
        dir.path().join("broken.cedar"),
        "permit (principal, action, resource) when { principal.",
    )
    .unwrap();
    let output = mandate()
        .arg("validate")
        .arg("--policies")
        .arg(dir.path())
        .arg("--schema")
        .arg(root().join("schema"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("broken.cedar:1:"), "{stderr}");
}

#[test]
fn validate_and_serve_refuse_a_route_whose_action_or_type_the_schema_does_not_declare() {
    let dir = tempfile::tempdir().unwrap();
    for (route, expected) in [
        (
            r#"action = "plce_order"
resource_type = "Account""#,
            "no action `plce_order` (did you mean `place_order`?)",
        ),
        (
            r#"action = "place_order"
resource_type = "Acount""#,
            "no resource type `Acount` (did you mean `Brokerage::Account`?)",
        ),
    ] {
        let config = dir.path().join("mandate.toml");
        std::fs::write(
            &config,
            format!(
                r#"[gateway]
original = "x-original"

[[gateway.routes]]
method = "POST"
path = "/accounts/{{account}}/orders"
{route}
resource_id = "{{account}}"
"#
            ),
        )
        .unwrap();
        let output = mandate()
            .arg("validate")
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("gateway route 0 (`POST /accounts/{account}/orders`)")
                && stderr.contains(expected),
            "{stderr}"
        );
        let output = mandate()
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(64));
        assert!(String::from_utf8_lossy(&output.stderr).contains(expected));
    }
}

/// The exit-code table of docs/cli.md, each row that a test can reach.
#[test]
fn exit_codes_follow_the_one_table() {
    let dir = tempfile::tempdir().unwrap();
    // validate: a configuration that does not load is invalid input, 1.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nlisten = 12\n").unwrap();
    let output = mandate()
        .arg("validate")
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    // serve: the same, or an address in use, cannot start: 64.
    let output = mandate()
        .arg("serve")
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let output = mandate()
        .args([
            "serve",
            "--listen",
            &taken.local_addr().unwrap().to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    // usage: a flag that does not exist, 2.
    let output = mandate()
        .args(["validate", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}

#[test]
fn serve_refuses_a_bad_policy_set_with_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.cedar"),
        "permit (principal, action, resource) when { nonsense };",
    )
    .unwrap();
    let output = mandate()
        .args(["serve", "--listen", "127.0.0.1:0", "--policies"])
        .arg(dir.path())
        .arg("--schema")
        .arg(root().join("schema"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("bad.cedar"));
}

#[tokio::test]
async fn sighup_reloads_the_policies() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    for entry in std::fs::read_dir(root().join("policies")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(
            entry.path(),
            dir.path().join("policies").join(entry.file_name()),
        )
        .unwrap();
    }
    let Served {
        mut child, base, ..
    } = serving(
        mandate()
            .args(["serve", "--listen", "127.0.0.1:0", "--policies"])
            .arg(dir.path().join("policies"))
            .arg("--schema")
            .arg(root().join("schema"))
            .arg("--entities")
            .arg(root().join("examples/demo/entities.json"))
            .env("MANDATE_POLICY_RELOAD_INTERVAL", "0s")
            .env("MANDATE_LOG_DECISIONS", "off"),
    );
    let ask = json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": "view_market_data"}, "resource": {"type": "marketdata", "id": "nasdaq-l1"}});
    let url = format!("{base}/access/v1/evaluation");
    assert_eq!(post(&url, &ask).await.json["decision"], true);
    std::fs::remove_file(dir.path().join("policies/market_data.cedar")).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let mut decision = serde_json::Value::Null;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        decision = post(&url, &ask).await.json["decision"].clone();
        if decision == false {
            break;
        }
    }
    assert_eq!(decision, false, "M1 was removed and SIGHUP reloaded");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn validate_reads_paths_relative_to_the_config_file_and_reports_every_mistake() {
    let dir = tempfile::tempdir().unwrap();
    let pack = dir.path().join("pack");
    std::fs::create_dir_all(pack.join("policies")).unwrap();
    for entry in std::fs::read_dir(root().join("policies")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), pack.join("policies").join(entry.file_name())).unwrap();
    }
    std::fs::copy(
        root().join("schema/brokerage.cedarschema"),
        pack.join("brokerage.cedarschema"),
    )
    .unwrap();
    std::fs::copy(
        root().join("examples/demo/entities.json"),
        pack.join("entities.json"),
    )
    .unwrap();
    let config = pack.join("mandate.toml");
    std::fs::write(
        &config,
        "[policy]\ndir = \"policies\"\nschema = \"brokerage.cedarschema\"\n[store]\nentities = \"entities.json\"\n",
    )
    .unwrap();
    // From anywhere else: the file's paths are the file's.
    let elsewhere = tempfile::tempdir().unwrap();
    let ok = mandate()
        .current_dir(elsewhere.path())
        .arg("validate")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    std::fs::write(
        &config,
        "[policy]\ndir = \"policies\"\nschema = \"brokerage.cedarschema\"\nreload_interval = \"2\"\n[store]\nentities = \"entities.json\"\nretries = \"many\"\n[entitie]\nsources = {}\n",
    )
    .unwrap();
    let bad = mandate()
        .arg("validate")
        .arg("--config")
        .arg(&config)
        .env("MANDATE_CACHE_TTLL", "1s")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    for expected in [
        "4 mistakes",
        "`policy.reload_interval`",
        "line 4",
        "`store.retries`",
        "`entitie.sources`",
        "did you mean `MANDATE_CACHE_TTL`?",
        "write a duration as a number and a unit",
    ] {
        assert!(stderr.contains(expected), "{expected} not in {stderr}");
    }
}

#[test]
fn validate_checks_entity_sources_against_the_schema() {
    let output = mandate()
        .arg("validate")
        .env(
            "MANDATE_ENTITIES_SOURCES",
            r#"{ "Brokerage::Usr" = "request" }"#,
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "the schema declares no entity type `Brokerage::Usr` (did you mean `Brokerage::User`?)"
        ),
        "{stderr}"
    );
}

#[test]
fn search_answers_the_brokerage_questions_from_the_command_line() {
    let run = |args: &[&str]| {
        let output = mandate().arg("search").args(args).output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()["results"].clone()
    };
    let withdrawers = run(&[
        "subject",
        "--type",
        "user",
        "--action",
        "withdraw",
        "--resource",
        "account:alice-personal",
        "--context",
        r#"{"destination":{"type":"Brokerage::Destination","id":"alice-bank"},"amount":"500.00"}"#,
    ]);
    let ids: Vec<&str> = withdrawers
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"alice") && ids.contains(&"erin") && ids.contains(&"grace"),
        "{ids:?}"
    );
    assert!(
        !ids.contains(&"carol") && !ids.contains(&"alice-api"),
        "traders and second users never withdraw: {ids:?}"
    );
    let accounts = run(&[
        "resource",
        "--principal",
        "user:grace",
        "--action",
        "place_order",
        "--type",
        "account",
        "--context",
        r#"{"side":"buy","instrument":"AAPL"}"#,
    ]);
    assert_eq!(
        accounts,
        json!([{"type": "account", "id": "alice-personal"}])
    );
    let actions = run(&[
        "action",
        "--principal",
        "user:carol",
        "--resource",
        "account:alice-personal",
        "--context",
        r#"{"side":"buy","instrument":"AAPL"}"#,
    ]);
    assert_eq!(
        actions,
        json!([{"name": "cancel_order"}, {"name": "place_order"}, {"name": "view_account"}])
    );
    // Without the order's context, place_order cannot be decided: it is
    // said to be skipped, on stdout and stderr, never silently omitted.
    let output = mandate()
        .args(["search", "action", "--principal", "user:carol"])
        .args(["--resource", "account:alice-personal"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        answer["results"],
        json!([{"name": "cancel_order"}, {"name": "view_account"}])
    );
    let skipped: Vec<&str> = answer["context"]["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(skipped.contains(&"place_order"), "{answer:#}");
    assert!(!skipped.contains(&"view_account"), "{answer:#}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("`place_order` not decided") && stderr.contains("instrument"),
        "{stderr}"
    );
    let usage = mandate()
        .args([
            "search",
            "subject",
            "--action",
            "withdraw",
            "--resource",
            "account:alice-personal",
        ])
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2), "no --type");
}

/// A typo in a type would be dropped by every replica, only a metric
/// moving: `publish --schema` (or `--config`) refuses it before it
/// connects, naming the type meant; without either it warns.
#[test]
fn publish_checks_types_against_the_schema_before_it_connects() {
    let output = mandate()
        .args([
            "publish",
            "--nats",
            "nats://127.0.0.1:9",
            "--schema",
            "schema",
        ])
        .args(["usr:grace", "account:alice-personal"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr
            .contains("the schema declares no entity type `usr` (did you mean `Brokerage::User`?)"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing published"), "{stderr}");
    assert!(
        !stderr.contains("cannot connect"),
        "refused before connecting: {stderr}"
    );

    let config = tempfile::NamedTempFile::with_suffix(".toml").unwrap();
    std::fs::write(
        config.path(),
        format!(
            "[policy]\ndir = \"{}\"\nschema = \"{}\"\n",
            root().join("policies").display(),
            root().join("schema").display()
        ),
    )
    .unwrap();
    let output = mandate()
        .args(["publish", "--nats", "nats://127.0.0.1:9", "--config"])
        .arg(config.path())
        .arg("Brokerage::Acount::\"x\"")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("(did you mean `Brokerage::Account`?)"),
        "{stderr}"
    );

    // Known types pass the check and only then is the bus tried.
    let output = mandate()
        .args([
            "publish",
            "--nats",
            "nats://127.0.0.1:9",
            "--schema",
            "schema",
        ])
        .arg("user:grace")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot connect"), "{stderr}");
    let output = mandate()
        .args(["publish", "--nats", "nats://127.0.0.1:9", "user:grace"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("warning: types are unchecked"), "{stderr}");
}
