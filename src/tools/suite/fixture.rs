//! A suite's entities: a Cedar JSON file beside the suite, or the entities
//! written inline, so a suite can be self-contained; a case may add its
//! own. Each distinct set of entities is decided over by its own engine, on
//! a file store, so a case sees exactly the entities it names.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::SuiteError;
use crate::app;
use crate::config::{Config, StoreKind};
use crate::engine::Engine;

/// Where a suite's entities come from.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Fixture {
    /// A Cedar JSON entities file, relative to the suite file. With the
    /// HTTP store configured (`--upstream`), the live store stands for it.
    File(PathBuf),
    /// The entities themselves, as Cedar JSON: used whatever the store.
    Inline(Vec<Value>),
}

impl Default for Fixture {
    /// No entities.
    fn default() -> Self {
        Self::Inline(Vec::new())
    }
}

/// A suite's entities, loaded, and the engine deciding over them.
pub(super) struct World {
    engine: Engine,
    /// the suite's entities as Cedar JSON, under a case's own
    entities: Vec<Value>,
}

impl World {
    /// Loads the suite's entities (`suite` names the suite file).
    pub(super) fn open(
        fixture: &Fixture,
        suite: &Path,
        config: &Config,
    ) -> Result<Self, SuiteError> {
        match fixture {
            Fixture::File(_) if config.store.kind == StoreKind::Http => Ok(Self {
                engine: app::engine(config)?,
                entities: Vec::new(),
            }),
            Fixture::File(relative) => {
                let file = suite.parent().unwrap_or(Path::new(".")).join(relative);
                let mut config = config.clone();
                config.store.kind = StoreKind::File;
                config.store.entities.clone_from(&file);
                let engine = app::engine(&config)?;
                let entities = crate::support::embedded::read_to_string(&file)
                    .map_err(|e| e.to_string())
                    .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
                    .map_err(|message| SuiteError::Format {
                        path: file,
                        message,
                    })?;
                Ok(Self { engine, entities })
            }
            Fixture::Inline(entities) => Ok(Self {
                engine: app::engine_over_inline(
                    config,
                    &PathBuf::from(format!("{} (the suite's entities)", suite.display())),
                    json_text(entities),
                )?,
                entities: entities.clone(),
            }),
        }
    }

    /// The engine over the suite's entities.
    pub(super) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// An engine over the suite's entities and `extra`: an entity of
    /// `extra` replaces the suite's of the same uid.
    pub(super) fn with(
        &self,
        extra: &[Value],
        suite: &Path,
        config: &Config,
    ) -> Result<Engine, String> {
        let mut merged = self.entities.clone();
        for entity in extra {
            merged.retain(|held| held.get("uid") != entity.get("uid"));
            merged.push(entity.clone());
        }
        let label = PathBuf::from(format!("{} (the case's entities)", suite.display()));
        // The whole chain: Cedar's reason is the last link.
        app::engine_over_inline(config, &label, json_text(&merged))
            .map_err(|error| crate::entities::describe(&error))
    }
}

fn json_text(entities: &[Value]) -> String {
    serde_json::to_string(entities).unwrap_or_else(|_| "[]".to_owned())
}
