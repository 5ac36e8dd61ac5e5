//! The brokerage policy pack: every rule of `policies/RULES.md` has policies and test
//! cases, every policy names a rule, and `mandate test` passes every suite.

use std::process::Command;

use mandate::policy::{PolicySources, load};
use mandate::tools::suite::{self, Expect};

use crate::support::{binary, root};

/// The rule ids of `policies/RULES.md` (the domain design's rules), in order.
const RULES: &[&str] = &[
    "G1", "G2", "G3", "G4", "O1", "S1", "S2", "S3", "S4", "S5", "F1", "F2", "F3", "F4", "F5", "P1",
    "P2", "U1", "U2", "U3", "U4", "U5", "U6", "U7", "U8", "U9", "A1", "A2", "A3", "A4", "M1",
];

/// Rules the engine enforces rather than a policy: G1, deny unless a rule
/// allows and deny on any error.
const ENGINE_RULES: &[&str] = &["G1"];

fn rule_of(policy_id: &str) -> &str {
    policy_id.split('.').next().unwrap_or(policy_id)
}

/// The ids of the rules section of a rule text (`- **G1** …` items).
fn rule_ids(text: &str) -> Vec<&str> {
    let rules_section = text.split("## Clarifications").next().unwrap_or(text);
    rules_section
        .split("- **")
        .skip(1)
        .filter_map(|chunk| chunk.split_once("**").map(|(id, _)| id))
        .filter(|id| id.len() == 2)
        .collect()
}

#[test]
fn the_rule_text_in_the_repository_lists_exactly_the_rules() {
    let text = std::fs::read_to_string(root().join("policies/RULES.md")).unwrap();
    assert_eq!(
        rule_ids(&text),
        RULES,
        "policies/RULES.md changed: update RULES and the pack"
    );
}

#[test]
fn the_rule_text_is_the_domain_designs_when_the_design_is_beside_the_project() {
    let domain = root().join("../shared/design/domain.md");
    let Ok(design) = std::fs::read_to_string(&domain) else {
        // Developers have shared/ beside the project; a bare clone does not,
        // and then policies/RULES.md is the rule text (checked above).
        eprintln!(
            "note: {} not found; RULES.md stands alone",
            domain.display()
        );
        return;
    };
    let copy = std::fs::read_to_string(root().join("policies/RULES.md")).unwrap();
    let from = |text: &str| {
        text.split_once("## Who is who on an account")
            .map(|(_, rest)| rest.to_owned())
    };
    assert_eq!(
        from(&copy),
        from(&design),
        "domain.md's rules changed: copy them into policies/RULES.md"
    );
}

#[test]
fn every_policy_names_a_rule_and_every_rule_has_a_policy() {
    let snapshot = load(&PolicySources {
        policy_dir: root().join("policies"),
        schema: root().join("schema"),
        default_namespace: None,
    })
    .unwrap();
    let ids: Vec<String> = snapshot
        .policies()
        .policies()
        .map(|p| p.id().to_string())
        .collect();
    for id in &ids {
        assert!(
            RULES.contains(&rule_of(id)),
            "policy `@id(\"{id}\")` names no rule of RULES.md"
        );
    }
    for rule in RULES.iter().filter(|r| !ENGINE_RULES.contains(r)) {
        assert!(
            ids.iter().any(|id| rule_of(id) == *rule),
            "rule {rule} has no policy"
        );
    }
}

#[test]
fn every_rule_has_cases_that_allow_and_cases_that_deny() {
    let files = suite::discover(&root().join("tests/policies")).unwrap();
    let mut cases = Vec::new();
    for file in files {
        cases.extend(suite::read(&file).unwrap().cases);
    }
    assert!(cases.len() >= 120, "only {} cases", cases.len());
    for case in &cases {
        let rule = case
            .rule
            .as_deref()
            .unwrap_or_else(|| panic!("case `{}` names no rule", case.name));
        assert!(
            RULES.contains(&rule),
            "case `{}` names `{rule}`, not a rule",
            case.name
        );
    }
    for rule in RULES {
        let tagged = |expect| {
            cases
                .iter()
                .any(|c| c.rule.as_deref() == Some(*rule) && c.expect == expect)
        };
        assert!(tagged(Expect::Allow), "rule {rule} has no case that allows");
        assert!(tagged(Expect::Deny), "rule {rule} has no case that denies");
    }
}

