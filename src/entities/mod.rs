//! Entity data: the store that owns users, accounts and destinations, and the
//! gathering of the small slice of it one decision needs.
//!
//! Knows Cedar's entity types and the schema, never policies, HTTP or sockets.

mod file;

use cedar_policy::{Entity, EntityUid, Schema};

pub use file::FileStore;

/// Why entity data could not be had.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum EntityError {
    /// The entities file could not be read.
    #[error("cannot read entities file `{path}`: {source}")]
    Io {
        /// the file
        path: std::path::PathBuf,
        /// why
        source: std::io::Error,
    },
    /// The entities file does not parse, or does not conform to the schema.
    #[error("invalid entities file `{path}`")]
    Invalid {
        /// the file
        path: std::path::PathBuf,
        /// Cedar's error
        #[source]
        #[diagnostic_source]
        source: cedar_policy::entities_errors::EntitiesError,
    },
}

/// Where entity data comes from.
pub enum EntityStore {
    /// A Cedar JSON entities file, held in memory.
    File(FileStore),
    /// No store: every entity comes from the request.
    None,
}

impl EntityStore {
    /// Appends to `out` the stored entities for `uids` and all of their
    /// ancestors. A uid the store does not hold is simply absent.
    ///
    /// # Errors
    /// When the store cannot answer (never for the file store).
    pub async fn gather(
        &self,
        uids: &[EntityUid],
        out: &mut Vec<Entity>,
    ) -> Result<(), EntityError> {
        match self {
            Self::File(store) => {
                store.gather(uids, out);
                Ok(())
            }
            Self::None => Ok(()),
        }
    }

    /// Whether the store can serve decisions now.
    pub fn is_ready(&self) -> bool {
        true
    }

    /// Checks the held data against a (new) schema.
    ///
    /// # Errors
    /// When the data no longer conforms.
    pub fn check_schema(&self, schema: &Schema) -> Result<(), EntityError> {
        match self {
            Self::File(store) => store.check_schema(schema),
            Self::None => Ok(()),
        }
    }
}
