//! The configuration: one typed `Config`, parsed once at start from
//! defaults < `mandate.toml` < `MANDATE_…` environment < command-line flags.
//!
//! Nothing else in the crate reads the environment or the file: `main` builds
//! a [`Config`] with [`Config::load`] and hands each part its own section.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Every configuration key, as `section.key`. Each is also the environment
/// variable `MANDATE_SECTION_KEY` (upper case, `.` → `_`).
pub const KEYS: &[&str] = &[
    "server.listen",
    "server.max_body_bytes",
    "server.max_batch_items",
    "server.header_read_timeout",
    "server.shutdown_grace_period",
    "server.admin_listen",
    "server.request_timeout",
    "server.max_connections",
    "server.max_json_depth",
    "server.idle_timeout",
    "server.public_url",
    "server.max_request_entities",
    "tls.cert",
    "tls.key",
    "tls.client_ca",
    "tls.reload_interval",
    "tls.allowed_clients",
    "policy.dir",
    "policy.schema",
    "policy.default_namespace",
    "store.kind",
    "store.entities",
    "store.reload_interval",
    "store.upstream",
    "store.upstream_token",
    "store.upstream_ca",
    "store.upstream_client_cert",
    "store.upstream_client_key",
    "store.connect_timeout",
    "store.request_timeout",
    "store.retries",
    "store.retry_backoff",
    "store.ancestor_depth",
    "store.max_response_bytes",
    "cache.ttl",
    "cache.negative_ttl",
    "cache.stale_if_error",
    "cache.max_entries",
    "cache.max_bytes",
    "cache.max_slices",
    "admin.token",
    "gateway.principal_header",
    "gateway.principal_type",
    "gateway.unmatched_status",
    "gateway.grpc_listen",
    "gateway.original",
    "gateway.trusted_headers",
    "gateway.routes",
    "entities.sources",
    "log.level",
    "log.decisions",
    "log.decisions_file",
    "log.decisions_queue",
    "log.decisions_max_bytes",
    "log.mask",
    "policy.reload_interval",
];

/// The whole configuration, grouped by concern.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The listener and its limits.
    pub server: ServerConfig,
    /// TLS and mutual TLS on the listeners.
    pub tls: TlsConfig,
    /// Where the policies and schema live.
    pub policy: PolicyConfig,
    /// Which entity store the decisions read.
    pub store: StoreConfig,
    /// The entity cache in front of the HTTP store.
    pub cache: CacheConfig,
    /// The admin endpoints (reload, cache invalidation).
    pub admin: AdminConfig,
    /// Gateway forward-auth: the trusted principal header and the route table.
    pub gateway: GatewayConfig,
    /// How each entity type's data is sourced.
    pub entities: EntitiesConfig,
    /// Diagnostics of the process itself (not the decision log).
    pub log: LogConfig,
}

