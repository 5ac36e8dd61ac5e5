//! The `mandate` command: `serve`, `check`, `validate`, `test`,
//! `serve-store`, `settings`.
//!
//! The only place that prints errors and chooses exit codes, one table for
//! every subcommand (docs/cli.md's "Exit codes"):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success: allowed, valid, every case passed, served and stopped cleanly |
//! | 1 | the answer is no: denied (`check`), invalid (`validate`), a case failed (`test`) |
//! | 2 | usage: the command line, or an input `check`, `test` or `serve-store` needs, cannot be used |
//! | 64 | `serve` could not start: configuration, policies, entities, TLS, the address |
//! | 70 | internal: the runtime could not be built |

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use mandate::app::{self, StartError};
use mandate::config::{self, Config};
use mandate::engine::{DecisionRequest, EntityRef};
use mandate::suite::{self, split_uid};

/// Mandate: a Cedar policy decision point for delegated account access.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve decisions over HTTP (AuthZEN 1.0 and the native Cedar API).
    #[command(after_help = "\
Examples:
  mandate serve                                   # the shipped pack and demo data on 127.0.0.1:8180
  mandate serve --config mandate.toml             # your settings (paths relative to the file)
  mandate serve --upstream https://store.internal --listen 0.0.0.0:8180

Exit codes: 0 stopped cleanly (SIGTERM, SIGINT), 2 usage, 64 could not start.")]
    Serve(ServeArgs),
    /// Decide one request from the command line: exit 0 allow, 1 deny, 2 error.
    #[command(after_help = "\
Examples:
  mandate check --principal user:carol --action place_order \\
      --resource account:alice-personal --context '{\"side\":\"buy\",\"instrument\":\"AAPL\"}'
  mandate check --explain --principal user:bob --action withdraw \\
      --resource account:alice-personal \\
      --context '{\"destination\":{\"type\":\"Brokerage::Destination\",\"id\":\"alice-bank\"},\"amount\":\"100.00\"}'

Exit codes: 0 allow, 1 deny, 2 usage (an unknown action or type, a context that does not fit).")]
    Check(CheckArgs),
    /// Validate the configuration, the schema, the policies, the entities
    /// and the gateway routes, with Cedar's diagnostics: exit 0 valid, 1 invalid.
    #[command(after_help = "\
Examples:
  mandate validate
  mandate validate --config mandate.toml
  mandate validate --policies ./policies --schema ./schema --entities ./entities.json

Exit codes: 0 valid, 1 invalid, 2 usage.")]
    Validate(PackArgs),
    /// Run policy test suites (YAML): exit 0 all pass, 1 a case failed, 2 a
    /// suite could not run.
    #[command(after_help = "\
Examples:
  mandate test                                    # every suite under tests/policies
  mandate test tests/policies/roles.yaml --filter S2
  mandate test --format junit > report.xml        # for CI test reports
  mandate test --coverage --min-coverage 100      # every policy decides some case

A case fails when it names an action, type or entity the schema or entities lack, or
when its decision errs, unless it lists the error under `errors:` (docs/testing-policies.md).

Exit codes: 0 every case passed, 1 a case failed (or none ran, or coverage is below
--min-coverage), 2 a suite could not run.")]
    Test(TestArgs),
    /// Prove the pack's invariants for every well-typed request and every
    /// entity store (Cedar's symbolic compiler and the cvc5 SMT solver).
    #[command(after_help = "\
Examples:
  mandate verify                                  # policies/invariants.toml over the pack
  mandate verify --invariants my-invariants.toml --policies ./candidate --schema ./schema
  mandate verify --format json
  mandate verify --policies ./candidate --schema ./schema --against ./policies   # what a change grants or removes

Each invariant prints `proved`, `violated` (with a counterexample: a `mandate check`
command and a `mandate test` suite reproducing it, re-decided by Cedar's authorizer)
or `unknown` (the solver's time limit). Needs cvc5 on PATH (or `CVC5`).

With `--against DIR`, each request type is `equivalent`, `fewer_allows` (the change only
removes permissions), `more_allows` (with a request it grants, confirmed by Cedar) or
`unknown`, also where a policy of either pack can error (Cedar skips it, Mandate denies,
so the solver's comparison would not be Mandate's). Each counterexample prints a
`mandate check` line giving the pack's answer when pasted, and a self-contained suite.

Exit codes: 0 all proved (with --against: nothing granted), 1 one violated (a request type
gains allows), 2 usage (or no solver), 3 one unknown.")]
    Verify(VerifyArgs),
    /// Decide a recorded decision log again with a candidate pack: what
    /// would this change have decided differently?
    #[command(after_help = "\
Examples:
  mandate replay --candidate ./candidate decisions.log               # the entities each line captured
  mandate replay --candidate ./candidate --entities live decisions-*.log   # the store's entities now
  zcat yesterday.log.gz | mandate replay --candidate ./candidate --fail-on any -
  mandate replay --candidate ./candidate --fail-on escalation,unreplayable decisions.log  # nothing unchecked

Each line is decided by the current pack (the baseline, which must still reproduce the
logged decision) and by the candidate. One JSON line per changed decision on stdout, then
`{\"summary\": ...}`: records, replayed, unreplayable by cause, allow_to_deny and deny_to_allow
(escalations), by action and by the candidate's deciding policy; the summary for a person on
stderr. Lines need `\"v\"` (written since this version); `--entities logged` needs
`log.capture_entities = true` when they were written.

Exit codes: 0 nothing to fail on, 1 a change `--fail-on` fails on, 2 usage (a pack that does
not load, a log that cannot be read), 3 nothing to judge (no line replayed; not with
`--fail-on none`).")]
    Replay(ReplayArgs),
    /// Serve a Cedar JSON entities file as an HTTP entity store (the
    /// upstream contract), for demos and benchmarks.
    #[command(after_help = "\
Examples:
  mandate serve-store --entities examples/demo/entities.json --listen 127.0.0.1:8190
  mandate serve --upstream http://127.0.0.1:8190
  mandate serve-store --nats nats://127.0.0.1:4222   # publishes what changes when the file does

Exit codes: 0 stopped cleanly, 2 the file, the address or the bus cannot be used.")]
    ServeStore(StoreArgs),
    /// Publish an entity change event: every replica subscribed to the
    /// subject forgets these entities (or everything, with `--all`).
    #[command(after_help = "\
Examples:
  mandate publish --nats nats://127.0.0.1:4222 'Brokerage::User::\"grace\"' account:alice-personal
  mandate publish --nats tls://bus.internal:4222 --credentials ops.creds --all
  mandate publish --nats nats://127.0.0.1:4222 --schema ./schema user:grace   # types checked first
  nats pub mandate.entities.changed '{\"uids\":[{\"type\":\"Brokerage::User\",\"id\":\"grace\"}]}'   # the same, with the NATS CLI

Exit codes: 0 published (the server has it), 2 usage (a type `--schema` does not declare)
or the bus cannot be reached.")]
    Publish(PublishArgs),
    /// Print a resource's action history (from JetStream) as JSON lines.
    #[command(after_help = "\
Examples:
  mandate history --url nats://127.0.0.1:4222 --resource account:alice-personal --since 168h
  mandate history --resource account:alice-personal --principal user:carol --action withdraw
  mandate history --resource 'Brokerage::Account::\"alice-personal\"' | jq -c '{time, principal, action, decision}'

Only the resource's own subject is read (an ordered consumer filtered to it): no scan of
the stream. `--principal` and `--action` filter those lines here.

Exit codes: 0 printed (perhaps nothing), 2 usage (a type the schema does not declare),
3 the history cannot be read (server, stream).")]
    History(HistoryArgs),
    /// AuthZEN search from the command line: who may, on what, which actions.
    #[command(after_help = "\
Examples:
  # who can withdraw from alice-personal (to her bank account)?
  mandate search subject --type user --action withdraw --resource account:alice-personal \\
      --context '{\"destination\":{\"type\":\"Brokerage::Destination\",\"id\":\"alice-bank\"},\"amount\":\"500.00\"}'
  # which accounts can grace trade on?
  mandate search resource --principal user:grace --action place_order --type account \\
      --context '{\"side\":\"buy\",\"instrument\":\"AAPL\"}'
  # which actions may carol perform on alice-personal (buying AAPL)?
  mandate search action --principal user:carol --resource account:alice-personal \\
      --context '{\"side\":\"buy\",\"instrument\":\"AAPL\"}'
  (an action whose context the given one lacks is listed under `context.skipped`, not omitted)

Exit codes: 0 searched (the results may be empty), 2 usage.")]
    Search(SearchArgs),
    /// List every setting: its `mandate.toml` key, `MANDATE_…` variable,
    /// flag, default and what it does (docs/configuration.md's table).
    #[command(after_help = "\
Examples:
  mandate settings
  mandate settings | grep cache.

Exit codes: 0.")]
    Settings,
}

#[derive(Args)]
struct StoreArgs {
    /// The Cedar JSON entities file to serve.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "examples/demo/entities.json"
    )]
    entities: PathBuf,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8190")]
    listen: std::net::SocketAddr,
    /// Latency added to every answer, e.g. `5ms`.
    #[arg(long, value_name = "DURATION", default_value = "0ms", value_parser = humantime::parse_duration)]
    latency: std::time::Duration,
    /// How often the file is checked for changes (it is re-read when it changes).
    #[arg(long, value_name = "DURATION", default_value = "250ms", value_parser = humantime::parse_duration)]
    watch_interval: std::time::Duration,
    #[command(flatten)]
    bus: BusArgs,
}

