//! The scenarios and the decisions they send; `run` starts the servers,
//! runs the chosen scenarios and writes the report.

use std::fmt::Write as _;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::Options;
use crate::client::{ask, decision_buckets, read_response, request, scrape};
use crate::closed::{Load, Protocol, drive};
use crate::open::paced;
use crate::report::{Outcome, ServerSide, SweepPoint, TABLE_HEAD, plot};
use crate::servers::{self, DecisionLog, Server};

/// A part of the harness, chosen with `--scenarios`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// one decision, closed loop: the floor, Mandate (default config and
    /// decision log off), cedar-agent, Cerbos
    Peers,
    /// the floor and Mandate at one fixed open-loop rate (`--rate`)
    Rate,
    /// AuthZEN `evaluations` of 20 items against single requests
    Batch,
    /// the brokerage mix, closed loop, HTTP/1.1 and h2
    Mix,
    /// latency against offered load, open loop, and the plot
    Sweep,
    /// every decision fetches from a store with latency
    Cold,
    /// many distinct users cached, against the cache's bound
    Memory,
    /// revocation latency across three replicas over a real NATS bus
    Revocation,
    /// memory and decision latency under a 0.5 GB burst of change events
    Burst,
    /// what OpenTelemetry spans (off, 1 %, 100 % sampled) and the JetStream
    /// action history cost per decision
    Tracing,
}

const EVALUATION: &str = "/access/v1/evaluation";

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

/// The one decision every server makes: Carol, a trader, places an order.
const ORDER: &str = r#"{"subject":{"type":"user","id":"carol"},"action":{"name":"place_order"},"resource":{"type":"account","id":"alice-personal"},"context":{"side":"buy","instrument":"AAPL"}}"#;

/// The same decision for Cerbos, which takes the attributes in the request.
const CERBOS_ORDER: &str = r#"{"requestId":"load","principal":{"id":"carol","roles":["user"],"attr":{"active":true,"verified":true}},"resources":[{"actions":["place_order"],"resource":{"kind":"account","id":"alice-personal","attr":{"owner":"alice","traders":["carol","ivan"],"withdrawers":["erin"],"restrictedWithdrawers":["dave"],"administrators":["frank"],"poaUsers":["grace"],"side":"buy","instrument":"AAPL"}}}]}"#;

/// The same decision for cedar-agent (its data holds the users and the
/// account, `benches/cedar-agent/`).
const CEDAR_AGENT_ORDER: &str = r#"{"principal":"User::\"carol\"","action":"Action::\"place_order\"","resource":"Account::\"alice-personal\"","context":{"side":"buy","instrument":"AAPL"}}"#;

/// Items in the batch scenario's request.
const BATCH_ITEMS: u64 = 20;

