//! The file store: a Cedar JSON entities file, validated against the schema
//! and held in memory; re-read when the file changes, keeping the last good
//! data when the new file is invalid. The embedded default, and the demo's data.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use cedar_policy::{Entities, Entity, EntityId, EntityUid, Schema};

use super::EntityError;

/// One reading of the file: every entity (and the schema's action
/// entities), and a generation no other reading in the process has, so what
/// is remembered from these entities is known to be void under the next.
pub struct Resident {
    /// the entities
    pub entities: Entities,
    /// this reading's number
    pub generation: u64,
    /// a digest of the file's text: the same on every replica reading the
    /// same file, so a search page token can be bound to the data
    pub digest: String,
    /// who refers to whom, built on the first search that asks
    referrers: OnceLock<HashMap<EntityUid, Vec<EntityUid>>>,
    /// the schema it was read against (its action entities are that
    /// schema's): decisions under another one must not read it
    schema: Arc<Schema>,
}

impl Resident {
    fn new((entities, digest): (Entities, String), schema: Arc<Schema>) -> Self {
        static READINGS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Self {
            entities,
            digest,
            generation: READINGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            referrers: OnceLock::new(),
            schema,
        }
    }

    /// Whether it was read against `schema`: after a schema change, not
    /// until the file is read again against the new one, and never if the
    /// file does not meet it (its entities and action groups are the old
    /// schema's).
    pub fn read_under(&self, schema: &Arc<Schema>) -> bool {
        Arc::ptr_eq(&self.schema, schema)
    }

    /// The entities `uids` name and their ancestors, each once (a uid this
    /// reading does not hold is left out): what a decision on them reads.
    pub fn gather<'u>(&self, uids: impl IntoIterator<Item = &'u EntityUid>, out: &mut Vec<Entity>) {
        let entities = &self.entities;
        let mut seen: HashSet<&EntityUid> = HashSet::new();
        for uid in uids {
            if !seen.insert(uid) {
                continue;
            }
            let Some(entity) = entities.get(uid) else {
                continue;
            };
            out.push(entity.clone());
            for ancestor in entities.ancestors(uid).into_iter().flatten() {
                if let Some(parent) = entities.get(ancestor).filter(|_| seen.insert(ancestor)) {
                    out.push(parent.clone());
                }
            }
        }
    }

    /// For each entity, the entities whose attributes refer to it (see
    /// [`super::referenced_uids`]): a search's `related` candidates,
    /// indexed once per reading rather than scanned per search.
    pub fn referrers(&self) -> &HashMap<EntityUid, Vec<EntityUid>> {
        self.referrers.get_or_init(|| {
            let mut referrers: HashMap<EntityUid, Vec<EntityUid>> = HashMap::new();
            for entity in self.entities.iter() {
                let Ok(json) = entity.to_json_value() else {
                    continue;
                };
                let mut found = Vec::new();
                if let Some(attrs) = json.get("attrs") {
                    super::referenced_uids(attrs, &mut found);
                }
                found.sort_unstable();
                found.dedup();
                for (type_name, id) in &found {
                    let Ok(type_name) = type_name.parse() else {
                        continue;
                    };
                    let uid = EntityUid::from_type_name_and_id(type_name, EntityId::new(*id));
                    referrers.entry(uid).or_default().push(entity.uid());
                }
            }
            referrers
        })
    }
}

/// Entities read from one file.
pub struct FileStore {
    path: PathBuf,
    /// the text itself, for entities written inline (a test suite's
    /// fixture): nothing on disk to re-read
    inline: Option<String>,
    schema: ArcSwap<Schema>,
    entities: ArcSwap<Resident>,
    /// (modified time, length) of the file last read
    stamp: Mutex<Option<(SystemTime, u64)>>,
    /// held while the file is read and its reading stored
    reading: Mutex<()>,
}

impl FileStore {
    /// Reads `path` and checks every entity against `schema`.
    ///
    /// # Errors
    /// An unreadable file, bad JSON, or an entity that does not conform.
    pub fn open(path: &Path, schema: Arc<Schema>) -> Result<Self, EntityError> {
        let stamp = stamp(path);
        let entities = read(path, &schema)?;
        Ok(Self {
            path: path.to_owned(),
            inline: None,
            schema: ArcSwap::new(Arc::clone(&schema)),
            entities: ArcSwap::from_pointee(Resident::new(entities, schema)),
            stamp: Mutex::new(stamp),
            reading: Mutex::new(()),
        })
    }

