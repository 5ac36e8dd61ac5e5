//! `mandate test` as a gate that fails closed: no case passes while testing
//! nothing (an unknown action, type or entity, or a decision that erred),
//! a suite can carry its own entities and context, and policy coverage is
//! reported and enforced.

use std::path::Path;

use crate::cli::mandate;
use crate::support::root;

/// Runs `mandate test ARGS` from `dir`; (exit code, stdout, stderr).
fn test_in(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let output = mandate()
        .current_dir(dir)
        .arg("test")
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A case per typo (each would pass `expect: deny, reasons: []` on the
/// decision alone), and one whose unknown action is the point.
#[test]
fn a_name_the_schema_or_the_entities_lack_fails_with_the_name_meant() {
    let dir = tempfile::tempdir().unwrap();
    let case = |name: &str,
                principal: &str,
                action: &str,
                resource: &str,
                destination: &str,
                errors: &str| {
        format!(
            "  - name: {name}\n    principal: {principal}\n    action: {action}\n    resource: {resource}\n    context: {{destination: {{__entity: {{type: Brokerage::Destination, id: {destination}}}}}}}\n    expect: deny\n    reasons: []\n{errors}"
        )
    };
    let suite = format!(
        "name: typos\nentities: {}\ncases:\n{}{}{}{}{}",
        root().join("examples/demo/entities.json").display(),
        case(
            "the action",
            "user:bob",
            "withdrw",
            "account:alice-personal",
            "alice-bank",
            ""
        ),
        case(
            "the principal's type",
            "usr:bob",
            "withdraw",
            "account:alice-personal",
            "alice-bank",
            ""
        ),
        case(
            "the resource's id",
            "user:bob",
            "withdraw",
            "account:alice-personl",
            "alice-bank",
            ""
        ),
        case(
            "an entity in the context",
            "user:bob",
            "withdraw",
            "account:alice-personal",
            "alice-bnak",
            ""
        ),
        case(
            "an unknown action is the point",
            "user:bob",
            "close_account",
            "account:alice-personal",
            "alice-bank",
            "    errors: [unknown_action]\n"
        ),
    );
    std::fs::write(dir.path().join("typos.yaml"), suite).unwrap();
    let (code, stdout, _) = test_in(&root(), &[dir.path().join("typos.yaml").to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stdout}");
    for expected in [
        "FAIL  typos / the action",
        "`action`: the schema declares no action `withdrw` (did you mean `withdraw`?)",
        "FAIL  typos / the principal's type",
        "`principal`: the schema declares no entity type `usr` (did you mean `Brokerage::User`?)",
        "FAIL  typos / the resource's id",
        "`resource`: the entities have no Brokerage::Account `alice-personl` (did you mean `alice-personal`?)",
        "FAIL  typos / an entity in the context",
        "`context`: the entities have no Brokerage::Destination `alice-bnak` (did you mean `alice-bank`?)",
        "ok    typos / an unknown action is the point",
        "1 passed, 4 failed",
    ] {
        assert!(stdout.contains(expected), "{expected}\n{stdout}");
    }
}

/// A store that is down denies everything with an error: no deny case may
/// pass on it.
#[test]
fn a_store_that_is_down_passes_no_deny() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("down.yaml"),
        format!(
            "name: down\nentities: {}\ncases:\n  - name: a stranger views\n    principal: user:mallory\n    action: view_account\n    resource: account:alice-personal\n    expect: deny\n    reasons: []\n",
            root().join("examples/demo/entities.json").display()
        ),
    )
    .unwrap();
    // Nothing listens on the discard port: every fetch fails at once.
    let (code, stdout, _) = test_in(
        &root(),
        &[
            "--upstream",
            "http://127.0.0.1:9",
            dir.path().join("down.yaml").to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("FAIL  down / a stranger views"), "{stdout}");
    assert!(stdout.contains("hollow: the decision erred"), "{stdout}");
    assert!(stdout.contains("entity_store_unavailable"), "{stdout}");
}

/// An evaluation error (an overflow, no store involved) denies whatever
/// the policy says: the deny passes only when the case lists the error.
#[test]
fn an_evaluation_error_passes_no_deny_unless_listed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("schema.cedarschema"),
        "entity User;\nentity Thing;\naction act appliesTo { principal: User, resource: Thing, context: { n: Long } };\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("policies/p.cedar"),
        "@id(\"P\")\npermit (principal, action == Action::\"act\", resource) when { context.n + 1 > 0 };\n@id(\"Q\")\nforbid (principal, action == Action::\"act\", resource) when { context.n == 42 };\n",
    )
    .unwrap();
    let case = |name: &str, n: i64, expect: &str| {
        format!(
            "  - name: {name}\n    principal: User::\"u\"\n    action: act\n    resource: Thing::\"t\"\n    context: {{n: {n}}}\n    {expect}\n"
        )
    };
    std::fs::write(
        dir.path().join("overflow.yaml"),
        format!(
            "name: overflow\nentities:\n  - {{uid: {{type: User, id: u}}, attrs: {{}}, parents: []}}\n  - {{uid: {{type: Thing, id: t}}, attrs: {{}}, parents: []}}\ncases:\n{}{}{}",
            case("hollow", i64::MAX, "expect: deny\n    reasons: []"),
            case("listed", i64::MAX, "expect: deny\n    errors: [evaluation_error]"),
            case("allowed", 1, "expect: allow\n    reasons: [P]"),
        ),
    )
    .unwrap();
    let (code, stdout, stderr) = test_in(
        dir.path(),
        &[
            "--policies",
            "policies",
            "--schema",
            "schema.cedarschema",
            "overflow.yaml",
        ],
    );
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("FAIL  overflow / hollow"), "{stdout}");
    assert!(stdout.contains("hollow: the decision erred"), "{stdout}");
    assert!(stdout.contains("evaluation_error"), "{stdout}");
    assert!(stdout.contains("ok    overflow / listed"), "{stdout}");
    assert!(stdout.contains("ok    overflow / allowed"), "{stdout}");
    assert!(stdout.contains("2 passed, 1 failed"), "{stdout}");
    // A run with failures still says its coverage falls short.
    let (code, _, stderr) = test_in(
        dir.path(),
        &[
            "--policies",
            "policies",
            "--schema",
            "schema.cedarschema",
            "--min-coverage",
            "100",
            "overflow.yaml",
        ],
    );
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(
            "policy coverage 50.0% is below --min-coverage 100: no passing case is decided by Q"
        ),
        "{stderr}"
    );
}

