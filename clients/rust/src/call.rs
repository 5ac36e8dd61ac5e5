//! One call: a POST with one total deadline, retried at most once and only
//! when nothing can have been decided (a connection refused before the
//! request was sent, a 503 whose `Retry-After` fits in the deadline), with
//! the same `X-Request-ID`.

use std::sync::Arc;
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
    token: Option<String>,
    pub(crate) max_batch_items: usize,
    pub(crate) on_error: Option<ErrorHook>,
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
        let (target, base) = target(&config)?;
        let connector = Connector {
            target,
            limit: config.connect_timeout.min(config.timeout),
        };
        let pool = Pool::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self {
            pool,
            base,
            timeout: config.timeout,
            token: config.token,
            max_batch_items: config.max_batch_items.max(1),
            on_error: config.on_error,
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
        let request_id = options.request_id.clone().unwrap_or_else(new_request_id);
        let bytes =
            Bytes::from(serde_json::to_vec(body).map_err(|e| Error::Protocol(e.to_string()))?);
        let retried = &mut budget.retried;
        let attempts = async {
            loop {
                match self.attempt(path, &bytes, &request_id, options).await {
                    Ok(answer) => return Ok(answer),
                    Err(Failed::Refused(_)) if !*retried => *retried = true,
                    Err(Failed::Unavailable(wait, error)) if !*retried => {
                        if Instant::now() + wait >= deadline {
                            return Err(error);
                        }
                        *retried = true;
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
        if let Some(traceparent) = &options.traceparent {
            request = request.header("traceparent", traceparent);
        }
        let request = request
            .body(Full::new(body.clone()))
            .map_err(|e| Failed::Final(Error::Config(e.to_string())))?;
        let response = match self.pool.request(request).await {
            Ok(response) => response,
            Err(error) if error.is_connect() && refused(&error) => {
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

/// Whether the connection was refused: nothing was sent, a retry is safe.
fn refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
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
