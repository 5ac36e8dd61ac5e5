//! What a fleet does to a process that one machine never does: the
//! environment a kubelet injects, files planted where a default pack used
//! to be unpacked, half an own pack, idle clients at every rolling update,
//! listen addresses written as host names, a process log nobody reads.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cli::{Served, mandate, serving};
use crate::support::{post, root};

fn terminate(child: &std::process::Child) {
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
}

/// Mallory has no role anywhere: the shipped pack denies him.
fn mallory_views() -> serde_json::Value {
    json!({
        "subject": {"type": "user", "id": "mallory"},
        "action": {"name": "view_account"},
        "resource": {"type": "account", "id": "alice-personal"}
    })
}

/// What a kubelet injects into a pod for the Services `mandate` (the
/// chart's, decision and admin ports) and `mandate-store` in its namespace.
const SERVICE_LINKS: &[(&str, &str)] = &[
    ("MANDATE_SERVICE_HOST", "10.96.12.7"),
    ("MANDATE_SERVICE_PORT", "8180"),
    ("MANDATE_SERVICE_PORT_HTTP", "8180"),
    ("MANDATE_SERVICE_PORT_ADMIN", "9180"),
    ("MANDATE_PORT", "tcp://10.96.12.7:8180"),
    ("MANDATE_PORT_8180_TCP", "tcp://10.96.12.7:8180"),
    ("MANDATE_PORT_8180_TCP_PROTO", "tcp"),
    ("MANDATE_PORT_8180_TCP_PORT", "8180"),
    ("MANDATE_PORT_8180_TCP_ADDR", "10.96.12.7"),
    ("MANDATE_PORT_9180_TCP", "tcp://10.96.12.7:9180"),
    ("MANDATE_PORT_9180_TCP_PROTO", "tcp"),
    ("MANDATE_PORT_9180_TCP_PORT", "9180"),
    ("MANDATE_PORT_9180_TCP_ADDR", "10.96.12.7"),
    ("MANDATE_STORE_SERVICE_HOST", "10.96.3.4"),
    ("MANDATE_STORE_SERVICE_PORT", "443"),
    ("MANDATE_STORE_PORT", "tcp://10.96.3.4:443"),
    ("MANDATE_STORE_PORT_443_TCP", "tcp://10.96.3.4:443"),
    ("MANDATE_STORE_PORT_443_TCP_PROTO", "tcp"),
    ("MANDATE_STORE_PORT_443_TCP_PORT", "443"),
    ("MANDATE_STORE_PORT_443_TCP_ADDR", "10.96.3.4"),
];

#[tokio::test]
async fn serve_starts_cleanly_in_the_environment_a_kubelet_injects() {
    let Served {
        child,
        base,
        stderr,
    } = serving(
        mandate()
            .envs(SERVICE_LINKS.iter().copied())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null()),
    );
    let reply = post(&format!("{base}/access/v1/evaluation"), &mallory_views()).await;
    assert_eq!(reply.json["decision"], false, "{}", reply.json);
    terminate(&child);
    child.wait_with_output().unwrap();
    let log = stderr.join().unwrap();
    assert!(!log.contains("MANDATE_SERVICE_HOST"), "{log}");
    // Beside them, a mistyped setting is still refused, by name.
    let typo = mandate()
        .envs(SERVICE_LINKS.iter().copied())
        .env("MANDATE_SERVER_LISTN", "0.0.0.0:8180")
        .args(["serve"])
        .output()
        .unwrap();
    assert_eq!(typo.status.code(), Some(64));
    let error = String::from_utf8_lossy(&typo.stderr);
    assert!(error.contains("MANDATE_SERVER_LISTN"), "{error}");
    assert!(!error.contains("MANDATE_SERVICE_HOST"), "{error}");
}

