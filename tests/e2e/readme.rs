//! The README's examples are true: each `curl` prints what the README says.

use serde_json::Value;

use crate::support::{Server, post_raw, root};

/// (path, body, expected answer) for each `curl … -d '…'` block followed by a `json` block.
fn examples() -> Vec<(String, String, Value)> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
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
                "a curl example is followed by its answer"
            );
            let (path, body) = rest.split_once(" -d '")?;
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

#[tokio::test]
async fn readme_examples_answer_as_shown() {
    let examples = examples();
    assert!(examples.len() >= 4, "found {} examples", examples.len());
    let server = Server::demo().await;
    for (path, body, expected) in examples {
        let reply = post_raw(&server.url(&path), body.clone()).await;
        assert_eq!(reply.status, 200, "{path} {body}");
        let version = reply
            .json
            .get("policy_version")
            .or_else(|| reply.json.pointer("/context/policy_version"))
            .or_else(|| reply.json.pointer("/evaluations/0/context/policy_version"))
            .cloned()
            .unwrap();
        assert_eq!(
            reply.json,
            with_version(expected, &version),
            "README example {path} {body}"
        );
    }
}
