//! Reading the schema and the policy files from disk into a [`PolicySnapshot`],
//! refusing anything Cedar would not accept, with its diagnostics.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{PolicyId, PolicySet, Schema, SchemaFragment, ValidationMode, Validator};
use sha2::{Digest, Sha256};

use super::diagnostic::SourceDiagnostic;
use super::{PolicyError, PolicySnapshot};

/// Where to read a snapshot from.
#[derive(Debug, Clone)]
pub struct PolicySources {
    /// Directory of `*.cedar` files, read recursively.
    pub policy_dir: PathBuf,
    /// A `.cedarschema` file or a directory of them.
    pub schema: PathBuf,
    /// Namespace for unqualified names; `None` picks the schema's only one.
    pub default_namespace: Option<String>,
}

/// Reads, parses and strictly validates the schema and every policy file.
///
/// # Errors
/// The first unreadable file, or every parse or validation diagnostic found,
/// each tied to its file, line and column.
pub fn load(sources: &PolicySources) -> Result<PolicySnapshot, PolicyError> {
    let mut hasher = Sha256::new();
    let (schema, schema_json) = load_schema(&sources.schema, &mut hasher)?;
    let schema_digest: [u8; 32] = hasher.clone().finalize().into();
    let schema_version = hex(&schema_digest);
    let files = files_with_extension(&sources.policy_dir, "cedar")?;
    if files.is_empty() {
        return Err(PolicyError::NoPolicies {
            dir: sources.policy_dir.clone(),
        });
    }
    let mut parsed = PolicyFiles::with_capacity(files.len());
    for path in &files {
        parsed.add_file(path)?;
    }
    if !parsed.diagnostics.is_empty() {
        return Err(PolicyError::Invalid {
            diagnostics: parsed.diagnostics,
        });
    }
    validate(&schema, &parsed.policies, &parsed.origin)?;
    // The version hashes what the files say, never where they were read
    // from: each file's digest, in sorted order.
    parsed.digests.sort_unstable();
    for digest in &parsed.digests {
        hasher.update(digest);
    }
    let version = hex(&hasher.finalize());
    PolicySnapshot::new(
        (schema_version, schema_digest),
        schema,
        &schema_json,
        parsed.policies,
        version,
        sources.default_namespace.as_deref(),
    )
}

/// The policy files read so far: one set of their policies, where each
/// came from (its file's name and text, for diagnostics), what Cedar
/// refused, and each file's digest (for the version).
struct PolicyFiles {
    policies: PolicySet,
    origin: HashMap<PolicyId, (String, String)>,
    diagnostics: Vec<SourceDiagnostic>,
    digests: Vec<sha2::digest::Output<Sha256>>,
}

impl PolicyFiles {
    /// Nothing read yet, with room for the digests of `files` files.
    fn with_capacity(files: usize) -> Self {
        Self {
            policies: PolicySet::new(),
            origin: HashMap::new(),
            diagnostics: Vec::new(),
            digests: Vec::with_capacity(files),
        }
    }

    /// Reads and parses the policy file at `path`; a file Cedar cannot
    /// parse is a diagnostic, its policies left out.
    fn add_file(&mut self, path: &Path) -> Result<(), PolicyError> {
        let text = read(path)?;
        let name = path.display().to_string();
        self.digests.push(Sha256::digest(text.as_bytes()));
        match PolicySet::from_str(&text) {
            Ok(parsed) => self.add_policies(&parsed, name, &text),
            Err(err) => {
                self.diagnostics
                    .push(SourceDiagnostic::new(err, name, text));
                Ok(())
            }
        }
    }

    /// Adds the policies file `name` (of `text`) holds, each under its
    /// `@id` or else `name#index`. An id two policies share is refused,
    /// naming both files.
    fn add_policies(
        &mut self,
        parsed: &PolicySet,
        name: String,
        text: &str,
    ) -> Result<(), PolicyError> {
        for (index, policy) in parsed.policies().enumerate() {
            let id = policy
                .annotation("id")
                .map_or_else(|| format!("{name}#{index}"), str::to_owned);
            let id = PolicyId::new(id);
            if let Some((first, _)) = self.origin.get(&id) {
                return Err(PolicyError::DuplicateId {
                    id: id.to_string(),
                    first: first.clone(),
                    second: name,
                });
            }
            if let Err(err) = self.policies.add(policy.new_id(id.clone())) {
                self.diagnostics
                    .push(SourceDiagnostic::new(err, name.clone(), text.to_owned()));
                continue;
            }
            self.origin.insert(id, (name.clone(), text.to_owned()));
        }
        Ok(())
    }
}

