//! The HTTP load harness: Mandate against the floor (a bare hyper server
//! answering a fixed AuthZEN response) and a peer (the Cerbos PDP), in one
//! invocation, each server pinned to core 0 and this load generator to core 1.
//!
//! `bash benches/run-load.sh [--duration 5] [--connections 32]` (it fetches
//! Cerbos from npm first; without Cerbos the peer run is skipped and says so).
//!
//! Closed loop: N keep-alive connections, each sending its next request when
//! the last answer arrives; HTTP/1.1 from a minimal client (so the client is
//! not the bottleneck) and h2 through hyper. Latency in an HdrHistogram;
//! server CPU time from `/proc/<pid>/stat`. Then an open-loop sweep (requests
//! at fixed intervals, latency measured from when each was due, so a stall
//! counts in full) at fractions of Mandate's maximum, for the plot; a
//! cold-cache run against a store with latency; and the cache's memory with
//! many entities.

// A measuring tool, not the product: it may panic on a broken setup.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::too_many_arguments,
    clippy::cast_precision_loss
)]

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The brokerage mix: (what, AuthZEN body), each a decision the demo data
/// makes, allowed and denied, across the action groups.
const MIX: &[(&str, &str)] = &[
    (
        "trade: carol places an order",
        r#"{"subject":{"type":"user","id":"carol"},"action":{"name":"place_order"},"resource":{"type":"account","id":"alice-personal"},"context":{"side":"buy","instrument":"AAPL"}}"#,
    ),
    (
        "trade: bob (viewer) cancels an order",
        r#"{"subject":{"type":"user","id":"bob"},"action":{"name":"cancel_order"},"resource":{"type":"account","id":"alice-personal"}}"#,
    ),
    (
        "view: bob views the account",
        r#"{"subject":{"type":"user","id":"bob"},"action":{"name":"view_account"},"resource":{"type":"account","id":"alice-personal"}}"#,
    ),
    (
        "funding: erin withdraws to alice's bank",
        r#"{"subject":{"type":"user","id":"erin"},"action":{"name":"withdraw"},"resource":{"type":"account","id":"alice-personal"},"context":{"destination":{"type":"Brokerage::Destination","id":"alice-bank"},"amount":"250.00"}}"#,
    ),
    (
        "users: alice adds a trader",
        r#"{"subject":{"type":"user","id":"alice"},"action":{"name":"add_sub_user"},"resource":{"type":"account","id":"alice-personal"},"context":{"role":"trader"}}"#,
    ),
    (
        "market data: alice reads her feed",
        r#"{"subject":{"type":"user","id":"alice"},"action":{"name":"view_market_data"},"resource":{"type":"marketdata","id":"nasdaq-l1"}}"#,
    ),
];

/// The one decision all three servers make: Carol, a trader, places an order.
const ORDER: &str = r#"{"subject":{"type":"user","id":"carol"},"action":{"name":"place_order"},"resource":{"type":"account","id":"alice-personal"},"context":{"side":"buy","instrument":"AAPL"}}"#;

/// The same decision for Cerbos, which takes the attributes in the request.
const CERBOS_ORDER: &str = r#"{"requestId":"load","principal":{"id":"carol","roles":["user"],"attr":{"active":true,"verified":true}},"resources":[{"actions":["place_order"],"resource":{"kind":"account","id":"alice-personal","attr":{"owner":"alice","traders":["carol","ivan"],"withdrawers":["erin"],"restrictedWithdrawers":["dave"],"administrators":["frank"],"poaUsers":["grace"],"side":"buy","instrument":"AAPL"}}}]}"#;

/// The floor's answer: what a PDP that does no work would say.
const FLOOR_ANSWER: &str = r#"{"decision":true,"context":{"reasons":["S2"],"errors":[],"policy_version":"000000000000","summary":"allowed by S2"}}"#;

struct Options {
    duration: Duration,
    connections: usize,
    out: PathBuf,
    cerbos: Option<PathBuf>,
    store_latency: Duration,
    cached_entities: usize,
}

