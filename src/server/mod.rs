//! The listeners: accept connections (plain or TLS through rustls, with
//! client certificates when configured), speak HTTP/1.1 and HTTP/2 on one
//! port through hyper-util's auto builder, bound connections, requests,
//! HTTP/2 streams and header reads in time and number (at the connection
//! cap, the connection idle longest makes way: `tenants.rs`), close idle
//! connections (GOAWAY on HTTP/2), and drain in-flight requests on
//! shutdown.
//!
//! Knows sockets, TLS and HTTP framing; never wire formats or policies.

mod heard;
mod tenants;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use heard::Heard;
use tenants::{Activity, Close, Tenants};

use crate::api::{ApiError, ClientIdentity, Handler};

/// Limits and timeouts of a listener.
#[derive(Debug, Clone, Copy)]
pub struct ServerSettings {
    /// time a client has to send its request headers (and finish the TLS
    /// handshake), from accept or from the last answer; after the first
    /// request, kept by the connection's watchdog with its idle limit
    pub header_read_timeout: Duration,
    /// time in-flight requests get to finish after shutdown begins
    pub shutdown_grace_period: Duration,
    /// time one request may take
    pub request_timeout: Duration,
    /// most connections open at once
    pub max_connections: usize,
    /// time a connection may stay open with no request in flight (never
    /// longer than `header_read_timeout`, HTTP/1.1's wait for the next
    /// request, so HTTP/2 is closed as promptly)
    pub idle_timeout: Duration,
}

/// Most requests in flight at once on one HTTP/2 connection (hyper's
/// default, said here): each is bounded in time, so this bounds a
/// connection's work.
const MAX_STREAMS: u32 = 200;

/// Streams a client may cancel before the server has taken them up, past
/// which the connection is closed (GOAWAY `ENHANCE_YOUR_CALM`): opening
/// and cancelling streams as fast as possible (rapid reset,
/// CVE-2023-44487) costs the server work the stream limit never sees. A
/// real client cancels a handful; h2's own default, said here.
const MAX_CANCELLED_STREAMS: usize = 20;

/// Streams the server may reset because the client broke the protocol on
/// them, past which the connection is closed (GOAWAY `ENHANCE_YOUR_CALM`):
/// a client making the server reset streams (CVE-2025-8671) is rapid reset
/// by another door. A correct client causes none; hyper allows 1,024.
const MAX_ERROR_RESET_STREAMS: usize = 64;

/// Why a listener could not start.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ServerError {
    /// The address could not be bound.
    #[error("cannot listen on `{addr}`: {source}")]
    #[diagnostic(help("choose a free port with `--listen ADDR:PORT`"))]
    Bind {
        /// the address
        addr: SocketAddr,
        /// why
        source: std::io::Error,
    },
}

