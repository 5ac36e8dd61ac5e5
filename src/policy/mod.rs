//! Policies and schema: loading them from disk with Cedar's diagnostics, the
//! immutable [`PolicySnapshot`] a decision reads, and the [`PolicyStore`] that
//! swaps snapshots atomically so a bad reload keeps the last good one.
//!
//! Knows nothing of entities, HTTP or sockets.

mod diagnostic;
mod load;
mod names;
mod reads;
mod shape;
mod verdicts;

use foldhash::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use cedar_policy::{ActionConstraint, Entity, EntityTypeName, EntityUid, PolicySet, Schema};

pub use diagnostic::SourceDiagnostic;
pub use load::{PolicySources, load};
pub use names::{closest, unknown_name};
pub use reads::ContextReads;
pub use shape::{Attr, AttrKind, RequestShape};
pub use verdicts::{Satisfied, Verdict, Verdicts};

/// Why a set of policies and schema could not be loaded.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PolicyError {
    /// A file or directory could not be read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// the file or directory
        path: PathBuf,
        /// why
        source: std::io::Error,
    },
    /// The policy directory holds no `*.cedar` file.
    #[error("no `*.cedar` policy files under `{dir}`")]
    #[diagnostic(help("point `--policies` at the directory holding the policy pack"))]
    NoPolicies {
        /// the directory
        dir: PathBuf,
    },
    /// The schema path holds no `*.cedarschema` file.
    #[error("no `*.cedarschema` schema file at `{path}`")]
    #[diagnostic(help("point `--schema` at a `.cedarschema` file or a directory of them"))]
    NoSchema {
        /// the path
        path: PathBuf,
    },
    /// The schema fragments do not form one schema.
    #[error("invalid schema at `{path}`")]
    Schema {
        /// the schema path
        path: PathBuf,
        /// Cedar's error
        #[source]
        #[diagnostic_source]
        source: cedar_policy::SchemaError,
    },
    /// Parse or validation errors, each tied to its file and line.
    #[error("{} error(s) in the policies or schema", diagnostics.len())]
    #[diagnostic(help("fix each error listed below; nothing was loaded"))]
    Invalid {
        /// every error found
        #[related]
        diagnostics: Vec<SourceDiagnostic>,
    },
    /// Two policies carry the same `@id`.
    #[error("duplicate policy `@id(\"{id}\")` in `{first}` and `{second}`")]
    #[diagnostic(help("each policy needs its own `@id`, e.g. `@id(\"U1.personal\")`"))]
    DuplicateId {
        /// the id
        id: String,
        /// first file
        first: String,
        /// second file
        second: String,
    },
    /// The default namespace is not declared by the schema, or none can be chosen.
    #[error("default namespace {0}")]
    #[diagnostic(help("set `policy.default_namespace` to one of the schema's namespaces"))]
    Namespace(String),
}

impl PolicyError {
    /// Every diagnostic as one line each (`file:line:col: message: help: …`),
    /// for logs and JSON answers.
    pub fn lines(&self) -> Vec<String> {
        match self {
            Self::Invalid { diagnostics } => {
                diagnostics.iter().map(SourceDiagnostic::one_line).collect()
            }
            other => vec![other.to_string()],
        }
    }
}

/// One immutable, validated generation of schema and policies: what a
/// decision reads. Built off the hot path; shared by `Arc`.
pub struct PolicySnapshot {
    schema: Arc<Schema>,
    policies: PolicySet,
    version: Arc<str>,
    /// unique to this snapshot in the process: what is remembered from a
    /// decision under it is void under any other
    epoch: u64,
    /// a content hash of the schema files alone
    schema_version: String,
    /// the whole of that hash (`schema_version` shows 48 bits of it): a
    /// reload keeps the schema's `Arc` only when it matches
    schema_digest: [u8; 32],
    namespace: String,
    /// lower-case type name (qualified, and unqualified in the default
    /// namespace) → type, and the type as Cedar prints it
    types: TypeNames,
    /// action id (unqualified in the default namespace, and `Ns::Action::"id"`) → uid
    actions: HashMap<String, EntityUid>,
    /// per action: the policies that can apply to it and its entities
    plans: HashMap<EntityUid, ActionPlan>,
    /// each entity type's declared attribute names, by its full name
    attributes: HashMap<String, foldhash::HashSet<String>>,
}