#[tokio::test]
async fn a_policy_planted_where_the_embedded_pack_used_to_be_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let permit_all = "@id(\"planted\")\npermit(principal, action, resource);\n";
    // Every place the embedded pack was ever read from: the shared temp
    // directory of old, and the pseudo-directory's name under the working
    // directory.
    for dir in [
        tmp.path()
            .join("mandate-embedded-0000000000000000/policies"),
        cwd.path().join("<embedded>/policies"),
    ] {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("planted.cedar"), permit_all).unwrap();
    }
    let Served {
        child,
        base,
        stderr,
    } = serving(
        mandate()
            .current_dir(cwd.path())
            .env("TMPDIR", tmp.path())
            .env("MANDATE_POLICY_RELOAD_INTERVAL", "50ms")
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null()),
    );
    let before = post(&format!("{base}/access/v1/evaluation"), &mallory_views()).await;
    assert_eq!(before.json["decision"], false, "{}", before.json);
    // Planted after the start too, into any directory Mandate wrote.
    let written: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        written.len(),
        1,
        "the embedded pack writes nothing to TMPDIR: {written:?}"
    );
    std::fs::write(
        cwd.path().join("<embedded>/policies/later.cedar"),
        permit_all.replace("planted", "later"),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let after = post(&format!("{base}/access/v1/evaluation"), &mallory_views()).await;
    assert_eq!(after.json["decision"], false, "{}", after.json);
    assert_eq!(
        after.json["context"]["policy_version"],
        before.json["context"]["policy_version"]
    );
    terminate(&child);
    child.wait_with_output().unwrap();
    let log = stderr.join().unwrap();
    assert!(log.contains("embedded brokerage pack from memory"), "{log}");
    assert!(!log.contains("policies reloaded"), "{log}");
}

#[test]
fn half_an_own_pack_is_refused_naming_the_missing_flag() {
    for (given, value, missing) in [
        ("--policies", "policies", "--schema"),
        ("--schema", "schema", "--policies"),
    ] {
        let check = [
            "check",
            "--principal",
            "user:alice",
            "--action",
            "view_account",
            "--resource",
            "account:alice-personal",
        ];
        // Each command's exit code for a configuration that does not load.
        for (command, code) in [(&["serve"][..], 64), (&["validate"], 1), (&check, 2)] {
            let output = mandate()
                .args(command)
                .args([given, value])
                .output()
                .unwrap();
            let command = command[0];
            let error = String::from_utf8_lossy(&output.stderr);
            assert_eq!(
                output.status.code(),
                Some(code),
                "{command} {given}: {error}"
            );
            assert!(error.contains(missing), "{command} {given}: {error}");
            assert!(!error.contains("mandate-embedded"), "{error}");
        }
    }
}

#[tokio::test]
async fn an_own_pack_without_entities_serves_an_empty_store_with_a_warning() {
    let policies = root().join("policies");
    let schema = root().join("schema");
    let Served {
        child,
        base,
        stderr,
    } = serving(
        mandate()
            .args(["serve", "--listen", "127.0.0.1:0", "--policies"])
            .arg(&policies)
            .arg("--schema")
            .arg(&schema)
            .stdout(Stdio::null()),
    );
    // Alice owns alice-personal in the demo data; here there is none.
    let reply = post(
        &format!("{base}/access/v1/evaluation"),
        &json!({
            "subject": {"type": "user", "id": "alice"},
            "action": {"name": "view_account"},
            "resource": {"type": "account", "id": "alice-personal"}
        }),
    )
    .await;
    assert_eq!(reply.json["decision"], false, "{}", reply.json);
    terminate(&child);
    child.wait_with_output().unwrap();
    let log = stderr.join().unwrap();
    assert!(log.contains("the entity store is EMPTY"), "{log}");
    assert!(!log.contains("DEMO"), "{log}");
}

#[tokio::test]
async fn listen_takes_a_host_name() {
    let Served { child, base, .. } = serving(
        mandate()
            .args(["serve", "--listen", "localhost:0"])
            .stdout(Stdio::null()),
    );
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let reply = post(&format!("{base}/access/v1/evaluation"), &mallory_views()).await;
    assert_eq!(reply.status, 200);
    terminate(&child);
    child.wait_with_output().unwrap();
}

/// An HTTP/1.1 client that asks once and keeps the connection open.
fn idle_h1_client(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = [0u8; 512];
    let read = stream.read(&mut answer).unwrap();
    assert!(answer[..read].starts_with(b"HTTP/1.1 200"));
    stream
}

#[test]
fn sigterm_with_twenty_idle_keep_alive_connections_exits_at_once() {
    let Served {
        mut child, base, ..
    } = serving(
        mandate()
            .env("MANDATE_SERVER_SHUTDOWN_GRACE_PERIOD", "20s")
            .env("MANDATE_SERVER_IDLE_TIMEOUT", "60s")
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null()),
    );
    let addr = base.trim_start_matches("http://");
    let h2: Vec<TcpStream> = (0..20).map(|_| crate::h2c::quiet_client(addr)).collect();
    let h1: Vec<TcpStream> = (0..5).map(|_| idle_h1_client(addr)).collect();
    let asked = Instant::now();
    terminate(&child);
    let exited = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM with idle connections (grace period 20 s)"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = asked.elapsed();
    assert_eq!(exited.code(), Some(0));
    // The bound is 1 s; a loaded CI machine gets twice that.
    assert!(
        took < Duration::from_secs(2),
        "SIGTERM took {took:?} with idle connections only"
    );
    drop((h2, h1));
}

