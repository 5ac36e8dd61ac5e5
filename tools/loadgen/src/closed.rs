//! The closed loop: N keep-alive connections, each sending its next
//! request when the last answer arrives; HTTP/1.1 from the minimal client,
//! or h2 through hyper.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::client::{read_response, request};
use crate::report::{Outcome, histogram};
use crate::servers::Server;

/// The wire protocol of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    H2,
}

/// One closed-loop run.
pub struct Load<'a> {
    pub name: String,
    pub protocol: Protocol,
    pub path: &'a str,
    /// each connection cycles through these
    pub bodies: &'a [&'a str],
    /// decisions in one request
    pub per_request: u64,
    pub connections: usize,
    pub duration: Duration,
}

/// Runs `load` against `server`.
pub async fn drive(server: &Server, load: Load<'_>) -> Outcome {
    let addr = server.addr;
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(
        load.bodies
            .iter()
            .map(|b| request(addr, load.path, b))
            .collect(),
    );
    let h2_bodies: Arc<Vec<Bytes>> = Arc::new(
        load.bodies
            .iter()
            .map(|b| Bytes::copy_from_slice(b.as_bytes()))
            .collect(),
    );
    let uri: Arc<str> = format!("http://{addr}{}", load.path).into();
    let mut h2_senders = Vec::new();
    if load.protocol == Protocol::H2 {
        for _ in 0..load.connections.div_ceil(8).max(1) {
            let stream = TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (sender, connection) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(stream),
            )
            .await
            .unwrap();
            tokio::spawn(connection);
            h2_senders.push(sender);
        }
    }
    let (user_before, system_before) = server.cpu_split();
    let started = Instant::now();
    let deadline = started + load.duration;
    let mut tasks = Vec::new();
    for index in 0..load.connections {
        let requests = Arc::clone(&requests);
        let h2_bodies = Arc::clone(&h2_bodies);
        let uri = Arc::clone(&uri);
        let h2 = h2_senders.get(index % h2_senders.len().max(1)).cloned();
        let protocol = load.protocol;
        tasks.push(tokio::spawn(async move {
            let mut latency = histogram();
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
                let sent = Instant::now();
                if sent >= deadline {
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
                let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                latency.saturating_record(micros.max(1));
                if good {
                    ok += 1;
                } else {
                    errors += 1;
                }
            }
            (latency, ok, errors)
        }));
    }
    let mut latency = histogram();
    let (mut requests, mut errors) = (0, 0);
    for task in tasks {
        let (histogram, ok, failed) = task.await.unwrap();
        latency.add(histogram).unwrap();
        requests += ok;
        errors += failed;
    }
    let (user_after, system_after) = server.cpu_split();
    Outcome {
        name: load.name,
        requests,
        per_request: load.per_request,
        errors,
        seconds: started.elapsed().as_secs_f64(),
        latency,
        cpu: user_after + system_after - user_before - system_before,
        system: system_after - system_before,
    }
}