#[test]
fn mandate_test_passes_every_suite_of_the_pack() {
    let output = Command::new(binary())
        .current_dir(root())
        .arg("test")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().unwrap();
    let (passed, failed) = last.split_once(" passed, ").unwrap();
    assert!(passed.parse::<usize>().unwrap() >= 120, "{last}");
    assert_eq!(failed, "0 failed");
}

#[test]
fn mandate_test_shows_the_difference_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = root().join("examples/demo/entities.json");
    std::fs::write(
        dir.path().join("wrong.yaml"),
        format!(
            "name: wrong on purpose\nentities: {}\ncases:\n  - name: a viewer trades\n    principal: user:bob\n    action: cancel_order\n    resource: account:alice-personal\n    expect: allow\n    reasons: [S1]\n  - name: a viewer views\n    principal: user:bob\n    action: view_account\n    resource: account:alice-personal\n    expect: allow\n",
            fixture.display()
        ),
    )
    .unwrap();
    let output = Command::new(binary())
        .current_dir(root())
        .arg("test")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let at = dir.path().join("wrong.yaml");
    assert!(
        stdout.contains(&format!(
            "FAIL  wrong on purpose / a viewer trades ({}:4)",
            at.display()
        )),
        "the file and line of the failing case: {stdout}"
    );
    assert!(
        stdout.contains("decision: expected Allow, got Deny"),
        "{stdout}"
    );
    assert!(
        stdout.contains("reasons:  expected [\"S1\"], got []"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok    wrong on purpose / a viewer views"),
        "{stdout}"
    );
    assert_eq!(stdout.lines().last(), Some("1 passed, 1 failed"));

    // --filter runs only the matching cases; --format json and junit
    // report the same outcome to scripts and CI.
    let run = |args: &[&str]| {
        let output = Command::new(binary())
            .current_dir(root())
            .arg("test")
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (code, stdout) = run(&["--filter", "VIEWS"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(
        stdout.lines().last(),
        Some("1 passed, 0 failed"),
        "{stdout}"
    );
    let (code, _) = run(&["--filter", "no such case"]);
    assert_eq!(code, Some(1), "nothing ran is not a pass");

    let (code, stdout) = run(&["--format", "json"]);
    assert_eq!(code, Some(1));
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(lines[0]["outcome"], "fail");
    assert_eq!(lines[0]["line"], 4);
    assert_eq!(lines[1]["outcome"], "pass");
    assert_eq!(lines[1]["line"], 10);
    assert_eq!(lines[2], serde_json::json!({"passed": 1, "failed": 1}));

    let (code, xml) = run(&["--format", "junit"]);
    assert_eq!(code, Some(1));
    assert!(
        xml.contains(r#"<testsuites name="mandate test" tests="2" failures="1">"#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<failure message="decision: expected Allow, got Deny"#),
        "{xml}"
    );
}

/// A deny that errs tests no policy: a typo in the action (`withdrw`) or
/// the principal's id denies with an error whatever the policies say, so
/// such a case fails unless it lists the errors it is about.
#[test]
fn a_hollow_deny_fails_and_an_expected_error_passes() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = root().join("examples/demo/entities.json");
    let case = |name: &str, principal: &str, action: &str, errors: &str| {
        format!(
            "  - name: {name}\n    principal: {principal}\n    action: {action}\n    resource: account:alice-personal\n    context: {{destination: {{__entity: {{type: Brokerage::Destination, id: alice-bank}}}}, amount: \"10.00\"}}\n    expect: deny\n    reasons: []\n{errors}"
        )
    };
    std::fs::write(
        dir.path().join("hollow.yaml"),
        format!(
            "name: hollow\nentities: {}\ncases:\n{}{}{}",
            fixture.display(),
            case("a typo in the action", "user:bob", "withdrw", ""),
            case("a typo in the principal", "user:bbo", "withdraw", ""),
            case(
                "an unknown user is the point",
                "user:nobody",
                "withdraw",
                "    errors: [entity_not_found]\n"
            ),
        ),
    )
    .unwrap();
    let output = Command::new(binary())
        .current_dir(root())
        .arg("test")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL  hollow / a typo in the action"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL  hollow / a typo in the principal"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok    hollow / an unknown user is the point"),
        "{stdout}"
    );
    assert!(
        stdout.contains("the schema declares no action `withdrw` (did you mean `withdraw`?)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("the entities have no Brokerage::User `bbo` (did you mean `bob`?)"),
        "{stdout}"
    );
    assert!(stdout.contains("1 passed, 2 failed"), "{stdout}");
}