/// Where change events go.
#[derive(Args)]
struct BusArgs {
    #[arg(long = "nats", value_name = "URL", env = "MANDATE_BUS_URL", help = config::help("bus.url"))]
    url: Option<String>,
    #[arg(long, value_name = "SUBJECT", env = "MANDATE_BUS_SUBJECT", default_value = "mandate.entities.changed", help = config::help("bus.subject"))]
    subject: String,
    #[command(flatten)]
    auth: NatsAuthArgs,
}

/// How a NATS server is trusted and authenticated: the bus's and the
/// history's, the same settings.
#[derive(Args)]
struct NatsAuthArgs {
    #[arg(long = "credentials", value_name = "FILE", env = "MANDATE_BUS_CREDENTIALS_FILE", help = config::help("bus.credentials_file"))]
    credentials_file: Option<PathBuf>,
    #[arg(long, value_name = "FILE", env = "MANDATE_BUS_TLS_CA", help = config::help("bus.tls_ca"))]
    tls_ca: Option<PathBuf>,
}

impl NatsAuthArgs {
    /// The settings to reach the server at `url` (publishing on `subject`).
    fn settings(&self, url: String, subject: String) -> mandate::bus::BusSettings {
        mandate::bus::BusSettings {
            url,
            subject,
            credentials_file: self.credentials_file.clone(),
            tls_ca: self.tls_ca.clone(),
        }
    }
}

impl BusArgs {
    fn settings(&self) -> Option<mandate::bus::BusSettings> {
        Some(self.auth.settings(self.url.clone()?, self.subject.clone()))
    }
}

#[derive(Args)]
struct HistoryArgs {
    #[arg(long, value_name = "URL", env = "MANDATE_HISTORY_URL", help = config::help("history.url"))]
    url: String,
    #[arg(long, value_name = "NAME", env = "MANDATE_HISTORY_STREAM", default_value = "MANDATE_HISTORY", help = config::help("history.stream"))]
    stream: String,
    #[arg(long, value_name = "PREFIX", env = "MANDATE_HISTORY_SUBJECT_PREFIX", default_value = "mandate.history", help = config::help("history.subject_prefix"))]
    subject_prefix: String,
    #[command(flatten)]
    auth: NatsAuthArgs,
    /// The resource: `type:id` or Cedar's `Type::"id"`.
    #[arg(long, value_name = "UID")]
    resource: String,
    /// Only lines decided this long ago or later (`1h`, `7d`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    since: Option<std::time::Duration>,
    /// Only this principal's lines: `type:id` or `Type::"id"`.
    #[arg(long, value_name = "UID")]
    principal: Option<String>,
    /// Only this action's lines.
    #[arg(long, value_name = "ACTION")]
    action: Option<String>,
    /// The schema naming the types (default: the configuration's, else the
    /// shipped one).
    #[arg(long, value_name = "PATH")]
    schema: Option<PathBuf>,
    /// The configuration whose schema names the types.
    #[arg(long, value_name = "FILE", conflicts_with = "schema")]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct PublishArgs {
    #[command(flatten)]
    bus: BusArgs,
    /// The changed entities: `type:id` or Cedar's `Type::"id"`.
    #[arg(
        value_name = "UID",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    uids: Vec<String>,
    /// Everything changed: every replica forgets every cached entity.
    #[arg(long)]
    all: bool,
    /// The event's revision: one more than the last one published on the
    /// subject (a jump tells replicas an event was missed). Default: none.
    #[arg(long, value_name = "N")]
    revision: Option<u64>,
    /// Check each uid's type against this schema first (exit 2 on a type
    /// it does not declare): replicas drop what their schema lacks.
    #[arg(long, value_name = "PATH")]
    schema: Option<PathBuf>,
    /// Check each uid's type against this configuration's schema first.
    #[arg(long, value_name = "FILE", conflicts_with = "schema")]
    config: Option<PathBuf>,
}

impl PublishArgs {
    /// The schema's type names to check uids against, when asked for.
    fn type_names(&self) -> Result<Option<mandate::policy::TypeNames>, ()> {
        if self.schema.is_none() && self.config.is_none() {
            return Ok(None);
        }
        schema_types(self.schema.as_deref(), self.config.as_deref()).map(Some)
    }
}

/// The entity type names of `schema`, else of the configuration `config`
/// names (the shipped schema when neither): for tools that name entities.
/// Errors are reported.
fn schema_types(
    schema: Option<&std::path::Path>,
    config: Option<&std::path::Path>,
) -> Result<mandate::policy::TypeNames, ()> {
    let sources = if let Some(schema) = schema {
        mandate::policy::PolicySources {
            policy_dir: PathBuf::new(),
            schema: schema.to_owned(),
            default_namespace: None,
        }
    } else {
        match load(config, &Vec::new()) {
            Ok(config) => app::policy_sources(&config),
            Err(error) => {
                report(error);
                return Err(());
            }
        }
    };
    mandate::policy::TypeNames::of_schema(&sources).map_err(report)
}

#[derive(Args)]
struct TestArgs {
    #[command(flatten)]
    config: PackArgs,
    /// Suite files or directories of them.
    #[arg(default_value = "tests/policies")]
    paths: Vec<PathBuf>,
    /// Run only the cases whose name, suite name or rule contains this text.
    #[arg(long, value_name = "TEXT")]
    filter: Option<String>,
    /// How to report: `text` for people, `json` (one object per case, then a
    /// summary), `junit` (JUnit XML, for CI test reports).
    #[arg(long, value_enum, default_value = "text")]
    format: FormatArg,
    /// Report policy coverage: per policy, the cases it determined and how
    /// many evaluated its condition; the policies no case exercised.
    #[arg(long)]
    coverage: bool,
    /// Fail (exit 1) when fewer than PCT percent of the policies determined
    /// some passing case (implies `--coverage`).
    #[arg(long, value_name = "PCT", value_parser = percent)]
    min_coverage: Option<f64>,
}