const INLINE_SUITE: &str = r#"name: inline world
entities:
  - {uid: {type: Brokerage::User, id: olga}, attrs: {active: true, verified: true, employee: false, marketData: []}, parents: []}
  - {uid: {type: Brokerage::User, id: tom}, attrs: {active: true, verified: true, employee: false, marketData: []}, parents: []}
  - uid: {type: Brokerage::Account, id: olga-personal}
    attrs:
      kind: personal
      owner: {__entity: {type: Brokerage::User, id: olga}}
      marginEnabled: false
      withdrawalApproval: false
      viewers: []
      traders: [{__entity: {type: Brokerage::User, id: tom}}]
      restrictedWithdrawers: []
      withdrawers: []
      administrators: []
      poaUsers: []
      fundingUsers: []
      roleCounts: {viewer: 0, trader: 1, traderRestrictedWithdrawals: 0, traderWithWithdrawals: 0, administrator: 0}
      poaCount: 0
    parents: []
context: {side: buy, instrument: AAPL}
cases:
  - name: a trader buys
    principal: user:tom
    action: place_order
    resource: account:olga-personal
    expect: allow
    reasons: [S2]
  - name: no order goes sideways
    principal: user:tom
    action: place_order
    resource: account:olga-personal
    context: {side: sideways}
    expect: deny
    reasons: [S2.side]
  - name: deactivated in this case alone
    principal: user:tom
    action: place_order
    resource: account:olga-personal
    entities:
      - {uid: {type: Brokerage::User, id: tom}, attrs: {active: false, verified: true, employee: false, marketData: []}, parents: []}
    expect: deny
    reasons: [G2]
  - name: active again in the next case
    principal: user:tom
    action: place_order
    resource: account:olga-personal
    expect: allow
    reasons: [S2]
  - name: a case entity that does not fit the schema
    principal: user:tom
    action: place_order
    resource: account:olga-personal
    entities:
      - {uid: {type: Brokerage::User, id: tom}, attrs: {active: "yes"}, parents: []}
    expect: deny
"#;

/// A suite with its entities and context inline runs from anywhere, a
/// case's own entities count for it alone, and entities that do not fit
/// the schema fail the case with Cedar's reason.
#[test]
fn a_suite_carries_its_own_entities_and_context() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("inline.yaml"), INLINE_SUITE).unwrap();
    let policies = root().join("policies");
    let schema = root().join("schema");
    let (code, stdout, stderr) = test_in(
        dir.path(),
        &[
            "--policies",
            policies.to_str().unwrap(),
            "--schema",
            schema.to_str().unwrap(),
            "inline.yaml",
        ],
    );
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    for expected in [
        "ok    inline world / a trader buys",
        "ok    inline world / no order goes sideways",
        "ok    inline world / deactivated in this case alone",
        "ok    inline world / active again in the next case",
        "FAIL  inline world / a case entity that does not fit the schema",
        "expected entity `Brokerage::User::\"tom\"` to have attribute `employee`",
        "4 passed, 1 failed",
    ] {
        assert!(stdout.contains(expected), "{expected}\n{stdout}");
    }
}