/// Binds `addr`.
///
/// # Errors
/// [`ServerError::Bind`] when the address is taken or not ours.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Serves `handler` on `listener` (TLS when `tls` is given) until
/// `shutdown` resolves, then stops accepting and waits up to the grace
/// period for open connections to finish. Every listener, HTTP or gRPC,
/// gets the same protection: the connection limit (at which the connection
/// idle longest makes way for a new one), a deadline from accept to the
/// first complete request (TLS handshake, protocol detection and the
/// HTTP/2 preface included), an idle timeout, a header read timeout, a
/// request timeout and HTTP/2's stream and reset limits.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    settings: ServerSettings,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    // HTTP/1.1's header read timeout is kept by each connection's watchdog
    // (its idle limit is never longer), not by a timer hyper would set and
    // clear on every request. No `half_close`: hyper then reads while a
    // request is decided, to learn that its client has gone and cancel it
    // (a read that costs the connection a new 8 KiB buffer per request,
    // BENCHMARKS.md, issue 35; an abandoned request would otherwise hold
    // its connection until the request timeout).
    builder.http1().header_read_timeout(None).keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_pending_accept_reset_streams(MAX_CANCELLED_STREAMS)
        .max_local_error_reset_streams(MAX_ERROR_RESET_STREAMS);
    let builder = Arc::new(builder);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let tenants = Arc::new(Tenants::default());
    // Told when shutdown begins, so that a connection with no request in
    // flight closes at once (an idle HTTP/2 client that never answers the
    // GOAWAY's PING would otherwise hold the process the whole grace
    // period). Every connection holds a receiver until it ends, so the
    // sender sees them all gone once every connection is closed.
    let (drain, draining) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                // Per-connection errors (reset before accept) are the peer's
                // business; others (out of file descriptors) pass with time.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // The first request must be complete by then, handshake included.
        let first_request_by = tokio::time::Instant::now() + settings.header_read_timeout;
        // At the cap, the connection idle longest makes way: it is closed
        // (a GOAWAY on HTTP/2) and its permit passes to this one.
        let admission = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => Admission::Admitted(permit),
            Err(_) if tenants.evict_idlest() => Admission::Waiting(Arc::clone(&permits)),
            Err(_) => Admission::Refused,
        };
        let connection = Connection {
            handler: Arc::clone(&handler),
            builder: Arc::clone(&builder),
            tenants: Arc::clone(&tenants),
            draining: draining.clone(),
            permit: None,
            settings,
            first_request_by,
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            // Before its first request a connection holds nothing: shutdown
            // drops it at once, waiting for a permit or mid-handshake.
            let stop = Activity::shutdown_began(connection.draining.clone());
            tokio::pin!(stop);
            let connection = tokio::select! {
                connection = connection.admitted(admission) => connection,
                () = &mut stop => return,
            };
            match acceptor {
                None => connection.serve(stream, ClientIdentity::default()).await,
                Some(acceptor) => {
                    let handshake = tokio::select! {
                        handshake = tokio::time::timeout_at(first_request_by, acceptor.accept(stream)) => handshake,
                        () = &mut stop => return,
                    };
                    match handshake {
                        Ok(Ok(stream)) => {
                            let identity = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(<[_]>::first)
                                .map(|cert| ClientIdentity(crate::support::tls::identities(cert)))
                                .unwrap_or_default();
                            connection.serve(stream, identity).await;
                        }
                        Ok(Err(error)) => {
                            crate::telemetry::metrics().refusal("tls_handshake_failed");
                            tracing::debug!(%error, "TLS handshake failed");
                        }
                        Err(_) => {
                            crate::telemetry::metrics().refusal("tls_handshake_timeout");
                            tracing::debug!("TLS handshake timed out");
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = drain.send(true);
    drop(draining);
    tokio::select! {
        () = drain.closed() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(settings.shutdown_grace_period) => {
            tracing::warn!(grace = ?settings.shutdown_grace_period, "grace period over; closing open connections");
        }
    }
}

/// What a new connection gets of the connection limit.
enum Admission {
    /// a permit, free at accept
    Admitted(OwnedSemaphorePermit),
    /// an idle connection was told to make way: its permit comes soon
    Waiting(Arc<Semaphore>),
    /// nothing: every request on this connection is refused
    Refused,
}

/// One accepted connection and what serving it needs.
struct Connection<H> {
    handler: Arc<H>,
    builder: Arc<Builder<TokioExecutor>>,
    /// the listener's connections that may be asked to make way
    tenants: Arc<Tenants>,
    /// becomes `true` when shutdown begins
    draining: watch::Receiver<bool>,
    /// `None` when the listener is at `max_connections`: every request on
    /// this connection is then refused
    permit: Option<OwnedSemaphorePermit>,
    settings: ServerSettings,
    first_request_by: tokio::time::Instant,
}

/// How long after a request's answer left the handler a closing
/// connection stays open for hyper to write it out (and the GOAWAY).
const FLUSH: Duration = Duration::from_millis(100);

impl<H: Handler> Connection<H> {
    /// Takes the permit `admission` gives: one made free by an idle
    /// connection comes within the first-request deadline, or never.
    async fn admitted(mut self, admission: Admission) -> Self {
        self.permit = match admission {
            Admission::Admitted(permit) => Some(permit),
            Admission::Waiting(permits) => {
                tokio::time::timeout_at(self.first_request_by, permits.acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            Admission::Refused => None,
        };
        self
    }

    async fn serve<I>(self, io: I, identity: ClientIdentity)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            handler,
            builder,
            tenants,
            draining,
            permit,
            settings,
            first_request_by,
        } = self;
        let overloaded = permit.is_none();
        let identity = Arc::new(identity);
        let activity = Arc::new(Activity::new());
        // Only a connection holding a permit can make way for another.
        let _tenancy = (!overloaded).then(|| tenants.register(&activity));
        let service_activity = Arc::clone(&activity);
        let service = service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
            let handler = Arc::clone(&handler);
            let identity = Arc::clone(&identity);
            let activity = Arc::clone(&service_activity);
            async move {
                let in_flight = activity.begin(request.version() <= http::Version::HTTP_11);
                let response = if overloaded {
                    handler.refuse(&ApiError::TooManyConnections(settings.max_connections))
                } else {
                    // No identity is told as none: nothing to insert.
                    if !identity.0.is_empty() {
                        request.extensions_mut().insert((*identity).clone());
                    }
                    // Boxed where it is made: passed on and polled in place,
                    // the handler's future (most of a kilobyte) would be
                    // copied whole at each step.
                    let handling = Box::pin(handler.handle(request));
                    answer_within(settings.request_timeout, handling, || {
                        handler.refuse(&ApiError::RequestTimeout(settings.request_timeout))
                    })
                    .await
                };
                drop(in_flight);
                Ok::<_, Infallible>(response)
            }
        });
        // Without upgrades: nothing here answers `101 Switching Protocols`, and
        // hyper would attach an upgrade handle (three allocations) to every
        // request.
        let io = TokioIo::new(Heard::new(io, Arc::clone(&activity)));
        let connection = builder.serve_connection(io, service);
        tokio::pin!(connection);
        // Until the first request arrives: the accept-to-request deadline.
        // A request that has begun is never dropped: shutdown then goes the
        // closing way below, which lets it finish.
        let first = tokio::select! {
            biased;
            result = &mut connection => First::Ended(result),
            arrived = tokio::time::timeout_at(first_request_by, activity.first_request()) => {
                if arrived.is_err() {
                    crate::telemetry::metrics().refusal("first_request_timeout");
                    tracing::debug!("no complete request before the deadline; closing");
                    return;
                }
                First::Arrived
            }
            () = Activity::shutdown_began(draining.clone()) => {
                tracing::debug!("shutting down before a request; closing");
                First::Closing
            }
        };
        // Then: served until it ends, or closed once idle, told to make
        // way, or shutting down. The listener waits for every connection's
        // `draining` to be dropped: it is held until the closing is done.
        let idle = settings.idle_timeout.min(settings.header_read_timeout);
        let ended = match first {
            First::Ended(result) => Some(result),
            First::Closing => None,
            First::Arrived => {
                // The three reasons to close are watched by a task of their
                // own, which wakes only for them: in this `select!` they
                // would be polled (two of them under a lock) every time the
                // connection wakes, twice a request.
                let (close, closing) = tokio::sync::oneshot::channel();
                let watchdog = tokio::spawn(Activity::why_close(
                    Arc::clone(&activity),
                    idle,
                    draining.clone(),
                    close,
                ));
                let ended = tokio::select! {
                    result = &mut connection => Some(result),
                    why = closing => {
                        if why == Ok(Close::SlowHead) {
                            crate::telemetry::metrics().refusal("header_read_timeout");
                        }
                        tracing::debug!(why = why.map_or("watchdog gone", Close::why), "closing");
                        None
                    }
                };
                watchdog.abort();
                ended
            }
        };
        // Closing: the GOAWAY sent, in-flight requests finish, then the
        // socket closes (an HTTP/2 client that never answers the GOAWAY's
        // PING would otherwise keep it open).
        let result = match ended {
            Some(result) => Some(result),
            None => {
                // HTTP/2 is told with a GOAWAY, HTTP/1.1 closes after the
                // answer being written.
                connection.as_mut().graceful_shutdown();
                let began = tokio::time::Instant::now();
                tokio::select! {
                    biased;
                    result = &mut connection => Some(result),
                    () = activity.quiet_since(began, FLUSH) => None,
                }
            }
        };
        if let Some(Err(error)) = result {
            tracing::debug!(%error, "connection ended with an error");
        }
        drop(permit);
        drop(draining);
    }
}

/// `handling`'s output, or `timed_out`'s once `limit` has passed since it
/// began. The future is polled in place, and the deadline armed only when
/// it first waits: a request answered at once (most are) makes no timer,
/// and is never moved into one. Either way the limit counts from its
/// start, and is found at a wait or a yield, as a timeout's is.
async fn answer_within<F: Future>(
    limit: Duration,
    handling: F,
    timed_out: impl FnOnce() -> F::Output,
) -> F::Output {
    let started = tokio::time::Instant::now();
    let mut handling = std::pin::pin!(handling);
    let mut deadline = std::pin::pin!(None::<tokio::time::Sleep>);
    let mut timed_out = Some(timed_out);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = handling.as_mut().poll(cx) {
            return Poll::Ready(output);
        }
        if deadline.is_none() {
            // A limit too far to count is none.
            if let Some(at) = started.checked_add(limit) {
                deadline.set(Some(tokio::time::sleep_until(at)));
            }
        }
        let expired = deadline
            .as_mut()
            .as_pin_mut()
            .is_some_and(|sleep| sleep.poll(cx).is_ready());
        if expired && let Some(timed_out) = timed_out.take() {
            return Poll::Ready(timed_out());
        }
        Poll::Pending
    })
    .await
}

