//! The shipped policy pack, schema and demo data, inside the binary, so
//! that `mandate serve` works from any directory, after `cargo install` and
//! in a bare image. A default path that does not exist where Mandate runs
//! is served from these copies, written out once into a directory named by
//! their digest; a path given on the command line, in the environment or in
//! a config file is never replaced.

use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::Config;

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

/// What [`use_where_missing`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Embedded {
    /// the directory the embedded files were written to, when any is used
    pub dir: Option<PathBuf>,
    /// whether the demo entities are being served (from anywhere)
    pub demo_data: bool,
}

/// Points every default path of `config` that does not exist from the
/// working directory at the embedded copy.
///
/// # Errors
/// When the embedded files cannot be written out.
pub fn use_where_missing(config: &mut Config) -> io::Result<Embedded> {
    let default = |key| Config::default_path(key).unwrap_or_default();
    let mut wanted: Vec<&mut PathBuf> = Vec::new();
    if config.policy.dir == default("policy.dir") && !config.policy.dir.exists() {
        wanted.push(&mut config.policy.dir);
    }
    if config.policy.schema == default("policy.schema") && !config.policy.schema.exists() {
        wanted.push(&mut config.policy.schema);
    }
    let file_store = config.store.kind == crate::config::StoreKind::File;
    let demo_data = file_store && config.store.entities == default("store.entities");
    if demo_data && !config.store.entities.exists() {
        wanted.push(&mut config.store.entities);
    }
    if wanted.is_empty() {
        return Ok(Embedded {
            dir: None,
            demo_data,
        });
    }
    let dir = unpack()?;
    for path in wanted {
        *path = dir.join(&*path);
    }
    Ok(Embedded {
        dir: Some(dir),
        demo_data,
    })
}

/// Writes the embedded files out (once per content) and returns their root.
fn unpack() -> io::Result<PathBuf> {
    let mut digest = Sha256::new();
    for (name, text) in FILES {
        digest.update(name.as_bytes());
        digest.update(text.as_bytes());
    }
    let digest: String = digest
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let root = std::env::temp_dir().join(format!("mandate-embedded-{digest}"));
    for (name, text) in FILES {
        write_if_different(&root.join(name), text)?;
    }
    Ok(root)
}

fn write_if_different(path: &Path, text: &str) -> io::Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|found| found == text) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // Written aside, then renamed: a reader never sees half a file.
    let aside = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&aside, text)?;
    std::fs::rename(&aside, path)
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
}
