//! A minimal HTTP/1.1 client (so the load generator is not the
//! bottleneck), and reading Mandate's `/metrics`.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One POST, ready to write.
pub fn request(addr: SocketAddr, path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads one response into `buf`; its status.
pub async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
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

/// The status of the complete response in `buf`, once it is all there.
pub fn complete_response(buf: &[u8]) -> Option<u16> {
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

/// Sends `body` to `path` on a new connection and returns the JSON answer.
pub async fn ask(addr: SocketAddr, path: &str, body: &str) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    stream.write_all(&request(addr, path, body)).await.unwrap();
    let status = read_response(&mut stream, &mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    let json = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(json).unwrap_or_default())
}

/// Mandate's `/metrics` text.
pub async fn scrape(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    read_response(&mut stream, &mut buf).await.unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

/// The cumulative buckets of Mandate's decision-latency histogram, as
/// `(upper bound in seconds, count)`.
pub async fn decision_buckets(addr: SocketAddr) -> Vec<(f64, u64)> {
    scrape(addr)
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