/// What deciding one action needs, prepared when the snapshot is built: the
/// policies whose action scope can match it (Cedar would otherwise evaluate
/// every policy's scope on every request), and the action's own entity with
/// its groups (all that `action in Action::"group"` reads).
pub struct ActionPlan {
    policies: PolicySet,
    entities: Vec<Entity>,
    shape: Option<RequestShape>,
    verdicts: Option<Verdicts>,
    /// whether the action's context declares [`ACTION_PROPERTIES`]
    takes_action_properties: bool,
    /// the ids of the action's groups (its ancestors), for `log.keep`
    groups: Vec<String>,
}

/// The context attribute an AuthZEN action's `properties` arrive in, for
/// an action whose context declares it (a record): Cedar actions carry no
/// attributes of their own.
pub const ACTION_PROPERTIES: &str = "action_properties";

impl ActionPlan {
    /// Whether the action's context declares [`ACTION_PROPERTIES`], so an
    /// AuthZEN `action.properties` reaches its policies there.
    pub fn takes_action_properties(&self) -> bool {
        self.takes_action_properties
    }

    /// The policies that can apply to this action.
    pub fn policies(&self) -> &PolicySet {
        &self.policies
    }

    /// The action's entity and its ancestors (action groups).
    pub fn entities(&self) -> &[Entity] {
        &self.entities
    }

    /// The ids of the action's groups (`funding` for `withdraw`), which a
    /// `log.keep` rule may name.
    pub fn groups(&self) -> &[String] {
        &self.groups
    }

    /// The request the action takes, when the fast path can convert its
    /// context.
    pub fn shape(&self) -> Option<&RequestShape> {
        self.shape.as_ref()
    }

    /// The policies prepared for evaluation at once, when they could be.
    pub fn verdicts(&self) -> Option<&Verdicts> {
        self.verdicts.as_ref()
    }
}

/// A schema's entity types by every name a caller may write one:
/// qualified (`Brokerage::User`) or, in the default namespace, short
/// (`user`), either case-insensitively. One resolution for requests,
/// routes, change events and `mandate publish`.
#[derive(Debug, Clone)]
pub struct TypeNames {
    types: HashMap<String, (EntityTypeName, Arc<str>)>,
}

impl TypeNames {
    fn new(schema: &Schema, prefix: &str) -> Self {
        let mut types = HashMap::default();
        let mut exact = Vec::new();
        for ty in schema.entity_types() {
            let full = ty.to_string();
            let printed: Arc<str> = Arc::from(full.as_str());
            if let Some(short) = full.strip_prefix(prefix).filter(|s| !s.contains("::")) {
                types.insert(short.to_lowercase(), (ty.clone(), Arc::clone(&printed)));
                exact.push((short.to_owned(), (ty.clone(), Arc::clone(&printed))));
            }
            types.insert(full.to_lowercase(), (ty.clone(), Arc::clone(&printed)));
            exact.push((full, (ty.clone(), printed)));
        }
        // Each name also as the schema spells it, inserted last so that it
        // wins over another type's lowercased name: a request that spells a
        // name so is found at once, with no lowercased copy made.
        types.extend(exact);
        Self { types }
    }

    /// The entity type names of the schema at `sources.schema` alone (no
    /// policies read), for tools that name entities: `mandate publish`.
    ///
    /// # Errors
    /// A schema that cannot be read or parsed, or an undeclared namespace.
    pub fn of_schema(sources: &PolicySources) -> Result<Self, PolicyError> {
        let schema = load::schema_only(&sources.schema)?;
        let namespace = default_namespace(&schema, sources.default_namespace.as_deref())?;
        Ok(Self::new(&schema, &namespace_prefix(&namespace)))
    }