/// Carol's 20 orders in one AuthZEN `evaluations` request.
fn batch() -> String {
    let items: Vec<String> = (0..BATCH_ITEMS)
        .map(|n| {
            let side = if n % 2 == 0 { "buy" } else { "sell" };
            format!(r#"{{"context":{{"side":"{side}","instrument":"T{n:02}"}}}}"#)
        })
        .collect();
    format!(
        r#"{{"subject":{{"type":"user","id":"carol"}},"action":{{"name":"place_order"}},"resource":{{"type":"account","id":"alice-personal"}},"evaluations":[{}]}}"#,
        items.join(",")
    )
}

/// Runs the chosen scenarios; returns the number of failed requests.
pub async fn run(options: &Options, pinned: bool) -> u64 {
    std::fs::create_dir_all(&options.out).unwrap();
    let mut report = header(options, pinned);
    let demo = crate::root().join("examples/demo/entities.json");
    let store = servers::store(options, &demo, Duration::ZERO);
    let mandate = servers::mandate(
        options,
        "mandate (default config)",
        store.addr,
        DecisionLog::Default,
        &[],
    );
    let floor = servers::floor();
    let bodies: Vec<&str> = MIX.iter().map(|(_, b)| *b).collect();
    let _ = writeln!(
        report,
        "The decisions (Mandate's answers; `ORDER` is the first):\n"
    );
    for (what, body) in MIX {
        let (status, answer) = ask(mandate.addr, EVALUATION, body).await;
        assert_eq!(status, 200, "{what}: {answer}");
        let _ = writeln!(
            report,
            "- {what}: {} ({})",
            if answer["decision"] == true {
                "allow"
            } else {
                "deny"
            },
            answer["context"]["summary"].as_str().unwrap_or("")
        );
    }
    let mut failed = 0;
    let has = |s: Scenario| options.scenarios.contains(&s);
    if has(Scenario::Peers) {
        failed += peers(options, &mut report, &mandate, &floor, &store).await;
    }
    if has(Scenario::Rate) {
        failed += rate(options, &mut report, &mandate, &floor, &store).await;
    }
    if has(Scenario::Batch) {
        failed += batched(options, &mut report, &mandate).await;
    }
    let mut mix_max = None;
    if has(Scenario::Mix) {
        let mut outcomes = Vec::new();
        for (protocol, name) in [(Protocol::Http1, "HTTP/1.1"), (Protocol::H2, "h2")] {
            outcomes.push(
                drive(
                    &mandate,
                    load(
                        options,
                        format!("mandate, brokerage mix, {name}"),
                        protocol,
                        &bodies,
                    ),
                )
                .await,
            );
        }
        mix_max = Some(outcomes[0].throughput());
        failed += table(
            &mut report,
            "Brokerage mix, closed loop, default config (each connection cycles through the six decisions above)",
            &outcomes,
        );
    }
    if has(Scenario::Sweep) {
        let max = match mix_max {
            Some(max) => max,
            None => drive(
                &mandate,
                load(options, "mix".into(), Protocol::Http1, &bodies),
            )
            .await
            .throughput(),
        };
        failed += sweep(options, &mut report, &mandate, &floor, &bodies, max).await;
    }
    if has(Scenario::Tracing) {
        failed += tracing_cost(options, &mut report, &mandate, &floor, &store).await;
    }
    drop(mandate);
    drop(floor);
    if has(Scenario::Cold) {
        failed += cold(options, &mut report, &bodies).await;
    }
    drop(store);
    if has(Scenario::Revocation) {
        report.push_str(&crate::revocation::revocation(options).await);
        report.push('\n');
    }
    if has(Scenario::Burst) {
        report.push_str(&crate::burst::burst(options).await);
        report.push('\n');
    }
    if has(Scenario::Memory) {
        let _ = writeln!(report, "\n{}", memory(options).await);
    }
    println!("{report}");
    std::fs::write(options.out.join("results.md"), &report).unwrap();
    failed
}

fn header(options: &Options, pinned: bool) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    format!(
        "Machine: {cpu}; servers pinned to core 0, the load generator (and the entity store) to core 1{}.\n\
         Closed loop: {} connections, {:.0} s per run. Mandate's default config: decision log on, to stdout, sent to a file.\n",
        if pinned {
            ""
        } else {
            " (taskset failed: unpinned)"
        },
        options.connections,
        options.duration
    )
}

fn load<'a>(
    options: &Options,
    name: String,
    protocol: Protocol,
    bodies: &'a [&'a str],
) -> Load<'a> {
    Load {
        name,
        protocol,
        path: EVALUATION,
        bodies,
        per_request: 1,
        connections: options.connections,
        duration: options.run_time(),
    }
}

/// Writes `outcomes` as a table under `title`; their errors.
fn table(report: &mut String, title: &str, outcomes: &[Outcome]) -> u64 {
    let _ = writeln!(report, "\n{title}:\n\n{TABLE_HEAD}");
    for outcome in outcomes {
        let _ = writeln!(report, "{}", outcome.row());
    }
    outcomes.iter().map(|o| o.errors).sum()
}

/// A second Mandate over `store`, its decision log off, warmed with the
/// order.
async fn quiet_mandate(options: &Options, store: &Server) -> Server {
    let quiet = servers::mandate(
        options,
        "mandate (decision log off)",
        store.addr,
        DecisionLog::Off,
        &[],
    );
    ask(quiet.addr, EVALUATION, ORDER).await;
    quiet
}