/// Strict validation of `policies` against `schema`: every error found,
/// each tied to its policy's file.
fn validate(
    schema: &Schema,
    policies: &PolicySet,
    origin: &HashMap<PolicyId, (String, String)>,
) -> Result<(), PolicyError> {
    let validation = Validator::new(schema.clone()).validate(policies, ValidationMode::Strict);
    let diagnostics: Vec<_> = validation
        .validation_errors()
        .map(|err| {
            let (name, text) = origin.get(err.policy_id()).cloned().unwrap_or_default();
            SourceDiagnostic::new(err.clone(), name, text)
        })
        .collect();
    if !diagnostics.is_empty() {
        return Err(PolicyError::Invalid { diagnostics });
    }
    Ok(())
}

/// The schema at `path` alone.
pub(super) fn schema_only(path: &Path) -> Result<Schema, PolicyError> {
    load_schema(path, &mut Sha256::new()).map(|(schema, _)| schema)
}

/// The schema, and each file in Cedar's JSON schema form with its types
/// resolved (for the request shapes; a file that cannot be so read, say one
/// naming another file's types, gives none, and its actions take the slow
/// path).
fn load_schema(
    path: &Path,
    hasher: &mut Sha256,
) -> Result<(Schema, Vec<serde_json::Value>), PolicyError> {
    let files = if crate::support::embedded::is_dir(path) {
        files_with_extension(path, "cedarschema")?
    } else {
        vec![path.to_owned()]
    };
    if files.is_empty() {
        return Err(PolicyError::NoSchema {
            path: path.to_owned(),
        });
    }
    let mut fragments = Vec::with_capacity(files.len());
    let mut json = Vec::with_capacity(files.len());
    for file in &files {
        let text = read(file)?;
        hasher.update(text.as_bytes());
        hasher.update([0]);
        match SchemaFragment::from_cedarschema_str(&text) {
            Ok((fragment, _warnings)) => {
                fragments.push(fragment);
                if let Ok((resolved, _)) =
                    cedar_policy::schema_str_to_json_with_resolved_types(&text)
                {
                    json.push(resolved);
                }
            }
            Err(err) => {
                return Err(PolicyError::Invalid {
                    diagnostics: vec![SourceDiagnostic::new(err, file.display().to_string(), text)],
                });
            }
        }
    }
    let schema = Schema::from_schema_fragments(fragments).map_err(|err| PolicyError::Schema {
        path: path.to_owned(),
        source: err,
    })?;
    Ok((schema, json))
}

fn read(path: &Path) -> Result<String, PolicyError> {
    crate::support::embedded::read_to_string(path).map_err(|source| PolicyError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Each source file with its modification time and size, if readable.
pub type SourcesStamp = Vec<(PathBuf, Option<(std::time::SystemTime, u64)>)>;

fn hex(digest: &[u8]) -> String {
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// The files a snapshot is read from, with their modification time and
/// size: when this changes, the sources changed.
pub fn stamp(sources: &PolicySources) -> SourcesStamp {
    let mut files = files_with_extension(&sources.policy_dir, "cedar").unwrap_or_default();
    if crate::support::embedded::is_dir(&sources.schema) {
        files.extend(files_with_extension(&sources.schema, "cedarschema").unwrap_or_default());
    } else {
        files.push(sources.schema.clone());
    }
    files
        .into_iter()
        .map(|path| {
            // The embedded files never change: nothing on disk stands for them.
            let meta = (!crate::support::embedded::contains(&path))
                .then(|| std::fs::metadata(&path).ok())
                .flatten()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            (path, meta)
        })
        .collect()
}

/// Every file under `dir` (recursively) whose extension is `ext`, sorted, so
/// the policy version does not depend on directory order. Hidden entries are
/// skipped: a Kubernetes ConfigMap volume keeps each file twice more under
/// `..data` and a timestamped `..2026_…` directory, beside the symlink that
/// names it.
fn files_with_extension(dir: &Path, ext: &str) -> Result<Vec<PathBuf>, PolicyError> {
    if crate::support::embedded::contains(dir) {
        return Ok(crate::support::embedded::files_under(dir, ext));
    }
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| PolicyError::Io {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let path = entry
                .map_err(|source| PolicyError::Io {
                    path: dir.clone(),
                    source,
                })?
                .path();
            let hidden = path
                .file_name()
                .is_some_and(|name| name.as_encoded_bytes().starts_with(b"."));
            if hidden {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == ext) {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}