    /// The type `name` stands for, and its name as Cedar prints it.
    pub fn get(&self, name: &str) -> Option<(&EntityTypeName, &str)> {
        self.types
            .get(name)
            .or_else(|| self.types.get(&name.to_lowercase()))
            .map(|(ty, printed)| (ty, &**printed))
    }

    /// "the schema declares no entity type `name`", with the closest.
    pub fn unknown(&self, name: &str) -> String {
        let mut declared: Vec<&str> = self.types.values().map(|(_, printed)| &**printed).collect();
        declared.sort_unstable();
        declared.dedup();
        unknown_name("entity type", name, declared)
    }
}

/// The namespace unqualified names are read in: `namespace` when the
/// schema declares it, else the schema's only one (none when it has
/// several or none).
fn default_namespace(schema: &Schema, namespace: Option<&str>) -> Result<String, PolicyError> {
    let mut namespaces: Vec<String> = schema
        .entity_types()
        .map(EntityTypeName::namespace)
        .chain(schema.actions().map(|a| a.type_name().namespace()))
        .filter(|ns| !ns.is_empty())
        .collect();
    namespaces.sort();
    namespaces.dedup();
    match namespace {
        Some(ns) if namespaces.iter().any(|n| n == ns) => Ok(ns.to_owned()),
        Some(ns) => Err(PolicyError::Namespace(format!(
            "`{ns}` is not declared by the schema (it declares {namespaces:?})"
        ))),
        None => Ok(match namespaces.as_slice() {
            [only] => only.clone(),
            _ => String::new(),
        }),
    }
}

fn namespace_prefix(namespace: &str) -> String {
    if namespace.is_empty() {
        String::new()
    } else {
        format!("{namespace}::")
    }
}

impl PolicySnapshot {
    fn new(
        (schema_version, schema_digest): (String, [u8; 32]),
        schema: Schema,
        schema_json: &[serde_json::Value],
        policies: PolicySet,
        version: String,
        namespace: Option<&str>,
    ) -> Result<Self, PolicyError> {
        let namespace = default_namespace(&schema, namespace)?;
        let prefix = namespace_prefix(&namespace);
        let types = TypeNames::new(&schema, &prefix);
        let mut actions = HashMap::default();
        let action_type = format!("{prefix}Action");
        for action in schema.actions() {
            if action.type_name().to_string() == action_type {
                actions.insert(action.id().unescaped().to_owned(), action.clone());
            }
            actions.insert(action.to_string(), action.clone());
        }
        let plans = plans(&schema, schema_json, &policies)?;
        let attributes = shape::attributes(schema_json);
        static EPOCHS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Ok(Self {
            epoch: EPOCHS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            schema: Arc::new(schema),
            policies,
            version: version.into(),
            schema_version,
            schema_digest,
            namespace,
            types,
            actions,
            plans,
            attributes,
        })
    }

    /// The schema every policy was validated against.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// The validated policy set.
    pub fn policies(&self) -> &PolicySet {
        &self.policies
    }

    /// A content hash of schema and policy files: the same files, the same version.
    pub fn version(&self) -> &Arc<str> {
        &self.version
    }

    /// This snapshot's number, unique in the process: the policy half of
    /// the engine memo's epoch (the version is not: a reload of the same
    /// files keeps it, and builds new prepared policies).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A content hash of the schema files alone: entity data checked
    /// against one schema version stays valid while it holds.
    pub fn schema_version(&self) -> &str {
        &self.schema_version
    }

    /// The namespace unqualified names resolve in (may be empty).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Resolves an entity type as a caller wrote it: qualified
    /// (`Brokerage::User`) or unqualified in the default namespace (`user`),
    /// case-insensitively.
    pub fn entity_type(&self, name: &str) -> Option<&EntityTypeName> {
        self.entity_type_printed(name).map(|(ty, _)| ty)
    }

    /// As [`Self::entity_type`], with the type as Cedar prints it
    /// (`Brokerage::User`), for logs that name entities canonically.
    pub fn entity_type_printed(&self, name: &str) -> Option<(&EntityTypeName, &str)> {
        self.types.get(name)
    }

    /// The schema's entity types by every name a caller may write.
    pub fn type_names(&self) -> &TypeNames {
        &self.types
    }