fn options() -> Result<Options, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut options = Options {
        duration: Duration::from_secs(5),
        connections: 32,
        out: root.join("benches/results"),
        cerbos: std::env::var_os("CERBOS").map(PathBuf::from).or_else(|| {
            let bundled = root.join("target/cerbos/package/cerbos-linux-x64");
            bundled.exists().then_some(bundled)
        }),
        store_latency: Duration::from_millis(2),
        cached_entities: 200_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--duration" => {
                options.duration = Duration::from_secs_f64(
                    value()?.parse().map_err(|e| format!("--duration: {e}"))?,
                );
            }
            "--connections" => {
                options.connections = value()?
                    .parse()
                    .map_err(|e| format!("--connections: {e}"))?;
            }
            "--out" => options.out = PathBuf::from(value()?),
            "--cerbos" => options.cerbos = Some(PathBuf::from(value()?)),
            "--store-latency-ms" => {
                options.store_latency = Duration::from_millis(
                    value()?
                        .parse()
                        .map_err(|e| format!("--store-latency-ms: {e}"))?,
                );
            }
            "--cached-entities" => {
                options.cached_entities = value()?
                    .parse()
                    .map_err(|e| format!("--cached-entities: {e}"))?;
            }
            "--bench" => {}
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(options)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--floor") {
        floor(args[at + 1].parse().expect("--floor ADDR"));
        return;
    }
    let options = match options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::exit(2);
        }
    };
    let pinned = pin(std::process::id(), "1");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(options, pinned));
}

/// A bare hyper HTTP/1.1 + h2 server on one thread: the fixed answer, after
/// reading the body. What the transport alone costs.
fn floor(addr: SocketAddr) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        println!("floor listening on {addr}");
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: hyper::Request<hyper::body::Incoming>| async move {
                        let _ = request.into_body().collect().await;
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from_static(FLOOR_ANSWER.as_bytes())))
                                .unwrap(),
                        )
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
}

