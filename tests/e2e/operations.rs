//! Operations: metrics move with decisions, the decision log's lines, hot
//! reload under load, a broken edit that keeps the last good policies.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Server, config_with, get, post, post_raw, root};

pub(crate) fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

fn history(subject: &str) -> Value {
    json!({"subject": {"type": "user", "id": subject}, "action": {"name": "view_action_history"}, "resource": {"type": "account", "id": "alice-personal"}})
}

#[tokio::test]
async fn metric_values_move_as_decisions_are_made() {
    let server = Server::demo().await;
    let text_before = metrics_text(&server).await;
    let allow = r#"mandate_decisions_total{action="view_action_history",decision="allow"}"#;
    let deny = r#"mandate_decisions_total{action="view_action_history",decision="deny"}"#;
    assert_eq!(
        post(&server.url("/access/v1/evaluation"), &history("alice"))
            .await
            .json["decision"],
        true
    );
    assert_eq!(
        post(&server.url("/access/v1/evaluation"), &history("carol"))
            .await
            .json["decision"],
        false
    );
    let big = "x".repeat(2 * 1024 * 1024);
    assert_eq!(
        post_raw(&server.url("/access/v1/evaluation"), big)
            .await
            .status,
        413
    );
    let text = metrics_text(&server).await;
    assert!(
        metric(&text, allow) >= metric(&text_before, allow) + 1.0,
        "{text}"
    );
    assert!(metric(&text, deny) >= metric(&text_before, deny) + 1.0);
    let refused = r#"mandate_refusals_total{limit="body_too_large"}"#;
    assert!(metric(&text, refused) >= metric(&text_before, refused) + 1.0);
    let http = r#"mandate_http_requests_total{route="evaluation",status="200"}"#;
    assert!(metric(&text, http) >= metric(&text_before, http) + 2.0);
    for name in [
        "mandate_decision_duration_seconds_bucket",
        "mandate_build_info",
        "mandate_policy_info{version=\"",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
}

async fn metrics_text(server: &Server) -> String {
    let response = scrape(&server.url("/metrics")).await;
    assert!(
        response.starts_with("# HELP") || response.contains("mandate_"),
        "{response}"
    );
    response
}

pub(crate) async fn scrape(url: &str) -> String {
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let request = http::Request::get(url)
        .body(Full::new(bytes::Bytes::new()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

#[tokio::test]
async fn decision_log_lines_parse_and_carry_the_fields_with_masked_context() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.log");
    let path = log.display().to_string();
    let server = Server::start(config_with(&[
        ("MANDATE_LOG_DECISIONS", "file"),
        ("MANDATE_LOG_DECISIONS_FILE", path.as_str()),
        ("MANDATE_LOG_MASK", "[\"amount\"]"),
    ]))
    .await;
    let request = http::Request::post(server.url("/access/v1/evaluation"))
        .header("x-request-id", "req-42")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            json!({
                "subject": {"type": "user", "id": "erin"},
                "action": {"name": "withdraw"},
                "resource": {"type": "account", "id": "alice-personal"},
                "context": {"destination": {"type": "Brokerage::Destination", "id": "alice-bank"}, "amount": "1250.00"}
            })
            .to_string(),
        )))
        .unwrap();
    assert_eq!(
        crate::support::send(request, false).await.json["decision"],
        true
    );
    let mut line = Value::Null;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Some(last) = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .last()
        {
            line = serde_json::from_str(last).unwrap();
            break;
        }
    }
    assert_eq!(line["request_id"], "req-42", "{line}");
    // Canonical uids, whatever the caller's spelling.
    assert_eq!(line["principal"], "Brokerage::User::\"erin\"");
    assert_eq!(line["action"], "withdraw");
    assert_eq!(line["resource"], "Brokerage::Account::\"alice-personal\"");
    assert_eq!(line["decision"], "allow");
    assert_eq!(line["reasons"], json!(["S3", "S4"]));
    assert_eq!(line["errors"], json!([]));
    assert_eq!(line["stale_data"], false);
    assert_eq!(line["policy_version"].as_str().unwrap().len(), 12);
    assert!(line["latency_us"].as_u64().is_some());
    assert!(line["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(line["context"]["amount"], "***", "masked");
    assert_eq!(line["context"]["destination"]["id"], "alice-bank");
}

/// The decision log lines written so far, waiting up to a second for `n`.
async fn log_lines(log: &Path, n: usize) -> Vec<Value> {
    for _ in 0..50 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("fewer than {n} decision log lines");
}

#[tokio::test]
async fn every_line_has_a_request_id_canonical_uids_and_masked_error_messages() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.log");
    let path = log.display().to_string();
    let server = Server::start(config_with(&[
        ("MANDATE_LOG_DECISIONS", "file"),
        ("MANDATE_LOG_DECISIONS_FILE", path.as_str()),
        ("MANDATE_LOG_MASK", "[\"destination\"]"),
    ]))
    .await;
    // The caller's own spelling of the types, no request id, an unknown
    // (masked) destination that the error message names.
    let reply = crate::support::post(
        &server.url("/access/v1/evaluation"),
        &json!({
            "subject": {"type": "uSeR", "id": "erin"},
            "action": {"name": "withdraw"},
            "resource": {"type": "Brokerage::Account", "id": "alice-personal"},
            "context": {"destination": {"type": "Brokerage::Destination", "id": "secret-wallet-77"}}
        }),
    )
    .await;
    assert_eq!(reply.json["decision"], false);
    let message = reply.json["context"]["errors"][0]["message"]
        .as_str()
        .unwrap();
    assert!(
        message.contains("secret-wallet-77"),
        "the caller is told: {message}"
    );
    let answered_id = reply.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(answered_id.len(), 32, "a request id is made: {answered_id}");
    let lines = log_lines(&log, 1).await;
    let line = lines.last().unwrap();
    assert_eq!(line["request_id"], answered_id.as_str());
    assert_eq!(line["principal"], "Brokerage::User::\"erin\"");
    assert_eq!(line["resource"], "Brokerage::Account::\"alice-personal\"");
    assert_eq!(line["context"]["destination"], "***");
    let text = line.to_string();
    assert!(
        !text.contains("secret-wallet-77"),
        "masked everywhere: {text}"
    );
    assert!(!line["errors"].as_array().unwrap().is_empty(), "{line}");
}

