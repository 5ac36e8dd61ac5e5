//! The configuration: one typed `Config`, parsed once at start from four
//! layers, each a table of `section.key` values: the defaults (from
//! [`SETTINGS`], where every setting is defined once), `mandate.toml`, the
//! `MANDATE_…` environment, then command-line flags.
//!
//! Nothing else in the crate reads the environment or the file: the binary
//! (`cli::load`) builds a [`Config`] with [`Config::load`] and hands each
//! part its own section.

pub mod address;
mod layers;
mod service_links;
mod settings;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::entities::Sourcing;

pub use settings::{Initial, Kind, SETTINGS, Setting, env_name, help, reference_table};

/// The command line's layer: each flag given, as the setting it sets and
/// its value (`--entities FILE` sets `store.kind` and `store.entities`).
pub type Flags = [(&'static str, toml::Value)];

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
    /// The file is not TOML (or JSON); nothing else can be checked.
    #[error("`{path}` is not valid {format}: {message}")]
    Syntax {
        /// the file
        path: String,
        /// `TOML` or `JSON`
        format: &'static str,
        /// what the parser says
        message: String,
        /// the file's text
        #[source_code]
        text: miette::NamedSource<String>,
        /// where
        #[label("here")]
        at: Option<miette::SourceSpan>,
    },
    /// Settings with wrong values or names: every one found, each saying
    /// where it was set and what is expected.
    #[error("invalid configuration: {}", list(mistakes))]
    #[diagnostic(help("every setting, its variable and default: `mandate settings`"))]
    Invalid {
        /// each mistake, naming the setting and where it was set
        mistakes: Vec<String>,
    },
}

fn list(mistakes: &[String]) -> String {
    match mistakes {
        [one] => one.clone(),
        many => {
            let mut text = format!("{} mistakes", many.len());
            for mistake in many {
                text.push_str("\n  - ");
                text.push_str(mistake);
            }
            text
        }
    }
}

impl ConfigError {
    /// One mistake found outside the layers (e.g. a name the schema does
    /// not declare).
    pub fn invalid(message: String) -> Self {
        Self::Invalid {
            mistakes: vec![message],
        }
    }
}

/// The whole configuration, grouped by concern.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
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
    /// Entity change events over NATS.
    pub bus: BusConfig,
    /// The AuthZEN search APIs.
    pub search: SearchConfig,
    /// What callers of the decision APIs may ask beyond a decision.
    pub api: ApiConfig,
    /// The durable action history on NATS JetStream.
    pub history: HistoryConfig,
}

/// The durable action history.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// `history.url`: see [`SETTINGS`] for what it does and its default.
    pub url: Option<String>,
    /// `history.stream`: see [`SETTINGS`] for what it does and its default.
    pub stream: String,
    /// `history.subject_prefix`: see [`SETTINGS`] for what it does and its default.
    pub subject_prefix: String,
    /// `history.queue`: see [`SETTINGS`] for what it does and its default.
    pub queue: usize,
    /// `history.queue_bytes`: see [`SETTINGS`] for what it does and its default.
    pub queue_bytes: usize,
    /// `history.retry_for`: see [`SETTINGS`] for what it does and its default.
    #[serde(with = "humantime_serde")]
    pub retry_for: Duration,
    /// `history.max_age`: see [`SETTINGS`] for what it does and its default.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// `history.max_bytes`: see [`SETTINGS`] for what it does and its default.
    pub max_bytes: u64,
    /// `history.replicas`: see [`SETTINGS`] for what it does and its default.
    pub replicas: usize,
}

/// What callers of the decision APIs may ask beyond a decision.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// `api.explain`: see [`SETTINGS`] for what it does and its default.
    pub explain: Switch,
    /// `api.max_explain_items`: see [`SETTINGS`] for what it does and its default.
    pub max_explain_items: usize,
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    /// allowed
    On,
    /// refused
    Off,
}

/// The AuthZEN search APIs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SearchConfig {
    /// `search.max_candidates`: see [`SETTINGS`] for what it does and its default.
    pub max_candidates: usize,
    /// `search.token_key`: see [`SETTINGS`] for what it does and its default.
    pub token_key: Option<String>,
    /// `search.time_budget`: see [`SETTINGS`] for what it does and its default.
    #[serde(with = "humantime_serde")]
    pub time_budget: Duration,
    /// `search.max_concurrent`: see [`SETTINGS`] for what it does and its default.
    pub max_concurrent: usize,
}

