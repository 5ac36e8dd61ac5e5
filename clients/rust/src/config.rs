//! How a client reaches Mandate: where, how long it waits, with what
//! credentials. From code, or from `MANDATE_URL` and `MANDATE_TOKEN`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;

/// The default base URL: the sidecar on loopback.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8180";

/// A hook told of every failure `allowed` turned into `false`.
pub type ErrorHook = Arc<dyn Fn(&Error) + Send + Sync>;

/// TLS beyond the system roots: a CA, and a client certificate for mTLS.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// PEM CA certificates to trust instead of the system roots
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain and key, for mutual TLS
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// A client's configuration.
#[derive(Clone)]
pub struct Config {
    /// `http://host:port`, `https://host:port` or `unix:/path/to.sock`
    pub url: String,
    /// One total deadline per call, retries included (500 ms: a decision
    /// takes well under a millisecond, and a stalled PDP must not pin the
    /// caller's workers; see `clients/README.md`).
    pub timeout: Duration,
    /// The connect's own limit, inside the deadline.
    pub connect_timeout: Duration,
    /// `Authorization: Bearer` token.
    pub token: Option<String>,
    /// TLS settings, for `https://`.
    pub tls: Tls,
    /// Most items in one batch request (the server's
    /// `server.max_batch_items`).
    pub max_batch_items: usize,
    /// Told of every failure `allowed` answers `false` for.
    pub on_error: Option<ErrorHook>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            url: DEFAULT_URL.to_owned(),
            timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(100),
            token: None,
            tls: Tls::default(),
            max_batch_items: 1000,
            on_error: None,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .field("max_batch_items", &self.max_batch_items)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// The defaults, with `MANDATE_URL` and `MANDATE_TOKEN` when set.
    pub fn from_env() -> Self {
        let mut config = Self::default();
        if let Some(url) = std::env::var("MANDATE_URL").ok().filter(|u| !u.is_empty()) {
            config.url = url;
        }
        config.token = std::env::var("MANDATE_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        config
    }

    /// At `url`.
    #[must_use]
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// With a total deadline per call.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// With the connect's own limit (inside the deadline).
    #[must_use]
    pub fn connect_timeout(mut self, limit: Duration) -> Self {
        self.connect_timeout = limit;
        self
    }

    /// With a bearer token.
    #[must_use]
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// With TLS settings.
    #[must_use]
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = tls;
        self
    }

    /// With batches split at `items`.
    #[must_use]
    pub fn max_batch_items(mut self, items: usize) -> Self {
        self.max_batch_items = items.max(1);
        self
    }

    /// Told of every failure `allowed` answers `false` for.
    #[must_use]
    pub fn on_error(mut self, hook: impl Fn(&Error) + Send + Sync + 'static) -> Self {
        self.on_error = Some(Arc::new(hook));
        self
    }
}