/// The decision listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:8180`: loopback, so a fresh
    /// install answers nobody but its own host until told otherwise.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes; a larger one is a 413.
    /// Default 1 MiB: a batch of a few hundred evaluations fits with room.
    pub max_body_bytes: usize,
    /// Most items in one batch request (AuthZEN `evaluations`, native
    /// `requests`); more is a 400. Default 1000, so one request cannot hold a
    /// worker for long.
    pub max_batch_items: usize,
    /// Time a client has to send its request headers before the connection is
    /// closed; also the deadline from accept to the first complete request
    /// (TLS handshake, protocol detection and the HTTP/2 preface included).
    /// Default 10 s: cuts off slow and silent clients without hurting any
    /// real caller.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Time in-flight requests get to finish after SIGTERM/SIGINT. Default
    /// 10 s, under Kubernetes' 30 s termination grace.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace_period: Duration,
    /// A separate listener for the admin endpoints (reload, cache
    /// invalidation), health and metrics. When set, the main listener no
    /// longer answers admin endpoints. Default: none.
    pub admin_listen: Option<SocketAddr>,
    /// Time one request may take, body and decision included; then a 503.
    /// Default 10 s: far beyond any decision, short of a stuck connection.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Most connections open at once; one more is answered 503 and closed.
    /// Default 10,000: well above a sidecar's callers, under the fd limit.
    pub max_connections: usize,
    /// Deepest JSON nesting a request may have; deeper is a 400. Default 32:
    /// the contracts need 5, and a deep document costs parse time.
    pub max_json_depth: usize,
    /// Time a connection may stay open with no request in flight (HTTP/1
    /// keep-alive, idle HTTP/2, on every listener); then it is closed.
    /// Default 60 s: longer than gateways' pool idle times (nginx 60 s,
    /// Envoy 1 h is cut, and it reconnects), short enough that idle sockets
    /// cannot hold `max_connections` for long.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// The base URL callers reach Mandate at (`https://pdp.example.com`),
    /// named by the AuthZEN metadata document. Default none: a well-formed
    /// `Host` of the request, else the listen address; a crafted `Host` is
    /// never reflected.
    pub public_url: Option<String>,
    /// Most request-supplied entities one request may use (native API): its
    /// `entities`, or in a batch each item's own plus the shared ones once
    /// per item that uses them; more is a 400. Default 2,000: each costs
    /// parsing and a place in the decision's entity set, so this bounds a
    /// request's CPU (tens of milliseconds) whatever its shape.
    pub max_request_entities: usize,
}

/// TLS on the listeners (rustls: TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain; with `key`, the listeners speak TLS. Re-read
    /// when the file changes, without dropping connections. Default none.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`. Default none.
    pub key: Option<PathBuf>,
    /// PEM CA bundle: when set, clients must present a certificate chained
    /// to it (mutual TLS). Default none.
    pub client_ca: Option<PathBuf>,
    /// How often certificate and key files are checked for changes. Default 2 s.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// Client identities (a DNS or URI subject alternative name, or the
    /// common name) allowed per surface; an empty list allows any client
    /// with a valid certificate. Needs `client_ca`.
    pub allowed_clients: AllowedClients,
}

/// Client identities allowed on each API surface.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllowedClients {
    /// decisions: AuthZEN, native, gateway forward-auth
    pub decisions: Vec<String>,
    /// admin: reload, cache invalidation
    pub admin: Vec<String>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            client_ca: None,
            reload_interval: Duration::from_secs(2),
            allowed_clients: AllowedClients::default(),
        }
    }
}

/// Policies and schema on disk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Directory whose `*.cedar` files (recursively) form the policy set.
    /// Default `policies`.
    pub dir: PathBuf,
    /// Schema: a `.cedarschema` file, or a directory of them. Default `schema`.
    pub schema: PathBuf,
    /// Namespace in which unqualified AuthZEN types and action names are
    /// looked up (`user` → `Brokerage::User`). Default: the schema's only
    /// namespace, when it has exactly one.
    pub default_namespace: Option<String>,
    /// How often policy and schema files are checked for edits, which are
    /// then reloaded (SIGHUP and `POST /admin/v1/policies/reload` reload at
    /// once). `0s` turns the watch off. Default 2 s.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

/// Which store supplies entity data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// A Cedar JSON entities file (`store.entities`).
    File,
    /// The platform's entity service over HTTP (`store.upstream`), cached.
    Http,
    /// No store: every entity comes from the request.
    None,
}