#[tokio::test]
async fn a_stalled_decision_log_sink_drops_lines_and_never_blocks_a_decision() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("stalled");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // A reader that never reads: the pipe fills, then every write blocks.
    let reader = {
        use std::os::unix::fs::OpenOptionsExt;
        const O_NONBLOCK: i32 = 0o4000; // Linux: open without waiting for a writer
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(O_NONBLOCK)
            .open(&fifo)
            .unwrap()
    };
    let path = fifo.display().to_string();
    let server = Server::start(config_with(&[
        ("MANDATE_LOG_DECISIONS", "file"),
        ("MANDATE_LOG_DECISIONS_FILE", path.as_str()),
        ("MANDATE_LOG_DECISIONS_MAX_BYTES", "65536"),
    ]))
    .await;
    let dropped = || {
        mandate::telemetry::metrics()
            .render()
            .lines()
            .find_map(|l| l.strip_prefix("mandate_decision_log_dropped_total "))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = dropped();
    let body = json!({
        "subject": {"type": "user", "id": "carol"},
        "action": {"name": "view_account"},
        "resource": {"type": "account", "id": "alice-personal"},
    });
    for _ in 0..3000 {
        let reply = crate::support::post(&server.url("/access/v1/evaluation"), &body).await;
        assert_eq!(reply.json["decision"], true);
    }
    assert!(
        dropped() > before,
        "lines beyond the budget are dropped and counted"
    );
    drop(reader);
}

#[test]
fn the_policy_version_depends_on_the_content_only_not_the_paths() {
    let version = |dir: &Path| {
        let mut config = config_with(&[]);
        config.policy.dir = dir.join("policies");
        config.policy.schema = dir.join("schema");
        let engine = mandate::app::engine(&config).unwrap();
        engine.policies().current().version().to_string()
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    copy_pack(a.path());
    copy_pack(&b.path().join("elsewhere/deeper"));
    assert_eq!(
        version(a.path()),
        version(&b.path().join("elsewhere/deeper"))
    );
    assert_eq!(
        version(a.path()),
        version(&root()),
        "the repository's own pack"
    );
    // A change of content is a change of version.
    let owner = a.path().join("policies/owner.cedar");
    let text = std::fs::read_to_string(&owner).unwrap();
    std::fs::write(&owner, format!("{text}\n// edited\n")).unwrap();
    assert_ne!(version(a.path()), version(&root()));
}

fn copy_pack(to: &Path) {
    for dir in ["policies", "schema"] {
        std::fs::create_dir_all(to.join(dir)).unwrap();
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(dir).join(entry.file_name())).unwrap();
        }
    }
}

fn pack_config(dir: &Path, extra: &[(&str, &str)]) -> mandate::config::Config {
    let mut config = config_with(extra);
    config.policy.dir = dir.join("policies");
    config.policy.schema = dir.join("schema");
    config
}

