//! The durable action history on a real `nats-server -js`: every decision
//! line stored once (none doubled across a forced reconnect), read back per
//! resource with `mandate history`, and the server's absence never felt by a
//! decision.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};

use crate::bus::Nats;
use crate::cli::{Served, mandate, serving, terminate};
use crate::support::{decision_lines, get_text, send};

const USERS: [&str; 4] = ["carol", "bob", "mallory", "grace"];
const ACCOUNTS: [&str; 3] = ["alice-personal", "acme-corp", "bare-personal"];

/// A real `mandate serve` publishing its history to `nats`, its decision
/// log in a file beside.
fn replica(nats: &Nats, dir: &Path, extra: &[(&str, &str)]) -> (Served, PathBuf) {
    let log = dir.join("decisions.log");
    let mut command = mandate();
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("MANDATE_HISTORY_URL", nats.url())
        .env("MANDATE_LOG_DECISIONS", "file")
        .env("MANDATE_LOG_DECISIONS_FILE", &log)
        .stdout(Stdio::null());
    for (key, value) in extra {
        command.env(key, value);
    }
    (serving(&mut command), log)
}

/// One AuthZEN evaluation: `view_account` by `user` on `account`, with a
/// `traceparent` when given. Answers the status.
async fn view(base: &str, user: &str, account: &str, traceparent: Option<&str>) -> u16 {
    let body = json!({
        "subject": {"type": "user", "id": user},
        "action": {"name": "view_account"},
        "resource": {"type": "account", "id": account},
    });
    let mut request = http::Request::post(format!("{base}/access/v1/evaluation"))
        .header("content-type", "application/json");
    if let Some(parent) = traceparent {
        request = request.header("traceparent", parent);
    }
    let request = request
        .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
        .unwrap();
    send(request, false).await.status
}

/// `count` decisions, ten at a time, cycling through users and accounts
/// from `offset`; answers how many were made on each account.
async fn decide_many(base: &str, offset: usize, count: usize) -> HashMap<&'static str, usize> {
    let mut made = HashMap::new();
    for chunk in (offset..offset + count).collect::<Vec<_>>().chunks(10) {
        let answers = futures_util::future::join_all(chunk.iter().map(|n| {
            let (user, account) = (USERS[n % USERS.len()], ACCOUNTS[n % ACCOUNTS.len()]);
            *made.entry(account).or_insert(0) += 1;
            view(base, user, account, None)
        }))
        .await;
        assert!(answers.iter().all(|status| *status == 200), "{answers:?}");
    }
    made
}

