//! The file store: a Cedar JSON entities file, validated against the schema
//! and held in memory. The embedded default, and the demo's data.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use cedar_policy::{Entities, Entity, EntityUid, Schema};

use super::EntityError;

/// Entities read from one file.
pub struct FileStore {
    path: PathBuf,
    entities: Entities,
}

impl FileStore {
    /// Reads `path` and checks every entity against `schema`.
    ///
    /// # Errors
    /// An unreadable file, bad JSON, or an entity that does not conform.
    pub fn open(path: &Path, schema: &Schema) -> Result<Self, EntityError> {
        let text = std::fs::read_to_string(path).map_err(|source| EntityError::Io {
            path: path.to_owned(),
            source,
        })?;
        let entities = Entities::from_json_str(&text, Some(schema)).map_err(|source| {
            EntityError::Invalid {
                path: path.to_owned(),
                source,
            }
        })?;
        Ok(Self {
            path: path.to_owned(),
            entities,
        })
    }

    /// The number of entities held.
    pub fn len(&self) -> usize {
        self.entities.len()
    }

    /// Whether the file held no entity.
    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    pub(super) fn gather(&self, uids: &[EntityUid], out: &mut Vec<Entity>) {
        let mut seen: HashSet<&EntityUid> = HashSet::new();
        for uid in uids {
            if !seen.insert(uid) {
                continue;
            }
            let Some(entity) = self.entities.get(uid) else {
                continue;
            };
            out.push(entity.clone());
            for ancestor in self.entities.ancestors(uid).into_iter().flatten() {
                if let Some(parent) = self
                    .entities
                    .get(ancestor)
                    .filter(|_| seen.insert(ancestor))
                {
                    out.push(parent.clone());
                }
            }
        }
    }

    pub(super) fn check_schema(&self, schema: &Schema) -> Result<(), EntityError> {
        Self::open(&self.path, schema).map(|_| ())
    }
}
