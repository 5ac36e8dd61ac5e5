//! Wiring: from a [`Config`] to the running parts (policy store, entity
//! store, engine, API). The composition root that the binary's subcommands
//! (`cli`) and the end-to-end tests share; it holds no logic of its own.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use cedar_policy::EntityTypeName;

use crate::api::{AdminAccess, Api, ApiLimits, ApiSettings, Surface};
use crate::api::{GrpcHandler, RouteError, RouteTable};
use crate::config::{Config, ConfigError, DecisionSink, StoreKind};
use crate::engine::Engine;
use crate::entities::Sourcing;
use crate::entities::{
    CacheSettings, EntityCache, EntityError, EntityStore, FileStore, HttpStore, HttpStoreSettings,
};
use crate::policy::{PolicyError, PolicySources, PolicyStore};
use crate::server::{self, ServerError, ServerSettings};
use crate::support::tls::{ReloadingCert, TlsError};
use crate::telemetry::history::HistoryQueue;
use crate::telemetry::keep::KeepRules;
use crate::telemetry::{DecisionLog, DecisionLogSettings, LogSink};

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
    /// The TLS material is unusable.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Tls(#[from] TlsError),
    /// The decision log file cannot be opened.
    #[error("cannot open the decision log `{path}`: {source}")]
    DecisionLog {
        /// the file
        path: std::path::PathBuf,
        /// why
        source: std::io::Error,
    },
    /// The listener could not start.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Server(#[from] ServerError),
    /// A `log.keep` rule is wrong.
    #[error("log.keep: {0}")]
    Keep(String),
    /// The change-event bus cannot be used (an unreachable bus is not an
    /// error: it is retried, and entities are kept briefly meanwhile).
    #[error(transparent)]
    Bus(#[from] crate::bus::BusError),
}

/// The change-event bus of a configuration, if it names one.
pub fn bus_settings(config: &Config) -> Option<crate::bus::BusSettings> {
    Some(crate::bus::BusSettings {
        url: config.bus.url.clone()?,
        subject: config.bus.subject.clone(),
        credentials_file: config.bus.credentials_file.clone(),
        tls_ca: config.bus.tls_ca.clone(),
    })
}

/// The action history of a configuration, if it names one: its server
/// reached with the bus's credentials and TLS.
pub fn history_settings(config: &Config) -> Option<crate::bus::history::HistorySettings> {
    Some(crate::bus::history::HistorySettings {
        nats: crate::bus::BusSettings {
            url: config.history.url.clone()?,
            subject: String::new(),
            credentials_file: config.bus.credentials_file.clone(),
            tls_ca: config.bus.tls_ca.clone(),
        },
        stream: config.history.stream.clone(),
        subject_prefix: config.history.subject_prefix.clone(),
        retry_for: config.history.retry_for,
        max_age: config.history.max_age,
        max_bytes: config.history.max_bytes,
        replicas: config.history.replicas,
    })
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
    engine_with(config, None)
}

/// An engine over entities written inline (Cedar JSON `text`, named
/// `label` in errors) instead of the configured store: a test suite's own
/// fixture.
///
/// # Errors
/// As [`engine`], and entities that do not conform to the schema.
pub fn engine_over_inline(
    config: &Config,
    label: &Path,
    text: String,
) -> Result<Engine, StartError> {
    engine_with(config, Some((label, text)))
}

