//! `mandate replay` over a decision log recorded by the real server: a
//! candidate that drops F1 (Erin's withdrawal to Mallory's wallet becomes
//! an allow) and forbids viewers (Bob's view becomes a deny) flips exactly
//! those two decisions, over the logged entities and over the live store;
//! other lines are skipped or counted unreplayable by cause; `--fail-on`
//! sets the exit code.

use std::path::Path;

use serde_json::{Value, json};

use crate::cli::mandate;
use crate::support::{Server, config_with, post};
use crate::verify::{candidate, disable_f1};

/// Viewers may no longer view: a narrowing.
fn forbid_viewers(text: &str) -> String {
    format!(
        "{text}\n@id(\"X.viewers\")\nforbid (principal, action == Brokerage::Action::\"view_account\", resource)\nwhen {{ resource.viewers.contains(principal) }};\n"
    )
}

fn evaluation(subject: &str, action: &str, context: Value) -> Value {
    json!({"subject": {"type": "user", "id": subject}, "action": {"name": action},
           "resource": {"type": "account", "id": "alice-personal"}, "context": context})
}

fn to(destination: &str) -> Value {
    json!({"destination": {"type": "Brokerage::Destination", "id": destination}, "amount": "10.00"})
}

/// Records the demo's decisions with their entities captured; returns the
/// log's lines.
async fn record(log: &Path) -> Vec<Value> {
    let log_path = log.display().to_string();
    let server = Server::start(config_with(&[
        ("MANDATE_LOG_DECISIONS", "file"),
        ("MANDATE_LOG_DECISIONS_FILE", log_path.as_str()),
        ("MANDATE_LOG_CAPTURE_ENTITIES", "true"),
    ]))
    .await;
    let order = json!({"side": "buy", "instrument": "AAPL"});
    for (request, allowed) in [
        (evaluation("erin", "withdraw", to("alice-bank")), true),
        (evaluation("erin", "withdraw", to("alice-bank")), true),
        (evaluation("erin", "withdraw", to("mallory-wallet")), false),
        (evaluation("bob", "view_account", json!({})), true),
        (evaluation("carol", "place_order", order.clone()), true),
        (evaluation("bob", "place_order", order), false),
    ] {
        let reply = post(&server.url("/access/v1/evaluation"), &request).await;
        assert_eq!(reply.json["decision"], allowed, "{request} {}", reply.json);
    }
    let search = post(
        &server.url("/access/v1/search/resource"),
        &json!({"subject": {"type": "user", "id": "bob"}, "action": {"name": "view_account"},
                "resource": {"type": "account"}}),
    )
    .await;
    assert_eq!(search.status, 200, "{}", search.json);
    server.stop().await;
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().count() >= 7 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 7, "{text}");
    lines
}

struct Replayed {
    code: Option<i32>,
    changed: Vec<Value>,
    summary: Value,
}

fn replay(candidate: &Path, log: &Path, extra: &[&str]) -> Replayed {
    let output = mandate()
        .arg("replay")
        .arg("--candidate")
        .arg(candidate)
        .args(extra)
        .arg(log)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut lines: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let summary = lines
        .pop()
        .unwrap_or_else(|| panic!("no summary: {}", String::from_utf8_lossy(&output.stderr)));
    Replayed {
        code: output.status.code(),
        changed: lines,
        summary: summary["summary"].clone(),
    }
}

fn who(line: &Value) -> (String, String, String) {
    let text = |key: &str| line[key].as_str().unwrap().to_owned();
    (text("change"), text("principal"), text("action"))
}

