//! The shipped policy pack, schema and demo data, inside the binary, so
//! that `mandate serve` works from any directory, after `cargo install` and
//! in a bare image. They are served from memory under the pseudo-directory
//! [`ROOT`] (`<embedded>`), which the settings' defaults name: nothing is
//! written to disk, nothing there can be planted, and nothing there is
//! watched. A path an operator gives is read from disk as given.

use std::io;
use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError, StoreKind};

/// The pseudo-directory the embedded files live under; an error naming a
/// path below it says, by its name, that the path is the embedded default.
pub const ROOT: &str = "<embedded>";

/// Each embedded file, by its path in the repository.
const FILES: &[(&str, &str)] = &[
    (
        "policies/invariants.toml",
        include_str!("../policies/invariants.toml"),
    ),
    (
        "policies/delegates.cedar",
        include_str!("../policies/delegates.cedar"),
    ),
    (
        "policies/funding.cedar",
        include_str!("../policies/funding.cedar"),
    ),
    (
        "policies/general.cedar",
        include_str!("../policies/general.cedar"),
    ),
    (
        "policies/market_data.cedar",
        include_str!("../policies/market_data.cedar"),
    ),
    (
        "policies/owner.cedar",
        include_str!("../policies/owner.cedar"),
    ),
    (
        "policies/roles.cedar",
        include_str!("../policies/roles.cedar"),
    ),
    (
        "policies/users.cedar",
        include_str!("../policies/users.cedar"),
    ),
    (
        "schema/brokerage.cedarschema",
        include_str!("../schema/brokerage.cedarschema"),
    ),
    (
        "examples/demo/entities.json",
        include_str!("../examples/demo/entities.json"),
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

/// Refuses a pack that mixes the operator's files with the embedded ones:
/// once either of `policy.dir` and `policy.schema` is given, both must be.
/// An operator's own pack without entities gets an empty store
/// ([`is_no_entities`]), never the brokerage demo's data.
///
/// # Errors
/// The setting that is missing, by its key, flag and variable.
pub fn refuse_mixing(config: &mut Config) -> Result<(), ConfigError> {
    let dir_given = !contains(&config.policy.dir);
    let schema_given = !contains(&config.policy.schema);
    let missing = match (dir_given, schema_given) {
        (true, false) => Some((
            "policy.dir",
            "policy.schema",
            "--schema",
            "MANDATE_POLICY_SCHEMA",
        )),
        (false, true) => Some((
            "policy.schema",
            "policy.dir",
            "--policies",
            "MANDATE_POLICY_DIR",
        )),
        _ => None,
    };
    if let Some((given, key, flag, variable)) = missing {
        return Err(ConfigError::invalid(format!(
            "`{given}` is given but `{key}` is not: your own pack needs both (give {flag}, \
             `{variable}` or `{key}` in the config file); the embedded brokerage pack is never \
             mixed with your files"
        )));
    }
    let own_pack = dir_given && schema_given;
    if own_pack && config.store.kind == StoreKind::File && contains(&config.store.entities) {
        config.store.entities = Path::new(ROOT).join(NO_ENTITIES);
    }
    Ok(())
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
            include_str!("../policies/roles.cedar")
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

    #[test]
    fn the_defaults_name_the_embedded_pack() {
        let config = Config::load(None, Vec::new(), &Vec::new()).unwrap();
        assert!(contains(&config.policy.dir));
        assert!(contains(&config.policy.schema));
        assert!(file(&config.store.entities).is_some());
    }

    #[test]
    fn half_an_own_pack_is_refused_naming_the_missing_setting() {
        for (given, missing) in [("policy.dir", "--schema"), ("policy.schema", "--policies")] {
            let flags = vec![(given, toml::Value::String("mine".to_owned()))];
            let mut config = Config::load(None, Vec::new(), &flags).unwrap();
            let error = refuse_mixing(&mut config).unwrap_err().to_string();
            assert!(error.contains(missing), "{error}");
            assert!(error.contains(&format!("`{given}` is given")), "{error}");
        }
    }

    #[test]
    fn an_own_pack_without_entities_gets_an_empty_store_not_the_demo() {
        let flags = vec![
            ("policy.dir", toml::Value::String("mine".to_owned())),
            (
                "policy.schema",
                toml::Value::String("mine.cedarschema".to_owned()),
            ),
        ];
        let mut config = Config::load(None, Vec::new(), &flags).unwrap();
        refuse_mixing(&mut config).unwrap();
        assert!(is_no_entities(&config.store.entities));
        assert_eq!(read_to_string(&config.store.entities).unwrap(), "[]");
        // The embedded pack itself keeps its demo data.
        let mut config = Config::load(None, Vec::new(), &Vec::new()).unwrap();
        refuse_mixing(&mut config).unwrap();
        assert!(
            config
                .store
                .entities
                .ends_with("examples/demo/entities.json")
        );
    }
}
