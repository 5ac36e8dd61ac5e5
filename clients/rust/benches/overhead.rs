//! What the client costs per call over a raw request to the same server
//! (p50 and p99 of sequential calls on a kept-alive connection), and the
//! batch helper's throughput. Starts `mandate serve` itself:
//! `MANDATE_BIN`, else `target/release/mandate`, else `target/debug/mandate`.
//!
//! `cargo bench -p mandate-client --bench overhead`

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as Pool;
use hyper_util::rt::TokioExecutor;
use mandate_client::{Client, Config, Entity, Request, Semantic};
use serde_json::json;

const CALLS: usize = 2000;

fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("MANDATE_BIN") {
        return bin.into();
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    ["target/release/mandate", "target/debug/mandate"]
        .iter()
        .map(|p| root.join(p))
        .find(|p| p.exists())
        .expect("build mandate first (cargo build --release)")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn main() {
    use std::io::BufRead;
    let mut child = Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("MANDATE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            line.strip_prefix("mandate listening on ")
                .map(str::to_owned)
        })
        .unwrap();
    std::thread::spawn(move || lines.for_each(drop));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = Client::new(Config::default().url(&url).timeout(Duration::from_secs(5))).unwrap();
        let request = Request::new(Entity::new("user", "carol"), "place_order", Entity::new("account", "alice-personal"))
            .context(json!({"side": "buy", "instrument": "AAPL"}));
        let body = Bytes::from(
            json!({"subject": {"type": "user", "id": "carol"}, "action": {"name": "place_order"},
                   "resource": {"type": "account", "id": "alice-personal"},
                   "context": {"side": "buy", "instrument": "AAPL"}})
            .to_string(),
        );
        let raw: Pool<_, Full<Bytes>> = Pool::builder(TokioExecutor::new()).build_http();
        let raw_call = || async {
            let request = http::Request::post(format!("{url}/access/v1/evaluation"))
                .header("content-type", "application/json")
                .body(Full::new(body.clone()))
                .unwrap();
            let response = raw.request(request).await.unwrap();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(answer["decision"], true);
        };
        for _ in 0..200 {
            raw_call().await;
            assert!(client.allowed(&request).await);
        }
        let mut raw_times = Vec::with_capacity(CALLS);
        let mut sdk_times = Vec::with_capacity(CALLS);
        for _ in 0..CALLS {
            let started = Instant::now();
            raw_call().await;
            raw_times.push(started.elapsed());
            let started = Instant::now();
            assert!(client.evaluate(&request).await.unwrap().decision);
            sdk_times.push(started.elapsed());
        }
        raw_times.sort();
        sdk_times.sort();
        let items: Vec<serde_json::Value> = (0..1000)
            .map(|i| json!({"action": {"name": if i % 2 == 0 { "view_account" } else { "cancel_order" }}}))
            .collect();
        let defaults = json!({"subject": {"type": "user", "id": "bob"}, "resource": {"type": "account", "id": "alice-personal"}});
        let chunked = Client::new(Config::default().url(&url).timeout(Duration::from_secs(5)).max_batch_items(100)).unwrap();
        let started = Instant::now();
        let rounds = 20;
        for _ in 0..rounds {
            let decided = chunked.evaluations(&defaults, &items, Semantic::ExecuteAll).await.unwrap();
            assert_eq!(decided.len(), 1000);
        }
        let per_second = (rounds * 1000) as f64 / started.elapsed().as_secs_f64();
        println!("| Rust, {CALLS} sequential calls | p50 | p99 |");
        println!("|---|---|---|");
        println!("| raw hyper request | {:?} | {:?} |", percentile(&raw_times, 0.5), percentile(&raw_times, 0.99));
        println!("| `Client::evaluate` | {:?} | {:?} |", percentile(&sdk_times, 0.5), percentile(&sdk_times, 0.99));
        println!();
        println!("`evaluations`, 1000 items in chunks of 100: {per_second:.0} decisions/s");
    });
    let _ = child.kill();
    let _ = child.wait();
}