#[tokio::test]
async fn a_broken_edit_keeps_the_old_version_serving_and_a_good_one_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    copy_pack(dir.path());
    let server = Server::start(pack_config(
        dir.path(),
        &[("MANDATE_POLICY_RELOAD_INTERVAL", "50ms")],
    ))
    .await;
    let url = server.url("/access/v1/evaluation");
    let market = json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": "view_market_data"}, "resource": {"type": "marketdata", "id": "nasdaq-l1"}});
    let first = post(&url, &market).await;
    assert_eq!(first.json["decision"], true);
    let v1 = first.json["context"]["policy_version"].clone();

    std::fs::write(
        dir.path().join("policies/broken.cedar"),
        "@id(\"X\")\npermit (principal, action, resource) when { principal.nope };\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reply = post(&url, &market).await;
    assert_eq!(
        reply.json["context"]["policy_version"], v1,
        "the last good policies keep serving"
    );
    let reload = post_raw(&server.url("/admin/v1/policies/reload"), "").await;
    assert_eq!(reload.status, 422);
    let diagnostics = reload.json["error"]["diagnostics"].to_string();
    assert!(diagnostics.contains("broken.cedar:2:"), "{diagnostics}");

    std::fs::remove_file(dir.path().join("policies/broken.cedar")).unwrap();
    std::fs::remove_file(dir.path().join("policies/market_data.cedar")).unwrap();
    let mut reply = Value::Null;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        reply = post(&url, &market).await.json;
        if reply["context"]["policy_version"] != v1 {
            break;
        }
    }
    assert_ne!(reply["context"]["policy_version"], v1);
    assert_eq!(reply["decision"], false, "M1 is gone");
    let metrics = metrics_text(&server).await;
    assert!(
        metric(
            &metrics,
            r#"mandate_policy_reloads_total{result="failure"}"#
        ) >= 1.0
    );
    // `mandate_policy_info` is one gauge per process, and the servers of
    // parallel tests share it: its value is pinned by the unit test in
    // `telemetry::metrics`; here it must name some version.
    assert!(metrics.contains("mandate_policy_info{version=\""));
}

#[tokio::test]
async fn a_load_loop_across_many_reloads_sees_no_failure_and_only_known_versions() {
    let dir = tempfile::tempdir().unwrap();
    copy_pack(dir.path());
    let server = Server::start(pack_config(
        dir.path(),
        &[("MANDATE_POLICY_RELOAD_INTERVAL", "0s")],
    ))
    .await;
    let url = server.url("/access/v1/evaluation");
    let v1 = post(&url, &history("alice")).await.json["context"]["policy_version"]
        .as_str()
        .unwrap()
        .to_owned();
    let policies = dir.path().join("policies/market_data.cedar");
    let original = std::fs::read_to_string(&policies).unwrap();
    std::fs::write(&policies, format!("{original}\n// edited\n")).unwrap();
    let reload = post_raw(&server.url("/admin/v1/policies/reload"), "").await;
    let v2 = reload.json["policy_version"].as_str().unwrap().to_owned();
    assert_ne!(v1, v2);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loaders: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            let stop = std::sync::Arc::clone(&stop);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let reply = post(&url, &history("alice")).await;
                    assert_eq!(reply.status, 200);
                    assert_eq!(reply.json["decision"], true, "{}", reply.json);
                    seen.push(
                        reply.json["context"]["policy_version"]
                            .as_str()
                            .unwrap()
                            .to_owned(),
                    );
                }
                seen
            })
        })
        .collect();
    for round in 0..20 {
        let text = if round % 2 == 0 {
            original.clone()
        } else {
            format!("{original}\n// edited\n")
        };
        std::fs::write(&policies, text).unwrap();
        let reload = post_raw(&server.url("/admin/v1/policies/reload"), "").await;
        assert_eq!(reload.status, 200, "{}", reload.json);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut decisions = 0;
    for loader in loaders {
        for version in loader.await.unwrap() {
            assert!(version == v1 || version == v2, "unknown version {version}");
            decisions += 1;
        }
    }
    assert!(decisions > 20, "only {decisions} decisions");
}