/// The entity store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Which store. Default `file`.
    pub kind: StoreKind,
    /// The entities file of the file store. Default
    /// `examples/demo/entities.json`, the shipped demo data.
    pub entities: PathBuf,
    /// How often the file store checks its file for changes. Default 2 s:
    /// an edit is live within seconds, at the cost of one `stat` per period.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// Base URL of the HTTP store (`POST {base}/entities/batch`), `http` or
    /// `https`. No default.
    pub upstream: Option<String>,
    /// A bearer token sent to the HTTP store. Default none.
    pub upstream_token: Option<String>,
    /// PEM file of CA certificates trusted for an `https` store, instead of
    /// the system's roots. Default none (system roots).
    pub upstream_ca: Option<PathBuf>,
    /// PEM client certificate presented to an `https` store that requires
    /// one. Default none.
    pub upstream_client_cert: Option<PathBuf>,
    /// PEM private key of `upstream_client_cert`. Default none.
    pub upstream_client_key: Option<PathBuf>,
    /// Time to open a connection to the store. Default 1 s: a store that
    /// cannot accept within a second is down, and a retry is better.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time for one request to the store, response included. Default 2 s:
    /// beyond it a decision is more useful as a deny than as a hang.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Retries after a failed store request (connect error, timeout, 5xx).
    /// Default 2: rides over a restart blip without tripling load.
    pub retries: u32,
    /// Base of the jittered exponential backoff between retries. Default 50 ms.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// How many levels of parents to gather above the entities a request
    /// names. Default 3: enough for user → group → org hierarchies.
    pub ancestor_depth: u32,
    /// Largest store answer read, in bytes; a larger one is malformed (the
    /// decision fails closed). Default 16 MiB: thousands of entities, far
    /// short of what would hurt the process.
    pub max_response_bytes: usize,
}

/// The entity cache of the HTTP store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// How long a fetched entity is served without asking the store again.
    /// Default 30 s: a role change reaches decisions within half a minute
    /// (sooner with `POST /admin/v1/cache/invalidate`).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How long "the store does not know this uid" is remembered. Default
    /// 5 s: unknown callers cannot hammer the store, new users appear fast.
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// How long past its TTL an entity may still be served while the store
    /// fails. Default 5 min: rides over a store restart, never serves data
    /// older than that.
    #[serde(with = "humantime_serde")]
    pub stale_if_error: Duration,
    /// Most entities held. Default 1,000,000.
    pub max_entries: u64,
    /// Most bytes held, estimated from each entity's JSON size. Default 512 MiB.
    pub max_bytes: u64,
    /// Most decisions remembered by the engine (the entity slice built for a
    /// principal, action, resource and context references, with its
    /// context-free policies' answer). Default 10,000: the hot working set;
    /// each costs a few KiB with the HTTP store, well under one with the
    /// file store. 0 remembers nothing.
    pub max_slices: u64,
}

/// The admin surface.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// A bearer token the admin endpoints require. Without one, they answer
    /// only while the listener is bound to loopback.
    pub token: Option<String>,
}

/// Where one entity type's attributes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sourcing {
    /// From the store alone; request-supplied data is refused with a 400.
    Store,
    /// From the request alone (entities the store never holds).
    Request,
    /// From the store, with request data overriding it: for a fully trusted caller.
    Merge,
}

/// Entity sourcing per type.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EntitiesConfig {
    /// Entity type (fully qualified, e.g. `"Todo::Todo"`) → sourcing. Types
    /// not listed are `store`, or `request` when `store.kind = "none"`.
    pub sources: BTreeMap<String, Sourcing>,
}

/// Gateway forward-auth (`/gateway/authorize`, Envoy `ext_authz`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// The header the gateway sets to the authenticated principal's id; the
    /// only identity Mandate trusts from a gateway. Default `x-user-id`.
    pub principal_header: String,
    /// The principal's entity type (as callers write types). Default `User`.
    pub principal_type: String,
    /// Status when no route matches: 404 (default) or 403. Either is a deny;
    /// nginx's `auth_request` accepts only 401 and 403, so use 403 there.
    pub unmatched_status: u16,
    /// Where Envoy's gRPC `ext_authz` (`envoy.service.auth.v3.Authorization`)
    /// is served. Default: not served.
    pub grpc_listen: Option<SocketAddr>,
    /// Where `/gateway/authorize` reads the original method and URI: the one
    /// pair of headers this deployment's gateway sets, or Envoy's request
    /// line. No default: required once `routes` is set, because a fallback
    /// between pairs lets a client choose the checked request. A request
    /// carrying another pair, half a pair or a duplicate is refused (403).
    pub original: Option<OriginalSource>,
    /// Headers the gateway sets itself, after its own check, and strips from
    /// the client's request (e.g. `x-owner-approved` set by the approval
    /// service). Only these may carry a fact (a Boolean context attribute);
    /// any other `header:` source is the client's word. Default none.
    pub trusted_headers: Vec<String>,
    /// The route table: method and path pattern → action, resource, context.
    pub routes: Vec<RouteConfig>,
}

