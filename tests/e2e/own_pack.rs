//! `docs/own-pack.md` is true: the wiki pack of `examples/own-pack/` is
//! served by the real binary from its own `mandate.toml` and answers each
//! of the page's `curl` examples as shown, its suite passes under `mandate
//! test`, and the schema, policies and configuration the page prints are
//! the shipped ones.

use std::process::Stdio;

use crate::cli::{Served, mandate, serving, terminate};
use crate::readme::{answer_as_shown, examples_in};
use crate::support::root;

const CONFIG: &str = "examples/own-pack/mandate.toml";

#[tokio::test]
async fn the_own_pack_page_serves_its_wiki_and_answers_as_shown() {
    let examples = examples_in("docs/own-pack.md");
    assert!(examples.len() >= 2, "found {} examples", examples.len());
    let Served {
        mut child,
        base,
        stderr,
    } = serving(
        mandate()
            .args(["serve", "--config", CONFIG, "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null()),
    );
    answer_as_shown(&base, examples).await;
    // A clean stop flushes the log (a kill could lose its last lines).
    terminate(&child);
    child.wait().unwrap();
    let log = stderr.join().unwrap();
    assert!(log.contains("policies loaded policies=5"), "{log}");
}

#[test]
fn the_own_pack_suite_passes_under_mandate_test() {
    let output = mandate()
        .args(["test", "--config", CONFIG, "examples/own-pack/tests"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.ends_with("9 passed, 0 failed\n"), "{stdout}");
}

#[test]
fn the_own_pack_page_prints_the_shipped_schema_policies_and_configuration() {
    let page = std::fs::read_to_string(root().join("docs/own-pack.md")).unwrap();
    let dir = root().join("examples/own-pack");
    let shipped = [
        std::fs::read_to_string(dir.join("schema.cedarschema")).unwrap(),
        std::fs::read_to_string(dir.join("policies/wiki.cedar")).unwrap(),
        std::fs::read_to_string(dir.join("mandate.toml")).unwrap(),
    ];
    let mut printed = 0;
    for block in page.split("```").skip(1).step_by(2) {
        let Some((lang @ ("cedar" | "toml"), body)) = block.split_once('\n') else {
            continue;
        };
        assert!(
            shipped.iter().any(|file| file.contains(body)),
            "docs/own-pack.md prints {lang} that examples/own-pack does not ship:\n{body}"
        );
        printed += 1;
    }
    assert_eq!(printed, 3, "the schema, the policies and the configuration");
}