/// How a connection's first phase ended.
enum First<E> {
    /// the connection ended by itself
    Ended(Result<(), E>),
    /// a request arrived: serve on
    Arrived,
    /// shutdown began first: close, letting a request in flight finish
    Closing,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    /// What `work` answers within a 3 s limit from now, and when.
    async fn within_3s(work: impl Future<Output = &'static str>) -> (&'static str, Duration) {
        let started = Instant::now();
        let answer = answer_within(Duration::from_secs(3), work, || "timed out").await;
        (answer, started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_is_answered_or_timed_out_at_its_limit_from_its_start() {
        // Answered at once: no timer, the answer.
        assert_eq!(within_3s(async { "answered" }).await.0, "answered");
        // Answered after waits within the limit.
        let waits = async {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            "answered"
        };
        assert_eq!(within_3s(waits).await, ("answered", Duration::from_secs(2)));
        // Waiting past it: timed out at the limit, counted from the start.
        let stuck = async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            "answered"
        };
        assert_eq!(
            within_3s(stuck).await,
            ("timed out", Duration::from_secs(3))
        );
        // A limit too far to count is none: the answer, whenever it comes.
        let late = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "answered"
        };
        let answer = answer_within(Duration::MAX, late, || "timed out");
        assert_eq!(answer.await, "answered");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_yields_gives_the_worker_back_at_its_first_yield() {
        // The first yield returns to the runtime: a task spawned before
        // runs between the request's two halves.
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let other = {
            let order = Arc::clone(&order);
            tokio::spawn(async move { order.lock().unwrap().push("other") })
        };
        let work = {
            let order = Arc::clone(&order);
            async move {
                order.lock().unwrap().push("first half");
                tokio::task::yield_now().await;
                order.lock().unwrap().push("second half");
                "answered"
            }
        };
        assert_eq!(within_3s(work).await.0, "answered");
        other.await.unwrap();
        assert_eq!(
            *order.lock().unwrap(),
            ["first half", "other", "second half"]
        );
    }
}
