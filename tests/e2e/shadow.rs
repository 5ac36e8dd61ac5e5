//! Shadow mode: a candidate pack without F1's destination check decides
//! beside the shipped one. Erin's withdrawal to Mallory's wallet stays
//! denied (the shadow is never enforced), and the divergence is counted
//! and logged; a decision both packs agree on is counted as decided only.

use serde_json::{Value, json};

use crate::operations::{metric, scrape};
use crate::support::{Server, config_with, post};
use crate::verify::{candidate, disable_f1};

fn withdrawal(destination: &str) -> Value {
    json!({"subject": {"type": "user", "id": "erin"}, "action": {"name": "withdraw"},
           "resource": {"type": "account", "id": "alice-personal"},
           "context": {"destination": {"type": "Brokerage::Destination", "id": destination}, "amount": "10.00"}})
}

#[tokio::test]
async fn a_shadow_pack_is_never_enforced_and_its_divergences_are_counted_and_logged() {
    let candidate = candidate("funding.cedar", disable_f1);
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("decisions.log");
    let (candidate_dir, log_path) = (
        candidate.path().display().to_string(),
        log.display().to_string(),
    );
    let server = Server::start(config_with(&[
        ("MANDATE_POLICY_SHADOW_DIR", candidate_dir.as_str()),
        ("MANDATE_LOG_DECISIONS", "file"),
        ("MANDATE_LOG_DECISIONS_FILE", log_path.as_str()),
    ]))
    .await;
    let diverged = r#"mandate_shadow_divergence_total{direction="deny_to_allow"}"#;
    let decided = "mandate_shadow_decisions_total";
    let before = scrape(&server.url("/metrics")).await;

    let agreed = post(
        &server.url("/access/v1/evaluation"),
        &withdrawal("alice-bank"),
    )
    .await;
    assert_eq!(agreed.json["decision"], true, "{}", agreed.json);
    let denied = post(
        &server.url("/access/v1/evaluation"),
        &withdrawal("mallory-wallet"),
    )
    .await;
    assert_eq!(
        denied.json["decision"], false,
        "the live pack decides; the shadow is never enforced: {}",
        denied.json
    );

    let mut after = String::new();
    for _ in 0..100 {
        after = scrape(&server.url("/metrics")).await;
        if metric(&after, decided) >= metric(&before, decided) + 2.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        metric(&after, decided) >= metric(&before, decided) + 2.0,
        "{after}"
    );
    assert!(
        metric(&after, diverged) >= metric(&before, diverged) + 1.0,
        "{after}"
    );

    let mut divergences = Vec::new();
    for _ in 0..100 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        divergences = text
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .filter(|line| line.get("shadow").is_some())
            .collect();
        if !divergences.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        divergences.len(),
        1,
        "only the withdrawal to Mallory's wallet: {divergences:?}"
    );
    let line = &divergences[0];
    assert_eq!(line["shadow"], "deny_to_allow");
    assert_eq!(line["action"], "withdraw");
    assert_eq!(line["principal"], r#"Brokerage::User::"erin""#);
    assert_ne!(
        line["live_policy_version"],
        line["candidate_policy_version"]
    );
    assert!(
        !line["candidate_reasons"].as_array().unwrap().is_empty(),
        "{line}"
    );
}