    /// Entities written inline (Cedar JSON `text`), checked against
    /// `schema`; `label` names them in errors. Never re-read.
    ///
    /// # Errors
    /// Bad JSON, or an entity that does not conform.
    pub fn inline(label: &Path, text: String, schema: Arc<Schema>) -> Result<Self, EntityError> {
        let entities = parse(label, &text, &schema)?;
        Ok(Self {
            path: label.to_owned(),
            inline: Some(text),
            schema: ArcSwap::new(Arc::clone(&schema)),
            entities: ArcSwap::from_pointee(Resident::new(entities, schema)),
            stamp: Mutex::new(None),
            reading: Mutex::new(()),
        })
    }

    /// The number of entities held.
    pub fn len(&self) -> usize {
        self.entities.load().entities.len()
    }

    /// Whether the file held no entity.
    pub fn is_empty(&self) -> bool {
        self.entities.load().entities.is_empty()
    }

    /// Every entity held, and the schema's action entities, with the
    /// reading's generation.
    pub fn entities(&self) -> Arc<Resident> {
        self.entities.load_full()
    }

    /// Appends the entities `uids` name and their ancestors, from a
    /// reading made against `schema`.
    ///
    /// # Errors
    /// [`EntityError::OtherSchema`] when the reading in force was made
    /// against another.
    pub(super) fn gather(
        &self,
        uids: &[EntityUid],
        schema: &Arc<Schema>,
        out: &mut Vec<Entity>,
    ) -> Result<(), EntityError> {
        let resident = self.entities.load();
        if !resident.read_under(schema) {
            return Err(EntityError::OtherSchema);
        }
        resident.gather(uids, out);
        Ok(())
    }

    /// Adopts a new schema and re-reads the file against it.
    pub fn set_schema(&self, schema: Arc<Schema>) {
        self.schema.store(schema);
        self.reload_now();
    }

    /// Re-reads the file now; on error the data held keeps serving. One
    /// reading at a time: a poll's reading under the old schema never
    /// lands after [`Self::set_schema`]'s under the new one.
    pub fn reload_now(&self) {
        let _one_at_a_time = self
            .reading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let stamp = stamp(&self.path);
        let schema = self.schema.load_full();
        let reading = match &self.inline {
            Some(text) => parse(&self.path, text, &schema),
            None => read(&self.path, &schema),
        };
        match reading {
            Ok(entities) => {
                self.entities
                    .store(Arc::new(Resident::new(entities, schema)));
                *self
                    .stamp
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = stamp;
                tracing::info!(path = %self.path.display(), "entities file reloaded");
            }
            Err(error) => {
                tracing::error!(%error, "entities file not reloaded; the last good data keeps serving")
            }
        }
    }

    /// Re-reads the file when its modification time or size changed.
    pub fn reload_if_changed(&self) {
        let current = stamp(&self.path);
        let last = *self
            .stamp
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.inline.is_none() && current.is_some() && current != last {
            self.reload_now();
        }
    }

    /// Polls the file every `interval` until the store is dropped.
    pub fn watch(self: &Arc<Self>, interval: Duration) {
        crate::support::periodic::every(self, interval, Self::reload_if_changed);
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    // The embedded data never changes: nothing on disk stands for it.
    if crate::support::embedded::contains(path) {
        return None;
    }
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The file's entities, and a digest of its text.
fn read(path: &Path, schema: &Schema) -> Result<(Entities, String), EntityError> {
    let text =
        crate::support::embedded::read_to_string(path).map_err(|source| EntityError::Io {
            path: path.to_owned(),
            source,
        })?;
    parse(path, &text, schema)
}

/// Entities from Cedar JSON `text` (read from `path`), and its digest.
fn parse(path: &Path, text: &str, schema: &Schema) -> Result<(Entities, String), EntityError> {
    use sha2::Digest as _;
    let entities =
        Entities::from_json_str(text, Some(schema)).map_err(|source| EntityError::Invalid {
            path: path.to_owned(),
            source,
        })?;
    let digest = sha2::Sha256::digest(text.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((entities, digest))
}
