//! What an HTTP/2 connection may cost: one that asked once and went quiet
//! is closed (GOAWAY) as promptly as an idle HTTP/1.1 keep-alive one, and
//! at the connection cap idle connections make way for a new client; a
//! client that opens and cancels streams as fast as it can (rapid reset,
//! CVE-2023-44487) is cut off after a bounded number of them while everyone
//! else is still answered.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::h2c::{self, HEADERS, RST_STREAM, WINDOW_UPDATE};
use crate::support::{Server, config_with};

/// `GET /healthz` over HTTP/1.1 on a new connection: the status line and
/// how long the answer took.
fn healthz(addr: &str) -> (String, Duration) {
    let (status, took, _) = healthz_kept(addr);
    (status, took)
}

/// `GET /healthz` over HTTP/1.1 on a new connection kept open: the status
/// line, how long the answer took, and the connection.
fn healthz_kept(addr: &str) -> (String, Duration, TcpStream) {
    let asked = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = [0u8; 1024];
    let read = stream.read(&mut answer).unwrap_or(0);
    let answer = String::from_utf8_lossy(&answer[..read]);
    let status = answer.lines().next().unwrap_or_default().to_owned();
    (status, asked.elapsed(), stream)
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_as_promptly_as_an_http1_one() {
    let server = Server::start(config_with(&[
        ("MANDATE_SERVER_HEADER_READ_TIMEOUT", "500ms"),
        ("MANDATE_SERVER_IDLE_TIMEOUT", "60s"),
    ]))
    .await;
    let addr = server.addr.to_string();
    let ending = tokio::task::spawn_blocking(move || {
        let mut quiet = h2c::quiet_client(&addr);
        h2c::ending(&mut quiet, Duration::from_secs(4))
    })
    .await
    .unwrap();
    // HTTP/1.1 keep-alive ends at the header read timeout: so does h2.
    assert!(ending.goaway.is_some(), "told with a GOAWAY: {ending:?}");
    assert!(ending.closed, "and closed: {ending:?}");
}

#[tokio::test]
async fn idle_http2_connections_at_the_cap_make_way_for_new_clients() {
    let server = Server::start(config_with(&[
        ("MANDATE_SERVER_MAX_CONNECTIONS", "4"),
        ("MANDATE_SERVER_IDLE_TIMEOUT", "60s"),
        ("MANDATE_SERVER_HEADER_READ_TIMEOUT", "10s"),
    ]))
    .await;
    let addr = server.addr.to_string();
    let (answers, endings) = tokio::task::spawn_blocking(move || {
        // Every permit held by a client that asked once and went quiet.
        let mut idle: Vec<TcpStream> = (0..4).map(|_| h2c::quiet_client(&addr)).collect();
        // Four new clients, each keeping its connection.
        let answers: Vec<(String, Duration, TcpStream)> =
            (0..4).map(|_| healthz_kept(&addr)).collect();
        let endings: Vec<h2c::Ending> = idle
            .iter_mut()
            .map(|quiet| h2c::ending(quiet, Duration::from_secs(1)))
            .collect();
        (answers, endings)
    })
    .await
    .unwrap();
    for (status, took, _) in &answers {
        assert_eq!(
            status, "HTTP/1.1 200 OK",
            "a new client is served, not refused"
        );
        assert!(*took < Duration::from_secs(2), "at once: {took:?}");
    }
    let evicted = endings
        .iter()
        .filter(|e| e.goaway.is_some() && e.closed)
        .count();
    assert_eq!(evicted, 4, "each made way with a GOAWAY: {endings:?}");
}

/// Opens `streams` POST streams on one connection, each ended at once by
/// `reset` (HEADERS without its body, then that frame), in writes of 100
/// pairs, and returns how the connection ended.
fn rapid_reset(addr: &str, streams: u32, reset: fn(u32) -> Vec<u8>) -> h2c::Ending {
    let mut attacker = h2c::connect(addr);
    let block = h2c::request_block(0x83, "/access/v1/evaluation");
    for batch in 0..streams / 100 {
        let mut bytes = Vec::new();
        for i in 0..100 {
            let id = 1 + 2 * (batch * 100 + i);
            bytes.extend(h2c::frame(HEADERS, 0x04, id, &block));
            bytes.extend(reset(id));
        }
        if attacker.write_all(&bytes).is_err() {
            break;
        }
    }
    h2c::ending(&mut attacker, Duration::from_secs(5))
}

#[tokio::test]
async fn http2_rapid_reset_is_cut_off_and_everyone_else_is_still_answered() {
    let server = Server::start(config_with(&[])).await;
    let addr = server.addr.to_string();
    let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let prober = {
        let (addr, flooding) = (addr.clone(), std::sync::Arc::clone(&flooding));
        std::thread::spawn(move || {
            let mut slowest = Duration::ZERO;
            while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, took) = healthz(&addr);
                assert_eq!(status, "HTTP/1.1 200 OK");
                slowest = slowest.max(took);
                std::thread::sleep(Duration::from_millis(20));
            }
            slowest
        })
    };
    let endings = tokio::task::spawn_blocking(move || {
        // The client cancels each stream (CVE-2023-44487), or makes the
        // server reset it: a WINDOW_UPDATE overflowing the stream's window
        // (CVE-2025-8671).
        let cancel: fn(u32) -> Vec<u8> = |id| h2c::frame(RST_STREAM, 0, id, &8u32.to_be_bytes());
        let overflow: fn(u32) -> Vec<u8> =
            |id| h2c::frame(WINDOW_UPDATE, 0, id, &0x7fff_ffffu32.to_be_bytes());
        (0..10)
            .flat_map(|_| [cancel, overflow])
            .map(|reset| rapid_reset(&addr, 10_000, reset))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    let slowest = prober.join().unwrap();
    for ending in &endings {
        let (last, code) = ending.goaway.expect("a GOAWAY");
        assert_eq!(code, 0xb, "ENHANCE_YOUR_CALM: {ending:?}");
        assert!(last < 500, "cut off after a few streams: {ending:?}");
        assert!(ending.closed, "{ending:?}");
    }
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
}
