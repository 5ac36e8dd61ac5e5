//! The `mandate` command: `serve`, `check`, `validate`.
//!
//! The only place that prints errors and chooses exit codes, one table for
//! every subcommand (the README's "Exit codes"):
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
use mandate::config::{Config, Overrides};
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
    Serve(ConfigArgs),
    /// Decide one request from the command line: exit 0 allow, 1 deny, 2 error.
    Check(CheckArgs),
    /// Validate the schema, the policies and the entities file, with Cedar's
    /// diagnostics: exit 0 valid, 1 invalid.
    Validate(ConfigArgs),
    /// Run policy test suites (YAML): exit 0 all pass, 1 a case failed, 2 a
    /// suite could not run.
    Test(TestArgs),
    /// Serve a Cedar JSON entities file as an HTTP entity store (the
    /// upstream contract), for demos and benchmarks.
    ServeStore(StoreArgs),
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
}

#[derive(Args)]
struct TestArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Suite files or directories of them.
    #[arg(default_value = "tests/policies")]
    paths: Vec<PathBuf>,
}

/// Settings shared by every command; each is also a `mandate.toml` key and a
/// `MANDATE_…` variable (see the README's Configuration table). Flags win over both.
#[derive(Args, Clone)]
struct ConfigArgs {
    /// The configuration file: TOML, or JSON when its name ends in `.json`.
    #[arg(long, value_name = "FILE", env = "MANDATE_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8180] (server.listen).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<std::net::SocketAddr>,
    /// Directory of `*.cedar` policy files [default: policies] (policy.dir).
    #[arg(long, value_name = "DIR")]
    policies: Option<PathBuf>,
    /// Schema file or directory [default: schema] (policy.schema).
    #[arg(long, value_name = "PATH")]
    schema: Option<PathBuf>,
    /// Cedar JSON entities file; selects the file store
    /// [default: examples/demo/entities.json] (store.entities).
    #[arg(long, value_name = "FILE", conflicts_with = "upstream")]
    entities: Option<PathBuf>,
    /// Base URL of the HTTP entity store; selects it (store.upstream).
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
    /// PEM certificate chain: serve TLS (tls.cert).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert` (tls.key).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA bundle: require client certificates chained to it (tls.client_ca).
    #[arg(long, value_name = "FILE")]
    client_ca: Option<PathBuf>,
    /// A separate listener for admin endpoints, health and metrics
    /// (server.admin_listen).
    #[arg(long, value_name = "ADDR:PORT")]
    admin_listen: Option<std::net::SocketAddr>,
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    config: ConfigArgs,
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
}

impl ConfigArgs {
    fn load(&self) -> Result<Config, StartError> {
        let overrides = Overrides {
            listen: self.listen,
            policies: self.policies.clone(),
            schema: self.schema.clone(),
            entities: self.entities.clone(),
            upstream: self.upstream.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            client_ca: self.client_ca.clone(),
            admin_listen: self.admin_listen,
        };
        let env = std::env::vars().filter(|(k, _)| k != "MANDATE_CONFIG");
        let mut config = Config::load(self.config.as_deref(), env, &overrides)?;
        // Default paths missing here: the pack and demo data in the binary.
        mandate::embedded::use_where_missing(&mut config).map_err(StartError::Embedded)?;
        Ok(config)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Check(args) => check(&args),
        Command::Validate(args) => validate(&args),
        Command::Test(args) => test(&args),
        Command::ServeStore(args) => serve_store(&args),
    }
}

fn report(error: impl miette::Diagnostic + Send + Sync + 'static) {
    eprintln!("{:?}", miette::Report::new(error));
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

fn serve(args: &ConfigArgs) -> ExitCode {
    let config = match args.load() {
        Ok(config) => config,
        Err(error) => {
            report(error);
            return ExitCode::from(64);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in a pod's log.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if config.store.kind == mandate::config::StoreKind::File
        && config
            .store
            .entities
            .ends_with("examples/demo/entities.json")
    {
        tracing::warn!(
            entities = %config.store.entities.display(),
            "serving the DEMO entity data (Alice, Bob, Carol…): use --entities FILE or --upstream URL for yours"
        );
    }
    let Some(rt) = runtime() else {
        return ExitCode::from(INTERNAL);
    };
    rt.block_on(async {
        let running = match app::start(&config).await {
            Ok(running) => running,
            Err(error) => {
                report(error);
                return ExitCode::from(64);
            }
        };
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
        running.stop();
        running.stopped().await;
        ExitCode::SUCCESS
    })
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
    let context: Option<serde_json::Value> = match args
        .context
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
    {
        Ok(context) => context,
        Err(error) => {
            eprintln!("error: `--context` is not JSON: {error}");
            return ExitCode::from(2);
        }
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
    match rt.block_on(engine.decide(&request)) {
        Ok(decision) => {
            let errors: Vec<serde_json::Value> = decision
                .errors()
                .iter()
                .map(|e| serde_json::json!({"code": e.code(), "message": e.message(), "policy": e.policy()}))
                .collect();
            let out = serde_json::json!({
                "decision": if decision.allowed() { "Allow" } else { "Deny" },
                "reasons": decision.reasons().collect::<Vec<_>>(),
                "errors": errors,
                "policy_version": decision.policy_version(),
                "summary": decision.summary(),
            });
            println!("{out:#}");
            if decision.allowed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(error) => {
            eprintln!("error: {}: {}", error.code, error.message);
            ExitCode::from(2)
        }
    }
}

fn validate(args: &ConfigArgs) -> ExitCode {
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
            println!(
                "ok: {} policies valid against the schema (version {}); entities valid",
                snapshot.policy_count(),
                snapshot.version()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            report(error);
            ExitCode::from(1)
        }
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
    let (mut passed, mut failed) = (0usize, 0usize);
    for root in &args.paths {
        let files = match suite::discover(root) {
            Ok(files) => files,
            Err(error) => {
                report(error);
                return ExitCode::from(2);
            }
        };
        for file in files {
            let results = match rt.block_on(suite::run(&file, &config)) {
                Ok(results) => results,
                Err(error) => {
                    report(error);
                    return ExitCode::from(2);
                }
            };
            for result in results {
                match result.failure {
                    None => {
                        passed += 1;
                        println!("ok    {}", result.name);
                    }
                    Some(diff) => {
                        failed += 1;
                        println!("FAIL  {}\n{diff}", result.name);
                    }
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 && passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
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
        println!("entity store listening on http://{addr}");
        store
            .serve(listener, ShutdownSignals::install().received())
            .await;
        ExitCode::SUCCESS
    })
}