fn engine_with(config: &Config, inline: Option<(&Path, String)>) -> Result<Engine, StartError> {
    let policies = PolicyStore::open(policy_sources(config))?;
    let snapshot = policies.current();
    let schema = Arc::clone(snapshot.schema());
    let store = match (inline, config.store.kind) {
        (Some((label, text)), _) => {
            EntityStore::File(Arc::new(FileStore::inline(label, text, schema)?))
        }
        (None, StoreKind::File) => {
            EntityStore::File(Arc::new(FileStore::open(&config.store.entities, schema)?))
        }
        (None, StoreKind::Http) => EntityStore::Http {
            cache: EntityCache::new(http_store(config)?, cache_settings(config)),
            ancestor_depth: config.store.ancestor_depth,
        },
        (None, StoreKind::None) => EntityStore::None,
    };
    let mut sourcing = HashMap::new();
    for (name, source) in &config.entities.sources {
        let known = EntityTypeName::from_str(name)
            .ok()
            .filter(|ty| snapshot.entity_types().any(|known| known == ty));
        let Some(ty) = known else {
            let declared: Vec<String> = snapshot.entity_types().map(ToString::to_string).collect();
            return Err(ConfigError::invalid(format!(
                "`entities.sources`: {}; it declares {}",
                snapshot.unknown_type("entity type", name),
                declared.join(", ")
            ))
            .into());
        };
        sourcing.insert(ty, *source);
    }
    let default_sourcing = match store {
        EntityStore::None => Sourcing::Request,
        EntityStore::File(_) | EntityStore::Http { .. } => Sourcing::Store,
    };
    let mut engine = Engine::new(
        Arc::new(policies),
        store,
        sourcing,
        default_sourcing,
        config.cache.max_slices,
    );
    if let Some(dir) = &config.policy.shadow_dir {
        let mut sources = policy_sources(config);
        sources.policy_dir = dir.clone();
        engine.set_shadow(Arc::new(PolicyStore::open(sources)?));
    }
    Ok(engine)
}

