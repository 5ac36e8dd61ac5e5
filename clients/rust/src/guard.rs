//! A `tower` layer that guards a route: each request becomes a question
//! for Mandate, and only an allow reaches the service; a deny, a request
//! the question cannot be asked of, or any failure is a 403.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::Client;
use crate::model::Request;

type Question<B> = Arc<dyn Fn(&http::Request<B>) -> Option<Request> + Send + Sync>;

/// Wraps a service in a [`Guard`].
pub struct GuardLayer<B> {
    client: Client,
    question: Question<B>,
}

impl<B> Clone for GuardLayer<B> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            question: Arc::clone(&self.question),
        }
    }
}

impl<B> GuardLayer<B> {
    /// Asks `client` the question `question` makes of each request (`None`:
    /// it cannot be asked, a 403).
    pub fn new(
        client: Client,
        question: impl Fn(&http::Request<B>) -> Option<Request> + Send + Sync + 'static,
    ) -> Self {
        Self {
            client,
            question: Arc::new(question),
        }
    }
}

impl<S, B> tower_layer::Layer<S> for GuardLayer<B> {
    type Service = Guard<S, B>;

    fn layer(&self, inner: S) -> Self::Service {
        Guard {
            inner,
            layer: self.clone(),
        }
    }
}

/// A service reached only by requests Mandate allows.
pub struct Guard<S, B> {
    inner: S,
    layer: GuardLayer<B>,
}

impl<S: Clone, B> Clone for Guard<S, B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S, B, R> tower_service::Service<http::Request<B>> for Guard<S, B>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Send + 'static,
    R: Default,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The ready service answers this request; a fresh clone waits for
        // the next (tower's rule for services called from a future).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        // A question that panics is no question: a 403, not a crash.
        let ask = &self.layer.question;
        let question = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ask(&request)))
            .ok()
            .flatten();
        let client = self.layer.client.clone();
        Box::pin(async move {
            let allowed = match &question {
                Some(question) => client.allowed(question).await,
                None => false,
            };
            if allowed {
                inner.call(request).await
            } else {
                let mut forbidden = http::Response::new(R::default());
                *forbidden.status_mut() = http::StatusCode::FORBIDDEN;
                Ok(forbidden)
            }
        })
    }
}