/// A percentage, 0 to 100.
fn percent(text: &str) -> Result<f64, String> {
    match text.trim_end_matches('%').parse::<f64>() {
        Ok(value) if (0.0..=100.0).contains(&value) => Ok(value),
        _ => Err("a percentage from 0 to 100".to_owned()),
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    Text,
    Json,
    Junit,
}

/// The settings every command that decides reads: the configuration file,
/// the policies, the schema and the entity store. Each flag is one more
/// layer over the file and the `MANDATE_…` variables (`mandate settings`
/// lists every setting); its help comes from the setting it sets.
#[derive(Args, Clone)]
struct PackArgs {
    /// The configuration file: TOML, or JSON when its name ends in `.json`;
    /// relative paths in it are relative to it.
    #[arg(long, value_name = "FILE", env = "MANDATE_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, value_name = "DIR", help = config::help("policy.dir"))]
    policies: Option<PathBuf>,
    #[arg(long, value_name = "PATH", help = config::help("policy.schema"))]
    schema: Option<PathBuf>,
    #[arg(long, value_name = "FILE", conflicts_with = "upstream", help = config::help("store.entities"))]
    entities: Option<PathBuf>,
    #[arg(long, value_name = "URL", help = config::help("store.upstream"))]
    upstream: Option<String>,
}

/// What `serve` reads beyond the pack: its listeners and TLS.
#[derive(Args, Clone)]
struct ServeArgs {
    #[command(flatten)]
    pack: PackArgs,
    #[arg(long, value_name = "HOST:PORT", help = config::help("server.listen"))]
    listen: Option<String>,
    #[arg(long, value_name = "FILE", requires = "tls_key", help = config::help("tls.cert"))]
    tls_cert: Option<PathBuf>,
    #[arg(long, value_name = "FILE", requires = "tls_cert", help = config::help("tls.key"))]
    tls_key: Option<PathBuf>,
    #[arg(long, value_name = "FILE", help = config::help("tls.client_ca"))]
    client_ca: Option<PathBuf>,
    #[arg(long, value_name = "HOST:PORT", help = config::help("server.admin_listen"))]
    admin_listen: Option<String>,
}

/// A flag's value as a setting's.
fn text(value: impl ToString) -> toml::Value {
    toml::Value::String(value.to_string())
}

fn path(value: &std::path::Path) -> toml::Value {
    toml::Value::String(value.to_string_lossy().into_owned())
}

#[derive(Args)]
struct SearchArgs {
    /// What to find: `subject`, `resource` or `action`.
    #[arg(value_enum)]
    searched: SearchedArg,
    #[command(flatten)]
    config: PackArgs,
    /// The principal (`user:carol`), unless subjects are searched.
    #[arg(long)]
    principal: Option<String>,
    /// The action id, unless actions are searched.
    #[arg(long)]
    action: Option<String>,
    /// The resource (`account:alice-personal`), unless resources are searched.
    #[arg(long)]
    resource: Option<String>,
    /// The type searched, for subject and resource search (`user`, `account`).
    #[arg(long = "type", value_name = "TYPE")]
    searched_type: Option<String>,
    /// The context, as JSON.
    #[arg(long, value_name = "JSON")]
    context: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SearchedArg {
    Subject,
    Resource,
    Action,
}

#[derive(Args)]
struct VerifyArgs {
    #[command(flatten)]
    config: PackArgs,
    /// The invariants file (default: `invariants.toml` in the policy directory).
    #[arg(long, value_name = "FILE")]
    invariants: Option<PathBuf>,
    /// The solver's time limit per query; past it a check is `unknown`.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,
    /// Compare the pack with the one in DIR (same schema) instead: per
    /// request type, equivalent, fewer allows, or more allows with a
    /// request it grants.
    #[arg(long, value_name = "DIR")]
    against: Option<PathBuf>,
    /// Where counterexamples' entities are written.
    #[arg(long, value_name = "DIR", default_value = "target/verify")]
    out: PathBuf,
    /// `text` for a person, `json` (one object per check) for tools.
    #[arg(long, value_enum, default_value = "text")]
    format: VerifyFormat,
}

#[derive(Args)]
struct ReplayArgs {
    /// The configuration file: the baseline pack, the schema and, for
    /// `--entities live`, the store.
    #[arg(long, value_name = "FILE", env = "MANDATE_CONFIG")]
    config: Option<PathBuf>,
    /// The baseline pack (default: the configured one).
    #[arg(long, value_name = "DIR")]
    policies: Option<PathBuf>,
    #[arg(long, value_name = "PATH", help = config::help("policy.schema"))]
    schema: Option<PathBuf>,
    /// For `--entities live`: the file store's entities file.
    #[arg(long, value_name = "FILE", conflicts_with = "upstream")]
    entities_file: Option<PathBuf>,
    /// For `--entities live`: the HTTP store.
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
    /// The candidate pack's directory (over the same schema).
    #[arg(long, value_name = "DIR")]
    candidate: PathBuf,
    /// `logged`: the entities each line captured (`log.capture_entities`);
    /// `live`: the configured store's, as they are now.
    #[arg(long, value_enum, default_value = "logged")]
    entities: ReplayEntities,
    /// What makes the exit code 1, one or more (comma-separated):
    /// `escalation` (a deny becoming an allow), `any` change,
    /// `unreplayable` (a line that could not be replayed), or `none`.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "escalation")]
    fail_on: Vec<ReplayFailOn>,
    /// Decision log files, read in order (`-`: standard input).
    #[arg(required = true, value_name = "LOG")]
    logs: Vec<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ReplayEntities {
    Logged,
    Live,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ReplayFailOn {
    Escalation,
    Any,
    Unreplayable,
    None,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum VerifyFormat {
    Text,
    Json,
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    config: PackArgs,
    /// The principal: `user:alice`, or Cedar's `Brokerage::User::"alice"`.
    #[arg(long)]
    principal: String,
    /// The action id, e.g. `view_account`.
    #[arg(long)]
    action: String,
    /// The resource: `account:acme-personal`, or a Cedar uid.
    #[arg(long)]
    resource: String,
    /// The context, as JSON.
    #[arg(long, value_name = "JSON")]
    context: Option<String>,
    /// Also show, for each policy of the action, whether its scope matched
    /// and its condition held, and which part of the condition failed.
    #[arg(long)]
    explain: bool,
}

impl PackArgs {
    /// The flags given, as settings: the top layer.
    fn flags(&self) -> Vec<(&'static str, toml::Value)> {
        let mut flags = Vec::new();
        if let Some(dir) = &self.policies {
            flags.push(("policy.dir", path(dir)));
        }
        if let Some(schema) = &self.schema {
            flags.push(("policy.schema", path(schema)));
        }
        if let Some(entities) = &self.entities {
            flags.push(("store.kind", text("file")));
            flags.push(("store.entities", path(entities)));
        }
        if let Some(upstream) = &self.upstream {
            flags.push(("store.kind", text("http")));
            flags.push(("store.upstream", text(upstream)));
        }
        flags
    }

    fn load(&self) -> Result<Config, StartError> {
        load(self.config.as_deref(), &self.flags())
    }
}

impl ServeArgs {
    fn load(&self) -> Result<Config, StartError> {
        let mut flags = self.pack.flags();
        if let Some(listen) = &self.listen {
            flags.push(("server.listen", text(listen)));
        }
        if let Some(cert) = &self.tls_cert {
            flags.push(("tls.cert", path(cert)));
        }
        if let Some(key) = &self.tls_key {
            flags.push(("tls.key", path(key)));
        }
        if let Some(ca) = &self.client_ca {
            flags.push(("tls.client_ca", path(ca)));
        }
        if let Some(admin) = &self.admin_listen {
            flags.push(("server.admin_listen", text(admin)));
        }
        load(self.pack.config.as_deref(), &flags)
    }
}

/// The configuration: defaults, the file, the environment, then `flags`.
fn load(
    file: Option<&std::path::Path>,
    flags: &mandate::config::Flags,
) -> Result<Config, StartError> {
    let env = std::env::vars().filter(|(k, _)| k != "MANDATE_CONFIG");
    Ok(Config::load(file, env, flags)?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Diagnostics wrap to the width of a person's terminal; in a pipe or a
    // log, each message stays on its line, whole, for grep and scripts.
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let _ = miette::set_hook(Box::new(|_| {
            Box::new(miette::MietteHandlerOpts::new().wrap_lines(false).build())
        }));
    }
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Check(args) => check(&args),
        Command::Validate(args) => validate(&args),
        Command::Test(args) => test(&args),
        Command::Verify(args) => verify(&args),
        Command::Replay(args) => replay(&args),
        Command::ServeStore(args) => serve_store(&args),
        Command::Publish(args) => publish(&args),
        Command::Search(args) => search(&args),
        Command::History(args) => history(&args),
        Command::Settings => {
            say(format_args!("{}", config::reference_table().trim_end()));
            ExitCode::SUCCESS
        }
    }
}

/// Writes a line to stdout; a closed stdout (`| head`) is not an error of ours.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

fn report(error: impl miette::Diagnostic + Send + Sync + 'static) {
    eprintln!("{:?}", miette::Report::new(error));
}

/// Flushes the process log at exit, unless it ever fell behind: then its
/// worker may not take the shutdown message in time, and tracing-appender
/// would say so on stdout, the decision log's stream.
struct FlushedAtExit {
    guard: Option<tracing_appender::non_blocking::WorkerGuard>,
    dropped: tracing_appender::non_blocking::ErrorCounter,
}

impl Drop for FlushedAtExit {
    fn drop(&mut self) {
        if self.dropped.dropped_lines() > 0 {
            std::mem::forget(self.guard.take());
        }
    }
}

/// Exit code when the async runtime cannot be built (EX_SOFTWARE).
const INTERNAL: u8 = 70;

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            None
        }
    }
}

fn serve(args: &ServeArgs) -> ExitCode {
    let config = match args.load() {
        Ok(config) => config,
        Err(error) => {
            report(error);
            return ExitCode::from(64);
        }
    };
    // Mandate's spans are for OpenTelemetry alone, never the process log.
    let filter = tracing_subscriber::EnvFilter::try_new(format!(
        "{},{}=off",
        config.log.level,
        mandate::telemetry::trace::SPANS
    ))
    .unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("info,{}=off", mandate::telemetry::trace::SPANS))
    });
    // Written by its own thread from a bounded queue, dropped and counted
    // past it: a stderr nobody reads (a full pipe) never blocks a request.
    let (stderr, flushed) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(config.log.process_queue)
        .thread_name("mandate-log")
        .finish(std::io::stderr());
    let process_log = stderr.error_counter();
    let _flushed_at_exit = FlushedAtExit {
        guard: Some(flushed),
        dropped: process_log.clone(),
    };
    let Some(rt) = runtime() else {
        return ExitCode::from(INTERNAL);
    };
    // Spans go out over OTLP only when the standard variables ask.
    let otel = match rt.block_on(async {
        mandate::telemetry::otel::Otel::from_env(&|name| std::env::var(name).ok())
    }) {
        Ok(otel) => otel,
        Err(error) => {
            eprintln!("error: OpenTelemetry: {error}");
            return ExitCode::from(64);
        }
    };
    {
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        let process_log = tracing_subscriber::fmt::layer()
            .with_writer(stderr)
            // Colour codes only for a person at a terminal, not in a pod's log.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(filter);
        let logged = tracing_subscriber::registry().with(process_log);
        // No span layer at all when spans are off: an absent (`None`) layer
        // would make every disabled callsite "sometimes" interesting, and
        // each span and event would be filtered again at every call.
        match &otel {
            Some(otel) => logged
                .with(
                    otel.layer().with_filter(
                        tracing_subscriber::filter::Targets::new()
                            .with_target(mandate::telemetry::trace::SPANS, tracing::Level::TRACE),
                    ),
                )
                .init(),
            None => logged.init(),
        }
    }
    if let Some(otel) = &otel {
        tracing::info!(endpoint = %otel.endpoint, protocol = otel.protocol, "exporting spans over OTLP");
    }
    if mandate::embedded::contains(&config.policy.dir) {
        tracing::info!(
            "serving the embedded brokerage pack from memory (give --policies and --schema for yours)"
        );
    }
    if config.store.kind == mandate::config::StoreKind::File {
        if mandate::embedded::is_no_entities(&config.store.entities) {
            tracing::warn!(
                "no entities given with your own pack: the entity store is EMPTY (use --entities FILE or --upstream URL)"
            );
        } else if config
            .store
            .entities
            .ends_with("examples/demo/entities.json")
        {
            tracing::warn!(
                entities = %config.store.entities.display(),
                "serving the DEMO entity data (Alice, Bob, Carol…): use --entities FILE or --upstream URL for yours"
            );
        }
    }
    let exit = rt.block_on(async {
        let running = match app::start(&config).await {
            Ok(running) => running,
            Err(error) => {
                report(error);
                return ExitCode::from(64);
            }
        };
        tokio::spawn(async move {
            let mut counted = 0;
            let mut ticks = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                ticks.tick().await;
                let dropped = process_log.dropped_lines();
                let new = u64::try_from(dropped.saturating_sub(counted)).unwrap_or(0);
                mandate::telemetry::metrics()
                    .process_log_dropped
                    .inc_by(new);
                counted = dropped;
            }
        });
        let snapshot = running.engine.policies().current();
        tracing::info!(
            policies = snapshot.policy_count(),
            policy_version = %snapshot.version(),
            "policies loaded"
        );
        // Signal handlers exist before the address is printed, so a script
        // that signals as soon as it reads the address finds them.
        let shutdown = ShutdownSignals::install();
        #[cfg(unix)]
        if let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            let engine = Arc::clone(&running.engine);
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    // Errors are logged and counted by the engine.
                    let _ = engine.reload_policies();
                }
            });
        }
        // On stderr with the process log: stdout carries the decision log.
        eprintln!("mandate listening on {}://{}", running.scheme, running.addr);
        if let Some(addr) = running.admin_addr {
            eprintln!("mandate admin listening on {}://{addr}", running.scheme);
        }
        if let Some(addr) = running.grpc_addr {
            eprintln!("mandate ext_authz (gRPC) listening on {addr}");
        }
        shutdown.received().await;
        let engine = Arc::clone(&running.engine);
        running.stop();
        running.stopped().await;
        // The last decisions' lines go out before the process does.
        engine
            .decision_log()
            .flush(std::time::Duration::from_secs(2));
        // And to the history, while JetStream acknowledges them.
        engine
            .decision_log()
            .drain_history(std::time::Duration::from_secs(3))
            .await;
        ExitCode::SUCCESS
    });
    if let Some(otel) = &otel {
        otel.shutdown();
    }
    exit
}