    /// Resolves an action: its id in the default namespace (`view_account`)
    /// or its full uid (`Brokerage::Action::"view_account"`).
    pub fn action(&self, name: &str) -> Option<&EntityUid> {
        self.actions.get(name)
    }

    /// The prepared policies and entities of one action.
    pub fn plan(&self, action: &EntityUid) -> Option<&ActionPlan> {
        self.plans.get(action)
    }

    /// Whether `attribute` of `action`'s context is a fact: a Boolean claim
    /// about the world (MFA done, owner approved) rather than a parameter of
    /// the request the application performs, so only a trusted party may
    /// make it. `false` when the action or attribute is unknown.
    pub fn is_fact(&self, action: &str, attribute: &str) -> bool {
        self.action(action)
            .and_then(|uid| self.plan(uid))
            .and_then(ActionPlan::shape)
            .and_then(|shape| shape.attr(attribute))
            .is_some_and(|attr| matches!(attr.kind, shape::AttrKind::Bool))
    }

    /// Whether entity type `ty` declares attribute `name`: an attribute
    /// it does not declare no validated policy can read. `true` for a
    /// type the schema's JSON form does not show (Cedar then decides).
    pub fn declares_attribute(&self, ty: &EntityTypeName, name: &str) -> bool {
        self.attributes
            .get(&ty.to_string())
            .is_none_or(|names| names.contains(name))
    }

    /// Number of policies and templates.
    pub fn policy_count(&self) -> usize {
        self.policies.policies().count() + self.policies.templates().count()
    }

    /// Each entity type the schema declares, fully qualified.
    pub fn entity_types(&self) -> impl Iterator<Item = &EntityTypeName> {
        self.schema.entity_types()
    }

    /// Each action id the schema declares (`view_account`).
    pub fn action_names(&self) -> impl Iterator<Item = &str> {
        self.schema.actions().map(|action| action.id().unescaped())
    }

    /// Says that `name` is no entity type here, and which one was meant.
    pub fn unknown_type(&self, what: &str, name: &str) -> String {
        unknown_name(what, name, self.entity_types().map(ToString::to_string))
    }

    /// Says that `name` is no action here, and which one was meant.
    pub fn unknown_action(&self, name: &str) -> String {
        unknown_name("action", name, self.action_names())
    }
}

impl PolicyStore {
    /// Whether a policy or schema file was added, removed or edited since
    /// the last load (attempted).
    pub fn sources_changed(&self) -> bool {
        let now = load::stamp(&self.sources);
        *self
            .stamp
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            != now
    }
}

/// Prepares an [`ActionPlan`] for every action of the schema.
fn plans(
    schema: &Schema,
    schema_json: &[serde_json::Value],
    policies: &PolicySet,
) -> Result<HashMap<EntityUid, ActionPlan>, PolicyError> {
    let action_entities = schema
        .action_entities()
        .map_err(|e| PolicyError::Namespace(format!("cannot build the action entities: {e}")))?;
    let sliceable = policies.templates().next().is_none();
    let mut slices = HashMap::default();
    let mut action_entities_of = HashMap::default();
    for action in schema.actions() {
        let ancestors: Vec<&EntityUid> = action_entities
            .ancestors(action)
            .into_iter()
            .flatten()
            .collect();
        let entities: Vec<Entity> = std::iter::once(action)
            .chain(ancestors.iter().copied())
            .filter_map(|uid| action_entities.get(uid).cloned())
            .collect();
        let slice = if sliceable {
            action_slice(policies, action, &ancestors)?
        } else {
            policies.clone()
        };
        slices.insert(action.clone(), slice);
        action_entities_of.insert(action.clone(), entities);
    }
    let mut shapes = shape::shapes(schema, schema_json, &slices);
    let takes_action_properties = shape::declaring(schema, schema_json, ACTION_PROPERTIES);
    Ok(slices
        .into_iter()
        .map(|(action, policies)| {
            let entities = action_entities_of.remove(&action).unwrap_or_default();
            let plan = ActionPlan {
                groups: group_ids(&action, &entities),
                entities,
                shape: shapes.remove(&action),
                verdicts: sliceable.then(|| Verdicts::prepare(&policies)).flatten(),
                takes_action_properties: takes_action_properties.contains(&action),
                policies,
            };
            (action, plan)
        })
        .collect())
}

