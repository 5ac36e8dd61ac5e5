//! The dependency rule of ARCHITECTURE.md, checked on the source: each
//! module's code (its tests aside) names only the modules below it, so a
//! change that makes a dependency point up fails here, not in review.

use std::collections::BTreeSet;
use std::path::Path;

use crate::support::root;

/// Each module of the library, and the modules of ours its code may name.
const MAY_NAME: &[(&str, &[&str])] = &[
    ("telemetry", &["support"]),
    ("support", &[]),
    ("policy", &["support"]),
    ("entities", &["support", "telemetry"]),
    ("engine", &["policy", "entities", "telemetry"]),
    ("bus", &["engine", "entities", "telemetry"]),
    ("config", &["entities", "policy", "support", "telemetry"]),
    (
        "api",
        &["engine", "policy", "config", "support", "telemetry"],
    ),
    ("server", &["api", "support", "telemetry"]),
    (
        "tools",
        &[
            "app",
            "config",
            "engine",
            "entities",
            "policy",
            "support",
            "telemetry",
        ],
    ),
];

/// The modules of ours `text` names: as `crate::NAME`, or through enough
/// `super::` to climb from a file `depth` levels below its module's root
/// (`mod.rs` is 0) up to the crate root. Its `#[cfg(test)] mod tests { … }`
/// (the rest of the file from there) aside.
fn named(text: &str, depth: usize) -> BTreeSet<String> {
    let code = text
        .split("#[cfg(test)]\nmod tests {")
        .next()
        .unwrap_or(text);
    let ident = |rest: &str| -> String {
        rest.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names: BTreeSet<String> = code
        .match_indices("crate::")
        .map(|(at, _)| ident(&code[at + "crate::".len()..]))
        .collect();
    let to_root = "super::".repeat(depth + 1);
    names.extend(
        code.match_indices(to_root.as_str())
            .map(|(at, _)| ident(&code[at + to_root.len()..]))
            .filter(|name| name != "super"),
    );
    names
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_names_only_the_modules_below_it() {
    let mut checked = 0;
    for (module, allowed) in MAY_NAME {
        let mut files = Vec::new();
        sources(&root().join("src").join(module), &mut files);
        assert!(!files.is_empty(), "src/{module}/ has no source");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let below = file
                .strip_prefix(root().join("src").join(module))
                .unwrap()
                .components()
                .count();
            let depth = if file.ends_with("mod.rs") {
                below - 1
            } else {
                below
            };
            for name in named(&text, depth) {
                assert!(
                    name == *module || allowed.contains(&name.as_str()),
                    "{} names `crate::{name}`, which `{module}` may not: it may name {allowed:?}",
                    file.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} files checked");
}

#[test]
fn the_rule_sees_a_dependency_that_points_up() {
    let text = "use crate::policy::X;\nfn f() { crate::api::y(); }\n#[cfg(test)]\nmod tests {\n    use crate::config::Z;\n}\n";
    assert_eq!(
        named(text, 1),
        BTreeSet::from(["policy".to_owned(), "api".to_owned()])
    );
    // Through `super::` from a module's root file, and from a file below it.
    assert_eq!(
        named("use super::api::X;", 0),
        BTreeSet::from(["api".to_owned()])
    );
    assert_eq!(
        named("use super::super::tools::Y; use super::judge::Z;", 1),
        BTreeSet::from(["tools".to_owned()])
    );
    // A test module declared as a file cuts nothing.
    assert_eq!(
        named("#[cfg(test)]\nmod tests;\nuse crate::app::W;", 0),
        BTreeSet::from(["app".to_owned()])
    );
}
