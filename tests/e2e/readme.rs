//! The README's and the docs' examples are true: each `curl` prints what
//! the page says, the gateway configurations shown are the shipped ones, and
//! the configuration reference is what `mandate settings` prints.

use serde_json::Value;

use crate::support::{Server, post_raw, root};

/// The pages whose `curl` examples ask the shipped pack and demo data.
const DEMO_PAGES: [&str; 2] = ["README.md", "docs/api.md"];

/// Every example of the pages that ask the shipped pack and demo data.
pub fn examples() -> Vec<(String, String, Value)> {
    DEMO_PAGES
        .iter()
        .flat_map(|page| examples_in(page))
        .collect()
}

/// (path, body, expected answer) for each `curl -s localhost:8180… --json '…'`
/// (or `-d '…'`, for the native API)
/// block of `page` (relative to the project root) followed by a `json` block.
pub fn examples_in(page: &str) -> Vec<(String, String, Value)> {
    let readme = std::fs::read_to_string(root().join(page)).unwrap();
    let blocks: Vec<(&str, &str)> = readme
        .split("```")
        .skip(1)
        .step_by(2)
        .filter_map(|block| block.split_once('\n'))
        .collect();
    blocks
        .windows(2)
        .filter_map(|pair| {
            let [(lang, command), (next_lang, answer)] = pair else {
                return None;
            };
            let rest = command.trim().strip_prefix("curl -s localhost:8180")?;
            assert_eq!(
                (*lang, *next_lang),
                ("sh", "json"),
                "a curl example of {page} is followed by its answer"
            );
            let (path, body) = rest
                .split_once(" --json '")
                .or_else(|| rest.split_once(" -d '"))?;
            let body = body.strip_suffix('\'')?;
            Some((
                path.to_owned(),
                body.to_owned(),
                serde_json::from_str(answer).unwrap(),
            ))
        })
        .collect()
}

/// Every `policy_version` in `value`, replaced by `version`.
fn with_version(mut value: Value, version: &Value) -> Value {
    match &mut value {
        Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                *inner = if key == "policy_version" {
                    version.clone()
                } else {
                    with_version(inner.take(), version)
                };
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| *v = with_version(v.take(), version)),
        _ => {}
    }
    value
}

/// Asks each example of `examples` at `base` and compares the answer with
/// the one shown, policy versions aside.
pub async fn answer_as_shown(base: &str, examples: Vec<(String, String, Value)>) {
    for (path, body, expected) in examples {
        let reply = post_raw(&format!("{base}{path}"), body.clone()).await;
        assert_eq!(reply.status, 200, "{path} {body}");
        let version = reply
            .json
            .get("policy_version")
            .or_else(|| reply.json.pointer("/context/policy_version"))
            .or_else(|| reply.json.pointer("/evaluations/0/context/policy_version"))
            .cloned();
        // A search answer names no policy version.
        let expected = match &version {
            Some(version) => with_version(expected, version),
            None => expected,
        };
        assert_eq!(reply.json, expected, "example {path} {body}");
    }
}

#[tokio::test]
async fn readme_examples_answer_as_shown() {
    let in_readme = examples_in("README.md").len();
    assert!(in_readme >= 4, "found {in_readme} examples in the README");
    let server = Server::demo().await;
    answer_as_shown(&server.url(""), examples()).await;
}

#[test]
fn docs_gateway_configs_are_the_ones_the_gateway_test_uses() {
    let section = std::fs::read_to_string(root().join("docs/gateways.md")).unwrap();
    let dir = root().join("examples/gateways");
    let shipped: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .collect();
    let mut checked = 0;
    for block in section.split("```").skip(1).step_by(2) {
        let (lang, body) = block.split_once('\n').unwrap();
        if lang == "sh" {
            // How to start Mandate per gateway: the settings run.sh uses.
            let run = std::fs::read_to_string(root().join("tests/gateways/run.sh")).unwrap();
            let tokens: Vec<&str> = body.split_whitespace().collect();
            for (i, token) in tokens.iter().enumerate() {
                let wanted = if token.starts_with("MANDATE_") {
                    (*token).to_owned()
                } else if *token == "--listen" {
                    format!("--listen {}", tokens.get(i + 1).unwrap())
                } else {
                    continue;
                };
                assert!(run.contains(&wanted), "run.sh does not use `{wanted}`");
            }
        } else if lang == "toml" {
            // The route table excerpt: every line is the shipped file's.
            let toml = std::fs::read_to_string(dir.join("mandate.toml")).unwrap();
            for line in body.lines().filter(|l| !l.trim().is_empty()) {
                assert!(
                    toml.lines().any(|l| l == line),
                    "docs/gateways.md line not in mandate.toml: {line}"
                );
            }
        } else {
            assert!(
                shipped.iter().any(|file| file.contains(body.trim_end())),
                "docs/gateways.md {lang} block is not a shipped config:\n{body}"
            );
        }
        checked += 1;
    }
    assert_eq!(
        checked, 7,
        "the route table, how to start Mandate, and one config per gateway"
    );
}

#[test]
fn readme_configuration_table_is_the_one_mandate_settings_prints() {
    let reference = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    let table = mandate::config::reference_table();
    assert!(
        reference.contains(&table),
        "docs/configuration.md's table differs from `mandate settings`; paste this:\n{table}"
    );
    let output = std::process::Command::new(crate::support::binary())
        .arg("settings")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(String::from_utf8(output.stdout).unwrap(), table);
}