/// Re-reads the store's file when it changes and, with a bus, publishes
/// the uids that changed, numbered from 1 (a restart of the store starts
/// again at 1, which replicas take as a gap: they forget everything).
fn watch_and_publish(
    store: &Arc<mandate::refstore::RefStore>,
    interval: std::time::Duration,
    bus: Option<mandate::bus::BusSettings>,
) {
    let store = Arc::clone(store);
    tokio::spawn(async move {
        let mut revision = 0u64;
        let mut ticks = tokio::time::interval(interval);
        loop {
            ticks.tick().await;
            let Some(changed) = store.reload_if_changed() else {
                continue;
            };
            let (Some(bus), false) = (&bus, changed.is_empty()) else {
                continue;
            };
            revision += 1;
            // More than one event may name: everything changed.
            let changed = if changed.len() > mandate::bus::MAX_EVENT_UIDS {
                mandate::bus::Changed::All
            } else {
                let uids = changed
                    .into_iter()
                    .map(|(type_name, id)| mandate::bus::EventUid { type_name, id })
                    .collect();
                mandate::bus::Changed::Uids(uids)
            };
            let event = mandate::bus::ChangeEvent {
                changed,
                revision: Some(revision),
            };
            if let Err(error) = mandate::bus::publish(bus, &event).await {
                eprintln!("error: {error}");
            }
        }
    });
}

