//! The shipped policy pack, schema and demo data, inside the binary, so
//! that `mandate serve` works from any directory, after `cargo install` and
//! in a bare image. They are served from memory under the pseudo-directory
//! [`ROOT`] (`<embedded>`), which the settings' defaults name: nothing is
//! written to disk, nothing there can be planted, and nothing there is
//! watched. A path an operator gives is read from disk as given.

use std::io;
use std::path::{Path, PathBuf};

/// The pseudo-directory the embedded files live under; an error naming a
/// path below it says, by its name, that the path is the embedded default.
pub const ROOT: &str = "<embedded>";

/// Each embedded file, by its path in the repository.
const FILES: &[(&str, &str)] = &[
    (
        "policies/invariants.toml",
        include_str!("../../policies/invariants.toml"),
    ),
    (
        "policies/delegates.cedar",
        include_str!("../../policies/delegates.cedar"),
    ),
    (
        "policies/funding.cedar",
        include_str!("../../policies/funding.cedar"),
    ),
    (
        "policies/general.cedar",
        include_str!("../../policies/general.cedar"),
    ),
    (
        "policies/market_data.cedar",
        include_str!("../../policies/market_data.cedar"),
    ),
    (
        "policies/owner.cedar",
        include_str!("../../policies/owner.cedar"),
    ),
    (
        "policies/roles.cedar",
        include_str!("../../policies/roles.cedar"),
    ),
    (
        "policies/users.cedar",
        include_str!("../../policies/users.cedar"),
    ),
    (
        "schema/brokerage.cedarschema",
        include_str!("../../schema/brokerage.cedarschema"),
    ),
    (
        "examples/demo/entities.json",
        include_str!("../../examples/demo/entities.json"),
    ),
];

/// An empty entity file: the store of an operator's own pack given without
/// `--entities` (never the brokerage demo's data).
const NO_ENTITIES: &str = "no-entities.json";

/// Whether `path` lies in the embedded tree, so that it is never read from
/// disk (a file planted at `./<embedded>/…` is not consulted).
pub fn contains(path: &Path) -> bool {
    path.starts_with(ROOT)
}

/// The embedded file at `path`, if `path` names one.
pub fn file(path: &Path) -> Option<&'static str> {
    let name = path.strip_prefix(ROOT).ok()?;
    if name == Path::new(NO_ENTITIES) {
        return Some("[]");
    }
    FILES
        .iter()
        .find(|(embedded, _)| Path::new(embedded) == name)
        .map(|(_, text)| *text)
}

/// Whether `path` is a directory: of the embedded tree when it lies in it,
/// else on disk.
pub fn is_dir(path: &Path) -> bool {
    if contains(path) {
        file(path).is_none()
    } else {
        path.is_dir()
    }
}

/// The embedded files under `dir` whose extension is `ext`, sorted.
pub fn files_under(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = FILES
        .iter()
        .map(|(name, _)| Path::new(ROOT).join(name))
        .filter(|path| path.starts_with(dir) && path.extension().is_some_and(|e| e == ext))
        .collect();
    found.sort();
    found
}

/// Reads a file: from memory when it lies in the embedded tree, else from
/// disk.
///
/// # Errors
/// A file the embedded tree does not hold, or one the disk cannot give.
pub fn read_to_string(path: &Path) -> io::Result<String> {
    if contains(path) {
        return file(path).map(str::to_owned).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "the embedded pack holds no such file",
            )
        });
    }
    std::fs::read_to_string(path)
}

/// The empty entity file an operator's own pack without entities gets,
/// never the brokerage demo's data.
pub fn no_entities() -> PathBuf {
    Path::new(ROOT).join(NO_ENTITIES)
}

/// Whether `path` is the empty store an own pack without entities gets.
pub fn is_no_entities(path: &Path) -> bool {
    path.strip_prefix(ROOT)
        .is_ok_and(|name| name == Path::new(NO_ENTITIES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_pack_file_is_embedded_as_it_is() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for dir in ["policies", "schema"] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                if path
                    .extension()
                    .is_some_and(|e| e == "cedar" || e == "cedarschema")
                {
                    let name = format!("{dir}/{}", path.file_name().unwrap().to_string_lossy());
                    let embedded = FILES.iter().find(|(n, _)| *n == name);
                    assert!(embedded.is_some(), "{name} is not embedded");
                }
            }
        }
        for (name, text) in FILES {
            assert_eq!(
                std::fs::read_to_string(root.join(name)).unwrap(),
                *text,
                "{name}"
            );
        }
    }

    #[test]
    fn the_embedded_tree_is_read_from_memory_only() {
        let roles = Path::new(ROOT).join("policies/roles.cedar");
        assert!(contains(&roles));
        assert_eq!(
            read_to_string(&roles).unwrap(),
            include_str!("../../policies/roles.cedar")
        );
        assert!(is_dir(&Path::new(ROOT).join("schema")));
        assert!(!is_dir(&roles));
        let missing = read_to_string(&Path::new(ROOT).join("policies/planted.cedar"));
        assert_eq!(missing.unwrap_err().kind(), io::ErrorKind::NotFound);
        let listed = files_under(&Path::new(ROOT).join("policies"), "cedar");
        assert_eq!(listed.len(), 7, "{listed:?}");
        assert!(listed.windows(2).all(|w| w[0] < w[1]));
        assert!(!contains(Path::new("policies/roles.cedar")));
    }
}
