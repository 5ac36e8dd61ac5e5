//! Mandate's client: ask the policy decision point before a sensitive
//! action, and fail closed by construction.
//!
//! [`Client::allowed`] never fails: any error, timeout or malformed answer
//! is `false`, counted ([`Client::failures`]) and passed to the
//! [`Config::on_error`] hook. [`Client::evaluate`] returns the decision with
//! its reasons, or a typed [`Error`]. Every call has one total deadline
//! (500 ms by default) and is retried at most once, only when nothing can
//! have been decided. The behaviour is the same in the Python and
//! TypeScript clients: see `clients/README.md`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mandate_client::Error> {
//! use mandate_client::{Client, Config, Entity, Request};
//! let client = Client::new(Config::from_env())?;
//! let request = Request::new(
//!     Entity::new("user", "carol"),
//!     "place_order",
//!     Entity::new("account", "alice-personal"),
//! )
//! .context(serde_json::json!({"side": "buy", "instrument": "AAPL"}));
//! if client.allowed(&request).await {
//!     // place the order
//! }
//! # Ok(())
//! # }
//! ```

mod batch;
mod call;
mod config;
mod connect;
mod error;
mod guard;
mod model;
mod search;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use batch::Semantic;
pub use config::{Config, Tls};
pub use error::Error;
pub use guard::{Guard, GuardLayer};
pub use model::{Action, Decision, Entity, Request};
pub use search::{SearchPage, Skipped};

/// A client of one Mandate server: cheap to clone, connections reused.
#[derive(Clone)]
pub struct Client {
    inner: Arc<call::Caller>,
    failures: Arc<AtomicU64>,
}

impl Client {
    /// A client with `config`.
    ///
    /// # Errors
    /// [`Error::Config`]: a URL that is not `http://`, `https://` or
    /// `unix:`, or TLS files that cannot be read.
    pub fn new(config: Config) -> Result<Self, Error> {
        Ok(Self {
            inner: Arc::new(call::Caller::new(config)?),
            failures: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Whether the request is allowed. Never fails: any error is `false`,
    /// counted and passed to the `on_error` hook. The guard for
    /// application code.
    pub async fn allowed(&self, request: &Request) -> bool {
        match self.decide(request).await {
            Ok(decision) => decision.decision,
            Err(error) => {
                self.failed(&error);
                false
            }
        }
    }

    /// The decision, with its reasons and policy version.
    ///
    /// # Errors
    /// [`Error::Transport`], [`Error::Timeout`], [`Error::Protocol`] or
    /// [`Error::Server`].
    pub async fn evaluate(&self, request: &Request) -> Result<Decision, Error> {
        let decided = self.decide(request).await;
        if let Err(error) = &decided {
            self.failed(error);
        }
        decided
    }

    async fn decide(&self, request: &Request) -> Result<Decision, Error> {
        let body = request.to_json();
        let answer = self
            .inner
            .post("/access/v1/evaluation", &body, request.call())
            .await?;
        Decision::from_answer(&answer)
    }

    /// A batch: `items` override `defaults` field by field, decided with
    /// `semantic`; split into requests of at most `max_batch_items`. One
    /// decision per item sent, in order (fewer when a short-circuit
    /// semantic stopped).
    ///
    /// # Errors
    /// As [`Client::evaluate`]; [`Error::Protocol`] for an answer of the
    /// wrong length or order.
    pub async fn evaluations(
        &self,
        defaults: &serde_json::Value,
        items: &[serde_json::Value],
        semantic: Semantic,
    ) -> Result<Vec<Decision>, Error> {
        let decided = batch::evaluations(&self.inner, defaults, items, semantic).await;
        if let Err(error) = &decided {
            self.failed(error);
        }
        decided
    }

    /// Who may do `action` on `resource`: a stream of `{type, id}`, page
    /// after page (`request`'s subject needs only a type).
    pub fn search_subjects(
        &self,
        request: &Request,
    ) -> impl futures_util::Stream<Item = Result<serde_json::Value, Error>> + use<> {
        search::results(Arc::clone(&self.inner), "subject", request)
    }

    /// What `subject` may do `action` on: a stream of `{type, id}` (the
    /// resource needs only a type).
    pub fn search_resources(
        &self,
        request: &Request,
    ) -> impl futures_util::Stream<Item = Result<serde_json::Value, Error>> + use<> {
        search::results(Arc::clone(&self.inner), "resource", request)
    }

    /// Which actions `subject` may do on `resource`, one page at a time
    /// with the actions skipped for lack of context.
    ///
    /// # Errors
    /// As [`Client::evaluate`].
    pub async fn search_actions_page(
        &self,
        request: &Request,
        token: Option<&str>,
    ) -> Result<SearchPage, Error> {
        let page = search::page(&self.inner, "action", request, token).await;
        if let Err(error) = &page {
            self.failed(error);
        }
        page
    }

    /// Which actions `subject` may do on `resource`: a stream of `{name}`.
    pub fn search_actions(
        &self,
        request: &Request,
    ) -> impl futures_util::Stream<Item = Result<serde_json::Value, Error>> + use<> {
        search::results(Arc::clone(&self.inner), "action", request)
    }

    /// How many calls got no decision (`allowed` answered `false`,
    /// `evaluate`, `evaluations` or a search page failed). A deny the
    /// policies made is no failure.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// How many retries were sent, over every call: a connection refused
    /// before anything was sent, or a 503 whose `Retry-After` fitted in
    /// the deadline. At most one per call.
    pub fn retries(&self) -> u64 {
        self.inner.retries.load(Ordering::Relaxed)
    }

    fn failed(&self, error: &Error) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if let Some(hook) = &self.inner.on_error {
            // A hook that panics must not turn a deny into a crash.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(error)));
        }
    }
}