/// The policies whose action scope matches `action` (itself, or a group
/// among its `ancestors`), each without its action scope: the only ones
/// a request for `action` need evaluate.
fn action_slice(
    policies: &PolicySet,
    action: &EntityUid,
    ancestors: &[&EntityUid],
) -> Result<PolicySet, PolicyError> {
    let applies = |constraint: ActionConstraint| match constraint {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(uid) => &uid == action,
        ActionConstraint::In(uids) => uids
            .iter()
            .any(|uid| uid == action || ancestors.contains(&uid)),
    };
    let mut slice = PolicySet::new();
    for policy in policies
        .policies()
        .filter(|p| applies(p.action_constraint()))
    {
        slice.add(without_action_scope(policy)).map_err(|e| {
            PolicyError::Namespace(format!("cannot prepare the policies of `{action}`: {e}"))
        })?;
    }
    Ok(slice)
}

/// The ids of the groups `action` is in, from its action entities (itself
/// and its ancestors), for `log.keep`.
fn group_ids(action: &EntityUid, entities: &[Entity]) -> Vec<String> {
    entities
        .iter()
        .map(Entity::uid)
        .filter(|uid| uid != action)
        .map(|uid| uid.id().unescaped().to_owned())
        .collect()
}

/// `policy` with its action scope dropped, for the slice of an action the
/// scope was found to match: Cedar would otherwise rebuild and test the scope
/// (`action in [...]` builds a set) for every policy on every request. The
/// id, annotations and conditions are kept; if the policy cannot be
/// rewritten, it is kept as it is.
fn without_action_scope(policy: &cedar_policy::Policy) -> cedar_policy::Policy {
    if matches!(policy.action_constraint(), ActionConstraint::Any) {
        return policy.clone();
    }
    policy
        .to_json()
        .ok()
        .and_then(|mut json| {
            *json.get_mut("action")? = serde_json::json!({ "op": "All" });
            cedar_policy::Policy::from_json(Some(policy.id().clone()), json).ok()
        })
        .unwrap_or_else(|| policy.clone())
}

/// The repository's policy pack, loaded as the server loads it (unit tests).
#[cfg(test)]
pub(crate) fn the_pack() -> PolicySnapshot {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    load(&PolicySources {
        policy_dir: root.join("policies"),
        schema: root.join("schema"),
        default_namespace: None,
    })
    .unwrap_or_else(|e| panic!("the policy pack loads: {e}"))
}

/// The current snapshot, swapped atomically: a decision does one atomic load;
/// a reload builds the next snapshot aside and swaps it in only when valid.
pub struct PolicyStore {
    sources: PolicySources,
    current: ArcSwap<PolicySnapshot>,
    /// the files as last read, to notice edits
    stamp: std::sync::Mutex<load::SourcesStamp>,
    /// held for a whole reload: two at once (the poll, SIGHUP, the admin
    /// API) would otherwise let the one that read older files publish last
    reloading: std::sync::Mutex<()>,
}

impl PolicyStore {
    /// Loads the first snapshot.
    ///
    /// # Errors
    /// As [`load`]: nothing starts on a bad policy set.
    pub fn open(sources: PolicySources) -> Result<Self, PolicyError> {
        let stamp = load::stamp(&sources);
        let first = load(&sources)?;
        Ok(Self {
            sources,
            current: ArcSwap::from_pointee(first),
            stamp: std::sync::Mutex::new(stamp),
            reloading: std::sync::Mutex::new(()),
        })
    }

    /// The snapshot in force now.
    pub fn current(&self) -> Arc<PolicySnapshot> {
        self.current.load_full()
    }

    /// Re-reads the files and swaps the new snapshot in; on error the current
    /// one keeps serving.
    ///
    /// # Errors
    /// As [`load`].
    pub fn reload(&self) -> Result<Arc<PolicySnapshot>, PolicyError> {
        self.reload_then(|_| {})
    }