/// The change-event bus.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// `bus.url`: see [`SETTINGS`] for what it does and its default.
    pub url: Option<String>,
    /// `bus.subject`: see [`SETTINGS`] for what it does and its default.
    pub subject: String,
    /// `bus.credentials_file`: see [`SETTINGS`] for what it does and its default.
    pub credentials_file: Option<PathBuf>,
    /// `bus.tls_ca`: see [`SETTINGS`] for what it does and its default.
    pub tls_ca: Option<PathBuf>,
    /// `bus.allow_unauthenticated`: see [`SETTINGS`] for what it does and its default.
    pub allow_unauthenticated: bool,
}

impl BusConfig {
    /// A bus on another host with no credentials, unless allowed: anyone
    /// who can reach it could publish events to every replica.
    fn unauthenticated_elsewhere(&self) -> Option<String> {
        let url = self.url.as_deref()?;
        let Some((scheme, rest)) = url.split_once("://") else {
            return Some(format!(
                "`bus.url` `{url}` is not a URL: write `nats://host:4222` or `tls://host:4222`"
            ));
        };
        if !matches!(scheme, "nats" | "tls") {
            return Some(format!(
                "`bus.url` `{url}`: the scheme is `nats` or `tls`, not `{scheme}`"
            ));
        }
        let authority = rest.split('/').next().unwrap_or(rest);
        let credentials_in_url = authority.contains('@');
        let host = authority.rsplit('@').next().unwrap_or(authority);
        let host = host
            .rsplit_once(':')
            .filter(|(h, _)| !h.is_empty() && !h.ends_with(':'))
            .map_or(host, |(h, _)| h)
            .trim_matches(['[', ']']);
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let authenticated = credentials_in_url || self.credentials_file.is_some();
        (!loopback && !authenticated && !self.allow_unauthenticated).then(|| {
            format!(
                "`bus.url` `{url}` is on another host and has no credentials: set \
                 `bus.credentials_file`, or a user and password or token in the URL \
                 (`nats://user:pass@host:4222`), or `bus.allow_unauthenticated = true` \
                 if the network alone protects the bus"
            )
        })
    }
}

/// The decision listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `server.listen`: see [`SETTINGS`] for what it does and its default.
    #[serde(with = "address::one")]
    pub listen: SocketAddr,
    /// `server.max_body_bytes`: see [`SETTINGS`] for what it does and its default.
    pub max_body_bytes: usize,
    /// `server.max_batch_items`: see [`SETTINGS`] for what it does and its default.
    pub max_batch_items: usize,
    /// `server.header_read_timeout`: see [`SETTINGS`] for what it does and its default.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// `server.shutdown_grace_period`: see [`SETTINGS`] for what it does and its default.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace_period: Duration,
    /// `server.admin_listen`: see [`SETTINGS`] for what it does and its default.
    #[serde(with = "address::optional", default)]
    pub admin_listen: Option<SocketAddr>,
    /// `server.request_timeout`: see [`SETTINGS`] for what it does and its default.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// `server.max_connections`: see [`SETTINGS`] for what it does and its default.
    pub max_connections: usize,
    /// `server.max_json_depth`: see [`SETTINGS`] for what it does and its default.
    pub max_json_depth: usize,
    /// `server.idle_timeout`: see [`SETTINGS`] for what it does and its default.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// `server.public_url`: see [`SETTINGS`] for what it does and its default.
    pub public_url: Option<String>,
    /// `server.max_request_entities`: see [`SETTINGS`] for what it does and its default.
    pub max_request_entities: usize,
    /// `server.lingering_time`: see [`SETTINGS`] for what it does and its default.
    #[serde(with = "humantime_serde")]
    pub lingering_time: Duration,
    /// `server.lingering_timeout`: see [`SETTINGS`] for what it does and its default.
    #[serde(with = "humantime_serde")]
    pub lingering_timeout: Duration,
}

/// TLS on the listeners (rustls: TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// `tls.cert`: see [`SETTINGS`] for what it does and its default.
    pub cert: Option<PathBuf>,
    /// `tls.key`: see [`SETTINGS`] for what it does and its default.
    pub key: Option<PathBuf>,
    /// `tls.client_ca`: see [`SETTINGS`] for what it does and its default.
    pub client_ca: Option<PathBuf>,
    /// `tls.reload_interval`: see [`SETTINGS`] for what it does and its default.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// `tls.allowed_clients`: see [`SETTINGS`] for what it does and its default.
    #[serde(default)]
    pub allowed_clients: AllowedClients,
}