/// The one place a deployment's gateway describes the original request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum OriginalSource {
    /// `X-Original-Method` and `X-Original-URI` (nginx `auth_request`)
    #[serde(rename = "x-original")]
    XOriginal,
    /// `X-Forwarded-Method` and `X-Forwarded-Uri` (Traefik `ForwardAuth`,
    /// Caddy `forward_auth`)
    #[serde(rename = "x-forwarded")]
    XForwarded,
    /// the request line below `/gateway/authorize` (Envoy's HTTP `ext_authz`)
    #[serde(rename = "request-line")]
    RequestLine,
}

/// One route of the gateway table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// HTTP method, or `*` for any.
    pub method: String,
    /// Path pattern: literal segments and `{name}` parameters,
    /// e.g. `/accounts/{account}/orders`.
    pub path: String,
    /// The action id.
    pub action: String,
    /// The resource's entity type (as callers write types), e.g. `Account`.
    pub resource_type: String,
    /// The resource id: a template over path parameters, e.g. `{account}`.
    pub resource_id: String,
    /// Context attribute → where its value comes from.
    #[serde(default)]
    pub context: BTreeMap<String, ContextSource>,
}

/// Where a context value comes from: `query:NAME`, `header:NAME`, a
/// template over path parameters (`{account}`), or a literal; as a string,
/// or typed.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ContextSource {
    /// A string value.
    Text(String),
    /// A typed value: `{ from = "query:destination", entity = "Brokerage::Destination" }`
    /// or `{ from = "header:x-mfa", type = "bool" }`.
    Typed {
        /// where the text comes from
        from: String,
        /// `string` (default), `bool` or `long`
        #[serde(default, rename = "type")]
        kind: ValueKind,
        /// the value is an entity id of this type
        #[serde(default)]
        entity: Option<String>,
        /// the text used when the source is absent (e.g. `"false"` for a
        /// header a client may omit); without it the attribute is left out
        #[serde(default)]
        default: Option<String>,
    },
}

/// The JSON type a context value is given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueKind {
    /// as is
    #[default]
    String,
    /// `true` or `false`
    Bool,
    /// an integer
    Long,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            principal_header: "x-user-id".to_owned(),
            principal_type: "User".to_owned(),
            unmatched_status: 404,
            grpc_listen: None,
            original: None,
            trusted_headers: Vec::new(),
            routes: Vec::new(),
        }
    }
}

/// Where decision log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecisionSink {
    /// standard output, apart from the process log on standard error
    Stdout,
    /// standard error, mixed with the process log
    Stderr,
    /// `log.decisions_file`
    File,
    /// nowhere
    Off,
}