#[tokio::test]
async fn readiness_follows_the_entity_store() {
    let upstream = crate::upstream::Upstream::start().await;
    *upstream.mode.lock().unwrap() = crate::upstream::Mode::Unavailable;
    let url = upstream.url();
    let server = Server::start(config_with(&[
        ("MANDATE_STORE_KIND", "http"),
        ("MANDATE_STORE_UPSTREAM", url.as_str()),
        ("MANDATE_STORE_RETRIES", "0"),
    ]))
    .await;
    let reply = get(&server.url("/readyz")).await;
    assert_eq!(reply.status, 503, "{}", reply.json);
    assert_eq!(reply.json["entity_store"], "unavailable");
    // Fifty probes at once while it fails cost the store one request.
    let calls = upstream.calls();
    let probes: Vec<_> = (0..50)
        .map(|_| {
            let url = server.url("/readyz");
            tokio::spawn(async move { get(&url).await.status })
        })
        .collect();
    for probe in probes {
        assert_eq!(probe.await.unwrap(), 503);
    }
    assert!(
        upstream.calls() <= calls + 1,
        "{} store requests for 50 probes",
        upstream.calls() - calls
    );
    // Back: noticed by the next probe, within a second.
    *upstream.mode.lock().unwrap() = crate::upstream::Mode::Normal;
    let started = std::time::Instant::now();
    let reply = loop {
        let reply = get(&server.url("/readyz")).await;
        if reply.status == 200 || started.elapsed() > Duration::from_secs(3) {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(reply.status, 200, "{}", reply.json);
    assert_eq!(reply.json["entity_store"], "ready");

    // Alice and her account are cached; then the store goes down and a
    // decision on Bob (not cached) is denied.
    let ask = |who: &str| {
        json!({"subject": {"type": "user", "id": who}, "action": {"name": "view_account"},
               "resource": {"type": "account", "id": "alice-personal"}})
    };
    let url = server.url("/access/v1/evaluation");
    assert_eq!(post(&url, &ask("alice")).await.json["decision"], true);
    *upstream.mode.lock().unwrap() = crate::upstream::Mode::Unavailable;
    assert_eq!(post(&url, &ask("bob")).await.json["decision"], false);
    let reply = get(&server.url("/readyz")).await;
    assert_eq!(reply.status, 200, "cached entities are still served");
    assert_eq!(reply.json["entity_store"], "degraded", "{}", reply.json);
    assert_eq!(post(&url, &ask("alice")).await.json["decision"], true);
}

#[tokio::test]
async fn the_dashboard_queries_only_metrics_mandate_exports() {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("dashboards/mandate.json")).unwrap(),
    )
    .unwrap();
    let server = Server::demo().await;
    post(&server.url("/access/v1/evaluation"), &history("alice")).await;
    let exported = metrics_text(&server).await;
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for name in expr
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("mandate_"))
            {
                let family = name.trim_end_matches("_bucket");
                // Counters and histograms without observations yet still declare their family.
                assert!(
                    exported.contains(&format!("# TYPE {family} ")) || exported.contains(family),
                    "{name} is not exported"
                );
            }
            queries += 1;
        }
    }
    assert!(
        queries >= 6,
        "decisions, latency, hit ratio, stale serves, upstream errors, reloads"
    );
}

/// Writes `files` the way the kubelet writes a ConfigMap volume: into a fresh
/// hidden timestamped directory, published by renaming a `..data` symlink
/// over the old one, each key a symlink through `..data`.
fn publish_configmap(dir: &Path, generation: u32, files: &[(String, String)]) {
    use std::os::unix::fs::symlink;
    let data = format!("..2026_11_26_00_00_0{generation}.000000001");
    std::fs::create_dir_all(dir.join(&data)).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(&data).join(name), text).unwrap();
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
    symlink(&data, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
}

#[tokio::test]
async fn a_configmap_volume_update_reaches_the_running_server_by_hot_reload() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    let mut files: Vec<(String, String)> = std::fs::read_dir(root().join("policies"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "cedar"))
        .map(|path| {
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    publish_configmap(&policies, 1, &files);
    let mut config = config_with(&[("MANDATE_POLICY_RELOAD_INTERVAL", "50ms")]);
    config.policy.dir = policies.clone();
    let server = Server::start(config).await;
    let url = server.url("/access/v1/evaluation");
    let market = json!({"subject": {"type": "user", "id": "alice"}, "action": {"name": "view_market_data"}, "resource": {"type": "marketdata", "id": "nasdaq-l1"}});
    let first = post(&url, &market).await;
    assert_eq!(
        first.json["decision"], true,
        "each policy loads once, not again under ..data: {}",
        first.json
    );
    let v1 = first.json["context"]["policy_version"].clone();

    let market_rule = files
        .iter_mut()
        .find(|(name, _)| name == "market_data.cedar")
        .unwrap();
    market_rule.1 = "// market data withdrawn for maintenance\n".to_owned();
    publish_configmap(&policies, 2, &files);
    let mut reply = Value::Null;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        reply = post(&url, &market).await.json;
        if reply["context"]["policy_version"] != v1 {
            break;
        }
    }
    assert_ne!(reply["context"]["policy_version"], v1, "{reply}");
    assert_eq!(reply["decision"], false, "M1 is gone: {reply}");
}
