//! `mandate verify` with the real cvc5 (Debian's `cvc5`; `.ci/run` installs
//! it): the shipped pack's invariants proved; a pack with F1 removed
//! violates the destination invariant, and the counterexample, fed to
//! `mandate check`, reproduces the wrong allow the shipped pack denies; no
//! solver is a usage error, never a silent pass.

use std::path::Path;

use crate::cli::mandate;
use crate::support::{binary, root};

fn verify(policies: &Path, out: &Path) -> (Option<i32>, Vec<serde_json::Value>, String) {
    let output = mandate()
        .arg("verify")
        .arg("--policies")
        .arg(policies)
        .arg("--schema")
        .arg(root().join("schema"))
        .arg("--invariants")
        .arg(root().join("policies/invariants.toml"))
        .arg("--out")
        .arg(out)
        .args(["--format", "json"])
        .output()
        .unwrap();
    let reports = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    (
        output.status.code(),
        reports,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// F1 (withdrawals only to the account's own destinations) made inert.
pub(crate) fn disable_f1(text: &str) -> String {
    text.replace(
        "@id(\"F1\")\nforbid (principal, action == Brokerage::Action::\"withdraw\", resource)",
        "@id(\"F1\")\nforbid (principal, action == Brokerage::Action::\"withdraw\", resource)\nwhen { false }",
    )
}

#[test]
fn every_invariant_of_the_shipped_pack_is_proved() {
    let out = tempfile::tempdir().unwrap();
    let (code, reports, stderr) = verify(&root().join("policies"), out.path());
    assert_eq!(code, Some(0), "{reports:#?}\n{stderr}");
    let ids: Vec<&str> = reports.iter().map(|r| r["id"].as_str().unwrap()).collect();
    for expected in [
        "never-errors",
        "second-users-never-fund",
        "withdrawals-only-to-the-owners-destinations",
        "inactive-logins-get-nothing",
        "user-management-never-targets-the-owner",
        "market-data-stays-with-its-login",
        "forbid-reachable:F1",
        "forbid-reachable:F4",
    ] {
        assert!(ids.contains(&expected), "{expected} missing: {ids:?}");
    }
    for report in &reports {
        assert_eq!(report["outcome"], "proved", "{report:#}");
        assert!(report["request_types"].as_u64().unwrap() >= 1, "{report:#}");
    }
}

#[test]
fn a_pack_without_the_destination_check_is_caught_and_the_counterexample_reproduces_it() {
    let pack = candidate("funding.cedar", disable_f1);
    let out = tempfile::tempdir().unwrap();
    let (code, reports, stderr) = verify(pack.path(), out.path());
    assert_eq!(code, Some(1), "{reports:#?}\n{stderr}");
    let violated: Vec<&serde_json::Value> = reports
        .iter()
        .filter(|r| r["outcome"] == "violated")
        .collect();
    let destination = violated
        .iter()
        .find(|r| r["id"] == "withdrawals-only-to-the-owners-destinations")
        .unwrap_or_else(|| panic!("{violated:#?}"));
    let example = &destination["counterexample"];
    assert_eq!(example["confirmed"], true, "{example:#}");
    assert!(
        example["action"]
            .as_str()
            .unwrap()
            .ends_with("\"withdraw\""),
        "{example:#}"
    );
    for other in ["second-users-never-fund", "inactive-logins-get-nothing"] {
        let report = reports.iter().find(|r| r["id"] == other).unwrap();
        assert_eq!(report["outcome"], "proved", "{report:#}");
    }

    // The counterexample as `mandate check` commands: the mutated pack
    // allows it, the shipped pack denies it.
    let entities = out
        .path()
        .join("withdrawals-only-to-the-owners-destinations.entities.json");
    assert!(entities.exists());
    let check = |policies: &Path| {
        mandate()
            .arg("check")
            .arg("--policies")
            .arg(policies)
            .arg("--schema")
            .arg(root().join("schema"))
            .arg("--entities")
            .arg(&entities)
            .args(["--principal", example["principal"].as_str().unwrap()])
            .args(["--action", "withdraw"])
            .args(["--resource", example["resource"].as_str().unwrap()])
            .args(["--context", &example["context"].to_string()])
            .output()
            .unwrap()
    };
    let wrong = check(pack.path());
    assert_eq!(
        wrong.status.code(),
        Some(0),
        "the mutated pack allows it: {}{}",
        String::from_utf8_lossy(&wrong.stdout),
        String::from_utf8_lossy(&wrong.stderr)
    );
    let right = check(&root().join("policies"));
    assert_eq!(
        right.status.code(),
        Some(1),
        "the shipped pack denies it: {}{}",
        String::from_utf8_lossy(&right.stdout),
        String::from_utf8_lossy(&right.stderr)
    );
}

#[test]
fn without_a_solver_verify_is_a_usage_error_never_a_pass() {
    let output = mandate()
        .arg("verify")
        .env("CVC5", "/nonexistent/cvc5")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cvc5"), "{stderr}");
    assert!(output.stdout.is_empty(), "no result printed");
}

/// A copy of the shipped policies with `edit` applied to one file.
pub(crate) fn candidate(file: &str, edit: impl Fn(&str) -> String) -> tempfile::TempDir {
    let pack = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(root().join("policies")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cedar") {
            std::fs::copy(&path, pack.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let target = pack.path().join(file);
    let text = std::fs::read_to_string(&target).unwrap();
    let edited = edit(&text);
    assert_ne!(text, edited, "the edit applies");
    std::fs::write(&target, edited).unwrap();
    pack
}

fn against(candidate: &Path) -> (Option<i32>, Vec<serde_json::Value>) {
    let out = tempfile::tempdir().unwrap();
    let output = mandate()
        .arg("verify")
        .arg("--policies")
        .arg(candidate)
        .arg("--schema")
        .arg(root().join("schema"))
        .arg("--against")
        .arg(root().join("policies"))
        .arg("--out")
        .arg(out.path())
        .args(["--format", "json"])
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    (output.status.code(), lines)
}

fn changed(comparisons: &[serde_json::Value]) -> Vec<(String, String)> {
    comparisons
        .iter()
        .filter(|c| c["change"] != "equivalent")
        .map(|c| {
            (
                c["request_type"].as_str().unwrap().to_owned(),
                c["change"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn against_tells_a_widening_a_narrowing_and_a_no_op_refactor_apart() {
    // Widening: F1 no longer checks the destination.
    let widening = candidate("funding.cedar", disable_f1);
    let (code, comparisons) = against(widening.path());
    assert_eq!(code, Some(1), "{comparisons:#?}");
    let diff = changed(&comparisons);
    assert_eq!(diff.len(), 1, "{diff:?}");
    assert!(
        diff[0].0.contains("\"withdraw\"") && diff[0].1 == "more_allows",
        "{diff:?}"
    );
    let granted = comparisons
        .iter()
        .find(|c| c["change"] == "more_allows")
        .unwrap();
    assert_eq!(granted["counterexample"]["confirmed"], true, "{granted:#}");
    assert_eq!(comparisons.len(), 18, "every request type of the schema");

    // Narrowing: employees may no longer view accounts.
    let narrowing = candidate("general.cedar", |text| {
        format!(
            "{text}\n@id(\"X.employees\")\nforbid (principal, action == Brokerage::Action::\"view_account\", resource)\nwhen {{ principal.employee }};\n"
        )
    });
    let (code, comparisons) = against(narrowing.path());
    assert_eq!(code, Some(0), "{comparisons:#?}");
    let diff = changed(&comparisons);
    assert_eq!(diff.len(), 1, "{diff:?}");
    assert!(
        diff[0].0.contains("\"view_account\"") && diff[0].1 == "fewer_allows",
        "{diff:?}"
    );

    // A refactor: S1 split into two permits decides exactly as before.
    let refactor = candidate("roles.cedar", |text| {
        text.replace(
            "  resource.viewers.contains(principal) ||\n  resource.traders.contains(principal) ||\n  resource.restrictedWithdrawers.contains(principal) ||\n  resource.withdrawers.contains(principal) ||\n  resource.administrators.contains(principal)\n};",
            "  resource.viewers.contains(principal) || resource.traders.contains(principal)\n};\n\n@id(\"S1.funding\")\npermit (principal, action == Brokerage::Action::\"view_account\", resource)\nwhen {\n  resource.restrictedWithdrawers.contains(principal) ||\n  resource.withdrawers.contains(principal) ||\n  resource.administrators.contains(principal)\n};",
        )
    });
    let (code, comparisons) = against(refactor.path());
    assert_eq!(code, Some(0), "{comparisons:#?}");
    assert!(changed(&comparisons).is_empty(), "{comparisons:#?}");
}

/// Runs a printed command line (`mandate …`) as pasted into a shell in the
/// project's root; its exit code and output.
fn pasted(line: &str) -> (Option<i32>, String) {
    let rest = line.trim().strip_prefix("mandate ").unwrap();
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("\"$BIN\" {rest}"))
        .env("BIN", binary())
        .env("NO_COLOR", "1")
        .current_dir(root())
        .output()
        .unwrap();
    (
        output.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// The counterexample as printed: the `mandate check` line, pasted, gives
/// the mutated pack's wrong allow (the pack it names), with readable ids;
/// the suite, entities inline, fails over the mutated pack and passes over
/// the shipped one.
#[test]
fn a_printed_counterexample_reproduces_when_pasted() {
    let pack = candidate("funding.cedar", disable_f1);
    let out = tempfile::tempdir().unwrap();
    let output = mandate()
        .arg("verify")
        .arg("--policies")
        .arg(pack.path())
        .arg("--schema")
        .arg("schema")
        .arg("--invariants")
        .arg("policies/invariants.toml")
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let block = stdout
        .split("VIOLATED withdrawals-only-to-the-owners-destinations")
        .nth(1)
        .unwrap_or_else(|| panic!("{stdout}"));
    let check = block
        .lines()
        .find(|l| l.trim_start().starts_with("mandate check "))
        .unwrap();
    assert!(
        check.contains("--principal 'Brokerage::User::\"user-1\"'"),
        "{check}"
    );
    assert!(!check.contains("\"\"'"), "no empty id: {check}");
    let (code, said) = pasted(check);
    assert_eq!(code, Some(0), "the mutated pack allows it: {said}");
    let shipped_check = check.replace(
        &format!("--policies '{}'", pack.path().display()),
        "--policies 'policies'",
    );
    assert_ne!(shipped_check, check);
    let (code, said) = pasted(&shipped_check);
    assert_eq!(code, Some(1), "the shipped pack denies it: {said}");

    assert!(
        block.contains("    entities:\n      - {"),
        "entities inline: {block}"
    );
    let test = block
        .lines()
        .find(|l| l.trim_start().starts_with("mandate test "))
        .unwrap();
    let (code, said) = pasted(test);
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("decision: expected Deny, got Allow"),
        "{said}"
    );
    let shipped_test = test.replace(
        &format!("--policies '{}'", pack.path().display()),
        "--policies 'policies'",
    );
    let (code, said) = pasted(&shipped_test);
    assert_eq!(code, Some(0), "the shipped pack passes it: {said}");
}

/// Cedar skips an erroring policy; Mandate denies. A baseline whose forbid
/// errs on some accounts denies them in Mandate, and a candidate without
/// it allows them, yet the two are equivalent to the solver: `--against`
/// must say `unknown` (exit 3), naming the policy, never `equivalent`.
#[test]
fn against_never_says_equivalent_when_a_policy_can_error() {
    let erring = |text: &str| {
        format!(
            "{text}\n@id(\"X.overflow\")\nforbid (principal, action == Brokerage::Action::\"view_account\", resource)\nwhen {{ resource.poaCount * 9223372036854775807 > 9223372036854775807 }};\n"
        )
    };
    let baseline = candidate("general.cedar", erring);
    for (policies, against, which) in [
        (
            root().join("policies"),
            baseline.path().to_owned(),
            "of the baseline",
        ),
        (
            baseline.path().to_owned(),
            root().join("policies"),
            "of the candidate",
        ),
    ] {
        let out = tempfile::tempdir().unwrap();
        let output = mandate()
            .arg("verify")
            .arg("--policies")
            .arg(&policies)
            .arg("--schema")
            .arg("schema")
            .arg("--against")
            .arg(&against)
            .arg("--out")
            .arg(out.path())
            .args(["--format", "json"])
            .output()
            .unwrap();
        let comparisons: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(output.status.code(), Some(3), "{comparisons:#?}");
        let view = comparisons
            .iter()
            .find(|c| {
                c["request_type"]
                    .as_str()
                    .unwrap()
                    .contains("\"view_account\"")
            })
            .unwrap();
        assert_eq!(view["change"], "unknown", "{view:#}");
        let reason = view["reason"].as_str().unwrap();
        assert!(
            reason.contains(&format!("`X.overflow` {which}")),
            "{reason}"
        );
        for other in &comparisons {
            if other != view {
                assert_eq!(other["change"], "equivalent", "{other:#}");
            }
        }
    }

    // Mandate's answers do differ: an account with two POA users.
    let entities = tempfile::NamedTempFile::new().unwrap();
    let mut data: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("examples/demo/entities.json")).unwrap(),
    )
    .unwrap();
    for entity in data.as_array_mut().unwrap() {
        if entity["uid"]["id"] == "alice-personal" {
            entity["attrs"]["poaCount"] = serde_json::json!(2);
        }
    }
    std::fs::write(entities.path(), data.to_string()).unwrap();
    let check = |policies: &Path| {
        mandate()
            .arg("check")
            .arg("--policies")
            .arg(policies)
            .arg("--schema")
            .arg("schema")
            .arg("--entities")
            .arg(entities.path())
            .args(["--principal", "user:alice", "--action", "view_account"])
            .args(["--resource", "account:alice-personal"])
            .output()
            .unwrap()
            .status
            .code()
    };
    assert_eq!(check(&root().join("policies")), Some(0));
    assert_eq!(check(baseline.path()), Some(1), "the erring forbid denies");
}