/// One decision, closed loop, against the floor, Mandate and the peers.
async fn peers(
    options: &Options,
    report: &mut String,
    mandate: &Server,
    floor: &Server,
    store: &Server,
) -> u64 {
    let quiet = quiet_mandate(options, store).await;
    let one = [ORDER];
    let mut outcomes = vec![
        drive(
            floor,
            load(
                options,
                "floor: bare hyper, fixed answer".into(),
                Protocol::Http1,
                &one,
            ),
        )
        .await,
        drive(
            mandate,
            load(
                options,
                "mandate, default config".into(),
                Protocol::Http1,
                &one,
            ),
        )
        .await,
        drive(
            &quiet,
            load(
                options,
                "mandate, decision log off".into(),
                Protocol::Http1,
                &one,
            ),
        )
        .await,
    ];
    drop(quiet);
    let mut missing = Vec::new();
    let peer_runs: [(&str, Option<Server>, &str, &str); 2] = [
        (
            "cedar-agent 0.2.2",
            servers::cedar_agent(options),
            "/v1/is_authorized",
            CEDAR_AGENT_ORDER,
        ),
        (
            "cerbos",
            servers::cerbos(options),
            "/api/check/resources",
            CERBOS_ORDER,
        ),
    ];
    for (name, server, path, body) in peer_runs {
        let Some(server) = server else {
            missing.push(name);
            continue;
        };
        let (status, answer) = ask(server.addr, path, body).await;
        assert_eq!(status, 200, "{name}: {answer}");
        let bodies = [body];
        let mut run = load(
            options,
            format!("{name}, same decision"),
            Protocol::Http1,
            &bodies,
        );
        run.path = path;
        outcomes.push(drive(&server, run).await);
    }
    let failed = table(
        report,
        "One decision (carol places an order), closed loop, HTTP/1.1",
        &outcomes,
    );
    let (floor, default) = (&outcomes[0], &outcomes[1]);
    let _ = writeln!(
        report,
        "\nCPU per decision, default config / floor: **{:.2}×** (target ≤ 1.4×); decision log off / floor: {:.2}×",
        default.cpu_per_decision() / floor.cpu_per_decision(),
        outcomes[2].cpu_per_decision() / floor.cpu_per_decision()
    );
    let _ = writeln!(
        report,
        "Of each, in the kernel (µs per decision): floor {:.1}, default config {:.1}, decision log off {:.1}",
        floor.system_per_decision(),
        default.system_per_decision(),
        outcomes[2].system_per_decision()
    );
    // The strictest target each peer has had (issues #17 and #35).
    for (peer, target) in [("cedar-agent", 5.0), ("cerbos", 20.0)] {
        if let Some(outcome) = outcomes.iter().find(|o| o.name.starts_with(peer)) {
            let _ = writeln!(
                report,
                "Throughput, Mandate (default config) / {peer}: **{:.1}×** (target ≥ {target}×)",
                default.throughput() / outcome.throughput()
            );
        }
    }
    for name in missing {
        let _ = writeln!(
            report,
            "{name}: not measured, its binary was not found (`benches/run-load.sh` fetches it)"
        );
    }
    failed
}

/// One decision, closed loop: Mandate with spans off (the default), then
/// exporting over OTLP (to the floor, on the other core) with 1 % and 100 %
/// of traces sampled, then publishing every line to a JetStream history.
async fn tracing_cost(
    options: &Options,
    report: &mut String,
    mandate: &Server,
    floor: &Server,
    store: &Server,
) -> u64 {
    let otlp = format!("http://{}", floor.addr);
    let traced = |name: &'static str, ratio: &str| {
        servers::mandate(
            options,
            name,
            store.addr,
            DecisionLog::Default,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", ratio),
            ],
        )
    };
    let one = [ORDER];
    let mut outcomes = vec![
        drive(
            floor,
            load(
                options,
                "floor: bare hyper, fixed answer".into(),
                Protocol::Http1,
                &one,
            ),
        )
        .await,
        drive(
            mandate,
            load(
                options,
                "mandate, spans off (default)".into(),
                Protocol::Http1,
                &one,
            ),
        )
        .await,
    ];
    // `LOADGEN_BASELINE=<binary>`: the same run on an earlier build, so
    // "spans off costs nothing" is measured, not assumed.
    if let Ok(binary) = std::env::var("LOADGEN_BASELINE") {
        let name = "mandate before tracing (baseline build), default config";
        let server = servers::mandate_binary(
            options,
            std::path::Path::new(&binary),
            name,
            store.addr,
            DecisionLog::Default,
            &[],
        );
        ask(server.addr, EVALUATION, ORDER).await;
        outcomes.push(drive(&server, load(options, name.into(), Protocol::Http1, &one)).await);
    }
    for (name, ratio) in [
        ("mandate, spans exported, 1 % sampled", "0.01"),
        ("mandate, spans exported, 100 % sampled", "1.0"),
    ] {
        let server = traced(name, ratio);
        ask(server.addr, EVALUATION, ORDER).await;
        outcomes.push(drive(&server, load(options, name.into(), Protocol::Http1, &one)).await);
    }
    let nats = crate::revocation::find(&options.nats_server).map(|binary| {
        let addr = servers::free_addr();
        let store_dir = options.out.join("history-jetstream");
        let _ = std::fs::remove_dir_all(&store_dir);
        let mut command = std::process::Command::new(binary);
        command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &addr.port().to_string(),
                "-js",
                "-sd",
            ])
            .arg(&store_dir);
        (
            Server::start("nats-server -js", command, addr, "1", None),
            addr,
        )
    });
    if let Some((_nats, addr)) = &nats {
        let url = format!("nats://{addr}");
        let name = "mandate, every line to the JetStream history";
        let server = servers::mandate(
            options,
            name,
            store.addr,
            DecisionLog::Default,
            &[("MANDATE_HISTORY_URL", url.as_str())],
        );
        ask(server.addr, EVALUATION, ORDER).await;
        outcomes.push(drive(&server, load(options, name.into(), Protocol::Http1, &one)).await);
    }
    let failed = table(
        report,
        "Tracing and the action history: one decision (carol places an order), closed loop, HTTP/1.1",
        &outcomes,
    );
    let off = outcomes[1].cpu_per_decision();
    for outcome in &outcomes[2..] {
        // Against spans off: what each costs (or saves) over the default.
        let _ = writeln!(
            report,
            "- {}: {:+.1} µs per decision against spans off ({:+.0} %)",
            outcome.name,
            outcome.cpu_per_decision() - off,
            (outcome.cpu_per_decision() / off - 1.0) * 100.0
        );
    }
    if nats.is_none() {
        let _ = writeln!(report, "- the history run was skipped: no nats-server");
    }
    failed
}