#[tokio::test]
async fn a_candidate_that_flips_known_decisions_is_reported_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.log");
    let lines = record(&log).await;

    // Replayable lines: versioned, with the versions, the entities read
    // and their digest, the same data digesting the same.
    let decisions: Vec<&Value> = lines.iter().filter(|l| l.get("search").is_none()).collect();
    for line in &decisions {
        assert_eq!(line["v"], 1, "{line}");
        assert!(line["schema_version"].as_str().unwrap().len() > 4, "{line}");
        assert!(
            line["entities_digest"]
                .as_str()
                .unwrap()
                .starts_with("sha256:"),
            "{line}"
        );
        assert!(line["entities"].is_array(), "{line}");
    }
    assert_eq!(
        decisions[0]["entities_digest"],
        decisions[1]["entities_digest"]
    );
    assert_ne!(
        decisions[0]["entities_digest"],
        decisions[2]["entities_digest"]
    );
    let captured: Vec<String> = decisions[0]["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                e["uid"]["type"].as_str().unwrap(),
                e["uid"]["id"].as_str().unwrap()
            )
        })
        .collect();
    for read in [
        "Brokerage::User/erin",
        "Brokerage::Account/alice-personal",
        "Brokerage::Destination/alice-bank",
    ] {
        assert!(captured.contains(&read.to_owned()), "{read}: {captured:?}");
    }

    // Lines no replay can speak for, each with its cause.
    let mut crafted = std::fs::read_to_string(&log).unwrap();
    // A line past the 16 MiB a replay reads of one: counted, skipped to
    // its end, and the lines after it read as they are.
    crafted.push_str(&"x".repeat(17 << 20));
    crafted.push('\n');
    let mut add = |line: Value| {
        crafted.push_str(&line.to_string());
        crafted.push('\n');
    };
    let mut unversioned = decisions[4].clone();
    unversioned.as_object_mut().unwrap().remove("v");
    add(unversioned);
    let mut flipped = decisions[0].clone();
    flipped["decision"] = json!("deny");
    add(flipped);
    let mut masked = decisions[2].clone();
    masked["context"]["amount"] = json!("***");
    add(masked);
    let mut uncaptured = decisions[4].clone();
    uncaptured.as_object_mut().unwrap().remove("entities");
    add(uncaptured);
    // Bob's view, with Bob taken out of the viewers the line captured: the
    // logged entities decide (a deny), not the store's.
    let mut altered = decisions[3].clone();
    for entity in altered["entities"].as_array_mut().unwrap() {
        if entity["uid"]["id"] == "alice-personal" {
            entity["attrs"]["viewers"] = json!([]);
        }
    }
    add(altered);
    crafted.push_str("not a decision line\n");
    let crafted_log = dir.path().join("crafted.log");
    std::fs::write(&crafted_log, crafted).unwrap();

    let both = candidate("funding.cedar", disable_f1);
    std::fs::write(
        both.path().join("roles.cedar"),
        forbid_viewers(&std::fs::read_to_string(both.path().join("roles.cedar")).unwrap()),
    )
    .unwrap();

    let logged = replay(both.path(), &crafted_log, &[]);
    assert_eq!(
        logged.code,
        Some(1),
        "an escalation fails: {:#}",
        logged.summary
    );
    let mut changes: Vec<_> = logged.changed.iter().map(who).collect();
    changes.sort();
    assert_eq!(
        changes,
        [
            (
                "allow_to_deny".to_owned(),
                r#"Brokerage::User::"bob""#.to_owned(),
                "view_account".to_owned()
            ),
            (
                "deny_to_allow".to_owned(),
                r#"Brokerage::User::"erin""#.to_owned(),
                "withdraw".to_owned()
            ),
        ]
    );
    let escalation = logged
        .changed
        .iter()
        .find(|c| c["change"] == "deny_to_allow")
        .unwrap();
    assert_eq!(escalation["request_id"], decisions[2]["request_id"]);
    assert_eq!(
        escalation["baseline_reasons"],
        json!(["F1"]),
        "{escalation}"
    );
    let narrowing = logged
        .changed
        .iter()
        .find(|c| c["change"] == "allow_to_deny")
        .unwrap();
    assert_eq!(
        narrowing["candidate_reasons"],
        json!(["X.viewers"]),
        "{narrowing}"
    );
    let summary = &logged.summary;
    assert_eq!(summary["records"], 13, "{summary:#}");
    assert_eq!(summary["skipped"], 1, "the search's line: {summary:#}");
    assert_eq!(summary["replayed"], 6, "{summary:#}");
    assert_eq!(summary["unchanged"], 4, "{summary:#}");
    assert_eq!(summary["allow_to_deny"], 1, "{summary:#}");
    assert_eq!(summary["deny_to_allow"], 1, "{summary:#}");
    assert_eq!(
        summary["unreplayable"],
        json!({"baseline_differs": 2, "malformed": 2, "masked": 1, "no_entities": 1, "unversioned": 1}),
        "{summary:#}"
    );
    assert_eq!(
        summary["by_action"],
        json!({"view_account": {"allow_to_deny": 1, "deny_to_allow": 0},
               "withdraw": {"allow_to_deny": 0, "deny_to_allow": 1}}),
        "{summary:#}"
    );
    assert_eq!(summary["by_policy"]["X.viewers"], 1, "{summary:#}");

    // Over the store's entities now: the uncaptured line replays, and the
    // altered one is Bob's view again (the store still lists him).
    let live = replay(
        both.path(),
        &crafted_log,
        &["--entities", "live", "--fail-on", "none"],
    );
    assert_eq!(live.code, Some(0), "{:#}", live.summary);
    assert_eq!(live.summary["deny_to_allow"], 1, "{:#}", live.summary);
    assert_eq!(live.summary["allow_to_deny"], 2, "{:#}", live.summary);
    assert_eq!(live.summary["replayed"], 8, "{:#}", live.summary);
    assert_eq!(
        live.summary["unreplayable"],
        json!({"baseline_differs": 1, "malformed": 2, "masked": 1, "unversioned": 1}),
        "{:#}",
        live.summary
    );

    // A change that only takes permissions away fails only `--fail-on any`.
    let narrowing = candidate("roles.cedar", forbid_viewers);
    let escalation_only = replay(narrowing.path(), &log, &[]);
    assert_eq!(
        escalation_only.code,
        Some(0),
        "{:#}",
        escalation_only.summary
    );
    assert_eq!(escalation_only.changed.len(), 1);
    let any = replay(narrowing.path(), &log, &["--fail-on", "any"]);
    assert_eq!(any.code, Some(1), "{:#}", any.summary);

    // A candidate policy that errors (an overflow) denies, fail closed; the
    // change is put down to the error, not to "no permit".
    let erring = candidate("roles.cedar", |text| {
        format!(
            "{text}\n@id(\"X.overflow\")\nforbid (principal, action == Brokerage::Action::\"view_account\", resource)\nwhen {{ resource.poaCount + 9223372036854775807 > 0 }};\n"
        )
    });
    let errs = replay(erring.path(), &log, &["--fail-on", "none"]);
    assert_eq!(errs.code, Some(0), "{:#}", errs.summary);
    assert_eq!(errs.changed.len(), 1, "{:#?}", errs.changed);
    assert_eq!(errs.changed[0]["change"], "allow_to_deny");
    assert_eq!(
        errs.changed[0]["candidate_errors"],
        json!(["evaluation_error"])
    );
    assert_eq!(
        errs.summary["by_policy"],
        json!({"(error in X.overflow)": 1}),
        "{:#}",
        errs.summary
    );

    // The shipped pack as its own candidate changes nothing.
    let same = replay(
        &crate::support::root().join("policies"),
        &log,
        &["--fail-on", "any"],
    );
    assert_eq!(same.code, Some(0), "{:#}", same.summary);
    assert_eq!(same.summary["replayed"], 6);
    assert_eq!(same.summary["unchanged"], 6);
}