/// Process diagnostics and the decision log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter for the process log. Default `info`.
    pub level: String,
    /// Where the decision log goes: `stdout` (default, so the process log on
    /// stderr never mixes with it), `stderr`, `file` or `off`.
    pub decisions: DecisionSink,
    /// The decision log file, appended to, for `decisions = "file"`.
    pub decisions_file: Option<PathBuf>,
    /// Decision lines waiting to be written; beyond it lines are dropped and
    /// counted, never blocking a decision. Default 10,000 (with
    /// `decisions_max_bytes` bounding their size).
    pub decisions_queue: usize,
    /// Bytes of decision lines waiting to be written; beyond it lines are
    /// dropped and counted. Default 8 MiB: a stalled sink costs at most
    /// that (twice, while a batch is being written), whatever the contexts.
    pub decisions_max_bytes: usize,
    /// Context attributes whose values the decision log replaces by `***`.
    /// Default none.
    pub mask: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8180)),
            max_body_bytes: 1024 * 1024,
            max_batch_items: 1000,
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace_period: Duration::from_secs(10),
            admin_listen: None,
            request_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_json_depth: 32,
            idle_timeout: Duration::from_secs(60),
            public_url: None,
            max_request_entities: 2000,
        }
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("policies"),
            schema: PathBuf::from("schema"),
            default_namespace: None,
            reload_interval: Duration::from_secs(2),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::File,
            entities: PathBuf::from("examples/demo/entities.json"),
            reload_interval: Duration::from_secs(2),
            upstream: None,
            upstream_token: None,
            upstream_ca: None,
            upstream_client_cert: None,
            upstream_client_key: None,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(2),
            retries: 2,
            retry_backoff: Duration::from_millis(50),
            ancestor_depth: 3,
            max_response_bytes: 16 * 1024 * 1024,
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(5),
            stale_if_error: Duration::from_secs(300),
            max_entries: 1_000_000,
            max_bytes: 512 * 1024 * 1024,
            max_slices: 10_000,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            decisions: DecisionSink::Stdout,
            decisions_file: None,
            decisions_queue: 10_000,
            decisions_max_bytes: 8 * 1024 * 1024,
            mask: Vec::new(),
        }
    }
}

