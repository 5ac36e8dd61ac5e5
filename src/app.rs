//! Wiring: from a [`Config`] to the running parts (policy store, entity
//! store, engine, API). The composition root that `main` and the end-to-end
//! tests share; it holds no logic of its own.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::EntityTypeName;

use crate::api::{AdminAccess, Api, ApiLimits};
use crate::config::{Config, ConfigError, Sourcing, StoreKind};
use crate::engine::Engine;
use crate::entities::{
    CacheSettings, EntityCache, EntityError, EntityStore, FileStore, HttpStore, HttpStoreSettings,
};
use crate::policy::{PolicyError, PolicySources, PolicyStore};
use crate::routes::{RouteError, RouteTable};
use crate::server::{ServerError, ServerSettings};

/// Why Mandate could not start.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Config(#[from] ConfigError),
    /// The policies or schema are invalid.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Policy(#[from] PolicyError),
    /// The entity data is invalid.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Entities(#[from] EntityError),
    /// The gateway route table is invalid.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Routes(#[from] RouteError),
    /// The listener could not start.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Server(#[from] ServerError),
}

/// The policy sources a configuration names.
pub fn policy_sources(config: &Config) -> PolicySources {
    PolicySources {
        policy_dir: config.policy.dir.clone(),
        schema: config.policy.schema.clone(),
        default_namespace: config.policy.default_namespace.clone(),
    }
}

/// Loads policies and entities and builds the engine.
///
/// # Errors
/// Invalid policies, schema, entities, or an `entities.sources` key that
/// names no entity type of the schema.
pub fn engine(config: &Config) -> Result<Engine, StartError> {
    let policies = PolicyStore::open(policy_sources(config))?;
    let snapshot = policies.current();
    let store = match config.store.kind {
        StoreKind::File => EntityStore::File(Arc::new(FileStore::open(
            &config.store.entities,
            Arc::clone(snapshot.schema()),
        )?)),
        StoreKind::Http => EntityStore::Http {
            cache: EntityCache::new(http_store(config)?, cache_settings(config)),
            ancestor_depth: config.store.ancestor_depth,
        },
        StoreKind::None => EntityStore::None,
    };
    let mut sourcing = HashMap::new();
    for (name, source) in &config.entities.sources {
        let known = EntityTypeName::from_str(name)
            .ok()
            .filter(|ty| snapshot.entity_types().any(|known| known == ty));
        let Some(ty) = known else {
            let declared: Vec<String> = snapshot.entity_types().map(ToString::to_string).collect();
            return Err(ConfigError::Invalid {
                origin: None,
                message: format!(
                    "`entities.sources` names `{name}`, which the schema does not declare (it declares {})",
                    declared.join(", ")
                ),
            }
            .into());
        };
        sourcing.insert(ty, *source);
    }
    let default_sourcing = match config.store.kind {
        StoreKind::None => Sourcing::Request,
        StoreKind::File | StoreKind::Http => Sourcing::Store,
    };
    Ok(Engine::new(
        Arc::new(policies),
        store,
        sourcing,
        default_sourcing,
    ))
}

fn http_store(config: &Config) -> Result<HttpStore, EntityError> {
    let store = &config.store;
    HttpStore::new(HttpStoreSettings {
        base: store.upstream.clone().unwrap_or_default(),
        token: store.upstream_token.clone(),
        ca: store.upstream_ca.clone(),
        connect_timeout: store.connect_timeout,
        request_timeout: store.request_timeout,
        retries: store.retries,
        retry_backoff: store.retry_backoff,
    })
    .map_err(EntityError::Setup)
}

fn cache_settings(config: &Config) -> CacheSettings {
    CacheSettings {
        ttl: config.cache.ttl,
        negative_ttl: config.cache.negative_ttl,
        stale_if_error: config.cache.stale_if_error,
        max_entries: config.cache.max_entries,
        max_bytes: config.cache.max_bytes,
    }
}

/// Starts the engine's background work (the file store's change watcher).
/// Needs a tokio runtime.
pub fn start_background(config: &Config, engine: &Engine) {
    if let EntityStore::File(store) = engine.store() {
        store.watch(config.store.reload_interval);
    }
}

/// The gateway route table of the configuration.
///
/// # Errors
/// A route that does not compile.
pub fn routes(config: &Config) -> Result<Arc<RouteTable>, StartError> {
    Ok(Arc::new(RouteTable::compile(&config.gateway)?))
}

/// The API over an engine, with the configuration's limits, admin access
/// and gateway routes.
pub fn api(config: &Config, engine: Arc<Engine>, routes: Arc<RouteTable>) -> Api {
    let admin = match &config.admin.token {
        Some(token) => AdminAccess::Token(token.clone()),
        None if config.server.listen.ip().is_loopback() => AdminAccess::Open,
        None => AdminAccess::Closed,
    };
    Api::new(
        engine,
        routes,
        ApiLimits {
            max_body_bytes: config.server.max_body_bytes,
            max_batch_items: config.server.max_batch_items,
        },
        admin,
        "http",
    )
}

/// The listener's settings from the configuration.
pub fn server_settings(config: &Config) -> ServerSettings {
    ServerSettings {
        header_read_timeout: config.server.header_read_timeout,
        shutdown_grace_period: config.server.shutdown_grace_period,
    }
}