/// Client identities allowed on each API surface.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllowedClients {
    /// decisions: AuthZEN, native, gateway forward-auth
    pub decisions: Vec<String>,
    /// admin: reload, cache invalidation
    pub admin: Vec<String>,
}

/// Policies and schema on disk.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// `policy.dir`: see [`SETTINGS`] for what it does and its default.
    pub dir: PathBuf,
    /// `policy.schema`: see [`SETTINGS`] for what it does and its default.
    pub schema: PathBuf,
    /// `policy.default_namespace`: see [`SETTINGS`] for what it does and its default.
    pub default_namespace: Option<String>,
    /// `policy.reload_interval`: see [`SETTINGS`] for what it does and its default.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// `policy.shadow_dir`: see [`SETTINGS`] for what it does and its default.
    pub shadow_dir: Option<PathBuf>,
}

/// Which store supplies entity data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `store.kind`: see [`SETTINGS`] for what it does and its default.
    pub kind: StoreKind,
    /// `store.entities`: see [`SETTINGS`] for what it does and its default.
    pub entities: PathBuf,
    /// `store.reload_interval`: see [`SETTINGS`] for what it does and its default.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// `store.upstream`: see [`SETTINGS`] for what it does and its default.
    pub upstream: Option<String>,
    /// `store.upstream_token`: see [`SETTINGS`] for what it does and its default.
    pub upstream_token: Option<String>,
    /// `store.upstream_ca`: see [`SETTINGS`] for what it does and its default.
    pub upstream_ca: Option<PathBuf>,
    /// `store.upstream_client_cert`: see [`SETTINGS`] for what it does and its default.
    pub upstream_client_cert: Option<PathBuf>,
    /// `store.upstream_client_key`: see [`SETTINGS`] for what it does and its default.
    pub upstream_client_key: Option<PathBuf>,
    /// `store.connect_timeout`: see [`SETTINGS`] for what it does and its default.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// `store.request_timeout`: see [`SETTINGS`] for what it does and its default.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// `store.retries`: see [`SETTINGS`] for what it does and its default.
    pub retries: u32,
    /// `store.retry_backoff`: see [`SETTINGS`] for what it does and its default.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// `store.ancestor_depth`: see [`SETTINGS`] for what it does and its default.
    pub ancestor_depth: u32,
    /// `store.max_response_bytes`: see [`SETTINGS`] for what it does and its default.
    pub max_response_bytes: usize,
}

/// The entity cache of the HTTP store.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// `cache.ttl`: see [`SETTINGS`] for what it does and its default.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// `cache.negative_ttl`: see [`SETTINGS`] for what it does and its default.
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// `cache.stale_if_error`: see [`SETTINGS`] for what it does and its default.
    #[serde(with = "humantime_serde")]
    pub stale_if_error: Duration,
    /// `cache.max_entries`: see [`SETTINGS`] for what it does and its default.
    pub max_entries: u64,
    /// `cache.max_bytes`: see [`SETTINGS`] for what it does and its default.
    pub max_bytes: u64,
    /// `cache.max_built`: see [`SETTINGS`] for what it does and its default.
    pub max_built: u64,
    /// `cache.max_slices`: see [`SETTINGS`] for what it does and its default.
    pub max_slices: u64,
    /// `cache.ttl_without_bus`: see [`SETTINGS`] for what it does and its default.
    #[serde(with = "humantime_serde")]
    pub ttl_without_bus: Duration,
}

/// The admin surface.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `admin.token`: see [`SETTINGS`] for what it does and its default.
    pub token: Option<String>,
}

/// Entity sourcing per type.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EntitiesConfig {
    /// `entities.sources`: see [`SETTINGS`] for what it does and its default.
    pub sources: BTreeMap<String, Sourcing>,
}