/// The floor and Mandate at one fixed open-loop rate: CPU per decision
/// where neither is saturated.
async fn rate(
    options: &Options,
    report: &mut String,
    mandate: &Server,
    floor: &Server,
    store: &Server,
) -> u64 {
    let quiet = quiet_mandate(options, store).await;
    let (n, d, r) = (options.connections, options.run_time(), options.rate);
    let outcomes = vec![
        paced(floor, EVALUATION, &[ORDER], n, d, r),
        paced(mandate, EVALUATION, &[ORDER], n, d, r),
        paced(&quiet, EVALUATION, &[ORDER], n, d, r),
    ];
    let failed = table(
        report,
        &format!("One decision at a fixed rate, open loop ({r:.0}/s), HTTP/1.1"),
        &outcomes,
    );
    let _ = writeln!(
        report,
        "\nCPU per decision at {r:.0}/s, default config / floor: **{:.2}×** (target ≤ 2.5×); decision log off / floor: {:.2}×",
        outcomes[1].cpu_per_decision() / outcomes[0].cpu_per_decision(),
        outcomes[2].cpu_per_decision() / outcomes[0].cpu_per_decision()
    );
    failed
}

/// AuthZEN `evaluations` of 20 items against single requests.
async fn batched(options: &Options, report: &mut String, mandate: &Server) -> u64 {
    let body = batch();
    let (status, answer) = ask(mandate.addr, "/access/v1/evaluations", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["evaluations"].as_array().map(Vec::len),
        Some(BATCH_ITEMS as usize),
        "{answer}"
    );
    let one = [ORDER];
    let single = drive(
        mandate,
        load(options, "single requests".into(), Protocol::Http1, &one),
    )
    .await;
    let bodies = [body.as_str()];
    let mut run = load(
        options,
        format!("`evaluations`, {BATCH_ITEMS} items"),
        Protocol::Http1,
        &bodies,
    );
    run.path = "/access/v1/evaluations";
    run.per_request = BATCH_ITEMS;
    let many = drive(mandate, run).await;
    let ratio = many.throughput() / single.throughput();
    let failed = table(
        report,
        "Batch: decisions/s of AuthZEN `evaluations` against single requests (default config; latency is per request)",
        &[single, many],
    );
    let _ = writeln!(
        report,
        "\nBatch / single, decisions/s: **{ratio:.1}×** (target ≥ 3×)"
    );
    failed
}

