//! The open loop, on one spinning thread: requests fall due every `1/rate`
//! s and go out on the first idle connection (queueing when none is);
//! latency runs from when each fell due, so no delay, the client's
//! included, is hidden. Non-blocking sockets polled in a loop: microsecond
//! pacing, no timer wheel.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::client::{complete_response, request};
use crate::report::{Outcome, histogram};
use crate::servers::Server;

/// Offers `rate` requests/s of `bodies` (cycled) to `server` for `duration`.
pub fn paced(
    server: &Server,
    path: &str,
    bodies: &[&str],
    connections: usize,
    duration: Duration,
    rate: f64,
) -> Outcome {
    struct Conn {
        stream: std::net::TcpStream,
        due: Option<Instant>,
        buf: Vec<u8>,
    }
    let requests: Vec<Vec<u8>> = bodies
        .iter()
        .map(|b| request(server.addr, path, b))
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
    let mut latency = histogram();
    let (mut ok, mut errors, mut sent) = (0_u64, 0_u64, 0_usize);
    let mut queue = std::collections::VecDeque::new();
    let (user_before, system_before) = server.cpu_split();
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
    let (user_after, system_after) = server.cpu_split();
    Outcome {
        name: format!("{} at {rate:.0}/s", server.name),
        requests: ok,
        per_request: 1,
        errors,
        seconds: started.elapsed().as_secs_f64(),
        latency,
        cpu: user_after + system_after - user_before - system_before,
        system: system_after - system_before,
    }
}