/// Gateway forward-auth (`/gateway/authorize`, Envoy `ext_authz`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// `gateway.principal_header`: see [`SETTINGS`] for what it does and its default.
    pub principal_header: String,
    /// `gateway.principal_type`: see [`SETTINGS`] for what it does and its default.
    pub principal_type: String,
    /// `gateway.unmatched_status`: see [`SETTINGS`] for what it does and its default.
    pub unmatched_status: u16,
    /// `gateway.deny_detail`: see [`SETTINGS`] for what it does and its default.
    pub deny_detail: bool,
    /// `gateway.grpc_listen`: see [`SETTINGS`] for what it does and its default.
    #[serde(with = "address::optional", default)]
    pub grpc_listen: Option<SocketAddr>,
    /// `gateway.original`: see [`SETTINGS`] for what it does and its default.
    pub original: Option<OriginalSource>,
    /// `gateway.trusted_headers`: see [`SETTINGS`] for what it does and its default.
    pub trusted_headers: Vec<String>,
    /// `gateway.routes`: see [`SETTINGS`] for what it does and its default.
    pub routes: Vec<RouteConfig>,
    /// `gateway.route_type`: see [`SETTINGS`] for what it does and its default.
    pub route_type: Option<String>,
}

/// The one place a deployment's gateway describes the original request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, Deserialize, Serialize)]
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
#[derive(Debug, Clone, Deserialize, Serialize)]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
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

/// Where decision log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `log.level`: see [`SETTINGS`] for what it does and its default.
    pub level: String,
    /// `log.process_queue`: see [`SETTINGS`] for what it does and its default.
    pub process_queue: usize,
    /// `log.decisions`: see [`SETTINGS`] for what it does and its default.
    pub decisions: DecisionSink,
    /// `log.decisions_file`: see [`SETTINGS`] for what it does and its default.
    pub decisions_file: Option<PathBuf>,
    /// `log.decisions_queue`: see [`SETTINGS`] for what it does and its default.
    pub decisions_queue: usize,
    /// `log.decisions_max_bytes`: see [`SETTINGS`] for what it does and its default.
    pub decisions_max_bytes: usize,
    /// `log.mask`: see [`SETTINGS`] for what it does and its default.
    pub mask: Vec<String>,
    /// `log.capture_entities`: see [`SETTINGS`] for what it does and its default.
    pub capture_entities: bool,
    /// `log.keep`: see [`SETTINGS`] for what it does and its default.
    pub keep: Vec<crate::telemetry::keep::KeepRule>,
}

