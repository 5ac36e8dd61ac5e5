//! `mandate serve`: decisions served over HTTP (AuthZEN 1.0 and the native
//! Cedar API) until SIGTERM or SIGINT, with the process log on stderr,
//! spans over OpenTelemetry when asked, and the policies reloaded on SIGHUP.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use mandate::app::{self, Running};
use mandate::config::{self, Config};
use mandate::engine::Engine;
use mandate::telemetry::otel::Otel;
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, WorkerGuard};

use super::{ExitCode, OrExit, Outcome, PackArgs, error, load, path, runtime, text};

/// What `serve` reads beyond the pack: its listeners and TLS.
#[derive(Args, Clone)]
pub struct ServeArgs {
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

impl ServeArgs {
    /// The configuration with the pack's and these flags on top; one that
    /// does not load means `serve` cannot start.
    fn load(&self) -> Result<Config, ExitCode> {
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
        load(self.pack.config.as_deref(), &flags, ExitCode::CannotStart)
    }
}

/// Serves until SIGTERM or SIGINT: exit 0 once stopped cleanly, 64 when it
/// cannot start.
pub fn run(args: &ServeArgs) -> Outcome {
    let config = args.load()?;
    let (stderr, flushed_at_exit) = process_log(&config);
    let dropped = flushed_at_exit.dropped.clone();
    let rt = runtime()?;
    // Spans go out over OTLP only when the standard variables ask.
    let otel = rt
        .block_on(async { Otel::from_env(&|name| std::env::var(name).ok()) })
        .map_err(|error| {
            self::error(
                ExitCode::CannotStart,
                format_args!("OpenTelemetry: {error}"),
            )
        })?;
    install_subscriber(stderr, &config, otel.as_ref());
    announce(&config, otel.as_ref());
    let exit = rt.block_on(serve_until_stopped(&config, dropped));
    if let Some(otel) = &otel {
        otel.shutdown();
    }
    exit
}

/// The process log's writer to stderr, and what flushes it at exit.
fn process_log(config: &Config) -> (NonBlocking, FlushedAtExit) {
    // Written by its own thread from a bounded queue, dropped and counted
    // past it: a stderr nobody reads (a full pipe) never blocks a request.
    let (stderr, flushed) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(config.log.process_queue)
        .thread_name("mandate-log")
        .finish(std::io::stderr());
    let dropped = stderr.error_counter();
    let flushed_at_exit = FlushedAtExit {
        guard: Some(flushed),
        dropped,
    };
    (stderr, flushed_at_exit)
}

/// The process's subscriber: the process log on `stderr` at the configured
/// level, and Mandate's spans over OTLP when `otel` is on.
fn install_subscriber(stderr: NonBlocking, config: &Config, otel: Option<&Otel>) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    // Mandate's spans are for OpenTelemetry alone, never the process log.
    let filter = tracing_subscriber::EnvFilter::try_new(format!(
        "{},{}=off",
        config.log.level,
        mandate::telemetry::trace::SPANS
    ))
    .unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("info,{}=off", mandate::telemetry::trace::SPANS))
    });
    let process_log = tracing_subscriber::fmt::layer()
        .with_writer(stderr)
        // Colour codes only for a person at a terminal, not in a pod's log.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter);
    let logged = tracing_subscriber::registry().with(process_log);
    // No span layer at all when spans are off: an absent (`None`) layer
    // would make every disabled callsite "sometimes" interesting, and
    // each span and event would be filtered again at every call.
    match otel {
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

/// Logs what is served that an operator may not expect: spans exported,
/// the embedded pack, no entities, the demo's entities.
fn announce(config: &Config, otel: Option<&Otel>) {
    if let Some(otel) = otel {
        tracing::info!(endpoint = %otel.endpoint, protocol = otel.protocol, "exporting spans over OTLP");
    }
    if mandate::support::embedded::contains(&config.policy.dir) {
        tracing::info!(
            "serving the embedded brokerage pack from memory (give --policies and --schema for yours)"
        );
    }
    if config.store.kind == mandate::config::StoreKind::File {
        if mandate::support::embedded::is_no_entities(&config.store.entities) {
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
}

/// Starts the listeners, prints their addresses, and serves until a
/// shutdown signal; then drains and flushes the decision log.
async fn serve_until_stopped(config: &Config, dropped: ErrorCounter) -> Outcome {
    let running = app::start(config).await.or_exit(ExitCode::CannotStart)?;
    count_dropped_lines(dropped);
    let snapshot = running.engine.policies().current();
    tracing::info!(
        policies = snapshot.policy_count(),
        policy_version = %snapshot.version(),
        "policies loaded"
    );
    // Signal handlers exist before the address is printed, so a script
    // that signals as soon as it reads the address finds them.
    let shutdown = ShutdownSignals::install();
    reload_on_hangup(&running.engine);
    // On stderr with the process log: stdout carries the decision log.
    eprintln!("mandate listening on {}://{}", running.scheme, running.addr);
    if let Some(addr) = running.admin_addr {
        eprintln!("mandate admin listening on {}://{addr}", running.scheme);
    }
    if let Some(addr) = running.grpc_addr {
        eprintln!("mandate ext_authz (gRPC) listening on {addr}");
    }
    shutdown.received().await;
    stop(running).await;
    Ok(ExitCode::Success)
}

/// Counts the process log's dropped lines in the metrics, once a second.
fn count_dropped_lines(dropped: ErrorCounter) {
    tokio::spawn(async move {
        let mut counted = 0;
        let mut ticks = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            ticks.tick().await;
            let now = dropped.dropped_lines();
            let new = u64::try_from(now.saturating_sub(counted)).unwrap_or(0);
            mandate::telemetry::metrics()
                .process_log_dropped
                .inc_by(new);
            counted = now;
        }
    });
}

/// Reloads the policies on each SIGHUP.
fn reload_on_hangup(engine: &Arc<Engine>) {
    #[cfg(unix)]
    if let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    {
        let engine = Arc::clone(engine);
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                // Errors are logged and counted by the engine.
                let _ = engine.reload_policies();
            }
        });
    }
    #[cfg(not(unix))]
    let _ = engine;
}

/// Stops the listeners, waits for them to drain, then sends the last
/// decisions' lines out before the process goes.
async fn stop(running: Running) {
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
}

/// SIGTERM and SIGINT, listened for from the moment of installing.
pub struct ShutdownSignals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    /// Listens for both signals from now on (inside the runtime).
    pub fn install() -> Self {
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

    /// Waits for the first of them, then logs that the process is stopping.
    pub async fn received(self) {
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

/// Flushes the process log at exit, unless it ever fell behind: then its
/// worker may not take the shutdown message in time, and tracing-appender
/// would say so on stdout, the decision log's stream.
struct FlushedAtExit {
    guard: Option<WorkerGuard>,
    dropped: ErrorCounter,
}

impl Drop for FlushedAtExit {
    fn drop(&mut self) {
        if self.dropped.dropped_lines() > 0 {
            std::mem::forget(self.guard.take());
        }
    }
}