/// SIGTERM and SIGINT, listened for from the moment of installing.
struct ShutdownSignals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self {
                terminate: signal(SignalKind::terminate()).ok(),
                interrupt: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    async fn received(self) {
        #[cfg(unix)]
        {
            async fn wait(signal: Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(mut signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = wait(self.terminate) => {}
                () = wait(self.interrupt) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutting down");
    }
}

/// `--context`, read as JSON; a usage error is printed.
fn context_arg(written: Option<&str>) -> Result<Option<serde_json::Value>, ()> {
    written
        .map(serde_json::from_str)
        .transpose()
        .map_err(|error| eprintln!("error: `--context` is not JSON: {error}"))
}

fn check(args: &CheckArgs) -> ExitCode {
    let config = match args.config.load() {
        Ok(config) => config,
        Err(error) => {
            report(error);
            return ExitCode::from(2);
        }
    };
    let (Some(principal), Some(resource)) = (split_uid(&args.principal), split_uid(&args.resource))
    else {
        eprintln!("error: `--principal` and `--resource` take `type:id` or `Type::\"id\"`");
        return ExitCode::from(2);
    };
    let Ok(context) = context_arg(args.context.as_deref()) else {
        return ExitCode::from(2);
    };
    let engine = match app::engine(&config) {
        Ok(engine) => engine,
        Err(error) => {
            report(error);
            return ExitCode::from(2);
        }
    };
    // A name the schema does not declare is a mistake on the command line,
    // not a deny: say so, with the name that was probably meant.
    let snapshot = engine.policies().current();
    let unknown = [("--principal", principal.0), ("--resource", resource.0)]
        .into_iter()
        .find(|(_, ty)| snapshot.entity_type(ty).is_none())
        .map(|(flag, ty)| format!("`{flag}`: {}", snapshot.unknown_type("entity type", ty)))
        .or_else(|| {
            snapshot
                .action(&args.action)
                .is_none()
                .then(|| format!("`--action`: {}", snapshot.unknown_action(&args.action)))
        });
    if let Some(message) = unknown {
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }
    let Some(rt) = runtime() else {
        return ExitCode::from(INTERNAL);
    };
    let request = DecisionRequest {
        principal: EntityRef {
            type_name: principal.0,
            id: principal.1,
            properties: None,
        },
        action: &args.action,
        resource: EntityRef {
            type_name: resource.0,
            id: resource.1,
            properties: None,
        },
        context: context.as_ref(),
        entities: mandate::engine::RequestEntities::None,
        request_id: None,
    };
    let decision = match rt.block_on(engine.decide(&request)) {
        Ok(decision) => decision,
        Err(error) => {
            eprintln!("error: {}: {}", error.code, error.message);
            let shape = snapshot
                .action(&args.action)
                .and_then(|action| snapshot.plan(action))
                .and_then(|plan| plan.shape());
            if let Some(shape) = shape {
                eprintln!(
                    "`{}` takes this context (`--context`):\n{}",
                    args.action,
                    shape.describe_context()
                );
            }
            return ExitCode::from(2);
        }
    };
    let errors: Vec<serde_json::Value> = decision
        .errors()
        .iter()
        .map(
            |e| serde_json::json!({"code": e.code(), "message": e.message(), "policy": e.policy()}),
        )
        .collect();
    let mut out = serde_json::json!({
        "decision": if decision.allowed() { "Allow" } else { "Deny" },
        "reasons": decision.reasons().collect::<Vec<_>>(),
        "errors": errors,
        "policy_version": decision.policy_version(),
        "summary": decision.summary().to_string(),
    });
    if args.explain {
        let trace = serde_json::json!(rt.block_on(engine.trace(&request)));
        if let Some(fields) = out.as_object_mut() {
            fields.insert("explanation".to_owned(), trace);
        }
    }
    say(format_args!("{out:#}"));
    if decision.allowed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn validate(args: &PackArgs) -> ExitCode {
    // A configuration that does not load is invalid input, like a bad policy.
    let config = match args.load() {
        Ok(config) => config,
        Err(error) => {
            report(error);
            return ExitCode::from(1);
        }
    };
    match app::engine(&config).and_then(|engine| app::routes(&config, &engine).map(|_| engine)) {
        Ok(engine) => {
            let snapshot = engine.policies().current();
            say(format_args!(
                "ok: {} policies valid against the schema (version {}); entities valid",
                snapshot.policy_count(),
                snapshot.version()
            ));
            ExitCode::SUCCESS
        }
        Err(error) => {
            report(error);
            ExitCode::from(1)
        }
    }
}

fn verify(args: &VerifyArgs) -> ExitCode {
    use mandate::verify::{Outcome, VerifyError};
    let config = match args.config.load() {
        Ok(config) => config,
        Err(error) => {
            report(error);
            return ExitCode::from(2);
        }
    };
    let snapshot = match mandate::policy::load(&app::policy_sources(&config)) {
        Ok(snapshot) => snapshot,
        Err(error) => {
            report(error);
            return ExitCode::from(2);
        }
    };
    if let Some(against) = &args.against {
        return verify_against(args, &config, &snapshot, against);
    }
    let file = args
        .invariants
        .clone()
        .unwrap_or_else(|| config.policy.dir.join("invariants.toml"));
    let usage = |error: VerifyError| {
        eprintln!("error: {error}");
        ExitCode::from(2)
    };
    let invariants = match mandate::verify::Invariants::read(&file) {
        Ok(invariants) => invariants,
        Err(error) => return usage(error),
    };
    let Some(rt) = runtime() else {
        return ExitCode::from(INTERNAL);
    };
    let reports = match rt.block_on(mandate::verify::verify(
        snapshot.policies(),
        snapshot.schema(),
        &invariants,
        args.timeout,
    )) {
        Ok(reports) => reports,
        Err(error) => return usage(error),
    };
    let pack = mandate::verify::Pack {
        policies: &config.policy.dir,
        schema: &config.policy.schema,
    };
    for report in &reports {
        let name = report.id.replace([':', '/'], "-");
        let written = report
            .counterexample
            .as_ref()
            .and_then(|example| write_entities(&args.out, &name, example));
        match args.format {
            VerifyFormat::Json => say(format_args!(
                "{}",
                serde_json::to_string(report).unwrap_or_default()
            )),
            VerifyFormat::Text => {
                let outcome = match report.outcome {
                    Outcome::Proved => "proved  ",
                    Outcome::Violated => "VIOLATED",
                    Outcome::Unknown => "UNKNOWN ",
                };
                say(format_args!(
                    "{outcome} {} ({}): {} [{} request types, {} ms]",
                    report.id, report.rule, report.says, report.request_types, report.millis
                ));
                if let Some(reason) = &report.reason {
                    say(format_args!("  {reason}"));
                }
                if let Some((example, path)) = &written {
                    print_example("counterexample", example, path, pack);
                    let suite = mandate::verify::test_case(
                        &format!("counterexample to {}", report.id),
                        &report.says,
                        &report.rule,
                        example,
                        "deny",
                    );
                    print_suite(&args.out, &name, &suite, pack);
                }
            }
        }
    }
    let has = |outcome: Outcome| reports.iter().any(|r| r.outcome == outcome);
    if has(Outcome::Violated) {
        ExitCode::from(1)
    } else if has(Outcome::Unknown) {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

/// Writes a counterexample's entities to `OUT/NAME.entities.json`, for the
/// `mandate check` command that reproduces it.
fn write_entities<'e>(
    out: &std::path::Path,
    name: &str,
    example: &'e mandate::verify::Counterexample,
) -> Option<(&'e mandate::verify::Counterexample, PathBuf)> {
    let _ = std::fs::create_dir_all(out);
    let path = out.join(format!("{name}.entities.json"));
    std::fs::write(&path, format!("{:#}", example.entities))
        .ok()
        .map(|()| (example, path))
}

/// A counterexample: whether Cedar confirms it, and the command that
/// reproduces `pack`'s answer when pasted.
fn print_example(
    what: &str,
    example: &mandate::verify::Counterexample,
    path: &std::path::Path,
    pack: mandate::verify::Pack<'_>,
) {
    let confirmed = if example.confirmed {
        "Cedar's authorizer confirms it"
    } else {
        "NOT confirmed by Cedar's authorizer"
    };
    say(format_args!("  {what} ({confirmed}):"));
    say(format_args!(
        "    {}",
        mandate::verify::check_command(example, path, pack)
    ));
}

/// A counterexample as a self-contained suite: printed, written beside its
/// entities, and the command that runs it.
fn print_suite(out: &std::path::Path, name: &str, suite: &str, pack: mandate::verify::Pack<'_>) {
    let file = out.join(format!("{name}.test.yaml"));
    say(format_args!("  as a test case (entities inline):"));
    for line in suite.lines() {
        say(format_args!("    {line}"));
    }
    if std::fs::write(&file, suite).is_ok() {
        say(format_args!(
            "  written to {}; run it with:\n    {}",
            file.display(),
            mandate::verify::test_command(&file, pack)
        ));
    }
}

/// `mandate replay`: the logs decided again by the baseline and the
/// candidate; changed decisions and the summary printed.
fn replay(args: &ReplayArgs) -> ExitCode {
    use mandate::replay::{EntitySource, FailOn, Replayer, Summary};
    let pack = PackArgs {
        config: args.config.clone(),
        policies: args.policies.clone(),
        schema: args.schema.clone(),
        entities: args.entities_file.clone(),
        upstream: args.upstream.clone(),
    };
    let config = match pack.load() {
        Ok(config) => config,
        Err(error) => {
            report(error);
            return ExitCode::from(2);
        }
    };
    let source = match args.entities {
        ReplayEntities::Logged => EntitySource::Logged,
        ReplayEntities::Live => EntitySource::Live,
    };
    let fail_on: Vec<FailOn> = args
        .fail_on
        .iter()
        .map(|fail_on| match fail_on {
            ReplayFailOn::Escalation => FailOn::Escalation,
            ReplayFailOn::Any => FailOn::Any,
            ReplayFailOn::Unreplayable => FailOn::Unreplayable,
            ReplayFailOn::None => FailOn::None,
        })
        .collect();
    let report_only = fail_on.iter().all(|f| *f == FailOn::None);
    if fail_on.contains(&FailOn::None) && !report_only {
        eprintln!("error: `--fail-on none` reports only: it takes no other value");
        return ExitCode::from(2);
    }
    let Some(rt) = runtime() else {
        return ExitCode::from(INTERNAL);
    };
    let _guard = rt.enter();
    let replayer = match Replayer::new(&config, &args.candidate, source) {
        Ok(replayer) => replayer,
        Err(error) => {
            report(error);
            return ExitCode::from(2);
        }
    };
    let mut summary = Summary::default();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for log in &args.logs {
        let mut input: Box<dyn std::io::BufRead> = if log.as_os_str() == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            match std::fs::File::open(log) {
                Ok(file) => Box::new(std::io::BufReader::new(file)),
                Err(error) => {
                    eprintln!("error: cannot read `{}`: {error}", log.display());
                    return ExitCode::from(2);
                }
            }
        };
        if let Err(error) = rt.block_on(replayer.replay(&mut input, &mut out, &mut summary)) {
            eprintln!("error: `{}`: {error}", log.display());
            return ExitCode::from(2);
        }
    }
    let summary_line = serde_json::json!({ "summary": &summary });
    {
        use std::io::Write as _;
        let _ = writeln!(out, "{summary_line}");
        let _ = out.flush();
    }
    eprintln!("{}", describe_replay(&summary));
    if summary.fails(&fail_on) {
        if fail_on.contains(&FailOn::Unreplayable) && !summary.unreplayable.is_empty() {
            eprintln!("{}", unreplayable_fails(&summary));
        }
        ExitCode::from(1)
    } else if summary.replayed == 0 && !report_only {
        // A gate that judged nothing must not pass: it would let through
        // any candidate, the one that deletes F1 included.
        eprintln!("{}", nothing_to_judge(&summary));
        ExitCode::from(NOTHING_TO_JUDGE)
    } else {
        ExitCode::SUCCESS
    }
}

/// Exit code of a replay gate that replayed no line.
const NOTHING_TO_JUDGE: u8 = 3;

/// Why `--fail-on unreplayable` failed, and how to make the lines replay.
fn unreplayable_fails(summary: &mandate::replay::Summary) -> String {
    let mut text = String::from(
        "error: lines that could not be replayed fail this gate (`--fail-on unreplayable`):",
    );
    for (cause, count) in &summary.unreplayable {
        text.push_str(&format!("\n  {cause}: {count}"));
    }
    text.push_str(&how_to_replay(summary));
    text
}

/// Why a replay judged nothing, and how to make it judge.
fn nothing_to_judge(summary: &mandate::replay::Summary) -> String {
    let mut text = String::from(
        "error: nothing to judge: no decision line was replayed, so this gate cannot pass",
    );
    text.push_str(&how_to_replay(summary));
    if summary.records == 0 {
        text.push_str("\n  no decision line was read: is this a decision log?");
    }
    text.push_str("\n  (`--fail-on none` reports without judging)");
    text
}

/// How to make the lines that could not be replayed replay, one line per
/// cause that has a remedy: lines without their entities, masked lines (a
/// masked context value is gone; masked entity attributes are read from
/// the store instead).
fn how_to_replay(summary: &mandate::replay::Summary) -> String {
    let mut text = String::new();
    if summary.unreplayable.contains_key("no_entities") {
        text.push_str(
            "\n  lines without their entities: log with `log.capture_entities = true`, or replay over the store's entities now with `--entities live`",
        );
    }
    if summary.unreplayable.contains_key("masked") {
        text.push_str(
            "\n  masked lines (`log.mask`): a masked context value cannot be replayed (log without masking what decisions read); masked entity attributes replay over the store with `--entities live`",
        );
    }
    text
}

/// The summary for a person.
fn describe_replay(summary: &mandate::replay::Summary) -> String {
    use std::fmt::Write as _;
    let mut text = format!(
        "{} decisions read, {} replayed: {} unchanged, {} allow→deny, {} deny→allow (escalations)",
        summary.records,
        summary.replayed,
        summary.unchanged,
        summary.changes.allow_to_deny,
        summary.changes.deny_to_allow
    );
    if summary.skipped > 0 {
        let _ = write!(text, "; {} other lines skipped", summary.skipped);
    }
    for (cause, count) in &summary.unreplayable {
        let _ = write!(text, "\n  unreplayable, {cause}: {count}");
    }
    for (action, changes) in &summary.by_action {
        let _ = write!(
            text,
            "\n  {action}: {} allow→deny, {} deny→allow",
            changes.allow_to_deny, changes.deny_to_allow
        );
    }
    for (policy, count) in &summary.by_policy {
        let _ = write!(text, "\n  decided by {policy}: {count}");
    }
    text
}

/// `mandate verify --against DIR`: the pack against the one in DIR.
fn verify_against(
    args: &VerifyArgs,
    config: &Config,
    candidate: &mandate::policy::PolicySnapshot,
    against: &std::path::Path,
) -> ExitCode {
    use mandate::verify::Change;
    let mut sources = app::policy_sources(config);
    sources.policy_dir = against.to_owned();
    let baseline = match mandate::policy::load(&sources) {
        Ok(snapshot) => snapshot,
        Err(error) => {
            report(error);
            return ExitCode::from(2);
        }
    };
    let Some(rt) = runtime() else {
        return ExitCode::from(INTERNAL);
    };
    let comparisons = match rt.block_on(mandate::verify::compare(
        candidate.policies(),
        baseline.policies(),
        candidate.schema(),
        args.timeout,
    )) {
        Ok(comparisons) => comparisons,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let pack = mandate::verify::Pack {
        policies: &config.policy.dir,
        schema: &config.policy.schema,
    };
    let baseline_pack = mandate::verify::Pack {
        policies: against,
        schema: &config.policy.schema,
    };
    for (index, comparison) in comparisons.iter().enumerate() {
        let name = format!("against-{index}");
        let written = comparison
            .counterexample
            .as_ref()
            .and_then(|example| write_entities(&args.out, &name, example));
        match args.format {
            VerifyFormat::Json => say(format_args!(
                "{}",
                serde_json::to_string(comparison).unwrap_or_default()
            )),
            VerifyFormat::Text => {
                let change = match comparison.change {
                    Change::Equivalent => "equivalent  ",
                    Change::FewerAllows => "fewer allows",
                    Change::MoreAllows => "MORE ALLOWS ",
                    Change::Unknown => "UNKNOWN     ",
                };
                say(format_args!(
                    "{change} {} [{} ms]",
                    comparison.request_type, comparison.millis
                ));
                if let Some(reason) = &comparison.reason {
                    say(format_args!("  {reason}"));
                }
                if let Some((example, path)) = &written {
                    let (what, candidate_says) = if comparison.change == Change::MoreAllows {
                        ("e.g. granted; the candidate allows", "allow")
                    } else {
                        ("e.g. taken away; the candidate denies", "deny")
                    };
                    print_example(what, example, path, pack);
                    say(format_args!("  the baseline's answer:"));
                    say(format_args!(
                        "    {}",
                        mandate::verify::check_command(example, path, baseline_pack)
                    ));
                    let suite = mandate::verify::test_case(
                        &format!("changed by the candidate: {}", comparison.request_type),
                        &format!("the candidate's answer ({candidate_says})"),
                        "changed by the candidate",
                        example,
                        candidate_says,
                    );
                    print_suite(&args.out, &name, &suite, pack);
                }
            }
        }
    }
    let has = |change: Change| comparisons.iter().any(|c| c.change == change);
    if matches!(args.format, VerifyFormat::Text) {
        let summary = if has(Change::MoreAllows) {
            "the candidate grants what the baseline denies (MORE ALLOWS above)"
        } else if has(Change::FewerAllows) {
            "the candidate only removes permissions"
        } else if has(Change::Unknown) {
            "the solver could not settle every request type"
        } else {
            "the candidate decides every request as the baseline does"
        };
        say(format_args!("{summary}"));
    }
    if has(Change::MoreAllows) {
        ExitCode::from(1)
    } else if has(Change::Unknown) {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

fn test(args: &TestArgs) -> ExitCode {
    let config = match args.config.load() {
        Ok(config) => config,
        Err(error) => {
            report(error);
            return ExitCode::from(2);
        }
    };
    let Some(rt) = runtime() else {
        return ExitCode::from(INTERNAL);
    };
    let format = match args.format {
        FormatArg::Text => suite::Format::Text,
        FormatArg::Json => suite::Format::Json,
        FormatArg::Junit => suite::Format::Junit,
    };
    let options = suite::Options {
        coverage: args.coverage || args.min_coverage.is_some(),
    };
    let mut coverage = if options.coverage {
        match mandate::policy::load(&app::policy_sources(&config)) {
            Ok(snapshot) => Some(suite::Coverage::new(
                snapshot.policies().policies().map(|p| p.id().to_string()),
            )),
            Err(error) => {
                report(error);
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    let filter = suite::Filter::new(args.filter.as_deref());
    let mut out = suite::Report::new(format, std::io::stdout().lock());
    for root in &args.paths {
        let files = match suite::discover(root) {
            Ok(files) => files,
            Err(error) => {
                report(error);
                return ExitCode::from(2);
            }
        };
        for file in files {
            let results = match rt.block_on(suite::run(&file, &config, &filter, options)) {
                Ok(results) => results,
                Err(error) => {
                    report(error);
                    return ExitCode::from(2);
                }
            };
            for result in results {
                if let Some(coverage) = &mut coverage {
                    coverage.add(&result);
                }
                if let Err(error) = out.case(result) {
                    eprintln!("error: cannot write the report: {error}");
                    return ExitCode::from(2);
                }
            }
        }
    }
    let counts = match out.finish() {
        Ok(counts) => counts,
        Err(error) => {
            eprintln!("error: cannot write the report: {error}");
            return ExitCode::from(2);
        }
    };
    let below = coverage.as_ref().and_then(|coverage| {
        print_coverage(coverage, format);
        let min = args.min_coverage?;
        (coverage.percent() < min).then(|| {
            format!(
                "error: policy coverage {:.1}% is below --min-coverage {min}: no passing case is decided by {}",
                coverage.percent(),
                coverage.uncovered().join(", ")
            )
        })
    });
    match counts {
        (0, 0) => {
            eprintln!(
                "error: no case ran{}",
                if args.filter.is_some() {
                    " (nothing matched `--filter`)"
                } else {
                    ""
                }
            );
            ExitCode::from(1)
        }
        (_, 0) => match below {
            Some(message) => {
                eprintln!("{message}");
                ExitCode::from(1)
            }
            None => ExitCode::SUCCESS,
        },
        _ => ExitCode::from(1),
    }
}

/// Coverage after the report: on stdout as a table (text) or one JSON line
/// (json); on stderr beside JUnit XML, which must stay one document.
fn print_coverage(coverage: &suite::Coverage, format: suite::Format) {
    use std::io::Write as _;
    let written = match format {
        suite::Format::Text => coverage.write_text(&mut std::io::stdout().lock()),
        suite::Format::Json => writeln!(std::io::stdout().lock(), "{}", coverage.to_json()),
        suite::Format::Junit => coverage.write_text(&mut std::io::stderr().lock()),
    };
    if let Err(error) = written {
        eprintln!("error: cannot write the coverage: {error}");
    }
}

fn search(args: &SearchArgs) -> ExitCode {
    use mandate::engine::{SearchQuery, Searched};
    let usage = |message: &str| {
        eprintln!("error: {message}");
        ExitCode::from(2)
    };
    let config = match args.config.load() {
        Ok(config) => config,
        Err(error) => {
            report(error);
            return ExitCode::from(2);
        }
    };
    let uid = |flag: &str, value: &Option<String>| -> Result<(String, String), String> {
        let written = value
            .as_deref()
            .ok_or(format!("`--{flag}` is required in this search"))?;
        split_uid(written)
            .map(|(t, i)| (t.to_owned(), i.to_owned()))
            .ok_or(format!("`--{flag}` takes `type:id` or `Type::\"id\"`"))
    };
    let of_type = || {
        args.searched_type
            .clone()
            .map(|t| (t, String::new()))
            .ok_or_else(|| "`--type` names the type searched".to_owned())
    };
    let searched = match args.searched {
        SearchedArg::Subject => Searched::Subject,
        SearchedArg::Resource => Searched::Resource,
        SearchedArg::Action => Searched::Action,
    };
    let parts = match searched {
        Searched::Subject => of_type().and_then(|s| Ok((s, uid("resource", &args.resource)?))),
        Searched::Resource => uid("principal", &args.principal).and_then(|s| Ok((s, of_type()?))),
        Searched::Action => uid("principal", &args.principal)
            .and_then(|s| Ok((s, uid("resource", &args.resource)?))),
    };
    let (subject, resource) = match parts {
        Ok(parts) => parts,
        Err(message) => return usage(&message),
    };
    let action = match (searched, &args.action) {
        (Searched::Action, None) => String::new(),
        (Searched::Action, Some(_)) => return usage("an action search takes no `--action`"),
        (_, Some(action)) => action.clone(),
        (_, None) => return usage("`--action` is required in this search"),
    };
    let Ok(context) = context_arg(args.context.as_deref()) else {
        return ExitCode::from(2);
    };
    let engine = match app::engine(&config) {
        Ok(engine) => engine,
        Err(error) => {
            report(error);
            return ExitCode::from(2);
        }
    };
    let Some(rt) = runtime() else {
        return ExitCode::from(INTERNAL);
    };
    let query = SearchQuery {
        subject: (&subject.0, &subject.1),
        action: &action,
        resource: (&resource.0, &resource.1),
        context: context.as_ref(),
    };
    match rt.block_on(engine.search(&query, searched, config.search.max_candidates)) {
        Ok(found) => {
            let results =
                mandate::api::search_results(searched, &subject.0, &resource.0, &found.ids);
            let mut answer = serde_json::Map::new();
            answer.insert("results".to_owned(), serde_json::Value::from(results));
            if let Some(context) = mandate::api::skipped_context(&found) {
                answer.insert("context".to_owned(), context);
            }
            let answer = serde_json::Value::Object(answer);
            say(format_args!("{answer:#}"));
            for skipped in &found.skipped {
                eprintln!(
                    "note: `{}` not decided: {} (give `--context` with what it needs)",
                    skipped.action, skipped.reason
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => usage(&error.to_string()),
    }
}

fn publish(args: &PublishArgs) -> ExitCode {
    let Some(settings) = args.bus.settings() else {
        eprintln!("error: `--nats URL` (or `MANDATE_BUS_URL`) names the bus to publish on");
        return ExitCode::from(2);
    };
    let Ok(types) = args.type_names() else {
        return ExitCode::from(2);
    };
    let changed = if args.all {
        mandate::bus::Changed::All
    } else {
        if types.is_none() {
            eprintln!(
                "warning: types are unchecked: a replica drops a uid whose type its schema does not declare (give `--schema` or `--config` to check them here)"
            );
        }
        let mut uids = Vec::with_capacity(args.uids.len());
        let mut unknown = false;
        for written in &args.uids {
            let Some((type_name, id)) = split_uid(written) else {
                eprintln!("error: `{written}`: write `type:id` or `Type::\"id\"`");
                return ExitCode::from(2);
            };
            // Checked, a type is published as Cedar prints it.
            let type_name = match &types {
                None => type_name,
                Some(types) => match types.get(type_name) {
                    Some((_, printed)) => printed,
                    None => {
                        eprintln!("error: `{written}`: {}", types.unknown(type_name));
                        unknown = true;
                        continue;
                    }
                },
            };
            uids.push(mandate::bus::EventUid {
                type_name: type_name.to_owned(),
                id: id.to_owned(),
            });
        }
        if unknown {
            eprintln!("error: nothing published: every replica would drop those uids");
            return ExitCode::from(2);
        }
        mandate::bus::Changed::Uids(uids)
    };
    let event = mandate::bus::ChangeEvent {
        changed,
        revision: args.revision,
    };
    let Some(rt) = runtime() else {
        return ExitCode::from(INTERNAL);
    };
    match rt.block_on(mandate::bus::publish(&settings, &event)) {
        Ok(()) => {
            say(format_args!(
                "published on {}: {}",
                settings.subject,
                String::from_utf8_lossy(&event.encode())
            ));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

fn history(args: &HistoryArgs) -> ExitCode {
    let Ok(types) = schema_types(args.schema.as_deref(), args.config.as_deref()) else {
        return ExitCode::from(2);
    };
    // A uid as the lines write it: Cedar's canonical `Type::"id"`.
    let canonical = |written: &str| -> Result<(String, String, String), String> {
        let (type_name, id) = split_uid(written)
            .ok_or_else(|| format!("`{written}`: write `type:id` or `Type::\"id\"`"))?;
        let (ty, printed) = types
            .get(type_name)
            .ok_or_else(|| format!("`{written}`: {}", types.unknown(type_name)))?;
        let uid = cedar_policy::EntityUid::from_type_name_and_id(
            ty.clone(),
            cedar_policy::EntityId::new(id),
        );
        Ok((printed.to_owned(), id.to_owned(), uid.to_string()))
    };
    let (resource_type, resource_id, resource) = match canonical(&args.resource) {
        Ok(parts) => parts,
        Err(error) => {
            eprintln!("error: --resource {error}");
            return ExitCode::from(2);
        }
    };
    let principal = match args.principal.as_deref().map(canonical).transpose() {
        Ok(principal) => principal.map(|(_, _, uid)| uid),
        Err(error) => {
            eprintln!("error: --principal {error}");
            return ExitCode::from(2);
        }
    };
    let subject =
        mandate::telemetry::history::subject(&args.subject_prefix, &resource_type, &resource_id);
    let nats = args.auth.settings(args.url.clone(), String::new());
    let since = args.since.map(|ago| std::time::SystemTime::now() - ago);
    let Some(rt) = runtime() else {
        return ExitCode::from(INTERNAL);
    };
    let mut printed = 0u64;
    let wanted = |line: &serde_json::Value| {
        principal
            .as_deref()
            .is_none_or(|p| line.get("principal").and_then(|v| v.as_str()) == Some(p))
            && args
                .action
                .as_deref()
                .is_none_or(|a| line.get("action").and_then(|v| v.as_str()) == Some(a))
    };
    let read = rt.block_on(mandate::bus::history::read(
        &nats,
        &args.stream,
        &subject,
        since,
        |payload| {
            let Ok(line) = serde_json::from_slice::<serde_json::Value>(payload) else {
                return;
            };
            if wanted(&line) {
                printed += 1;
                say(format_args!("{}", String::from_utf8_lossy(payload)));
            }
        },
    ));
    match read {
        Ok(read) => {
            eprintln!("{printed} of {read} lines of {resource} (subject {subject})");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(3)
        }
    }
}

fn serve_store(args: &StoreArgs) -> ExitCode {
    let store = match mandate::refstore::RefStore::open(&args.entities, args.latency) {
        Ok(store) => Arc::new(store),
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let Some(rt) = runtime() else {
        return ExitCode::from(INTERNAL);
    };
    rt.block_on(async {
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("error: cannot listen on `{}`: {error}", args.listen);
                return ExitCode::from(2);
            }
        };
        let addr = listener
            .local_addr()
            .map_or_else(|_| args.listen.to_string(), |a| a.to_string());
        say(format_args!("entity store listening on http://{addr}"));
        watch_and_publish(&store, args.watch_interval, args.bus.settings());
        store
            .serve(listener, ShutdownSignals::install().received())
            .await;
        ExitCode::SUCCESS
    })
}