/// The shipped suites decide through every policy of the pack; a run that
/// leaves a policy undetermined fails `--min-coverage`.
#[test]
fn coverage_names_every_policy_and_min_coverage_gates_the_pack() {
    let (code, stdout, stderr) = test_in(&root(), &["--min-coverage", "100"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let line = stdout
        .lines()
        .find(|line| line.starts_with("coverage: "))
        .unwrap_or_else(|| panic!("{stdout}"));
    let policies = load_policy_ids();
    assert_eq!(
        line,
        format!(
            "coverage: {n} of {n} policies (100.0%) determined at least one case",
            n = policies.len()
        )
    );
    for id in &policies {
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{id} "))),
            "{id} has a row: {stdout}"
        );
    }

    // Only F1's cases: most policies determine nothing, and the gate says which.
    let (code, stdout, stderr) = test_in(&root(), &["--filter", "F1", "--min-coverage", "100"]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("is below --min-coverage 100"), "{stderr}");
    assert!(stderr.contains("S2.side"), "{stderr}");
    assert!(stdout.contains("determined no case: "), "{stdout}");

    // JSON: one coverage line after the summary.
    let (code, stdout, _) = test_in(&root(), &["--format", "json", "--coverage"]);
    assert_eq!(code, Some(0));
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["coverage"]["percent"], 100.0, "{last:#}");
    assert_eq!(last["coverage"]["policies"], policies.len());
    assert!(
        last["coverage"]["by_policy"]["F1"]["determined"]
            .as_array()
            .is_some_and(|cases| !cases.is_empty()),
        "{last:#}"
    );
    let evaluated = last["coverage"]["by_policy"]["F1"]["evaluated"]
        .as_array()
        .expect("the cases that evaluated F1, by name");
    for case in last["coverage"]["by_policy"]["F1"]["determined"]
        .as_array()
        .unwrap()
    {
        assert!(
            evaluated.contains(case),
            "a case F1 determined also evaluated it: {case}"
        );
    }
}

fn load_policy_ids() -> Vec<String> {
    let snapshot = mandate::policy::load(&mandate::policy::PolicySources {
        policy_dir: root().join("policies"),
        schema: root().join("schema"),
        default_namespace: None,
    })
    .unwrap();
    snapshot
        .policies()
        .policies()
        .map(|p| p.id().to_string())
        .collect()
}

/// The fenced blocks of a Markdown text, in order: (language, body).
fn fenced_blocks(markdown: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in markdown.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(language)) => open = Some((language.to_owned(), String::new())),
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

/// docs/testing-policies.md's `mandate test` examples run as printed: its
/// suites are written where its commands expect them (`orders.yaml`, and
/// `tests/policies/` for a suite naming `../../examples`), and each
/// transcript's command prints exactly the lines shown.
#[test]
fn the_testing_docs_examples_print_what_they_show() {
    let doc = std::fs::read_to_string(root().join("docs/testing-policies.md")).unwrap();
    let blocks = fenced_blocks(&doc);
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(root().join("examples"), dir.path().join("examples")).unwrap();
    std::fs::create_dir_all(dir.path().join("tests/policies")).unwrap();
    let mut suites = 0;
    for (_, body) in blocks.iter().filter(|(language, _)| language == "yaml") {
        let Some(name) = body
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("name: "))
        else {
            continue;
        };
        let file = if body.contains("../../examples") {
            dir.path().join(format!("tests/policies/{name}.yaml"))
        } else {
            dir.path().join("orders.yaml")
        };
        assert!(
            !file.exists(),
            "two suites of the docs at {}",
            file.display()
        );
        std::fs::write(&file, body).unwrap();
        suites += 1;
    }
    assert_eq!(suites, 2, "the orders suite and the typos suite");
    let (code, stdout, stderr) = test_in(dir.path(), &["orders.yaml"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("4 passed, 0 failed"), "{stdout}");
    let mut transcripts = 0;
    for (_, body) in blocks.iter().filter(|(language, _)| language == "text") {
        let mut lines = body.lines();
        let Some(command) = lines
            .next()
            .and_then(|line| line.strip_prefix("$ mandate test "))
        else {
            continue;
        };
        let args: Vec<&str> = command.split_whitespace().collect();
        let (_, stdout, stderr) = test_in(dir.path(), &args);
        let shown: String = lines.map(|line| format!("{line}\n")).collect();
        assert_eq!(
            stdout, shown,
            "`mandate test {command}` printed otherwise; stderr: {stderr}"
        );
        transcripts += 1;
    }
    assert_eq!(transcripts, 2, "the typos and the coverage transcripts");
}
