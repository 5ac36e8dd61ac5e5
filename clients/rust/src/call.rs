//! One call: a POST with one total deadline, retried at most once and only
//! when nothing can have been decided (a connection refused before the
//! request was sent, a 503 whose `Retry-After` fits in the deadline), with
//! the same `X-Request-ID`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client as Pool;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::time::Instant;

use crate::config::{Config, ErrorHook};
use crate::connect::{Connector, Target};
use crate::error::Error;

/// Longest deadline a call may have.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Largest answer read: a search page or a batch of 1000 decisions fits.
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Per-call options: a trace to join, a request id to use.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallOptions {
    pub(crate) traceparent: Option<String>,
    pub(crate) request_id: Option<String>,
}

/// The pooled connections and the settings every call uses.
pub(crate) struct Caller {
    pool: Pool<Connector, Full<Bytes>>,
    /// scheme and authority every path is appended to
    base: String,
    timeout: Duration,
    connect_timeout: Duration,
    token: Option<String>,
    pub(crate) max_batch_items: usize,
    pub(crate) on_error: Option<ErrorHook>,
    /// retries sent, over every call
    pub(crate) retries: AtomicU64,
}

/// One call's deadline, and whether its one retry was spent.
pub(crate) struct Budget {
    deadline: Instant,
    retried: bool,
}

/// How one attempt failed.
enum Failed {
    /// refused before anything was sent: safe to try again
    Refused(Error),
    /// a 503 asking to come back after this long
    Unavailable(Duration, Error),
    /// anything else: final
    Final(Error),
}

