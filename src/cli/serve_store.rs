//! `mandate serve-store`: a Cedar JSON entities file served as an HTTP
//! entity store (the upstream contract), its changes published on the bus,
//! for demos and benchmarks.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use mandate::bus::{BusSettings, ChangeEvent, Changed, EventUid};
use mandate::tools::refstore::RefStore;

use super::serve::ShutdownSignals;
use super::{BusArgs, ExitCode, Outcome, error, runtime, say};

/// The file to serve, where, how slowly, how often it is re-read, and
/// the bus its changes go to.
#[derive(Args)]
pub struct StoreArgs {
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

/// Serves the file until SIGTERM or SIGINT: exit 0, or 2 when the file,
/// the address or the bus cannot be used.
pub fn run(args: &StoreArgs) -> Outcome {
    let store = RefStore::open(&args.entities, args.latency)
        .map(Arc::new)
        .map_err(|error| self::error(ExitCode::Usage, error))?;
    let rt = runtime()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|error| {
                self::error(
                    ExitCode::Usage,
                    format_args!("cannot listen on `{}`: {error}", args.listen),
                )
            })?;
        let addr = listener
            .local_addr()
            .map_or_else(|_| args.listen.to_string(), |a| a.to_string());
        say(format_args!("entity store listening on http://{addr}"));
        watch_and_publish(&store, args.watch_interval, args.bus.settings());
        store
            .serve(listener, ShutdownSignals::install().received())
            .await;
        Ok(ExitCode::Success)
    })
}

/// Re-reads the store's file when it changes and, with a bus, publishes
/// the uids that changed, numbered from 1 (a restart of the store starts
/// again at 1, which replicas take as a gap: they forget everything).
fn watch_and_publish(
    store: &Arc<RefStore>,
    interval: std::time::Duration,
    bus: Option<BusSettings>,
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
                Changed::All
            } else {
                let uids = changed
                    .into_iter()
                    .map(|(type_name, id)| EventUid { type_name, id })
                    .collect();
                Changed::Uids(uids)
            };
            let event = ChangeEvent {
                changed,
                revision: Some(revision),
            };
            if let Err(error) = mandate::bus::publish(bus, &event).await {
                eprintln!("error: {error}");
            }
        }
    });
}
