//! A burst of change events against one replica: what it costs in memory
//! and in decision latency. Half a gigabyte of valid events, each naming
//! 9,400 users (about 254 KB, under the 256 KiB event limit), published to
//! a real `nats-server` as fast as it takes them, while one connection asks
//! a decision after another. Reported: resident memory idle, at its peak
//! during the burst and after; the slowest decision; what the replica
//! counted.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::Options;
use crate::client::{ask, scrape};
use crate::servers::{self, DecisionLog, Server};

const EVALUATION: &str = "/access/v1/evaluation";
const CAROL: &str = r#"{"subject":{"type":"user","id":"carol"},"action":{"name":"place_order"},"resource":{"type":"account","id":"alice-personal"},"context":{"side":"buy","instrument":"AAPL"}}"#;
const SUBJECT: &str = "mandate.entities.changed";
const BURST_BYTES: usize = 512 << 20;
const UIDS_PER_EVENT: usize = 9_400;

/// Runs the scenario; its section of the report, or why it could not run.
pub async fn burst(options: &Options) -> String {
    let Some(nats_binary) = crate::revocation::find(&options.nats_server) else {
        return "## A burst of change events\n\nNot run: no `nats-server`.\n".to_owned();
    };
    let nats_addr = servers::free_addr();
    let mut command = Command::new(nats_binary);
    command.args(["-a", "127.0.0.1", "-p", &nats_addr.port().to_string()]);
    let _nats = Server::start("nats-server", command, nats_addr, "1", None);
    let nats_url = format!("nats://{nats_addr}");
    let file = crate::scratch().join("burst-entities.json");
    std::fs::copy(crate::root().join("examples/demo/entities.json"), &file).unwrap();
    let store = servers::store_with(options, &file, &["--watch-interval", "1s"]);
    let env = [
        ("MANDATE_BUS_URL", nats_url.as_str()),
        ("MANDATE_CACHE_TTL", "5m"),
    ];
    let replica = servers::mandate(options, "replica", store.addr, DecisionLog::Off, &env);
    crate::revocation::wait_connected(replica.addr).await;
    // Warm, then settle: the idle figure is a replica that has decided.
    for _ in 0..2_000 {
        ask(replica.addr, EVALUATION, CAROL).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = replica.rss_mib();

    let event = event();
    let kb = event.len() / 1000;
    let events = BURST_BYTES / event.len();
    let stop = Arc::new(AtomicBool::new(false));
    let asking = tokio::spawn(slowest_decisions(replica.addr, Arc::clone(&stop)));
    let publishing = tokio::spawn(publish(nats_addr, event, events));
    let started = Instant::now();
    let mut peak = idle;
    while !publishing.is_finished() || started.elapsed() < Duration::from_secs(2) {
        peak = peak.max(replica.rss_mib());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let published_in = publishing.await.unwrap();
    // Until the replica has read what the server delivered.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(20) {
        peak = peak.max(replica.rss_mib());
        if metric(replica.addr, "mandate_bus_events_received_total").await >= events as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    peak = peak.max(replica.rss_mib());
    let after = replica.rss_mib();
    stop.store(true, Ordering::Relaxed);
    let (decisions, slowest) = asking.await.unwrap();
    let text = scrape(replica.addr).await;
    let counted = |prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    format!(
        "## A burst of change events\n\n\
         {events} valid events of {kb} KB ({uids} uids each, {mib} MiB in all) published to \
         `nats-server` on loopback in {published:.1} s, against one replica under closed-loop \
         decisions asked one after another.\n\n\
         | idle RSS | peak RSS | peak − idle | after | decisions during | slowest decision |\n\
         |---|---|---|---|---|---|\n\
         | {idle:.0} MiB | {peak:.0} MiB | {grew:.0} MiB | {after:.0} MiB | {decisions} | {slowest:.1} ms |\n\n\
         The replica counted {received} events received, {applied} applied, {overflow} \
         overflows of its inbox (everything forgotten instead), {slow} slow-consumer drops, \
         {oversized} oversized.\n",
        uids = UIDS_PER_EVENT,
        mib = BURST_BYTES >> 20,
        published = published_in.as_secs_f64(),
        grew = peak - idle,
        received = counted("mandate_bus_events_received_total"),
        applied = counted("mandate_bus_events_applied_total"),
        overflow = counted("mandate_bus_gaps_total{cause=\"overflow\"}"),
        slow = counted("mandate_bus_gaps_total{cause=\"slow_consumer\"}"),
        oversized = counted("mandate_bus_events_ignored_total{reason=\"oversized\"}"),
    )
}

/// One event naming [`UIDS_PER_EVENT`] users.
fn event() -> Vec<u8> {
    let mut event = String::from(r#"{"uids": ["#);
    for i in 0..UIDS_PER_EVENT {
        if i > 0 {
            event.push(',');
        }
        // Three base-36 digits: 9,400 uids fit under the 256 KiB limit.
        let digit = |n: usize| char::from_digit((n % 36) as u32, 36).unwrap_or('0');
        let id: String = [digit(i / 1296), digit(i / 36), digit(i)].iter().collect();
        event.push_str(&format!(r#"{{"type":"user","id":"{id}"}}"#));
    }
    event.push_str("]}");
    event.into_bytes()
}

/// Publishes `count` copies of `event` over the NATS protocol, then waits
/// for the server to have taken them all (a PING answered); how long it took.
async fn publish(addr: SocketAddr, event: Vec<u8>, count: usize) -> Duration {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut line = String::new();
    read.read_line(&mut line).await.unwrap(); // INFO
    write
        .write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n")
        .await
        .unwrap();
    let head = format!("PUB {SUBJECT} {}\r\n", event.len());
    let started = Instant::now();
    for _ in 0..count {
        write.write_all(head.as_bytes()).await.unwrap();
        write.write_all(&event).await.unwrap();
        write.write_all(b"\r\n").await.unwrap();
    }
    write.write_all(b"PING\r\n").await.unwrap();
    loop {
        line.clear();
        read.read_line(&mut line).await.unwrap();
        if line.starts_with("PONG") {
            return started.elapsed();
        }
    }
}

/// Decisions one after another until told to stop; how many, and the
/// slowest (ms).
async fn slowest_decisions(addr: SocketAddr, stop: Arc<AtomicBool>) -> (u64, f64) {
    let mut count = 0;
    let mut slowest: f64 = 0.0;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let (status, _) = ask(addr, EVALUATION, CAROL).await;
        assert_eq!(status, 200);
        slowest = slowest.max(started.elapsed().as_secs_f64() * 1000.0);
        count += 1;
    }
    (count, slowest)
}

async fn metric(addr: SocketAddr, name: &str) -> f64 {
    scrape(addr)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}