/// Settings given on the command line: the top layer.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`
    pub listen: Option<SocketAddr>,
    /// `--policies`
    pub policies: Option<PathBuf>,
    /// `--schema`
    pub schema: Option<PathBuf>,
    /// `--entities` (selects the file store)
    pub entities: Option<PathBuf>,
    /// `--upstream` (selects the HTTP store)
    pub upstream: Option<String>,
    /// `--tls-cert`
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`
    pub tls_key: Option<PathBuf>,
    /// `--client-ca`
    pub client_ca: Option<PathBuf>,
    /// `--admin-listen`
    pub admin_listen: Option<SocketAddr>,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file `{path}`: {source}")]
    Read {
        /// the file
        path: PathBuf,
        /// why
        source: std::io::Error,
    },
    /// The file, or the file with the environment laid over it, is invalid.
    #[error("invalid configuration{}: {message}", origin.as_deref().map(|o| format!(" in `{o}`")).unwrap_or_default())]
    Invalid {
        /// the file, when one was given
        origin: Option<String>,
        /// what is wrong, naming the key
        message: String,
    },
    /// A `MANDATE_…` variable names no setting.
    #[error("unknown environment variable `{name}`")]
    #[diagnostic(help("{}", suggestion.as_deref().map(|s| format!("did you mean `{s}`?")).unwrap_or_else(|| "settings are listed in the README's Configuration table".to_owned())))]
    UnknownEnv {
        /// the variable
        name: String,
        /// the closest known variable
        suggestion: Option<String>,
    },
}

/// The environment variable of a key: `server.listen` → `MANDATE_SERVER_LISTEN`.
pub fn env_name(key: &str) -> String {
    format!("MANDATE_{}", key.replace('.', "_").to_uppercase())
}

impl Config {
    /// Builds the configuration from its layers: defaults, the file (if any),
    /// the `MANDATE_…` variables among `env`, then `overrides`.
    ///
    /// # Errors
    /// A file that cannot be read or parsed, an unknown key or variable, or a
    /// value of the wrong type, each named.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                parse_file(path, &text)?
            }
            None => toml::Table::new(),
        };
        for (name, value) in env {
            if !name.starts_with("MANDATE_") {
                continue;
            }
            let Some(key) = KEYS.iter().find(|k| env_name(k) == name) else {
                let suggestion = KEYS
                    .iter()
                    .map(|k| env_name(k))
                    .min_by_key(|known| strsim::levenshtein(known, &name))
                    .filter(|known| strsim::levenshtein(known, &name) <= 3);
                return Err(ConfigError::UnknownEnv { name, suggestion });
            };
            set_path(&mut table, key, env_value(&value));
        }
        let mut config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(
                |e: serde_path_to_error::Error<toml::de::Error>| ConfigError::Invalid {
                    origin: file.map(|p| p.display().to_string()),
                    message: format!("`{}`: {}", e.path(), e.inner().message()),
                },
            )?;
        if let Some(listen) = overrides.listen {
            config.server.listen = listen;
        }
        if let Some(dir) = &overrides.policies {
            config.policy.dir.clone_from(dir);
        }
        if let Some(schema) = &overrides.schema {
            config.policy.schema.clone_from(schema);
        }
        if let Some(entities) = &overrides.entities {
            config.store.kind = StoreKind::File;
            config.store.entities.clone_from(entities);
        }
        if let Some(upstream) = &overrides.upstream {
            config.store.kind = StoreKind::Http;
            config.store.upstream = Some(upstream.clone());
        }
        if let Some(cert) = &overrides.tls_cert {
            config.tls.cert = Some(cert.clone());
        }
        if let Some(key) = &overrides.tls_key {
            config.tls.key = Some(key.clone());
        }
        if let Some(ca) = &overrides.client_ca {
            config.tls.client_ca = Some(ca.clone());
        }
        if let Some(admin) = overrides.admin_listen {
            config.server.admin_listen = Some(admin);
        }
        if config.tls.cert.is_some() != config.tls.key.is_some() {
            return Err(ConfigError::Invalid {
                origin: file.map(|p| p.display().to_string()),
                message: "`tls.cert` and `tls.key` go together: set both or neither".to_owned(),
            });
        }
        if config.tls.client_ca.is_some() && config.tls.cert.is_none() {
            return Err(ConfigError::Invalid {
                origin: file.map(|p| p.display().to_string()),
                message: "`tls.client_ca` needs TLS: set `tls.cert` and `tls.key` too".to_owned(),
            });
        }
        if config.log.decisions == DecisionSink::File && config.log.decisions_file.is_none() {
            return Err(ConfigError::Invalid {
                origin: file.map(|p| p.display().to_string()),
                message: "`log.decisions` is `file` but `log.decisions_file` is not set".to_owned(),
            });
        }
        if !config.gateway.routes.is_empty() && config.gateway.original.is_none() {
            return Err(ConfigError::Invalid {
                origin: file.map(|p| p.display().to_string()),
                message: "`gateway.routes` is set but `gateway.original` is not: say where the \
                    original request comes from, `x-original` (nginx), `x-forwarded` (Traefik, \
                    Caddy) or `request-line` (Envoy)"
                    .to_owned(),
            });
        }
        if config.store.kind == StoreKind::Http && config.store.upstream.is_none() {
            return Err(ConfigError::Invalid {
                origin: file.map(|p| p.display().to_string()),
                message:
                    "`store.kind` is `http` but `store.upstream` is not set (use `--upstream URL`)"
                        .to_owned(),
            });
        }
        Ok(config)
    }
}

/// A config file's table: JSON when the name ends in `.json` (what a Helm
/// chart renders with `toJson`, whose numbers stay integers), TOML otherwise.
fn parse_file(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        origin: Some(path.display().to_string()),
        message,
    };
    if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str::<toml::Table>(text).map_err(|e| invalid(e.to_string()))
    } else {
        toml::from_str::<toml::Table>(text).map_err(|e| invalid(e.message().to_owned()))
    }
}

/// Reads an environment value as a TOML value (`8`, `true`, `"x"`, `{a = 1}`),
/// or as a plain string when it is not one.
fn env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn set_path(table: &mut toml::Table, key: &str, value: toml::Value) {
    let (section, leaf) = key.split_once('.').unwrap_or(("", key));
    let section = table
        .entry(section.to_owned())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(section) = section {
        section.insert(leaf.to_owned(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn layers_apply_in_order_defaults_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mandate.toml");
        std::fs::write(
            &file,
            "[server]\nlisten = \"127.0.0.1:1001\"\nmax_batch_items = 7\n[policy]\ndir = \"from-file\"\nschema = \"schema-file\"\n",
        )
        .unwrap();
        let config = Config::load(
            Some(&file),
            env(&[
                ("MANDATE_SERVER_LISTEN", "127.0.0.1:1002"),
                ("MANDATE_POLICY_DIR", "from-env"),
                ("PATH", "/bin"),
            ]),
            &Overrides {
                listen: Some("127.0.0.1:1003".parse().unwrap()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(config.server.listen.port(), 1003, "flag beats env");
        assert_eq!(
            config.policy.dir,
            PathBuf::from("from-env"),
            "env beats file"
        );
        assert_eq!(
            config.policy.schema,
            PathBuf::from("schema-file"),
            "file beats default"
        );
        assert_eq!(config.server.max_batch_items, 7);
        assert_eq!(config.server.max_body_bytes, 1024 * 1024, "default kept");
    }

    #[test]
    fn a_json_file_reads_like_toml_and_is_checked_as_strictly() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mandate.json");
        std::fs::write(
            &file,
            r#"{"gateway": {"unmatched_status": 403, "original": "x-original", "routes": [{"method": "GET", "path": "/a/{x}", "action": "view_account", "resource_type": "Account", "resource_id": "{x}"}]}, "cache": {"ttl": "45s"}}"#,
        )
        .unwrap();
        let config = Config::load(Some(&file), env(&[]), &Overrides::default()).unwrap();
        assert_eq!(config.gateway.unmatched_status, 403);
        assert_eq!(config.gateway.routes.len(), 1);
        assert_eq!(config.cache.ttl, Duration::from_secs(45));

        std::fs::write(&file, r#"{"gateway": {"unmatched_status": 403.5}}"#).unwrap();
        let err = Config::load(Some(&file), env(&[]), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("unmatched_status"), "{err}");
        std::fs::write(&file, r#"{"cache": {"tll": "1s"}}"#).unwrap();
        let err = Config::load(Some(&file), env(&[]), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("tll"), "{err}");
    }

    #[test]
    fn unknown_file_key_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mandate.toml");
        std::fs::write(&file, "[server]\nlisen = \"127.0.0.1:1\"\n").unwrap();
        let err = Config::load(Some(&file), env(&[]), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }

    #[test]
    fn misspelt_environment_variable_gets_a_suggestion() {
        let err = Config::load(
            None,
            env(&[("MANDATE_SERVER_LISTN", "x")]),
            &Overrides::default(),
        )
        .unwrap_err();
        match err {
            ConfigError::UnknownEnv { suggestion, .. } => {
                assert_eq!(suggestion.as_deref(), Some("MANDATE_SERVER_LISTEN"));
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn environment_values_are_typed_and_durations_parse() {
        let config = Config::load(
            None,
            env(&[
                ("MANDATE_SERVER_MAX_BODY_BYTES", "2048"),
                ("MANDATE_SERVER_HEADER_READ_TIMEOUT", "250ms"),
                (
                    "MANDATE_ENTITIES_SOURCES",
                    "{ \"Todo::Todo\" = \"request\" }",
                ),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(config.server.max_body_bytes, 2048);
        assert_eq!(
            config.server.header_read_timeout,
            Duration::from_millis(250)
        );
        assert_eq!(
            config.entities.sources.get("Todo::Todo"),
            Some(&Sourcing::Request)
        );
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        let err = Config::load(
            None,
            env(&[("MANDATE_SERVER_MAX_BODY_BYTES", "lots")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("max_body_bytes"), "{err}");
    }
}