/// Pins process `pid` (all its threads) to `cores` with taskset; false when
/// taskset is missing, and the report says the numbers are unpinned.
fn pin(pid: u32, cores: &str) -> bool {
    Command::new("taskset")
        .args(["-apc", cores, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A server process, pinned to core 0, killed when dropped.
struct Server {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(name: &'static str, mut command: Command, addr: SocketAddr, core: &str) -> Self {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        pin(child.id(), core);
        let server = Self { name, child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "{name} did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// CPU seconds the process has used (user + system, all threads).
    fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // After the command name: state is field 0, utime 11, stime 12.
        (ticks(11) + ticks(12)) / 100.0
    }

    /// Resident memory in MiB.
    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn mandate_command(upstream: &str, extra_env: &[(&str, &str)]) -> (Command, SocketAddr) {
    let addr = free_addr();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_mandate"));
    command
        .current_dir(&root)
        .args([
            "serve",
            "--listen",
            &addr.to_string(),
            "--upstream",
            upstream,
        ])
        .env("MANDATE_LOG_DECISIONS", "off")
        .env("MANDATE_LOG_LEVEL", "warn");
    for (key, value) in extra_env {
        command.env(key, value);
    }
    (command, addr)
}

fn store_command(entities: &Path, latency: Duration) -> (Command, SocketAddr) {
    let addr = free_addr();
    let mut command = Command::new(env!("CARGO_BIN_EXE_mandate"));
    command.args([
        "serve-store",
        "--listen",
        &addr.to_string(),
        "--entities",
        &entities.display().to_string(),
        "--latency",
        &format!("{}ms", latency.as_millis()),
    ]);
    (command, addr)
}

/// What one run measured.
struct Outcome {
    name: String,
    decisions: u64,
    errors: u64,
    seconds: f64,
    latency: Histogram<u64>,
    cpu_us_per_decision: f64,
}

impl Outcome {
    fn throughput(&self) -> f64 {
        self.decisions as f64 / self.seconds
    }

    fn row(&self) -> String {
        let q = |p: f64| self.latency.value_at_quantile(p);
        format!(
            "| {} | {:.0} | {} | {} | {} | {} | {:.1} | {} |",
            self.name,
            self.throughput(),
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            self.cpu_us_per_decision,
            self.errors
        )
    }
}

const TABLE_HEAD: &str = "| run | decisions/s | p50 µs | p90 µs | p99 µs | p99.9 µs | server CPU µs/decision | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|";

#[derive(Clone, Copy, PartialEq)]
enum Protocol {
    Http1,
    H2,
}

/// One HTTP/1.1 request, ready to write.
fn h1_request(addr: SocketAddr, path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads one HTTP/1.1 response; its status.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    buf.clear();
    let mut chunk = [0_u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(status) = complete_response(buf) {
            return Ok(status);
        }
    }
}

/// The status of the complete HTTP/1.1 response in `buf`, once it is all
/// there.
fn complete_response(buf: &[u8]) -> Option<u16> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    (buf.len() >= end + 4 + length).then_some(status)
}

/// Mandate's `/metrics` (the whole response, head included), on `stream`.
async fn scrape(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    read_response(stream, &mut buf).await.unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

/// The cumulative buckets of Mandate's decision-latency histogram, as
/// `(upper bound in seconds, count)`, read from its `/metrics`.
async fn decision_buckets(server: &Server) -> Vec<(f64, u64)> {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    scrape(&mut stream)
        .await
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("mandate_decision_duration_seconds_bucket{le=\"")?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

/// Server-side latency over one run: the histogram's growth between two reads.
struct ServerSide {
    buckets: Vec<(f64, u64)>,
}

impl ServerSide {
    fn between(before: &[(f64, u64)], after: &[(f64, u64)]) -> Self {
        let buckets = after
            .iter()
            .map(|&(le, count)| {
                let earlier = before.iter().find(|(b, _)| *b == le).map_or(0, |(_, c)| *c);
                (le, count.saturating_sub(earlier))
            })
            .collect();
        Self { buckets }
    }

    /// The bucket bound the `q` quantile falls under, in µs (`≤ 50`).
    fn bound(&self, q: f64) -> String {
        let total = self.buckets.last().map_or(0, |(_, c)| *c);
        if total == 0 {
            return "—".into();
        }
        let wanted = (q * total as f64).ceil() as u64;
        match self.buckets.iter().find(|(_, count)| *count >= wanted) {
            Some((le, _)) if le.is_finite() => format!("≤ {:.0}", le * 1e6),
            _ => {
                let last = self
                    .buckets
                    .iter()
                    .rev()
                    .find(|(le, _)| le.is_finite())
                    .map_or(0.0, |(le, _)| *le);
                format!("> {:.0}", last * 1e6)
            }
        }
    }
}

/// Open loop on one spinning thread: requests fall due every `1/rate` s and
/// go out on the first idle connection (queueing when none is); latency runs
/// from when each fell due, so no delay, the client's included, is hidden.
/// Non-blocking sockets polled in a loop: microsecond pacing, no timer wheel.
fn paced(
    server: &Server,
    path: &str,
    bodies: &[&str],
    connections: usize,
    duration: Duration,
    rate: f64,
) -> Outcome {
    use std::io::{Read, Write};
    struct Conn {
        stream: std::net::TcpStream,
        due: Option<Instant>,
        buf: Vec<u8>,
    }
    let requests: Vec<Vec<u8>> = bodies
        .iter()
        .map(|b| h1_request(server.addr, path, b))
        .collect();
    let mut conns: Vec<Conn> = (0..connections)
        .map(|_| {
            let stream = std::net::TcpStream::connect(server.addr).unwrap();
            stream.set_nodelay(true).unwrap();
            stream.set_nonblocking(true).unwrap();
            Conn {
                stream,
                due: None,
                buf: Vec::with_capacity(4096),
            }
        })
        .collect();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let (mut ok, mut errors, mut sent) = (0_u64, 0_u64, 0_usize);
    let mut queue = std::collections::VecDeque::new();
    let cpu_before = server.cpu_seconds();
    let started = Instant::now();
    let deadline = started + duration;
    let mut next_due = started;
    let mut chunk = [0_u8; 4096];
    loop {
        let now = Instant::now();
        while next_due <= now && next_due < deadline {
            queue.push_back(next_due);
            next_due += interval;
        }
        if next_due >= deadline && queue.is_empty() && conns.iter().all(|c| c.due.is_none()) {
            break;
        }
        for conn in &mut conns {
            if let Some(due) = conn.due {
                match conn.stream.read(&mut chunk) {
                    Ok(n) if n > 0 => {
                        conn.buf.extend_from_slice(&chunk[..n]);
                        if let Some(status) = complete_response(&conn.buf) {
                            let micros =
                                u64::try_from(due.elapsed().as_micros()).unwrap_or(u64::MAX);
                            latency.saturating_record(micros.max(1));
                            if status == 200 {
                                ok += 1;
                            } else {
                                errors += 1;
                            }
                            conn.due = None;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    _ => {
                        errors += 1;
                        conn.due = None;
                    }
                }
            }
            if conn.due.is_none()
                && let Some(due) = queue.pop_front()
            {
                conn.buf.clear();
                let request = &requests[sent % requests.len()];
                sent += 1;
                conn.stream.set_nonblocking(false).unwrap();
                let written = conn.stream.write_all(request).is_ok();
                conn.stream.set_nonblocking(true).unwrap();
                if written {
                    conn.due = Some(due);
                } else {
                    errors += 1;
                }
            }
        }
        std::hint::spin_loop();
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds() - cpu_before;
    Outcome {
        name: format!("{rate:.0}/s"),
        decisions: ok,
        errors,
        seconds,
        latency,
        cpu_us_per_decision: if ok > 0 { cpu * 1e6 / ok as f64 } else { 0.0 },
    }
}

/// Closed loop: `connections` connections against `server` for `duration`.
async fn drive(
    name: String,
    server: &Server,
    protocol: Protocol,
    path: &str,
    bodies: &[&str],
    connections: usize,
    duration: Duration,
) -> Outcome {
    let addr = server.addr;
    let requests: Arc<Vec<Vec<u8>>> =
        Arc::new(bodies.iter().map(|b| h1_request(addr, path, b)).collect());
    let h2_bodies: Arc<Vec<Bytes>> = Arc::new(
        bodies
            .iter()
            .map(|b| Bytes::copy_from_slice(b.as_bytes()))
            .collect(),
    );
    let uri: Arc<str> = format!("http://{addr}{path}").into();
    let cpu_before = server.cpu_seconds();
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    let h2_senders = if protocol == Protocol::H2 {
        let mut senders = Vec::new();
        for _ in 0..connections.div_ceil(8).max(1) {
            let stream = TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (sender, connection) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(stream),
            )
            .await
            .unwrap();
            tokio::spawn(connection);
            senders.push(sender);
        }
        senders
    } else {
        Vec::new()
    };
    for index in 0..connections {
        let requests = Arc::clone(&requests);
        let h2_bodies = Arc::clone(&h2_bodies);
        let uri = Arc::clone(&uri);
        let h2 = h2_senders.get(index % h2_senders.len().max(1)).cloned();
        tasks.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let (mut ok, mut errors) = (0_u64, 0_u64);
            let mut stream = match protocol {
                Protocol::Http1 => {
                    let stream = TcpStream::connect(addr).await.unwrap();
                    stream.set_nodelay(true).unwrap();
                    Some(stream)
                }
                Protocol::H2 => None,
            };
            let mut buf = Vec::with_capacity(4096);
            let mut i = index;
            loop {
                let due = Instant::now();
                if due >= deadline {
                    break;
                }
                let which = i % requests.len();
                i += 1;
                let good = match (&mut stream, &h2) {
                    (Some(stream), _) => {
                        stream.write_all(&requests[which]).await.is_ok()
                            && read_response(stream, &mut buf)
                                .await
                                .is_ok_and(|s| s == 200)
                    }
                    (None, Some(sender)) => {
                        let mut sender = sender.clone();
                        let request = hyper::Request::post(&*uri)
                            .header("content-type", "application/json")
                            .body(Full::new(h2_bodies[which].clone()))
                            .unwrap();
                        match sender.send_request(request).await {
                            Ok(response) => {
                                let status = response.status();
                                response.into_body().collect().await.is_ok() && status == 200
                            }
                            Err(_) => false,
                        }
                    }
                    (None, None) => false,
                };
                let micros = u64::try_from(due.elapsed().as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1);
                histogram.saturating_record(micros);
                if good {
                    ok += 1;
                } else {
                    errors += 1;
                }
            }
            (histogram, ok, errors)
        }));
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let (mut decisions, mut errors) = (0, 0);
    for task in tasks {
        let (histogram, ok, failed) = task.await.unwrap();
        latency.add(histogram).unwrap();
        decisions += ok;
        errors += failed;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds() - cpu_before;
    Outcome {
        name,
        decisions,
        errors,
        seconds,
        latency,
        cpu_us_per_decision: if decisions > 0 {
            cpu * 1e6 / decisions as f64
        } else {
            0.0
        },
    }
}

async fn warm(server: &Server, path: &str, bodies: &[&str]) {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut buf = Vec::new();
    for body in bodies {
        stream
            .write_all(&h1_request(server.addr, path, body))
            .await
            .unwrap();
        let status = read_response(&mut stream, &mut buf).await.unwrap();
        assert_eq!(
            status,
            200,
            "{} answered {status} to {body}: {}",
            server.name,
            String::from_utf8_lossy(&buf)
        );
    }
}

/// The answers of `server` to `bodies`, to show the mix decides as stated.
async fn answers(server: &Server, bodies: &[&str]) -> Vec<String> {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for body in bodies {
        stream
            .write_all(&h1_request(server.addr, "/access/v1/evaluation", body))
            .await
            .unwrap();
        read_response(&mut stream, &mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf);
        let json = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let value: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
        out.push(format!(
            "{} ({})",
            if value["decision"] == true {
                "allow"
            } else {
                "deny"
            },
            value["context"]["summary"].as_str().unwrap_or("")
        ));
    }
    out
}

async fn run(options: Options, pinned: bool) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(&options.out).unwrap();
    let mut report = String::new();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let _ = writeln!(
        report,
        "Machine: {cpu}, {} cores visible to the load generator{}; servers pinned to core 0, the load generator to core 1{}.\n\
         Closed loop, {} connections, {:.0} s per run.\n",
        if pinned { 1 } else { cores },
        if pinned {
            ""
        } else {
            " (taskset failed: unpinned)"
        },
        if pinned { "" } else { " (not applied)" },
        options.connections,
        options.duration.as_secs_f64()
    );

    let demo = root.join("examples/demo/entities.json");
    let (command, store_addr) = store_command(&demo, Duration::ZERO);
    let store = Server::start("entity store", command, store_addr, "1");
    let upstream = format!("http://{store_addr}");
    let (command, addr) = mandate_command(&upstream, &[]);
    let mandate = Server::start("mandate", command, addr, "0");
    let floor_addr = free_addr();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args(["--floor", &floor_addr.to_string()]);
    let floor = Server::start("floor (bare hyper)", command, floor_addr, "0");
    let cerbos = options.cerbos.as_ref().map(|binary| {
        let http = free_addr();
        let grpc = free_addr();
        let config = std::fs::read_to_string(root.join("benches/cerbos/config.yaml"))
            .unwrap()
            .replace("{HTTP}", &http.to_string())
            .replace("{GRPC}", &grpc.to_string())
            .replace(
                "{POLICIES}",
                &root.join("benches/cerbos/policies").display().to_string(),
            );
        let file = options.out.join("cerbos.yaml");
        std::fs::write(&file, config).unwrap();
        let mut command = Command::new(binary);
        command.args(["server", &format!("--config={}", file.display())]);
        Server::start("cerbos", command, http, "0")
    });

    let bodies: Vec<&str> = MIX.iter().map(|(_, b)| *b).collect();
    warm(&mandate, "/access/v1/evaluation", &bodies).await;
    let _ = writeln!(
        report,
        "The mix (each connection cycles through it; Mandate's answers):\n"
    );
    for ((what, _), answer) in MIX.iter().zip(answers(&mandate, &bodies).await) {
        let _ = writeln!(report, "- {what}: {answer}");
    }
    if let Some(cerbos) = &cerbos {
        warm(cerbos, "/api/check/resources", &[CERBOS_ORDER]).await;
    }
    let (n, d) = (options.connections, options.duration);
    let evaluation = "/access/v1/evaluation";
    let mut outcomes = Vec::new();
    outcomes.push(
        drive(
            "mandate, brokerage mix, HTTP/1.1".into(),
            &mandate,
            Protocol::Http1,
            evaluation,
            &bodies,
            n,
            d,
        )
        .await,
    );
    outcomes.push(
        drive(
            "mandate, brokerage mix, h2".into(),
            &mandate,
            Protocol::H2,
            evaluation,
            &bodies,
            n,
            d,
        )
        .await,
    );
    outcomes.push(
        drive(
            "(a) mandate, place_order, HTTP/1.1".into(),
            &mandate,
            Protocol::Http1,
            evaluation,
            &[ORDER],
            n,
            d,
        )
        .await,
    );
    outcomes.push(
        drive(
            "(b) floor: bare hyper, fixed answer, HTTP/1.1".into(),
            &floor,
            Protocol::Http1,
            evaluation,
            &[ORDER],
            n,
            d,
        )
        .await,
    );
    if let Some(cerbos) = &cerbos {
        outcomes.push(
            drive(
                "(c) cerbos, place_order, HTTP/1.1".into(),
                cerbos,
                Protocol::Http1,
                "/api/check/resources",
                &[CERBOS_ORDER],
                n,
                d,
            )
            .await,
        );
    }
    let _ = writeln!(report, "\n{TABLE_HEAD}");
    for outcome in &outcomes {
        let _ = writeln!(report, "{}", outcome.row());
    }
    let a = outcomes[2].throughput();
    let b = outcomes[3].throughput();
    let _ = writeln!(
        report,
        "\nRatios (throughput, same decision): a/b = {:.2} (target ≥ 0.70)",
        a / b
    );
    match outcomes.get(4) {
        Some(c) => {
            let _ = writeln!(report, "a/c = {:.1} (target ≥ 3)", a / c.throughput());
        }
        None => {
            let _ = writeln!(
                report,
                "a/c: not measured — Cerbos not found (run benches/run-load.sh, or pass --cerbos PATH)"
            );
        }
    }
    let errors: u64 = outcomes.iter().map(|o| o.errors).sum();

    // Open loop: latency against offered load, for the plot.
    let max = outcomes[0].throughput();
    let mut sweep = Vec::new();
    let _ = writeln!(
        report,
        "\nOpen loop against Mandate (brokerage mix, HTTP/1.1). Client columns: latency from when each request was due, as the load generator saw it (its own delays and the kernel's loopback included). Server columns: the time Mandate took to decide, entity gathering included, from its own `mandate_decision_duration_seconds` histogram (read from `/metrics` before and after each run; a value is the bucket bound the quantile falls under). The last two rows are the floor at Mandate's 50% rate and at half its own maximum: the client-side tail this machine gives a server that does nothing.\n\n| offered | achieved/s | client p50 µs | client p90 µs | client p99 µs | client p99.9 µs | server p50 µs | server p99 µs | server p99.9 µs |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for fraction in [0.1, 0.25, 0.5, 0.75, 0.9] {
        let rate = max * fraction;
        let before = decision_buckets(&mandate).await;
        let outcome = paced(&mandate, evaluation, &bodies, n, d, rate);
        let server = ServerSide::between(&before, &decision_buckets(&mandate).await);
        let q = |p: f64| outcome.latency.value_at_quantile(p);
        let _ = writeln!(
            report,
            "| {:.0}% ({:.0}/s) | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
            fraction * 100.0,
            rate,
            outcome.throughput(),
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            server.bound(0.5),
            server.bound(0.99),
            server.bound(0.999)
        );
        sweep.push((rate, q(0.5), q(0.9), q(0.99), q(0.999)));
    }
    // The floor at Mandate's 50% rate, and at half its own maximum: what
    // this machine's tail is for a server that does nothing.
    for (label, rate) in [
        ("floor at Mandate's 50%", max * 0.5),
        (
            "floor at 50% of its own maximum",
            outcomes[3].throughput() * 0.5,
        ),
    ] {
        let outcome = paced(&floor, evaluation, &[ORDER], n, d, rate);
        let q = |p: f64| outcome.latency.value_at_quantile(p);
        let _ = writeln!(
            report,
            "| {label} ({rate:.0}/s) | {:.0} | {} | {} | {} | {} | — | — | — |",
            outcome.throughput(),
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999)
        );
    }
    plot(&options.out.join("latency.svg"), &sweep);
    drop(mandate);
    drop(floor);
    drop(cerbos);

    // Cold cache: every decision asks a store that takes its time.
    let (command, slow_addr) = store_command(&demo, options.store_latency);
    let slow_store = Server::start("slow entity store", command, slow_addr, "1");
    let (command, addr) = mandate_command(
        &format!("http://{slow_addr}"),
        &[
            ("MANDATE_CACHE_TTL", "0s"),
            ("MANDATE_CACHE_NEGATIVE_TTL", "0s"),
        ],
    );
    let cold = Server::start("mandate (cold cache)", command, addr, "0");
    let outcome = drive(
        format!(
            "mandate, cold cache, store latency {} ms",
            options.store_latency.as_millis()
        ),
        &cold,
        Protocol::Http1,
        evaluation,
        &bodies,
        n,
        d,
    )
    .await;
    let _ = writeln!(
        report,
        "\nCold cache (`cache.ttl = 0s`: every decision fetches its entities):\n\n{TABLE_HEAD}\n{}",
        outcome.row()
    );
    drop(cold);
    drop(slow_store);
    drop(store);

    // Memory: many distinct users cached, against the cache's bound.
    let _ = writeln!(report, "\n{}", memory(&options).await);

    let _ = writeln!(
        report,
        "\nPlot: {}",
        options.out.join("latency.svg").display()
    );
    println!("{report}");
    std::fs::write(options.out.join("results.md"), &report).unwrap();
    if errors > 0 {
        eprintln!("{errors} requests failed");
        std::process::exit(1);
    }
}

/// Fills Mandate's cache with `cached_entities` distinct users (through
/// decisions about each), with the cache bounded at half that, and reports
/// entries and resident memory.
async fn memory(options: &Options) -> String {
    let total = options.cached_entities;
    let dir = options.out.join("memory");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("entities.json");
    let mut json = String::from(
        "[{\"uid\":{\"type\":\"Brokerage::MarketData\",\"id\":\"feed\"},\"attrs\":{},\"parents\":[]}",
    );
    for i in 0..total {
        let _ = write!(
            json,
            ",{{\"uid\":{{\"type\":\"Brokerage::User\",\"id\":\"u{i}\"}},\"attrs\":{{\"active\":true,\"verified\":true,\"employee\":false,\"marketData\":[{{\"type\":\"Brokerage::MarketData\",\"id\":\"feed\"}}]}},\"parents\":[]}}"
        );
    }
    json.push(']');
    std::fs::write(&file, json).unwrap();
    let (command, store_addr) = store_command(&file, Duration::ZERO);
    let _store = Server::start("memory store", command, store_addr, "1");
    let bound = total / 2;
    let (command, addr) = mandate_command(
        &format!("http://{store_addr}"),
        &[("MANDATE_CACHE_MAX_ENTRIES", &bound.to_string())],
    );
    let mandate = Server::start("mandate (memory)", command, addr, "0");
    let idle = mandate.rss_mib();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let mut rss = Vec::new();
    for i in 0..total {
        let body = format!(
            r#"{{"subject":{{"type":"user","id":"u{i}"}},"action":{{"name":"view_market_data"}},"resource":{{"type":"marketdata","id":"feed"}}}}"#
        );
        stream
            .write_all(&h1_request(addr, "/access/v1/evaluation", &body))
            .await
            .unwrap();
        read_response(&mut stream, &mut buf).await.unwrap();
        if (i + 1) % (total / 4).max(1) == 0 {
            rss.push((i + 1, mandate.rss_mib()));
        }
    }
    let entries = scrape(&mut stream)
        .await
        .lines()
        .find_map(|l| l.strip_prefix("mandate_entity_cache_entries "))
        .unwrap_or("?")
        .to_owned();
    let mut out = format!(
        "Memory: {total} distinct users decided on, cache bounded at {bound} entries (`cache.max_entries`; `cache.max_bytes` bounds it too). Resident memory: {idle:.0} MiB idle"
    );
    for (seen, mib) in rss {
        let _ = write!(out, ", {mib:.0} MiB after {seen}");
    }
    let _ = write!(
        out,
        "; entries cached at the end: {entries} (the bound is {bound}; moka evicts asynchronously, so the count can pass it by a little)."
    );
    out
}

/// Latency percentiles against offered load, as an SVG.
fn plot(path: &Path, sweep: &[(f64, u64, u64, u64, u64)]) {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let max_x = sweep.iter().map(|s| s.0).fold(1.0, f64::max) * 1.05;
    let max_y = sweep.iter().map(|s| s.4).max().unwrap_or(1).max(1) as f64 * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Mandate: latency against offered load (brokerage mix, HTTP/1.1, one core)",
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_x, (1.0..max_y).log_scale())
        .unwrap();
    chart
        .configure_mesh()
        .x_desc("offered load (decisions/s)")
        .y_desc("latency (µs, log scale)")
        .draw()
        .unwrap();
    type Pick = fn(&(f64, u64, u64, u64, u64)) -> u64;
    let series: [(&str, RGBColor, Pick); 4] = [
        ("p50", BLUE, |s| s.1),
        ("p90", GREEN, |s| s.2),
        ("p99", RED, |s| s.3),
        ("p99.9", MAGENTA, |s| s.4),
    ];
    for (label, color, pick) in series {
        chart
            .draw_series(LineSeries::new(
                sweep.iter().map(|s| (s.0, pick(s).max(1) as f64)),
                color.stroke_width(2),
            ))
            .unwrap()
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .unwrap();
    root.present().unwrap();
}