/// A metric's value (summed over its series) on the replica's `/metrics`.
async fn metric(base: &str, name: &str) -> f64 {
    let (_, _, text) = get_text(&format!("{base}/metrics")).await;
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until the replica has settled `total` lines (published or
/// dropped); answers (published, dropped).
async fn settled(base: &str, total: f64) -> (f64, f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let published = metric(base, "mandate_history_published_total").await;
        let dropped = metric(base, "mandate_history_dropped_total").await;
        if published + dropped >= total || Instant::now() > deadline {
            return (published, dropped);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The messages in the history stream.
async fn stored(nats: &Nats) -> u64 {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream.get_stream("MANDATE_HISTORY").await.unwrap();
    stream.info().await.unwrap().state.messages
}

/// `mandate history` over `nats` with `args`: its lines, parsed.
fn history(nats: &Nats, args: &[&str]) -> Vec<Value> {
    let output = mandate()
        .args(["history", "--url", &nats.url()])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "mandate history {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_decisions_are_a_thousand_records_none_doubled_across_a_forced_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = Nats::jetstream(&dir.path().join("jetstream"));
    let (served, log) = replica(&nats, dir.path(), &[]);
    let base = served.base.clone();

    let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    assert_eq!(
        view(&base, "carol", "alice-personal", Some(parent)).await,
        200
    );
    let mut made = decide_many(&base, 0, 499).await;
    // The server goes away and comes back mid-run: publishes in flight
    // lose their acknowledgements and are sent again.
    nats.stop_gracefully();
    nats.restart();
    for (account, n) in decide_many(&base, 499, 500).await {
        *made.entry(account).or_insert(0) += n;
    }
    *made.entry("alice-personal").or_insert(0) += 1;

    let (published, dropped) = settled(&base, 1000.0).await;
    assert_eq!((published, dropped), (1000.0, 0.0));
    assert_eq!(
        stored(&nats).await,
        1000,
        "one record per decision, none doubled"
    );

    // Exactly the lines the log wrote, each once.
    let lines = decision_lines(&log, 1000);
    let logged_ids: HashSet<String> = lines
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(logged_ids.len(), 1000, "every line has its own id");
    let mut stored_ids = HashSet::new();
    for account in ACCOUNTS {
        let resource = format!("account:{account}");
        let lines = history(&nats, &["--resource", &resource]);
        assert_eq!(
            lines.len(),
            made[account],
            "{account}: exactly its own lines"
        );
        for line in &lines {
            assert_eq!(
                line["resource"],
                format!("Brokerage::Account::\"{account}\""),
                "{line}"
            );
            assert!(stored_ids.insert(line["id"].as_str().unwrap().to_owned()));
        }
    }
    assert_eq!(stored_ids, logged_ids);

    // The traced decision carries its caller's trace id, in the log and the history.
    let traced = history(
        &nats,
        &[
            "--resource",
            "account:alice-personal",
            "--principal",
            "user:carol",
            "--action",
            "view_account",
            "--since",
            "1h",
        ],
    );
    assert!(
        traced
            .iter()
            .all(|l| l["principal"] == "Brokerage::User::\"carol\"")
    );
    assert!(
        traced
            .iter()
            .any(|l| l["trace_id"] == "0af7651916cd43dd8448eb211c80319c"),
        "the traceparent's trace id"
    );
    // Lines without a traceparent still carry a trace id of their own.
    assert!(
        lines
            .iter()
            .all(|l| l["trace_id"].as_str().is_some_and(|t| t.len() == 32))
    );
    // A filter that matches nothing prints nothing; an unknown type is a usage error.
    assert!(
        history(
            &nats,
            &[
                "--resource",
                "account:alice-personal",
                "--action",
                "withdraw"
            ]
        )
        .is_empty()
    );
    let unknown = mandate()
        .args([
            "history",
            "--url",
            &nats.url(),
            "--resource",
            "acount:alice-personal",
        ])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("did you mean `Brokerage::Account`"));
    terminate(&served.child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_server_down_for_five_seconds_delays_no_decision_and_loses_no_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = Nats::jetstream(&dir.path().join("jetstream"));
    let (served, _log) = replica(&nats, dir.path(), &[("MANDATE_HISTORY_RETRY_FOR", "60s")]);
    let base = served.base.clone();

    let mut before = Vec::new();
    for n in 0..100 {
        let started = Instant::now();
        assert_eq!(view(&base, USERS[n % 4], ACCOUNTS[n % 3], None).await, 200);
        before.push(started.elapsed());
    }
    assert_eq!(settled(&base, 100.0).await, (100.0, 0.0));

    nats.stop_gracefully();
    let mut during = Vec::new();
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(5) {
        let started = Instant::now();
        let n = during.len();
        assert_eq!(view(&base, USERS[n % 4], ACCOUNTS[n % 3], None).await, 200);
        during.push(started.elapsed());
    }
    nats.restart();
    let total = 100 + during.len();
    let p99 = |samples: &mut Vec<Duration>| {
        samples.sort();
        samples[samples.len() * 99 / 100]
    };
    let (p99_before, p99_during) = (p99(&mut before), p99(&mut during));
    eprintln!(
        "decisions while NATS was down: {} (p99 {p99_during:?}; before: p99 {p99_before:?})",
        during.len()
    );
    // No decision waited on the history: NATS's own timeouts are seconds.
    assert!(
        during.iter().all(|took| *took < Duration::from_secs(1)),
        "a decision waited while NATS was down (p99 {p99_during:?})"
    );
    // Every line is delivered after the recovery (retried, well within
    // `history.retry_for`), once.
    #[allow(clippy::cast_precision_loss)]
    let expected = total as f64;
    assert_eq!(settled(&base, expected).await, (expected, 0.0));
    assert_eq!(stored(&nats).await, total as u64);
    terminate(&served.child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_rules_judge_each_line_once_for_every_sink_and_keep_every_deny() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::jetstream(&dir.path().join("jetstream"));
    let rules = r#"[{ name = "reads", decision = "allow", actions = ["view_account"], share = 0.0 }, { name = "money", actions = ["funding"], share = 1.0 }]"#;
    let (served, log) = replica(&nats, dir.path(), &[("MANDATE_LOG_KEEP", rules)]);
    let base = served.base.clone();
    for _ in 0..5 {
        assert_eq!(view(&base, "carol", "alice-personal", None).await, 200);
    }
    for _ in 0..3 {
        assert_eq!(view(&base, "mallory", "alice-personal", None).await, 200);
    }
    let withdrawal = json!({
        "subject": {"type": "user", "id": "erin"},
        "action": {"name": "withdraw"},
        "resource": {"type": "account", "id": "alice-personal"},
        "context": {"destination": {"type": "Brokerage::Destination", "id": "alice-bank"}, "amount": "250.00"},
    });
    let answer = crate::support::post(&format!("{base}/access/v1/evaluation"), &withdrawal).await;
    assert_eq!(answer.json["decision"], true, "{}", answer.json);

    // The allowed reads are sampled out of both sinks; the denies and the
    // withdrawal (a `funding` action) are in both.
    assert_eq!(settled(&base, 4.0).await, (4.0, 0.0));
    let lines = decision_lines(&log, 4);
    let kept: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["action"].as_str().unwrap(),
                l["decision"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kept,
        [
            ("view_account", "deny"),
            ("view_account", "deny"),
            ("view_account", "deny"),
            ("withdraw", "allow")
        ]
    );
    assert_eq!(stored(&nats).await, 4);
    assert_eq!(
        metric(
            &base,
            "mandate_log_lines_total{outcome=\"sampled_out\",rule=\"reads\"}"
        )
        .await,
        5.0
    );
    assert_eq!(
        metric(
            &base,
            "mandate_log_lines_total{outcome=\"kept\",rule=\"money\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &base,
            "mandate_log_lines_total{outcome=\"kept\",rule=\"default\"}"
        )
        .await,
        3.0
    );
    terminate(&served.child);

    // A rule that could drop a deny, or names no action, never starts.
    let refused = mandate()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env(
            "MANDATE_LOG_KEEP",
            r#"[{ name = "reads", actions = ["view_acount"], share = 0.5 }]"#,
        )
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("every deny is kept"), "{stderr}");
    assert!(stderr.contains("did you mean `view_account`"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_not_confirmed_within_retry_for_are_counted_expired_never_silently_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = Nats::jetstream(&dir.path().join("jetstream"));
    let (served, _log) = replica(&nats, dir.path(), &[("MANDATE_HISTORY_RETRY_FOR", "1s")]);
    let base = served.base.clone();
    assert_eq!(view(&base, "carol", "alice-personal", None).await, 200);
    assert_eq!(settled(&base, 1.0).await, (1.0, 0.0));

    // Down for longer than a publish waits for its acknowledgement (5 s)
    // plus `history.retry_for`: the lines decided meanwhile expire.
    nats.stop_gracefully();
    decide_many(&base, 0, 20).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    nats.restart();
    let (published, dropped) = settled(&base, 21.0).await;
    assert_eq!(published + dropped, 21.0, "every line published or counted");
    assert!(
        metric(&base, "mandate_history_dropped_total{cause=\"expired\"}").await >= 1.0,
        "the unconfirmed lines are counted expired"
    );
    // A line counted expired may still have been stored (the client sent it
    // on reconnecting, after its acknowledgement had timed out): the count
    // errs towards loss, never towards a silent one.
    let stored = stored(&nats).await;
    #[allow(clippy::cast_precision_loss)]
    let stored_f = stored as f64;
    assert!(
        (published..=21.0).contains(&stored_f),
        "{stored} stored, {published} confirmed"
    );
    terminate(&served.child);
}