impl Caller {
    pub(crate) fn new(config: Config) -> Result<Self, Error> {
        if config.timeout.is_zero() || config.timeout > MAX_TIMEOUT {
            return Err(Error::Config(format!(
                "the deadline is {:?}: give one from 1 ms to {MAX_TIMEOUT:?} (there is no \"no deadline\")",
                config.timeout
            )));
        }
        if let Some(token) = &config.token
            && http::HeaderValue::from_str(&format!("Bearer {token}")).is_err()
        {
            return Err(Error::Config(
                "the token is no valid header value (a trailing newline?)".to_owned(),
            ));
        }
        let (target, base) = target(&config)?;
        let connector = Connector {
            target,
            limit: config.connect_timeout.min(config.timeout),
        };
        let pool = Pool::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(5))
            .build(connector);
        Ok(Self {
            pool,
            base,
            timeout: config.timeout,
            connect_timeout: config.connect_timeout.min(config.timeout),
            token: config.token,
            max_batch_items: config.max_batch_items.max(1),
            on_error: config.on_error,
            retries: AtomicU64::new(0),
        })
    }

    /// A budget for one call: its deadline and its one retry.
    pub(crate) fn budget(&self) -> Budget {
        Budget {
            deadline: Instant::now() + self.timeout,
            retried: false,
        }
    }

    /// POSTs `body` to `path` and reads Mandate's 200 answer as JSON, as
    /// one call.
    pub(crate) async fn post(
        &self,
        path: &str,
        body: &Value,
        options: &CallOptions,
    ) -> Result<Value, Error> {
        self.post_within(path, body, options, &mut self.budget())
            .await
    }

    /// POSTs within `budget`: one request of a call that may send several
    /// (the chunks of a split batch share their call's deadline and retry).
    pub(crate) async fn post_within(
        &self,
        path: &str,
        body: &Value,
        options: &CallOptions,
        budget: &mut Budget,
    ) -> Result<Value, Error> {
        let deadline = budget.deadline;
        // An id the server would not accept (it would make up its own) is
        // replaced here, so the one sent is the one a retry repeats.
        let request_id = options
            .request_id
            .clone()
            .filter(|id| acceptable_request_id(id))
            .unwrap_or_else(new_request_id);
        let bytes =
            Bytes::from(serde_json::to_vec(body).map_err(|e| Error::Protocol(e.to_string()))?);
        let retried = &mut budget.retried;
        let attempts = async {
            loop {
                match self.attempt(path, &bytes, &request_id, options).await {
                    Ok(answer) => return Ok(answer),
                    Err(Failed::Refused(_)) if !*retried => {
                        *retried = true;
                        self.retries.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(Failed::Unavailable(wait, error)) if !*retried => {
                        // Saturating: a huge `Retry-After` is no retry, never a panic.
                        if wait >= deadline.saturating_duration_since(Instant::now()) {
                            return Err(error);
                        }
                        *retried = true;
                        self.retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(wait).await;
                    }
                    Err(
                        Failed::Refused(error)
                        | Failed::Unavailable(_, error)
                        | Failed::Final(error),
                    ) => {
                        return Err(error);
                    }
                }
            }
        };
        tokio::time::timeout_at(deadline, attempts)
            .await
            .map_err(|_| Error::Timeout(self.timeout))?
    }

    async fn attempt(
        &self,
        path: &str,
        body: &Bytes,
        request_id: &str,
        options: &CallOptions,
    ) -> Result<Value, Failed> {
        let mut request = http::Request::post(format!("{}{path}", self.base))
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .header("x-request-id", request_id);
        if let Some(token) = &self.token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        // A malformed traceparent is dropped: tracing never decides.
        if let Some(traceparent) = options
            .traceparent
            .as_deref()
            .filter(|t| valid_traceparent(t))
        {
            request = request.header("traceparent", traceparent);
        }
        let request = request
            .body(Full::new(body.clone()))
            .map_err(|e| Failed::Final(Error::Config(e.to_string())))?;
        let response = match self.pool.request(request).await {
            Ok(response) => response,
            Err(error) if error.is_connect() && caused_by(&error, std::io::ErrorKind::TimedOut) => {
                // The connect's own limit: a timeout, never retried.
                return Err(Failed::Final(Error::Timeout(self.connect_timeout)));
            }
            Err(error)
                if error.is_connect()
                    && caused_by(&error, std::io::ErrorKind::ConnectionRefused) =>
            {
                return Err(Failed::Refused(Error::Transport(chain(&error))));
            }
            Err(error) => return Err(Failed::Final(Error::Transport(chain(&error)))),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| Failed::Final(Error::Transport(e.to_string())))?
            .to_bytes();
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status == http::StatusCode::OK {
            return parsed.ok_or_else(|| {
                Failed::Final(Error::Protocol(format!(
                    "a 200 that is not JSON: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                )))
            });
        }
        let error = parsed.as_ref().and_then(|v| v.get("error"));
        let text = |key: &str| {
            error
                .and_then(|e| e.get(key))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let failure = Error::Server {
            status: status.as_u16(),
            code: text("code"),
            message: text("message"),
            field: text("field"),
        };
        match (status, retry_after) {
            (http::StatusCode::SERVICE_UNAVAILABLE, Some(wait)) => {
                Err(Failed::Unavailable(wait, failure))
            }
            _ => Err(Failed::Final(failure)),
        }
    }
}

/// The connection target and the base of every request's URI.
fn target(config: &Config) -> Result<(Target, String), Error> {
    let url = config.url.trim_end_matches('/');
    if let Some(path) = url.strip_prefix("unix:") {
        let path = path.trim_start_matches("//");
        if !path.starts_with('/') {
            return Err(Error::Config(format!(
                "`{}`: write `unix:/absolute/path.sock`",
                config.url
            )));
        }
        if config.tls.ca.is_some() || config.tls.identity.is_some() {
            return Err(Error::Config(format!(
                "`{}`: TLS settings are given, but a Unix socket speaks plain HTTP",
                config.url
            )));
        }
        return Ok((
            Target::Unix(Arc::new(path.into())),
            "http://localhost".to_owned(),
        ));
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|e| Error::Config(format!("`{}`: {e}", config.url)))?;
    let base = match (uri.scheme_str(), uri.authority()) {
        (Some(scheme @ ("http" | "https")), Some(authority)) => format!("{scheme}://{authority}"),
        _ => {
            return Err(Error::Config(format!(
                "`{}`: the URL is `http://host:port`, `https://host:port` or `unix:/path.sock`",
                config.url
            )));
        }
    };
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(Error::Config(format!(
            "`{}`: no path, only scheme, host and port",
            config.url
        )));
    }
    if uri.scheme_str() != Some("https")
        && (config.tls.ca.is_some() || config.tls.identity.is_some())
    {
        return Err(Error::Config(format!(
            "`{}`: TLS settings are given, but the URL is not `https://`",
            config.url
        )));
    }
    let target = if uri.scheme_str() == Some("https") {
        Target::Tls(tokio_rustls::TlsConnector::from(Arc::new(tls(config)?)))
    } else {
        Target::Tcp
    };
    Ok((target, base))
}

fn tls(config: &Config) -> Result<rustls::ClientConfig, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &std::path::Path, e: &dyn std::fmt::Display| {
        Error::Config(format!("`{}`: {e}", what.display()))
    };
    let certs = |path: &std::path::Path| -> Result<Vec<CertificateDer<'static>>, Error> {
        CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(path, &e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(path, &e))
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    match &config.tls.ca {
        Some(ca) => {
            for cert in certs(ca)? {
                roots.add(cert).map_err(|e| bad(ca, &e))?;
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    let builder = builder.with_root_certificates(roots);
    match &config.tls.identity {
        Some((cert, key)) => {
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
            builder
                .with_client_auth_cert(certs(cert)?, key_der)
                .map_err(|e| Error::Config(e.to_string()))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// Whether an I/O error of `kind` caused `error` (a refused connection:
/// nothing was sent, a retry is safe).
fn caused_by(error: &(dyn std::error::Error + 'static), kind: std::io::ErrorKind) -> bool {
    let mut source = Some(error);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == kind)
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// The error and its causes, one line.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A fresh `X-Request-ID`: 32 hex digits, as the server accepts.
fn new_request_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// The server's rule for an `X-Request-ID`: 1 to 128 of `[A-Za-z0-9._:-]`.
fn acceptable_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// W3C trace context: `00-<32 hex>-<16 hex>-<2 hex>` (a later version
/// starts with the same four fields).
fn valid_traceparent(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    let hex = |part: Option<&&str>, len: usize| {
        part.is_some_and(|part| {
            part.len() == len
                && part
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
    };
    hex(parts.first(), 2)
        && parts.first() != Some(&"ff")
        && hex(parts.get(1), 32)
        && hex(parts.get(2), 16)
        && hex(parts.get(3), 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_and_traceparents_are_checked_before_they_are_sent() {
        assert!(acceptable_request_id("order-7:a.b_c"));
        assert!(!acceptable_request_id(""));
        assert!(!acceptable_request_id("a b"));
        assert!(!acceptable_request_id("a\r\nX-Evil: 1"));
        assert!(!acceptable_request_id(&"a".repeat(129)));
        assert!(valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nX: y"
        ));
        assert!(!valid_traceparent("garbage"));
        assert!(!valid_traceparent(
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
    }

    #[test]
    fn a_client_that_cannot_keep_its_promises_is_refused_at_build() {
        let refused = |config: Config| matches!(Caller::new(config), Err(Error::Config(_)));
        assert!(refused(Config::default().timeout(Duration::ZERO)));
        assert!(refused(Config::default().timeout(Duration::MAX)));
        assert!(refused(Config::default().token("s3cret\n")));
        let tls = crate::Tls {
            ca: Some("ca.pem".into()),
            identity: None,
        };
        assert!(refused(Config::default().tls(tls)));
        assert!(refused(Config::default().url("unix:relative.sock")));
        assert!(refused(Config::default().url("ftp://x")));
        assert!(Caller::new(Config::default()).is_ok());
    }
}