impl Config {
    /// Builds the configuration from its layers: the defaults, the file (if
    /// any; its relative paths resolve from the file's directory), the
    /// `MANDATE_…` variables among `env`, then `flags`.
    ///
    /// # Errors
    /// A file that cannot be read or parsed; else every unknown key or
    /// variable and every value of the wrong kind, at once, each named with
    /// where it was set and what is expected.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Flags,
    ) -> Result<Self, ConfigError> {
        let mut layers = layers::Layers::defaults();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            layers.file(path, &text)?;
        }
        layers.env(env);
        layers.flags(flags);
        let mut config: Self = layers.build()?;
        config.check()?;
        // An operator's own pack without entities: an empty store, never
        // the brokerage demo's users.
        let own_pack = !crate::support::embedded::contains(&config.policy.dir);
        if own_pack
            && config.store.kind == StoreKind::File
            && crate::support::embedded::contains(&config.store.entities)
        {
            config.store.entities = crate::support::embedded::no_entities();
        }
        Ok(config)
    }

    /// The settings that only make sense together, all checked.
    fn check(&self) -> Result<(), ConfigError> {
        let mut mistakes = Vec::new();
        // The embedded pack is whole or absent: never half of it mixed
        // with an operator's files.
        let dir_given = !crate::support::embedded::contains(&self.policy.dir);
        let schema_given = !crate::support::embedded::contains(&self.policy.schema);
        let missing = match (dir_given, schema_given) {
            (true, false) => Some((
                "policy.dir",
                "policy.schema",
                "--schema",
                "MANDATE_POLICY_SCHEMA",
            )),
            (false, true) => Some((
                "policy.schema",
                "policy.dir",
                "--policies",
                "MANDATE_POLICY_DIR",
            )),
            _ => None,
        };
        if let Some((given, key, flag, variable)) = missing {
            mistakes.push(format!(
                "`{given}` is given but `{key}` is not: your own pack needs both (give {flag}, \
                 `{variable}` or `{key}` in the config file); the embedded brokerage pack is never \
                 mixed with your files"
            ));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            mistakes.push("`tls.cert` and `tls.key` go together: set both or neither".to_owned());
        }
        if self.tls.client_ca.is_some() && self.tls.cert.is_none() {
            mistakes.push("`tls.client_ca` needs TLS: set `tls.cert` and `tls.key` too".to_owned());
        }
        if self.log.decisions == DecisionSink::File && self.log.decisions_file.is_none() {
            mistakes
                .push("`log.decisions` is `file` but `log.decisions_file` is not set".to_owned());
        }
        if !self.gateway.routes.is_empty() && self.gateway.original.is_none() {
            mistakes.push(
                "`gateway.routes` is set but `gateway.original` is not: say where the \
                 original request comes from, `x-original` (nginx), `x-forwarded` (Traefik, \
                 Caddy) or `request-line` (Envoy)"
                    .to_owned(),
            );
        }
        // Any other status could read as an allow: nginx, Traefik and
        // Caddy pass a 2xx, and a 3xx or 5xx means something else again.
        if !matches!(self.gateway.unmatched_status, 403 | 404) {
            mistakes.push(format!(
                "`gateway.unmatched_status` is {}: it must be 404 or 403, a deny every gateway \
                 reads as one",
                self.gateway.unmatched_status
            ));
        }
        if self.gateway.route_type.is_some() && self.gateway.routes.is_empty() {
            mistakes.push(
                "`gateway.route_type` is set but `gateway.routes` is empty: every question \
                 about a route would be a deny"
                    .to_owned(),
            );
        }
        if self.store.kind == StoreKind::Http && self.store.upstream.is_none() {
            mistakes.push(
                "`store.kind` is `http` but `store.upstream` is not set (use `--upstream URL`)"
                    .to_owned(),
            );
        }
        if let Some(mistake) = self.bus.unauthenticated_elsewhere() {
            mistakes.push(mistake);
        }
        // The history's server is reached with the bus's credentials and
        // held to the same rule (whoever can publish there can forge it).
        let history = BusConfig {
            url: self.history.url.clone(),
            ..self.bus.clone()
        };
        if let Some(mistake) = history.unauthenticated_elsewhere() {
            mistakes.push(mistake.replace("`bus.url`", "`history.url`"));
        }
        if self.history.url.is_some()
            && (self.history.stream.is_empty()
                || self.history.stream.contains(|c: char| {
                    c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\')
                }))
        {
            mistakes.push(format!(
                "`history.stream` `{}` is no JetStream stream name: no spaces, `.`, `*`, `>`, `/` or `\\`",
                self.history.stream
            ));
        }
        let prefix = &self.history.subject_prefix;
        if self.history.url.is_some()
            && (prefix.is_empty()
                || prefix.split('.').any(|token| {
                    token.is_empty()
                        || token.contains(|c: char| c.is_whitespace() || matches!(c, '*' | '>'))
                }))
        {
            mistakes.push(format!(
                "`history.subject_prefix` `{prefix}` is no subject prefix: dot-separated tokens, none empty, no spaces or wildcards (`mandate.history`)"
            ));
        }
        if mistakes.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid { mistakes })
        }
    }

    /// The `gateway` section of a configuration whose file is `text` placed
    /// under `[gateway]` (the route table's own tests).
    #[cfg(test)]
    pub(crate) fn gateway_from(text: &str) -> GatewayConfig {
        let mut file = toml::Table::new();
        file.insert(
            "gateway".to_owned(),
            toml::Value::Table(toml::from_str(text).unwrap()),
        );
        let mut layers = layers::Layers::defaults();
        layers
            .file(Path::new("test.toml"), &toml::to_string(&file).unwrap())
            .unwrap();
        layers.build::<Self>().unwrap().gateway
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

    fn text(value: &str) -> toml::Value {
        toml::Value::String(value.to_owned())
    }

    fn file(name: &str, body: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        (dir, path)
    }

    fn mistakes(error: ConfigError) -> Vec<String> {
        match error {
            ConfigError::Invalid { mistakes } => mistakes,
            other => panic!("expected mistakes, got {other}"),
        }
    }

    #[test]
    fn layers_apply_in_order_defaults_file_env_flags() {
        let (_dir, path) = file(
            "mandate.toml",
            "[server]\nlisten = \"127.0.0.1:1001\"\nmax_batch_items = 7\n[policy]\ndir = \"/from-file\"\nschema = \"/schema-file\"\n",
        );
        let config = Config::load(
            Some(&path),
            env(&[
                ("MANDATE_SERVER_LISTEN", "127.0.0.1:1002"),
                ("MANDATE_POLICY_DIR", "from-env"),
                ("PATH", "/bin"),
            ]),
            &[("server.listen", text("127.0.0.1:1003"))],
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
            PathBuf::from("/schema-file"),
            "file beats default"
        );
        assert_eq!(config.server.max_batch_items, 7);
        assert_eq!(config.server.max_body_bytes, 1024 * 1024, "default kept");
    }

    #[test]
    fn relative_paths_in_a_file_resolve_from_the_file_and_others_from_the_working_directory() {
        let (dir, path) = file(
            "mandate.toml",
            "[policy]\ndir = \"pack/policies\"\nschema = \"/abs/schema\"\n[store]\nentities = \"../data/entities.json\"\n",
        );
        let config = Config::load(Some(&path), env(&[]), &[]).unwrap();
        assert_eq!(config.policy.dir, dir.path().join("pack/policies"));
        assert_eq!(
            config.policy.schema,
            PathBuf::from("/abs/schema"),
            "absolute kept"
        );
        assert_eq!(
            config.store.entities,
            dir.path().join("../data/entities.json")
        );
        let config = Config::load(
            Some(&path),
            env(&[("MANDATE_POLICY_DIR", "here")]),
            &[("store.entities", text("there.json"))],
        )
        .unwrap();
        assert_eq!(config.policy.dir, PathBuf::from("here"));
        assert_eq!(config.store.entities, PathBuf::from("there.json"));
        let defaults = Config::load(None, env(&[]), &[]).unwrap();
        assert_eq!(defaults.policy.dir, PathBuf::from("<embedded>/policies"));
    }

    #[test]
    fn the_defaults_name_the_embedded_pack() {
        let config = Config::load(None, Vec::new(), &[]).unwrap();
        assert!(crate::support::embedded::contains(&config.policy.dir));
        assert!(crate::support::embedded::contains(&config.policy.schema));
        assert!(crate::support::embedded::file(&config.store.entities).is_some());
        assert!(
            config
                .store
                .entities
                .ends_with("examples/demo/entities.json")
        );
    }

    #[test]
    fn half_an_own_pack_is_refused_naming_the_missing_setting() {
        for (given, missing) in [("policy.dir", "--schema"), ("policy.schema", "--policies")] {
            let found =
                mistakes(Config::load(None, Vec::new(), &[(given, text("mine"))]).unwrap_err());
            assert_eq!(found.len(), 1, "{found:?}");
            assert!(found[0].contains(missing), "{found:?}");
            assert!(
                found[0].contains(&format!("`{given}` is given")),
                "{found:?}"
            );
        }
    }

    #[test]
    fn an_own_pack_without_entities_gets_an_empty_store_not_the_demo() {
        let flags = [
            ("policy.dir", text("mine")),
            ("policy.schema", text("mine.cedarschema")),
        ];
        let config = Config::load(None, Vec::new(), &flags).unwrap();
        assert!(crate::support::embedded::is_no_entities(
            &config.store.entities
        ));
        assert_eq!(
            crate::support::embedded::read_to_string(&config.store.entities).unwrap(),
            "[]"
        );
    }

    #[test]
    fn kubernetes_service_links_are_ignored_and_a_typo_beside_them_is_not() {
        let links = [
            ("MANDATE_SERVICE_HOST", "10.96.12.7"),
            ("MANDATE_SERVICE_PORT", "8180"),
            ("MANDATE_PORT", "tcp://10.96.12.7:8180"),
            ("MANDATE_PORT_8180_TCP", "tcp://10.96.12.7:8180"),
            ("MANDATE_PORT_8180_TCP_ADDR", "10.96.12.7"),
            ("MANDATE_STORE_SERVICE_HOST", "10.96.3.4"),
            ("MANDATE_STORE_PORT_443_TCP_PORT", "443"),
        ];
        let config = Config::load(None, env(&links), &[]).unwrap();
        assert_eq!(config.server.listen.port(), 8180);
        let mut with_typo = links.to_vec();
        with_typo.push(("MANDATE_SERVER_LISTN", "x"));
        let found = mistakes(Config::load(None, env(&with_typo), &[]).unwrap_err());
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("MANDATE_SERVER_LISTN"), "{found:?}");
    }

    #[test]
    fn every_mistake_is_reported_at_once_with_where_it_was_set() {
        let (_dir, path) = file(
            "mandate.toml",
            "[server]\nlisen = \"127.0.0.1:1\"\nmax_body_bytes = \"lots\"\n\n[cache]\nttl = \"30\"\n",
        );
        let found = mistakes(
            Config::load(
                Some(&path),
                env(&[
                    ("MANDATE_SERVER_LISTN", "x"),
                    ("MANDATE_STORE_RETRIES", "-1"),
                ]),
                &[],
            )
            .unwrap_err(),
        );
        let name = path.display();
        let expected = [
            format!("`server.lisen` (in `{name}`, line 2): no such setting (did you mean `server.listen`?)"),
            "`MANDATE_SERVER_LISTN`: no such setting's variable (did you mean `MANDATE_SERVER_LISTEN`?)".to_owned(),
            format!("`server.max_body_bytes` (in `{name}`, line 3):"),
            format!("`cache.ttl` (in `{name}`, line 6):"),
            "`store.retries` (from `MANDATE_STORE_RETRIES`):".to_owned(),
        ];
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        for want in &expected {
            assert!(
                found.iter().any(|m| m.starts_with(want.as_str())),
                "{want} not in {found:#?}"
            );
        }
        let ttl = found.iter().find(|m| m.starts_with("`cache.ttl`")).unwrap();
        assert!(
            ttl.contains("write a duration as a number and a unit, e.g. `250ms`, `10s`, `5m`"),
            "a bad duration says what form is accepted: {ttl}"
        );
        let size = found
            .iter()
            .find(|m| m.starts_with("`server.max_body_bytes`"))
            .unwrap();
        assert!(size.contains("write a whole number"), "{size}");
    }

    #[test]
    fn a_toml_syntax_error_names_its_line_and_column() {
        let (_dir, path) = file(
            "mandate.toml",
            "[server]\nlisten = \"127.0.0.1:8180\"\nmax_body_bytes = = 3\n",
        );
        match Config::load(Some(&path), env(&[]), &[]).unwrap_err() {
            ConfigError::Syntax { message, at, .. } => {
                assert!(message.starts_with("line 3, column 18:"), "{message}");
                assert!(at.is_some());
            }
            other => panic!("expected a syntax error, got {other}"),
        }
    }

    /// An unmatched route is a deny on every gateway: a status a gateway
    /// could read as an allow (a 2xx for nginx, Traefik and Caddy) or as
    /// something else is refused at start.
    #[test]
    fn an_unmatched_status_other_than_403_or_404_is_refused() {
        for status in [200, 204, 302, 401, 500] {
            let (_dir, path) = file(
                "mandate.toml",
                &format!("[gateway]\nunmatched_status = {status}\n"),
            );
            let found = mistakes(Config::load(Some(&path), env(&[]), &[]).unwrap_err());
            assert!(
                found.iter().any(
                    |m| m.contains("`gateway.unmatched_status` is") && m.contains("404 or 403")
                ),
                "{status}: {found:#?}"
            );
        }
        for status in [403, 404] {
            let (_dir, path) = file(
                "mandate.toml",
                &format!("[gateway]\nunmatched_status = {status}\n"),
            );
            assert!(Config::load(Some(&path), env(&[]), &[]).is_ok(), "{status}");
        }
    }

    #[test]
    fn a_json_file_reads_like_toml_and_is_checked_as_strictly() {
        let (_dir, path) = file(
            "mandate.json",
            r#"{"gateway": {"unmatched_status": 403, "original": "x-original", "routes": [{"method": "GET", "path": "/a/{x}", "action": "view_account", "resource_type": "Account", "resource_id": "{x}"}]}, "cache": {"ttl": "45s"}}"#,
        );
        let config = Config::load(Some(&path), env(&[]), &[]).unwrap();
        assert_eq!(config.gateway.unmatched_status, 403);
        assert_eq!(config.gateway.routes.len(), 1);
        assert_eq!(config.cache.ttl, Duration::from_secs(45));

        std::fs::write(
            &path,
            r#"{"gateway": {"unmatched_status": 403.5}, "cache": {"tll": "1s"}}"#,
        )
        .unwrap();
        let found = mistakes(Config::load(Some(&path), env(&[]), &[]).unwrap_err());
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(
            found
                .iter()
                .any(|m| m.contains("`cache.tll`") && m.contains("did you mean `cache.ttl`")),
            "{found:#?}"
        );
        assert!(
            found
                .iter()
                .any(|m| m.contains("`gateway.unmatched_status`")),
            "{found:#?}"
        );
        std::fs::write(&path, "{\"cache\": ").unwrap();
        assert!(matches!(
            Config::load(Some(&path), env(&[]), &[]).unwrap_err(),
            ConfigError::Syntax { format: "JSON", .. }
        ));
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
            &[],
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
    fn settings_that_go_together_are_all_checked() {
        let found = mistakes(
            Config::load(
                None,
                env(&[
                    ("MANDATE_TLS_CERT", "c.pem"),
                    ("MANDATE_LOG_DECISIONS", "file"),
                    ("MANDATE_STORE_KIND", "http"),
                ]),
                &[],
            )
            .unwrap_err(),
        );
        assert_eq!(found.len(), 3, "{found:#?}");
    }

    #[test]
    fn a_bus_on_another_host_without_credentials_is_refused_unless_allowed() {
        let load = |pairs: &[(&str, &str)]| Config::load(None, env(pairs), &[]);
        let refused =
            mistakes(load(&[("MANDATE_BUS_URL", "nats://bus.internal:4222")]).unwrap_err());
        assert!(refused[0].contains("has no credentials"), "{refused:?}");
        for fine in [
            vec![("MANDATE_BUS_URL", "nats://127.0.0.1:4222")],
            vec![("MANDATE_BUS_URL", "nats://localhost:4222")],
            vec![("MANDATE_BUS_URL", "nats://u:p@bus.internal:4222")],
            vec![("MANDATE_BUS_URL", "tls://token@bus.internal:4222")],
            vec![
                ("MANDATE_BUS_URL", "nats://bus.internal:4222"),
                ("MANDATE_BUS_CREDENTIALS_FILE", "/run/mandate.creds"),
            ],
            vec![
                ("MANDATE_BUS_URL", "nats://bus.internal:4222"),
                ("MANDATE_BUS_ALLOW_UNAUTHENTICATED", "true"),
            ],
        ] {
            assert!(load(&fine).is_ok(), "{fine:?}");
        }
        let scheme = mistakes(load(&[("MANDATE_BUS_URL", "http://127.0.0.1:4222")]).unwrap_err());
        assert!(
            scheme[0].contains("the scheme is `nats` or `tls`"),
            "{scheme:?}"
        );
    }

    /// Every key the structs have, from the defaults serialized: section.key.
    fn struct_keys() -> Vec<String> {
        let defaults = serde_json::to_value(Config::load(None, env(&[]), &[]).unwrap()).unwrap();
        let mut keys = Vec::new();
        for (section, fields) in defaults.as_object().unwrap() {
            for field in fields.as_object().unwrap().keys() {
                keys.push(format!("{section}.{field}"));
            }
        }
        keys.sort();
        keys
    }

    #[test]
    fn the_settings_table_and_the_structs_name_the_same_keys() {
        let mut table: Vec<String> = SETTINGS.iter().map(|s| s.key.to_owned()).collect();
        table.sort();
        let unique: std::collections::BTreeSet<&String> = table.iter().collect();
        assert_eq!(unique.len(), table.len(), "a key is defined twice");
        assert_eq!(table, struct_keys());
    }

    #[test]
    fn each_setting_takes_a_value_of_its_kind_and_refuses_another() {
        for setting in SETTINGS {
            let (good, bad) = match setting.kind {
                Kind::Text | Kind::Path => ("x", None),
                Kind::Address => ("127.0.0.1:7", Some("7")),
                Kind::Url => ("http://127.0.0.1:7", None),
                Kind::Duration => ("7s", Some("7")),
                Kind::Integer => ("403", Some("many")),
                Kind::Bool => ("true", Some("7")),
                Kind::OneOf(words) => (words[0], Some("neither")),
                Kind::List => ("[]", Some("7")),
                Kind::Table => ("{}", Some("7")),
            };
            let name = env_name(setting.key);
            let loaded = Config::load(None, env(&[(&name, good)]), &[]);
            // A few settings only make sense with another; the value itself fits.
            if let Err(ConfigError::Invalid { mistakes }) = &loaded {
                assert!(
                    mistakes
                        .iter()
                        .all(|m| !m.starts_with(&format!("`{}` (", setting.key))),
                    "{}: {good} refused: {mistakes:?}",
                    setting.key
                );
            }
            if let Some(bad) = bad {
                let found = mistakes(Config::load(None, env(&[(&name, bad)]), &[]).unwrap_err());
                let expected = setting.kind.expected();
                assert!(
                    found
                        .iter()
                        .any(|m| m.contains(&format!("(from `{name}`)")) && m.ends_with(&expected)),
                    "{}: {bad} gave {found:?}",
                    setting.key
                );
            }
        }
    }
}
