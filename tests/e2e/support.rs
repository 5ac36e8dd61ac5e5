//! Starting a real server and speaking to it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mandate::config::Config;
use serde_json::Value;

/// The project root, so tests find `policies/`, `schema/` and the demo data.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped configuration, with paths made absolute and port 0.
pub fn demo_config() -> Config {
    config_with(&[])
}

/// The gateway example's configuration (`examples/gateways/mandate.toml`),
/// on ports chosen by the system.
pub fn gateway_config() -> Config {
    let mut config = Config::load(
        Some(&root().join("examples/gateways/mandate.toml")),
        std::iter::once(("MANDATE_LOG_DECISIONS".to_owned(), "off".to_owned())),
        &[("server.listen", text("127.0.0.1:0"))],
    )
    .unwrap();
    config.gateway.grpc_listen = Some("127.0.0.1:0".parse().unwrap());
    // The refusal tests read each deny's cause: the operator's opt-in
    // (`gateway.deny_detail`); `gateway::a_deny_tells_the_end_user_nothing`
    // tests the default.
    config.gateway.deny_detail = true;
    config
}

/// The AuthZEN interop Todo pack (todos are request-described), quiet.
pub fn todo_config() -> Config {
    let pack = root().join("examples/authzen-todo");
    let flags = [
        ("server.listen", text("127.0.0.1:0")),
        ("policy.dir", path(&pack.join("policies"))),
        ("policy.schema", path(&pack.join("schema.cedarschema"))),
        ("store.entities", path(&pack.join("entities.json"))),
    ];
    let quiet = std::iter::once(("MANDATE_LOG_DECISIONS".to_owned(), "off".to_owned()));
    Config::load(Some(&pack.join("mandate.toml")), quiet, &flags).unwrap()
}

/// A setting's text value, as a flag gives it.
pub fn text(value: &str) -> toml::Value {
    toml::Value::String(value.to_owned())
}

/// A path setting's value.
pub fn path(value: &Path) -> toml::Value {
    toml::Value::String(value.display().to_string())
}

/// The shipped configuration plus `MANDATE_…` settings.
pub fn config_with(env: &[(&str, &str)]) -> Config {
    let root = root();
    let flags = [
        ("server.listen", text("127.0.0.1:0")),
        ("policy.dir", path(&root.join("policies"))),
        ("policy.schema", path(&root.join("schema"))),
    ];
    let demo = root
        .join("examples/demo/entities.json")
        .display()
        .to_string();
    let env = [
        ("MANDATE_STORE_ENTITIES".to_owned(), demo),
        ("MANDATE_LOG_DECISIONS".to_owned(), "off".to_owned()),
    ]
    .into_iter()
    .chain(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    Config::load(None, env, &flags).unwrap()
}

/// A running server; stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    /// the gRPC `ext_authz` listener, when configured
    pub grpc: Option<SocketAddr>,
    /// the admin listener, when configured
    pub admin: Option<SocketAddr>,
    running: Option<mandate::app::Running>,
}

impl Server {
    pub async fn start(config: Config) -> Self {
        let running = mandate::app::start(&config).await.unwrap();
        let loopback = |mut addr: SocketAddr| {
            if addr.ip().is_unspecified() {
                // Bound to every interface; the tests speak to it on loopback only.
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            addr
        };
        Self {
            addr: loopback(running.addr),
            grpc: running.grpc_addr.map(loopback),
            admin: running.admin_addr.map(loopback),
            running: Some(running),
        }
    }

    /// Shuts down gracefully and waits until every listener has drained.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop();
            running.stopped().await;
        }
    }

    pub async fn demo() -> Self {
        Self::start(demo_config()).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(running) = &self.running {
            running.stop();
        }
    }
}

/// A response: status, headers, JSON body.
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub json: Value,
}

fn client(http2: bool) -> Client<HttpConnector, Full<Bytes>> {
    let mut builder = Client::builder(TokioExecutor::new());
    builder.http2_only(http2);
    builder.build_http()
}

pub async fn send(request: http::Request<Full<Bytes>>, http2: bool) -> Reply {
    let response = client(http2).request(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&body)))
    };
    Reply {
        status,
        headers,
        json,
    }
}

pub async fn post_raw(url: &str, body: impl Into<Bytes>) -> Reply {
    let request = http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap();
    send(request, false).await
}

pub async fn post(url: &str, body: &Value) -> Reply {
    post_raw(url, serde_json::to_vec(body).unwrap()).await
}

/// A GET whose answer need not be JSON: status, headers, text.
pub async fn get_text(url: &str) -> (u16, http::HeaderMap, String) {
    let request = http::Request::get(url)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client(false).request(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

pub async fn get(url: &str) -> Reply {
    let request = http::Request::get(url)
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(request, false).await
}

/// The path of the built `mandate` binary.
pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mandate"))
}

/// A decision log file's lines, once `count` are written (the writer
/// thread writes every few milliseconds), or what is there after 10 s.
pub fn decision_lines(log: &Path, count: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let lines: Vec<Value> = std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        if lines.len() >= count || std::time::Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
