//! A raw HTTP/2 client (prior knowledge, no TLS) that writes frames by
//! hand, for the clients no library will be: one that goes quiet after a
//! request, never acknowledging SETTINGS nor answering a PING, and one that
//! opens and resets streams as fast as it can.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

pub const HEADERS: u8 = 1;
pub const RST_STREAM: u8 = 3;
pub const GOAWAY: u8 = 7;
pub const WINDOW_UPDATE: u8 = 8;

/// Connects and sends the preface and an empty SETTINGS frame.
pub fn connect(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .unwrap();
    stream.write_all(&frame(4, 0, 0, &[])).unwrap();
    stream
}

/// One frame: type, flags, stream and payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut bytes = vec![length[1], length[2], length[3], kind, flags];
    bytes.extend_from_slice(&stream.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// A request's header block (HPACK, literals without indexing):
/// `method` is 0x82 for GET, 0x83 for POST.
pub fn request_block(method: u8, path: &str) -> Vec<u8> {
    let mut block = vec![method, 0x86, 0x04, u8::try_from(path.len()).unwrap()];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x01, 9]);
    block.extend_from_slice(b"localhost");
    block
}

/// A frame read: type, flags, stream and payload.
pub struct Frame {
    pub kind: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// Reads one frame (within the socket's read timeout).
pub fn read_frame(stream: &mut TcpStream) -> std::io::Result<Frame> {
    let mut header = [0u8; 9];
    stream.read_exact(&mut header)?;
    let length =
        usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
    let mut payload = vec![0u8; length];
    stream.read_exact(&mut payload)?;
    let id = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
    Ok(Frame {
        kind: header[3],
        stream: id,
        payload,
    })
}

/// Asks `GET /healthz` on stream 1, reads until the answer's HEADERS,
/// then goes quiet.
pub fn quiet_client(addr: &str) -> TcpStream {
    let mut stream = connect(addr);
    let block = request_block(0x82, "/healthz");
    stream.write_all(&frame(HEADERS, 0x05, 1, &block)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    loop {
        let answer = read_frame(&mut stream).unwrap();
        if answer.kind == HEADERS && answer.stream == 1 {
            return stream;
        }
    }
}

/// How a connection ended, as seen within `wait`: the GOAWAY's last
/// stream and error code if one came, and whether the socket closed.
#[derive(Debug, Default)]
pub struct Ending {
    pub goaway: Option<(u32, u32)>,
    pub closed: bool,
}

/// Reads frames for up to `wait` (from now), noting a GOAWAY and the close.
pub fn ending(stream: &mut TcpStream, wait: Duration) -> Ending {
    let deadline = Instant::now() + wait;
    let mut ending = Ending::default();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    while Instant::now() < deadline {
        match read_frame(stream) {
            Ok(frame) if frame.kind == GOAWAY && frame.payload.len() >= 8 => {
                let word = |at: usize| {
                    u32::from_be_bytes([
                        frame.payload[at],
                        frame.payload[at + 1],
                        frame.payload[at + 2],
                        frame.payload[at + 3],
                    ])
                };
                ending.goaway = Some((word(0) & 0x7fff_ffff, word(4)));
            }
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                ending.closed = true;
                return ending;
            }
        }
    }
    ending
}