#[test]
fn a_candidate_that_does_not_load_or_a_missing_log_is_a_usage_error() {
    let broken = tempfile::tempdir().unwrap();
    std::fs::write(
        broken.path().join("bad.cedar"),
        "permit (principal, action, resource) when {",
    )
    .unwrap();
    let output = mandate()
        .args(["replay", "--candidate"])
        .arg(broken.path())
        .arg("/nonexistent.log")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.cedar"),
        "Cedar's diagnostics name the file: {stderr}"
    );
    let output = mandate()
        .args(["replay", "--candidate", "policies", "/nonexistent.log"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent.log"));
}

/// A gate that replayed nothing does not pass: with the default log
/// settings every line is `no_entities`, and `--fail-on escalation` would
/// otherwise let any candidate through (one deleting F1 included).
#[tokio::test]
async fn a_replay_that_replayed_nothing_is_no_pass() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.jsonl");
    let log_path = log.display().to_string();
    let server = Server::start(config_with(&[
        ("MANDATE_LOG_DECISIONS", "file"),
        ("MANDATE_LOG_DECISIONS_FILE", log_path.as_str()),
    ]))
    .await;
    let reply = post(
        &server.url("/access/v1/evaluation"),
        &evaluation("erin", "withdraw", to("mallory-wallet")),
    )
    .await;
    assert_eq!(reply.json["decision"], false);
    server.stop().await;
    for _ in 0..100 {
        if std::fs::read_to_string(&log).is_ok_and(|text| !text.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let without_f1 = candidate("funding.cedar", disable_f1);
    let output = mandate()
        .arg("replay")
        .arg("--candidate")
        .arg(without_f1.path())
        .arg(&log)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("nothing to judge"), "{stderr}");
    assert!(stderr.contains("--entities live"), "{stderr}");
    assert!(stderr.contains("log.capture_entities"), "{stderr}");
    // Over the store's entities now, the same log judges the candidate.
    let live = replay(without_f1.path(), &log, &["--entities", "live"]);
    assert_eq!(live.summary["replayed"], 1, "{:#}", live.summary);
    // Report-only asks for no judgement.
    let report = replay(without_f1.path(), &log, &["--fail-on", "none"]);
    assert_eq!(report.code, Some(0));
}

/// With `log.mask` hiding the destination, every withdrawal line is
/// `masked` and only the others replay: `--fail-on escalation` alone judges
/// the rest and passes a candidate that deletes F1, while
/// `--fail-on escalation,unreplayable` refuses to let what it could not
/// check through, and says why.
#[tokio::test]
async fn unreplayable_lines_fail_the_gate_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.jsonl");
    let log_path = log.display().to_string();
    let server = Server::start(config_with(&[
        ("MANDATE_LOG_DECISIONS", "file"),
        ("MANDATE_LOG_DECISIONS_FILE", log_path.as_str()),
        ("MANDATE_LOG_CAPTURE_ENTITIES", "true"),
        ("MANDATE_LOG_MASK", "[\"destination\"]"),
    ]))
    .await;
    for (request, allowed) in [
        (evaluation("erin", "withdraw", to("mallory-wallet")), false),
        (evaluation("bob", "view_account", json!({})), true),
    ] {
        let reply = post(&server.url("/access/v1/evaluation"), &request).await;
        assert_eq!(reply.json["decision"], allowed, "{}", reply.json);
    }
    server.stop().await;
    for _ in 0..100 {
        if std::fs::read_to_string(&log).is_ok_and(|text| text.lines().count() >= 2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let without_f1 = candidate("funding.cedar", disable_f1);
    let lenient = replay(without_f1.path(), &log, &["--fail-on", "escalation"]);
    assert_eq!(lenient.summary["replayed"], 1, "{:#}", lenient.summary);
    assert_eq!(
        lenient.summary["unreplayable"]["masked"], 1,
        "{:#}",
        lenient.summary
    );
    assert_eq!(
        lenient.code,
        Some(0),
        "escalation alone judged the view only"
    );

    let output = mandate()
        .arg("replay")
        .arg("--candidate")
        .arg(without_f1.path())
        .args(["--fail-on", "escalation,unreplayable"])
        .arg(&log)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--fail-on unreplayable"), "{stderr}");
    assert!(stderr.contains("masked: 1"), "{stderr}");

    // `none` reports only: it takes no other value.
    let output = mandate()
        .arg("replay")
        .arg("--candidate")
        .arg(without_f1.path())
        .args(["--fail-on", "none,escalation"])
        .arg(&log)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}