/// A child process killed if the test fails before it exits.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads `reader` until the line naming the decision listener's address.
fn listening_on(reader: &mut impl std::io::BufRead) -> String {
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the log ended");
        if let Some(address) = line.trim().strip_prefix("mandate listening on http://") {
            return address.to_owned();
        }
    }
}

#[test]
fn a_process_log_nobody_reads_never_stalls_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("stderr");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // Opening a FIFO for reading and writing never waits for the other end
    // (Linux); the test holds it, reads up to the address, then never again.
    let held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    let stderr = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let mut child = Reaped(
        mandate()
            .env("MANDATE_LOG_LEVEL", "debug")
            .env("MANDATE_LOG_PROCESS_QUEUE", "100")
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap(),
    );
    let addr = listening_on(&mut std::io::BufReader::new(&held));
    // Each HTTP/2 connection logs several debug lines (h2's own): the
    // pipe's 64 KiB fill within a hundred; the server must go on answering.
    let started = Instant::now();
    for _ in 0..600 {
        drop(crate::h2c::quiet_client(&addr));
    }
    let took = started.elapsed();
    let reply = tokio::runtime::Runtime::new().unwrap().block_on(post(
        &format!("http://{addr}/access/v1/evaluation"),
        &mallory_views(),
    ));
    assert_eq!(reply.json["decision"], false, "{}", reply.json);
    // What could not be written is counted (each second).
    std::thread::sleep(Duration::from_millis(1_500));
    let mut metrics = TcpStream::connect(&addr).unwrap();
    metrics
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    metrics.read_to_string(&mut text).unwrap();
    let dropped = text
        .lines()
        .find_map(|l| l.strip_prefix("mandate_process_log_dropped_total "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(
        dropped.is_some_and(|d| d > 0),
        "dropped lines counted: {dropped:?}"
    );
    terminate(&child.0);
    let exited = child.0.wait().unwrap();
    assert!(
        took < Duration::from_secs(30),
        "600 connections took {took:?}"
    );
    assert_eq!(exited.code(), Some(0));
    // The decision log's stream holds decision lines only: the process
    // log, behind, does not say so on stdout at exit.
    let mut stdout = String::new();
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(!stdout.is_empty());
    for line in stdout.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not a decision line on stdout: {line}"
        );
    }
    drop(held);
}

/// SIGTERM while decisions are in flight on HTTP/1.1 and HTTP/2 (each
/// waiting on a slow store): every one is answered, then the process exits,
/// well before the grace period. Through the real binary: a server in the
/// test's own process would finish a cut-off request on the test's runtime.
#[tokio::test]
async fn sigterm_lets_the_decisions_in_flight_finish_then_exits() {
    let upstream = crate::upstream::Upstream::start().await;
    upstream
        .delay_ms
        .store(1_200, std::sync::atomic::Ordering::SeqCst);
    let Served {
        mut child, base, ..
    } = serving(
        mandate()
            .env("MANDATE_SERVER_SHUTDOWN_GRACE_PERIOD", "20s")
            .args(["serve", "--listen", "127.0.0.1:0", "--upstream"])
            .arg(upstream.url())
            .stdout(Stdio::null()),
    );
    let url = format!("{base}/access/v1/evaluation");
    let ask = |user: &'static str, http2: bool| {
        let url = url.clone();
        tokio::spawn(async move {
            let body = json!({
                "subject": {"type": "user", "id": user},
                "action": {"name": "view_account"},
                "resource": {"type": "account", "id": "alice-personal"}
            });
            let request = http::Request::post(&url)
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from(
                    body.to_string(),
                )))
                .unwrap();
            crate::support::send(request, http2).await
        })
    };
    let in_flight = [
        ask("grace", false),
        ask("carol", true),
        ask("mallory", false),
    ];
    tokio::time::sleep(Duration::from_millis(400)).await;
    let asked = Instant::now();
    terminate(&child);
    for (answer, expected) in in_flight.into_iter().zip([true, true, false]) {
        let reply = answer.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.json);
        assert_eq!(reply.json["decision"], expected, "{}", reply.json);
    }
    let exited = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(exited.code(), Some(0));
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "exited {:?} after SIGTERM; the grace period is 20 s",
        asked.elapsed()
    );
}