    /// As [`Self::reload`], and `schema_changed` told of a new schema
    /// before the next reload may begin: of two reloads, whoever follows the
    /// schema (the entity store) ends on the last one's.
    ///
    /// # Errors
    /// As [`load`].
    pub fn reload_then(
        &self,
        schema_changed: impl FnOnce(&Arc<Schema>),
    ) -> Result<Arc<PolicySnapshot>, PolicyError> {
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *self
            .stamp
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = load::stamp(&self.sources);
        let mut next = load(&self.sources)?;
        // The same schema stays the same `Arc`: the entity cache tells the
        // schema an answer was checked against by it, and checks again
        // under another one (`entities::rebuild`).
        let before = self.current.load();
        if next.schema_digest == before.schema_digest {
            next.schema = Arc::clone(&before.schema);
        }
        let changed = !Arc::ptr_eq(&next.schema, &before.schema);
        let next = Arc::new(next);
        self.current.store(Arc::clone(&next));
        if changed {
            schema_changed(&next.schema);
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy of the shipped pack, to edit.
    fn pack() -> tempfile::TempDir {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().unwrap();
        for sub in ["policies", "schema"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
            for file in std::fs::read_dir(root.join(sub)).unwrap() {
                let file = file.unwrap().path();
                let to = dir.path().join(sub).join(file.file_name().unwrap());
                std::fs::copy(&file, to).unwrap();
            }
        }
        dir
    }

    #[test]
    fn a_type_is_found_by_any_spelling_and_an_exact_one_wins() {
        let (schema, _) = Schema::from_cedarschema_str(
            "namespace N { entity Account; entity User; entity user; }",
        )
        .unwrap();
        let types = TypeNames::new(&schema, "N::");
        let printed = |name| types.get(name).map(|(_, printed)| printed);
        for name in ["Account", "account", "ACCOUNT", "N::Account", "n::account"] {
            assert_eq!(printed(name), Some("N::Account"), "{name}");
        }
        // Two types a case apart: each exact spelling is its own type.
        assert_eq!(printed("User"), Some("N::User"));
        assert_eq!(printed("N::User"), Some("N::User"));
        assert_eq!(printed("user"), Some("N::user"));
        assert_eq!(printed("N::user"), Some("N::user"));
        assert_eq!(printed("Nope"), None);
    }

    #[test]
    fn a_reload_keeps_the_same_schema_as_the_same_arc_and_a_changed_one_as_another() {
        let dir = pack();
        let store = PolicyStore::open(PolicySources {
            policy_dir: dir.path().join("policies"),
            schema: dir.path().join("schema"),
            default_namespace: None,
        })
        .unwrap();
        let first = store.current();
        // A policy edited, the schema not: the same schema, the same Arc.
        let policy = dir.path().join("policies/general.cedar");
        let text = std::fs::read_to_string(&policy).unwrap();
        std::fs::write(&policy, format!("{text}\n// edited\n")).unwrap();
        let mut told = Vec::new();
        let second = store
            .reload_then(|schema| told.push(Arc::clone(schema)))
            .unwrap();
        assert!(told.is_empty(), "the same schema: nothing to tell");
        assert_eq!(second.schema_version(), first.schema_version());
        assert!(Arc::ptr_eq(second.schema(), first.schema()));
        // The schema changed: another schema, another Arc.
        let schema = dir.path().join("schema/brokerage.cedarschema");
        let text = std::fs::read_to_string(&schema).unwrap();
        std::fs::write(
            &schema,
            format!("{text}\nnamespace Extra {{ entity Note; }}\n"),
        )
        .unwrap();
        let third = store
            .reload_then(|schema| told.push(Arc::clone(schema)))
            .unwrap();
        assert_ne!(third.schema_version(), first.schema_version());
        assert!(!Arc::ptr_eq(third.schema(), first.schema()));
        assert_eq!(told.len(), 1, "a new schema is told once");
        assert!(
            Arc::ptr_eq(&told[0], third.schema()),
            "and it is the new one"
        );
    }
}