fn http_store(config: &Config) -> Result<HttpStore, EntityError> {
    let store = &config.store;
    HttpStore::new(HttpStoreSettings {
        base: store.upstream.clone().unwrap_or_default(),
        token: store.upstream_token.clone(),
        ca: store.upstream_ca.clone(),
        client_identity: store
            .upstream_client_cert
            .clone()
            .zip(store.upstream_client_key.clone()),
        connect_timeout: store.connect_timeout,
        request_timeout: store.request_timeout,
        retries: store.retries,
        retry_backoff: store.retry_backoff,
        max_response_bytes: store.max_response_bytes,
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
        max_built: config.cache.max_built,
        ttl_without_bus: config
            .bus
            .url
            .is_some()
            .then_some(config.cache.ttl_without_bus),
    }
}

/// Starts the decision log's writer, its `log.keep` rules checked against
/// the actions (and groups) of `snapshot`, every kept decision line also
/// put in the history's `outbox` when there is one. Needs a tokio runtime.
///
/// # Errors
/// A decision log file that cannot be opened; a `log.keep` rule that is
/// wrong or names no action or group.
pub fn decision_log(
    config: &Config,
    snapshot: &crate::policy::PolicySnapshot,
    outbox: Option<HistoryQueue>,
) -> Result<DecisionLog, StartError> {
    let known = |name: &str| {
        if snapshot.action(name).is_some() {
            Ok(())
        } else {
            Err(snapshot.unknown_action(name))
        }
    };
    let keep = KeepRules::new(&config.log.keep, &known).map_err(StartError::Keep)?;
    let sink = match (config.log.decisions, &config.log.decisions_file) {
        (DecisionSink::Off, _) => LogSink::Off,
        (DecisionSink::Stdout, _) => LogSink::Stdout,
        (DecisionSink::Stderr, _) => LogSink::Stderr,
        (DecisionSink::File, Some(path)) => LogSink::File(path.clone()),
        (DecisionSink::File, None) => LogSink::Off,
    };
    DecisionLog::start(DecisionLogSettings {
        sink,
        queue: config.log.decisions_queue,
        max_bytes: config.log.decisions_max_bytes,
        mask: config.log.mask.clone(),
        capture_entities: config.log.capture_entities,
        keep: Arc::new(keep),
        history: outbox.map(|outbox| (outbox, config.history.subject_prefix.clone())),
    })
    .map_err(|source| StartError::DecisionLog {
        path: config.log.decisions_file.clone().unwrap_or_default(),
        source,
    })
}

/// Starts the engine's background work: the file store's change watcher
/// and the policy watcher. Needs a tokio runtime.
///
/// Only files an operator named are watched: the embedded pack and data
/// never change.
pub fn start_background(config: &Config, engine: &Arc<Engine>) {
    if let EntityStore::File(store) = engine.store()
        && !crate::support::embedded::contains(&config.store.entities)
    {
        store.watch(config.store.reload_interval);
    }
    let interval = config.policy.reload_interval;
    let named = !crate::support::embedded::contains(&config.policy.dir)
        || config.policy.shadow_dir.is_some();
    if named && !interval.is_zero() {
        crate::support::periodic::every(engine, interval, |engine| {
            if engine.policies().sources_changed() {
                // Errors are logged and counted by the engine.
                let _ = engine.reload_policies();
            }
        });
    }
}

/// The gateway route table of the configuration, checked against the
/// engine's policies: no fact may come from a place the client controls.
///
/// # Errors
/// A route that does not compile, or that reads a fact from the client.
pub fn routes(config: &Config, engine: &Engine) -> Result<Arc<RouteTable>, StartError> {
    let table = RouteTable::compile(&config.gateway)?;
    let snapshot = engine.policies().current();
    table.check_names(
        |action| {
            snapshot
                .action(action)
                .is_none()
                .then(|| snapshot.unknown_action(action))
        },
        |what, ty| {
            snapshot
                .entity_type(ty)
                .is_none()
                .then(|| snapshot.unknown_type(what, ty))
        },
    )?;
    table.check_facts(|action, attribute| snapshot.is_fact(action, attribute))?;
    Ok(Arc::new(table))
}

/// The API of one listener: `surface` says which endpoints it answers.
pub fn api(config: &Config, engine: Arc<Engine>, routes: Arc<RouteTable>, surface: Surface) -> Api {
    let admin_addr = match surface {
        Surface::Admin => config.server.admin_listen.unwrap_or(config.server.listen),
        Surface::All | Surface::Decisions => config.server.listen,
    };
    let admin = match &config.admin.token {
        Some(token) => AdminAccess::Token(token.clone()),
        None if admin_addr.ip().is_loopback() => AdminAccess::Open,
        None => AdminAccess::Closed,
    };
    Api::new(
        engine,
        routes,
        ApiSettings {
            limits: ApiLimits {
                max_body_bytes: config.server.max_body_bytes,
                max_batch_items: config.server.max_batch_items,
                max_json_depth: config.server.max_json_depth,
                max_request_entities: config.server.max_request_entities,
                lingering_time: config.server.lingering_time,
                lingering_timeout: config.server.lingering_timeout,
                max_explain_items: match config.api.explain {
                    crate::config::Switch::On => config.api.max_explain_items,
                    crate::config::Switch::Off => 0,
                },
            },
            admin,
            surface,
            decision_clients: config.tls.allowed_clients.decisions.clone(),
            admin_clients: config.tls.allowed_clients.admin.clone(),
            scheme: if config.tls.cert.is_some() {
                "https"
            } else {
                "http"
            },
            public_url: config.server.public_url.clone(),
            listen_authority: config.server.listen.to_string(),
            search: crate::api::SearchSettings::new(
                config.search.max_candidates,
                config.search.token_key.as_deref(),
                config.search.time_budget,
                config.search.max_concurrent,
            ),
        },
    )
}

/// The listeners' settings from the configuration.
pub fn server_settings(config: &Config) -> ServerSettings {
    ServerSettings {
        header_read_timeout: config.server.header_read_timeout,
        shutdown_grace_period: config.server.shutdown_grace_period,
        request_timeout: config.server.request_timeout,
        max_connections: config.server.max_connections,
        idle_timeout: config.server.idle_timeout,
    }
}

/// A running Mandate: its bound addresses, and the handle that stops it.
pub struct Running {
    /// the decision listener
    pub addr: SocketAddr,
    /// the admin listener, when configured
    pub admin_addr: Option<SocketAddr>,
    /// the gRPC `ext_authz` listener, when configured
    pub grpc_addr: Option<SocketAddr>,
    /// `http` or `https`
    pub scheme: &'static str,
    /// the engine, for in-process callers
    pub engine: Arc<Engine>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Begins a graceful shutdown: listeners stop accepting, in-flight
    /// requests get the grace period.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits until every listener has drained and stopped.
    pub async fn stopped(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Loads everything, binds every listener and serves. Returns once all
/// listeners accept connections.
///
/// # Errors
/// Invalid policies, entities, routes or TLS material; an address in use.
pub async fn start(config: &Config) -> Result<Running, StartError> {
    let mut engine = engine(config)?;
    let history = history_settings(config);
    let outbox = history
        .as_ref()
        .map(|_| HistoryQueue::new(config.history.queue, config.history.queue_bytes));
    let snapshot = engine.policies().current();
    engine.set_decision_log(decision_log(config, &snapshot, outbox.clone())?);
    let engine = Arc::new(engine);
    crate::telemetry::metrics().policy_version(engine.policies().current().version());
    let routes = routes(config, &engine)?;
    let tls = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => {
            let cert = Arc::new(ReloadingCert::open(cert, key)?);
            let server =
                crate::support::tls::server_config(&cert, config.tls.client_ca.as_deref())?;
            cert.watch(config.tls.reload_interval);
            Some(server)
        }
        _ => None,
    };
    let main = server::bind(config.server.listen).await?;
    let admin = match config.server.admin_listen {
        Some(addr) => Some(server::bind(addr).await?),
        None => None,
    };
    let grpc = match config.gateway.grpc_listen {
        Some(addr) => Some(server::bind(addr).await?),
        None => None,
    };
    start_background(config, &engine);
    if let Some(bus) = bus_settings(config) {
        crate::bus::subscribe(bus, Arc::clone(&engine)).await?;
    }
    if let (Some(history), Some(outbox)) = (history, outbox) {
        crate::bus::history::start(history, outbox).await?;
    }
    let (stop, stopped) = watch::channel(false);
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    let settings = server_settings(config);
    let mut tasks = Vec::new();
    let addr = local_addr(&main, config.server.listen);
    let main_surface = if admin.is_some() {
        Surface::Decisions
    } else {
        Surface::All
    };
    // The API names its listener by the address actually bound (port 0).
    let mut bound = config.clone();
    bound.server.listen = addr;
    let main_api = Arc::new(api(
        &bound,
        Arc::clone(&engine),
        Arc::clone(&routes),
        main_surface,
    ));
    tasks.push(tokio::spawn(server::serve(
        main,
        main_api,
        settings,
        tls.clone(),
        until_stopped(),
    )));
    let admin_addr = admin.map(|listener| {
        let addr = local_addr(&listener, config.server.listen);
        let admin_api = Arc::new(api(
            config,
            Arc::clone(&engine),
            Arc::clone(&routes),
            Surface::Admin,
        ));
        tasks.push(tokio::spawn(server::serve(
            listener,
            admin_api,
            settings,
            tls.clone(),
            until_stopped(),
        )));
        addr
    });
    let grpc_addr = grpc.map(|listener| {
        let addr = local_addr(&listener, config.server.listen);
        let handler = Arc::new(GrpcHandler::new(
            Arc::clone(&engine),
            Arc::clone(&routes),
            config.tls.allowed_clients.decisions.clone(),
        ));
        tasks.push(tokio::spawn(server::serve(
            listener,
            handler,
            settings,
            tls.clone(),
            until_stopped(),
        )));
        addr
    });
    Ok(Running {
        addr,
        admin_addr,
        grpc_addr,
        scheme: if tls.is_some() { "https" } else { "http" },
        engine,
        stop,
        tasks,
    })
}

fn local_addr(listener: &tokio::net::TcpListener, fallback: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(fallback)
}