/// Latency against offered load, at fractions of the mix's maximum, with
/// Mandate's own histogram; the floor at the same 50% rate and at half its
/// own maximum show the machine's tail.
async fn sweep(
    options: &Options,
    report: &mut String,
    mandate: &Server,
    floor: &Server,
    bodies: &[&str],
    max: f64,
) -> u64 {
    let (n, d) = (options.connections, options.run_time());
    let _ = writeln!(
        report,
        "\nOpen loop against Mandate (brokerage mix, HTTP/1.1, default config). Client columns: latency from when each request was due. Server columns: the time Mandate took to decide, from its `mandate_decision_duration_seconds` histogram (the bucket bound the quantile falls under).\n\n| offered | achieved/s | client p50 µs | client p90 µs | client p99 µs | client p99.9 µs | server p50 µs | server p99 µs | server p99.9 µs |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let mut points: Vec<SweepPoint> = Vec::new();
    let mut failed = 0;
    for fraction in [0.1, 0.25, 0.5, 0.75, 0.9] {
        let rate = max * fraction;
        let before = decision_buckets(mandate.addr).await;
        let outcome = paced(mandate, EVALUATION, bodies, n, d, rate);
        let server = ServerSide::between(&before, &decision_buckets(mandate.addr).await);
        let q = |p: f64| outcome.latency.value_at_quantile(p);
        let _ = writeln!(
            report,
            "| {:.0}% ({rate:.0}/s) | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
            fraction * 100.0,
            outcome.throughput(),
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            server.bound(0.5),
            server.bound(0.99),
            server.bound(0.999)
        );
        points.push((rate, q(0.5), q(0.9), q(0.99), q(0.999)));
        failed += outcome.errors;
    }
    let floor_max = drive(
        floor,
        load(options, "floor".into(), Protocol::Http1, &[ORDER]),
    )
    .await;
    for (label, rate) in [
        ("floor at Mandate's 50%", max * 0.5),
        (
            "floor at 50% of its own maximum",
            floor_max.throughput() * 0.5,
        ),
    ] {
        let outcome = paced(floor, EVALUATION, &[ORDER], n, d, rate);
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
    plot(&options.out.join("latency.svg"), &points);
    failed
}

/// Every decision fetches its entities from a store that takes its time.
async fn cold(options: &Options, report: &mut String, bodies: &[&str]) -> u64 {
    let demo = crate::root().join("examples/demo/entities.json");
    let latency = Duration::from_millis(options.store_latency_ms);
    let slow = servers::store(options, &demo, latency);
    let mandate = servers::mandate(
        options,
        "mandate (cold cache)",
        slow.addr,
        DecisionLog::Default,
        &[
            ("MANDATE_CACHE_TTL", "0s"),
            ("MANDATE_CACHE_NEGATIVE_TTL", "0s"),
        ],
    );
    let outcome = drive(
        &mandate,
        load(
            options,
            format!("cold cache, store latency {} ms", latency.as_millis()),
            Protocol::Http1,
            bodies,
        ),
    )
    .await;
    table(
        report,
        "Cold cache (`cache.ttl = 0s`: every decision fetches its entities)",
        &[outcome],
    )
}

/// Fills Mandate's cache with `cached_entities` distinct users (through a
/// decision about each), bounded at half that, and reports resident memory
/// per cached entity.
async fn memory(options: &Options) -> String {
    use std::fmt::Write as _;
    let total = options.cached_entities;
    let file = crate::scratch().join("memory-entities.json");
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
    let store = servers::store(options, &file, Duration::ZERO);
    let bound = total / 2;
    let mandate = servers::mandate(
        options,
        "mandate (memory)",
        store.addr,
        DecisionLog::Off,
        &[("MANDATE_CACHE_MAX_ENTRIES", &bound.to_string())],
    );
    let idle = mandate.rss_mib();
    let mut stream = TcpStream::connect(mandate.addr).await.unwrap();
    let mut buf = Vec::new();
    let mut rss = Vec::new();
    for i in 0..total {
        let body = format!(
            r#"{{"subject":{{"type":"user","id":"u{i}"}},"action":{{"name":"view_market_data"}},"resource":{{"type":"marketdata","id":"feed"}}}}"#
        );
        stream
            .write_all(&request(mandate.addr, EVALUATION, &body))
            .await
            .unwrap();
        read_response(&mut stream, &mut buf).await.unwrap();
        if (i + 1) % (total / 4).max(1) == 0 {
            rss.push((i + 1, mandate.rss_mib()));
        }
    }
    let entries: f64 = scrape(mandate.addr)
        .await
        .lines()
        .find_map(|l| l.strip_prefix("mandate_entity_cache_entries "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    let at_bound = rss
        .iter()
        .find(|(seen, _)| *seen >= bound)
        .map_or(0.0, |(_, mib)| *mib);
    let mut out = format!(
        "Memory: {total} distinct users decided on (decision log off), cache bounded at {bound} entries (`cache.max_entries`). Resident memory: {idle:.0} MiB idle"
    );
    for (seen, mib) in &rss {
        let _ = write!(out, ", {mib:.0} MiB after {seen}");
    }
    let _ = write!(
        out,
        "; {entries:.0} entries cached at the end. Per cached entity at the bound: **{:.2} KiB** (target ≤ 1.5 KiB), the remembered decisions (`cache.max_slices`) included.",
        (at_bound - idle) * 1024.0 / bound.max(1) as f64
    );
    out
}
