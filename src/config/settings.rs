//! Every setting, defined once: its key (which is also its `MANDATE_…`
//! variable), its default, its flag, what kind of value it takes and what
//! it does. The defaults layer, the list of keys, the flags' help, the hints
//! on a bad value, `mandate settings` and docs/configuration.md's table
//! are all read from [`SETTINGS`] (ripgrep's flag definitions are the model).
//! The typed `Config` structs say only what each field is; a test checks
//! that the structs and this table name the same keys, and that each kind
//! matches its field.

/// One setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// `section.key`, as in `mandate.toml`
    pub key: &'static str,
    /// its default
    pub default: Initial,
    /// the command-line flag that sets it, if any
    pub flag: Option<&'static str>,
    /// what kind of value it takes
    pub kind: Kind,
    /// what it does, in one line (docs/configuration.md's table, `mandate settings`)
    pub what: &'static str,
}

/// A setting's default.
#[derive(Debug, Clone, Copy)]
pub enum Initial {
    /// this text (a string, a path, an address, a duration)
    Text(&'static str),
    /// this TOML value (a number, a Boolean, `[]`, `{}`)
    Toml(&'static str),
    /// unset; the text says what that means
    Unset(&'static str),
}

/// The kind of value a setting takes: how a mistake is explained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// free text
    Text,
    /// a file or directory; in a config file, relative to that file
    Path,
    /// `HOST:PORT`
    Address,
    /// `http://…` or `https://…`
    Url,
    /// a number and a unit (`250ms`, `10s`, `5m`)
    Duration,
    /// a non-negative integer
    Integer,
    /// `true` or `false`
    Bool,
    /// one of these words
    OneOf(&'static [&'static str]),
    /// a list (a TOML array; in the environment, `["a", "b"]`)
    List,
    /// a table (a TOML table; in the environment, `{ a = "b" }`)
    Table,
}

impl Kind {
    /// How to write a value of this kind, for an error about one.
    pub fn expected(self) -> String {
        match self {
            Self::Text => "write text".to_owned(),
            Self::Path => "write a path (in a config file, relative to the file)".to_owned(),
            Self::Address => "write an address `HOST:PORT`, e.g. `127.0.0.1:8180` or `localhost:8180`".to_owned(),
            Self::Url => "write a URL, e.g. `https://store.internal`".to_owned(),
            Self::Duration => {
                "write a duration as a number and a unit, e.g. `250ms`, `10s`, `5m`, `1h` (`0s` where zero is allowed)"
                    .to_owned()
            }
            Self::Integer => "write a whole number, e.g. `1000`".to_owned(),
            Self::Bool => "write `true` or `false`".to_owned(),
            Self::OneOf(words) => format!(
                "write one of {}",
                words
                    .iter()
                    .map(|w| format!("`{w}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Self::List => {
                "write a list, e.g. `[\"a\", \"b\"]` (in the environment too)".to_owned()
            }
            Self::Table => "write a table, e.g. `{ a = \"b\" }` (in the environment too)".to_owned(),
        }
    }
}

const fn setting(
    key: &'static str,
    default: Initial,
    flag: Option<&'static str>,
    kind: Kind,
    what: &'static str,
) -> Setting {
    Setting {
        key,
        default,
        flag,
        kind,
        what,
    }
}

use Initial::{Text, Toml, Unset};
use Kind::{Address, Bool, Duration, Integer, List, OneOf, Path, Table, Url};

/// Every setting, in the order docs/configuration.md lists them.
#[rustfmt::skip]
pub const SETTINGS: &[Setting] = &[
    // Loopback: a fresh install answers nobody but its own host until told.
    setting("server.listen", Text("127.0.0.1:8180"), Some("--listen"), Address,
        "address to listen on"),
    // A batch of a few hundred evaluations fits with room.
    setting("server.max_body_bytes", Toml("1048576"), None, Integer,
        "largest request body, in bytes; larger is a 413"),
    // nginx's `lingering_time` is 30 s; ours stays inside
    // `server.request_timeout` (10 s), past which the answer is a 503.
    setting("server.lingering_time", Text("5s"), None, Duration,
        "time a refused body (413) is read and dropped before the answer, so that an HTTP/1.1 client still sending gets the 413 instead of a reset (as nginx lingers); a body still coming after it is cut off (HTTP/2 ends the stream with the answer instead)"),
    // A client sending its body does not pause for a second.
    setting("server.lingering_timeout", Text("1s"), None, Duration,
        "lingering on a refused body stops when the client sends nothing for this long"),
    // One request cannot hold a worker for long.
    setting("server.max_batch_items", Toml("1000"), None, Integer,
        "most items in one batch (AuthZEN `evaluations`, native `requests`); more is a 400"),
    // Cuts off slow and silent clients without hurting any real caller.
    setting("server.header_read_timeout", Text("10s"), None, Duration,
        "a client slower to send its headers, or its first whole request after connecting (TLS handshake and HTTP/2 preface included), is cut off"),
    // Under Kubernetes' 30 s termination grace.
    setting("server.shutdown_grace_period", Text("10s"), None, Duration,
        "time in-flight requests get to finish after SIGTERM or SIGINT"),
    setting("server.admin_listen", Unset("none"), Some("--admin-listen"), Address,
        "a separate listener for admin, health and metrics; the main one then answers no admin endpoint"),
    // Far beyond any decision, short of a stuck connection.
    setting("server.request_timeout", Text("10s"), None, Duration,
        "time one request may take, body and decision included; then a 503"),
    // Well above a sidecar's callers, under the fd limit.
    setting("server.max_connections", Toml("10000"), None, Integer,
        "open connections; at the cap the one idle longest is closed (GOAWAY on HTTP/2) to make way for a new one, and with none idle one more is answered 503 and closed"),
    // The contracts need 5; a deep document costs parse time.
    setting("server.max_json_depth", Toml("32"), None, Integer,
        "deepest JSON nesting of a request; deeper is a 400"),
    // Longer than gateways' pool idle times; idle connections make way at
    // `max_connections` anyway, so they never hold it.
    setting("server.idle_timeout", Text("60s"), None, Duration,
        "a connection with no request in flight this long is closed (every listener; GOAWAY on HTTP/2); never longer than `server.header_read_timeout`, HTTP/1.1's wait for the next request, so HTTP/2 closes as promptly"),
    setting("server.public_url", Unset("none"), None, Url,
        "base URL the AuthZEN metadata names; without it a well-formed `Host`, else the listen address (a crafted `Host` is never reflected)"),
    // Each costs parsing and a place in the decision's entity set: this
    // bounds a request's CPU (tens of milliseconds) whatever its shape.
    setting("server.max_request_entities", Toml("2000"), None, Integer,
        "most request-supplied entities one request uses (a batch counts shared ones per item); more is a 400"),
    setting("tls.cert", Unset("none"), Some("--tls-cert"), Path,
        "PEM certificate chain; with `tls.key`, the listeners speak TLS (re-read when the file changes)"),
    setting("tls.key", Unset("none"), Some("--tls-key"), Path,
        "PEM private key of `tls.cert`"),
    setting("tls.client_ca", Unset("none"), Some("--client-ca"), Path,
        "PEM CA bundle: clients must present a certificate chained to it (mutual TLS)"),
    setting("tls.reload_interval", Text("2s"), None, Duration,
        "how often certificate and key files are checked for changes"),
    setting("tls.allowed_clients", Unset("any"), None, Table,
        "`{decisions = [...], admin = [...]}`: client identities (DNS or URI SAN, or CN) allowed per surface; empty allows any valid certificate"),
    setting("policy.dir", Text("<embedded>/policies"), Some("--policies"), Path,
        "directory whose `*.cedar` files (recursively) form the policy set (`<embedded>/…`: the brokerage pack inside the binary, read from memory; give `policy.schema` too)"),
    setting("policy.schema", Text("<embedded>/schema"), Some("--schema"), Path,
        "a `.cedarschema` file, or a directory of them (given with `policy.dir`: the two are one pack)"),
    setting("policy.default_namespace", Unset("the schema's only namespace"), None, Kind::Text,
        "where unqualified AuthZEN types and action names resolve (`user` → `Brokerage::User`)"),
    setting("policy.reload_interval", Text("2s"), None, Duration,
        "how often policy and schema files are checked for edits, then reloaded (`0s`: off; SIGHUP and the admin endpoint reload at once)"),
    setting("policy.shadow_dir", Unset("none"), None, Path,
        "a candidate policy directory (same schema) decided beside the live pack on every decision, never enforced: divergences are counted (`mandate_shadow_divergence_total`) and logged"),
    setting("store.kind", Text("file"), None, OneOf(&["file", "http", "none"]),
        "the entity store: `file`, `http` or `none` (`--entities` selects `file`, `--upstream` `http`)"),
    setting("store.entities", Text("<embedded>/examples/demo/entities.json"), Some("--entities"), Path,
        "the file store's Cedar JSON entities (the default: the embedded pack's demo data; with your own pack, an empty store)"),
    // An edit is live within seconds, at the cost of one `stat` per period.
    setting("store.reload_interval", Text("2s"), None, Duration,
        "how often the file store checks its file for changes"),
    setting("store.upstream", Unset("none"), Some("--upstream"), Url,
        "base URL of the HTTP store (`POST {base}/entities/batch`)"),
    setting("store.upstream_token", Unset("none"), None, Kind::Text,
        "a bearer token sent to the HTTP store"),
    setting("store.upstream_ca", Unset("system roots"), None, Path,
        "PEM CA certificates trusted for an `https` store"),
    setting("store.upstream_client_cert", Unset("none"), None, Path,
        "PEM client certificate presented to an `https` store"),
    setting("store.upstream_client_key", Unset("none"), None, Path,
        "its private key"),
    // A store that cannot accept within a second is down; a retry is better.
    setting("store.connect_timeout", Text("1s"), None, Duration,
        "time to open a connection to the store"),
    // Beyond it a decision is more useful as a deny than as a hang.
    setting("store.request_timeout", Text("2s"), None, Duration,
        "time for one store request, answer included; then a retry or a deny"),
    // Rides over a restart blip without tripling load.
    setting("store.retries", Toml("2"), None, Integer,
        "retries after a connect error, timeout or 5xx"),
    setting("store.retry_backoff", Text("50ms"), None, Duration,
        "base of the jittered exponential backoff between retries"),
    // Enough for user → group → org hierarchies.
    setting("store.ancestor_depth", Toml("3"), None, Integer,
        "levels of parents gathered above the entities a request names"),
    // Thousands of entities, far short of what would hurt the process.
    setting("store.max_response_bytes", Toml("16777216"), None, Integer,
        "largest store answer read, in bytes; larger is malformed (a deny)"),
    // A role change reaches decisions within half a minute (sooner with an
    // invalidation).
    setting("cache.ttl", Text("30s"), None, Duration,
        "how long a fetched entity is served without asking the store again (`0s`: ask every time)"),
    // Unknown callers cannot hammer the store; new users appear fast.
    setting("cache.negative_ttl", Text("5s"), None, Duration,
        "how long \"the store does not know this uid\" is remembered"),
    // Rides over a store restart, never serves data older than that.
    setting("cache.stale_if_error", Text("5m"), None, Duration,
        "how long past its TTL an entity may still be served while the store fails"),
    setting("cache.max_entries", Toml("1000000"), None, Integer,
        "most entities cached"),
    setting("cache.max_bytes", Toml("536870912"), None, Integer,
        "most bytes cached (estimated from each entity's JSON)"),
    // The hot working set of built entities (~3 KiB each in Cedar's form);
    // the rest cost their JSON, and ~9 µs to build again on use. A
    // decision the memo's answers settle reads no entity, so only memo
    // misses need them: 1,024 keeps a cached user under 1.5 KiB in
    // BENCHMARKS.md's memory scenario.
    setting("cache.max_built", Toml("1024"), None, Integer,
        "most cached entities kept built (Cedar's in-memory form, a few KiB each); the others are kept as their JSON and built again on use"),
    // The hot working set of answers; each costs well under a KiB (its key
    // and answers: entities are the cache's).
    setting("cache.max_slices", Toml("10000"), None, Integer,
        "most decisions the engine remembers (their answers, by the context values read), either store; `0`: none"),
    // Revocation stays bounded while the bus is down: one fetch a second
    // per hot entity, at most.
    setting("cache.ttl_without_bus", Text("1s"), None, Duration,
        "with `bus.url` set, how long a fetched entity is served while the bus is down (or not yet connected): events cannot reach this replica then"),
    setting("bus.url", Unset("none (no bus)"), None, Url,
        "the NATS server (`nats://host:4222`, `tls://host:4222`; `nats://user:pass@host` or `nats://token@host` to authenticate) whose entity change events this replica applies"),
    setting("bus.subject", Text("mandate.entities.changed"), None, Kind::Text,
        "the subject the change events are published on (prefix it per environment or tenant)"),
    setting("bus.credentials_file", Unset("none"), None, Path,
        "a NATS credentials file (`.creds`: JWT and nkey seed) to authenticate with"),
    setting("bus.tls_ca", Unset("system roots"), None, Path,
        "PEM CA certificates trusted for the NATS server; setting it requires TLS"),
    setting("bus.allow_unauthenticated", Toml("false"), None, Bool,
        "accept a bus on another host without credentials (refused by default: whoever can publish can make every replica drop its cache; events only ever remove data, never add it)"),
    // A truncated answer would under-report who can move money: past this,
    // a search is refused and says how to narrow it.
    setting("search.max_candidates", Toml("10000"), None, Integer,
        "most candidates one AuthZEN search decides (entities of the searched type, or actions); more is a 400 saying how to narrow it"),
    setting("search.time_budget", Text("2s"), None, Duration,
        "longest one AuthZEN search may take, every candidate's decision included; then a 503 saying how to narrow it, never a partial answer"),
    // A search may decide thousands of candidates: a few at once keep the
    // decisions' cores free; the rest wait within their time budget.
    setting("search.max_concurrent", Toml("4"), None, Integer,
        "most AuthZEN searches deciding at once (a later page, answered from memory, does not count); others wait for one to end within `search.time_budget`"),
    setting("search.token_key", Unset("random per process"), None, Kind::Text,
        "the secret that signs search page tokens; set the same on every replica behind one address, so a token from one is good at another"),
    // An explanation costs ~50x the CPU and 7x the bytes of a decision.
    setting("api.explain", Text("on"), None, OneOf(&["on", "off"]),
        "whether callers may ask for a policy-by-policy explanation (`explain: true`); `off` answers such a request 400 (the Helm chart sets `off`)"),
    setting("api.max_explain_items", Toml("10"), None, Integer,
        "most explained items in one request (a batch asking for more is a 400)"),
    setting("admin.token", Unset("none"), None, Kind::Text,
        "bearer token the admin endpoints require; without one they answer only on a loopback listener"),
    setting("gateway.principal_header", Text("x-user-id"), None, Kind::Text,
        "the header the gateway sets to the authenticated principal's id: the only identity taken from a gateway"),
    setting("gateway.principal_type", Text("User"), None, Kind::Text,
        "the principal's entity type (as callers write types)"),
    // nginx's `auth_request` accepts only 401 and 403: use 403 there.
    setting("gateway.unmatched_status", Toml("404"), None, Integer,
        "status when no route matches, 404 or 403 (a deny either way)"),
    // Caddy, Traefik and Envoy hand a deny's body and headers to the end
    // user: the reasons would tell anyone who is whose sub-user.
    setting("gateway.deny_detail", Toml("false"), None, Bool,
        "whether a forward-auth deny (HTTP and gRPC) carries its explanation; off: only a status, a generic body and the request id (the decision log keeps the explanation)"),
    setting("gateway.grpc_listen", Unset("none"), None, Address,
        "where Envoy's gRPC `ext_authz` is served"),
    // A fallback between pairs would let a client choose the checked request.
    setting("gateway.original", Unset("none (required with routes)"), None, OneOf(&["x-original", "x-forwarded", "request-line"]),
        "where the original request comes from: `x-original` (nginx), `x-forwarded` (Traefik, Caddy) or `request-line` (Envoy)"),
    setting("gateway.trusted_headers", Toml("[]"), None, List,
        "headers the gateway sets and strips from clients; the only sources of facts (Boolean context attributes)"),
    setting("gateway.routes", Toml("[]"), None, List,
        "the route table: method and path pattern → action, resource, context (see API gateways)"),
    // The API-gateway interop's payload: `{type: "route", id: <template>}`.
    setting("gateway.route_type", Unset("none"), None, Kind::Text,
        "the AuthZEN `resource.type` that asks about a route: `action.name` is the method, `resource.id` the path template exactly as `gateway.routes` writes it, decided as that route (no such route: a deny); `properties` and `context` are not read"),
    setting("entities.sources", Toml("{}"), None, Table,
        "entity type → `store`, `request` or `merge`; unlisted types are `store` (`request` with `store.kind = \"none\"`)"),
    setting("log.level", Text("info"), None, Kind::Text,
        "a `tracing` filter for the process log (stderr)"),
    // A few seconds of a debug flood; a stalled stderr costs at most that.
    setting("log.process_queue", Toml("10000"), None, Integer,
        "process log lines waiting for stderr, written by their own thread; beyond it lines are dropped and counted, so a stderr nobody reads never stalls a request"),
    setting("log.decisions", Text("stdout"), None, OneOf(&["stdout", "stderr", "file", "off"]),
        "the decision log: `stdout`, `stderr`, `file` or `off`"),
    setting("log.decisions_file", Unset("none"), None, Path,
        "the decision log file, appended to, for `log.decisions = \"file\"`"),
    // With `decisions_max_bytes` bounding their size.
    setting("log.decisions_queue", Toml("10000"), None, Integer,
        "decision lines waiting to be written; beyond it lines are dropped and counted, never blocking a decision"),
    // A stalled sink costs at most that (twice, while a batch is written).
    setting("log.decisions_max_bytes", Toml("8388608"), None, Integer,
        "bytes of decision lines waiting; beyond it lines are dropped and counted"),
    setting("log.mask", Toml("[]"), None, List,
        "context attributes the decision log writes as `\"***\"` (their values hidden in error messages too)"),
    setting("log.capture_entities", Toml("false"), None, Bool,
        "write the entities each decision read into its log line (attributes named in `log.mask` as `\"***\"`), for `mandate replay --entities logged`"),
    // Keep everything until told: the defaults never drop a decision.
    setting("log.keep", Toml("[]"), None, List,
        "volume rules for every sink (the log and the history), first match wins: `[{ name = \"reads\", decision = \"allow\", actions = [\"view_account\"], share = 0.05 }]` (actions or action groups); a line no rule matches is kept, and every deny is kept (a share below 1 needs `decision = \"allow\"`); counted in `mandate_log_lines_total{rule,outcome}`"),
    setting("history.url", Unset("none (no history)"), None, Url,
        "the NATS server (JetStream) of the durable action history: every kept decision line is published there, never delaying a decision; `bus.credentials_file`, `bus.tls_ca` and `bus.allow_unauthenticated` apply to it too"),
    setting("history.stream", Text("MANDATE_HISTORY"), None, Kind::Text,
        "the JetStream stream of the history, created if missing (file storage, `history.max_age`, `history.max_bytes`, `history.replicas`); an existing one is used as it is"),
    setting("history.subject_prefix", Text("mandate.history"), None, Kind::Text,
        "each line goes to `<prefix>.<resource type>.<resource id>`, type and id escaped into subject tokens (docs/history.md)"),
    // Minutes of a busy replica's decisions while NATS is away.
    setting("history.queue", Toml("100000"), None, Integer,
        "history lines waiting to be published; beyond it lines are dropped and counted (`mandate_history_dropped_total{cause=\"queue_full\"}`)"),
    setting("history.queue_bytes", Toml("67108864"), None, Integer,
        "bytes of history lines waiting; beyond it lines are dropped and counted"),
    setting("history.retry_for", Text("60s"), None, Duration,
        "how long a line JetStream has not acknowledged is retried before it is dropped and counted (`cause=\"expired\"`); the stream Mandate creates deduplicates for longer, so a retry is never stored twice"),
    // SEC 17a-4 keeps most broker-dealer records 6 years; MiFID II 5 to 7.
    setting("history.max_age", Text("2557d"), None, Duration,
        "how long the stream Mandate creates keeps a line (7 years; `0s`: forever)"),
    setting("history.max_bytes", Toml("0"), None, Integer,
        "the size limit of the stream Mandate creates, in bytes (0: none); once full, new lines are refused and counted, never old records deleted to make room"),
    setting("history.replicas", Toml("1"), None, Integer,
        "the replicas of the stream Mandate creates (3 on a JetStream cluster)"),
];

/// The setting of `key`.
pub fn find(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|setting| setting.key == key)
}

/// The environment variable of a key: `server.listen` → `MANDATE_SERVER_LISTEN`.
pub fn env_name(key: &str) -> String {
    format!("MANDATE_{}", key.replace('.', "_").to_uppercase())
}

impl Setting {
    /// The default as shown to people: `127.0.0.1:8180`, `1000`, `none`.
    pub fn default_text(&self) -> &'static str {
        match self.default {
            Text(text) | Toml(text) | Unset(text) => text,
        }
    }

    /// A flag's help: what it does, its default and its key.
    pub fn help(&self) -> String {
        match self.default {
            Text(text) | Toml(text) => {
                format!(
                    "{} [default: {text}] ({})",
                    capitalized(self.what),
                    self.key
                )
            }
            Unset(_) => format!("{} ({})", capitalized(self.what), self.key),
        }
    }
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// The help of the flag that sets `key` (for the command line's flags).
pub fn help(key: &str) -> String {
    find(key).map_or_else(|| key.to_owned(), Setting::help)
}

/// The table of docs/configuration.md (and of `mandate settings`), in
/// Markdown: key, variable, flag, default, what.
pub fn reference_table() -> String {
    let mut table = String::from("| key | env | flag | default | what |\n|---|---|---|---|---|\n");
    for setting in SETTINGS {
        let flag = setting.flag.map(|f| format!("`{f}`")).unwrap_or_default();
        let default = match setting.default {
            Text(text) | Toml(text) => format!("`{text}`"),
            Unset(text) => text.to_owned(),
        };
        table.push_str(&format!(
            "| `{}` | `{}` | {flag} | {default} | {} |\n",
            setting.key,
            env_name(setting.key),
            setting.what
        ));
    }
    table
}
