//! The documentation holds together: every relative link of the README, of
//! `docs/` and of the Markdown files they lead to names a file that exists,
//! and every `#anchor` into a Markdown file names one of its headings (by
//! GitHub's rules for heading ids).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::support::root;

/// A Markdown file's text with fenced code blocks blanked out (their lines
/// kept, so line numbers stay true), and inline code spans removed.
fn prose(text: &str) -> Vec<String> {
    let mut fenced = false;
    text.lines()
        .map(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return String::new();
            }
            if fenced {
                return String::new();
            }
            // Drop `code spans`: what is between a pair of backticks.
            line.split('`').step_by(2).collect::<Vec<_>>().join("")
        })
        .collect()
}

/// The targets of a line's links: `[text](target)`, `![alt](target)`, and
/// a reference definition `[label]: target`.
fn link_targets(line: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let Some(end) = after.find(')') else { break };
        let target = after[..end].split_whitespace().next().unwrap_or("");
        targets.push(target.trim_matches(['<', '>']).to_owned());
        rest = &after[end..];
    }
    let trimmed = line.trim_start();
    if trimmed.starts_with('[')
        && let Some((_, target)) = trimmed.split_once("]: ")
    {
        targets.push(target.split_whitespace().next().unwrap_or("").to_owned());
    }
    targets
}

/// GitHub's id for a heading's text: lower case, inline markup and
/// punctuation dropped (letters, digits, `-` and `_` kept), each space a `-`.
pub fn slug(heading: &str) -> String {
    // A link in a heading counts by its text alone.
    let mut text = String::new();
    let mut rest = heading;
    while let Some(open) = rest.find('[') {
        text.push_str(&rest[..open]);
        let inner = &rest[open + 1..];
        match inner.find("](").zip(inner.find(')')) {
            Some((close, end)) if close < end => {
                text.push_str(&inner[..close]);
                rest = &inner[end + 1..];
            }
            _ => {
                text.push('[');
                rest = inner;
            }
        }
    }
    text.push_str(rest);
    text.trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The ids of a Markdown file's headings, repeats numbered as GitHub does
/// (`a`, `a-1`, `a-2`).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut ids = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if fenced || !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(line[hashes..].trim().trim_end_matches('#'));
        let mut id = base.clone();
        let mut n = 0;
        while ids.contains(&id) {
            n += 1;
            id = format!("{base}-{n}");
        }
        ids.insert(id);
    }
    ids
}

fn markdown_under(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            markdown_under(&path, found);
        } else if path.extension().is_some_and(|e| e == "md") {
            found.push(path);
        }
    }
}

#[test]
fn github_heading_ids_follow_githubs_rules() {
    assert_eq!(slug("Two commands"), "two-commands");
    assert_eq!(
        slug("Why was that denied? `check --explain`"),
        "why-was-that-denied-check---explain"
    );
    assert_eq!(
        slug("Revocation across a fleet: entity change events over NATS"),
        "revocation-across-a-fleet-entity-change-events-over-nats"
    );
    assert_eq!(
        slug("nginx (`auth_request`) — `examples/gateways/nginx.conf`"),
        "nginx-auth_request--examplesgatewaysnginxconf"
    );
    assert_eq!(slug("See [the API](api.md) now"), "see-the-api-now");
    let ids = anchors("# A\n```\n# not a heading\n```\n## A\n#nope\n");
    assert_eq!(ids, BTreeSet::from(["a".to_owned(), "a-1".to_owned()]));
}

#[test]
fn every_relative_link_of_the_readme_and_docs_resolves() {
    let root = root().canonicalize().unwrap();
    let mut queue = vec![root.join("README.md")];
    markdown_under(&root.join("docs"), &mut queue);
    assert!(queue.len() > 5, "docs/ holds the guides: {queue:?}");
    let mut seen = BTreeSet::new();
    let mut broken = Vec::new();
    while let Some(page) = queue.pop() {
        if !seen.insert(page.clone()) {
            continue;
        }
        let text = std::fs::read_to_string(&page).unwrap();
        let shown = page.strip_prefix(&root).unwrap().display().to_string();
        for (number, line) in prose(&text).iter().enumerate() {
            for target in link_targets(line) {
                if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let (file, anchor) = match target.split_once('#') {
                    Some((file, anchor)) => (file, Some(anchor)),
                    None => (target.as_str(), None),
                };
                let at = format!("{shown}:{}: `{target}`", number + 1);
                let resolved = if file.is_empty() {
                    page.clone()
                } else {
                    page.parent().unwrap().join(file)
                };
                let Ok(resolved) = resolved.canonicalize() else {
                    broken.push(format!("{at}: no such file"));
                    continue;
                };
                if !resolved.starts_with(&root) {
                    broken.push(format!("{at}: outside the repository"));
                    continue;
                }
                let markdown = resolved.extension().is_some_and(|e| e == "md");
                if let Some(anchor) = anchor {
                    if !markdown {
                        broken.push(format!("{at}: an anchor into a file that is not Markdown"));
                    } else if !anchors(&std::fs::read_to_string(&resolved).unwrap())
                        .contains(anchor)
                    {
                        broken.push(format!("{at}: no heading with this id"));
                    }
                }
                if markdown {
                    queue.push(resolved);
                }
            }
        }
    }
    assert!(
        seen.iter().any(|p| p.ends_with("docs/own-pack.md")),
        "the README leads to the guides"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
