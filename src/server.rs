//! The listeners: accept connections (plain or TLS through rustls, with
//! client certificates when configured), speak HTTP/1.1 and HTTP/2 on one
//! port through hyper-util's auto builder, bound connections, requests and
//! header reads in time and number, and drain in-flight requests on
//! shutdown.
//!
//! Knows sockets, TLS and HTTP framing; never wire formats or policies.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use tokio::sync::{Notify, Semaphore, watch};

use crate::api::{ApiError, ClientIdentity, Handler};

/// Limits and timeouts of a listener.
#[derive(Debug, Clone, Copy)]
pub struct ServerSettings {
    /// time a client has to send its request headers (and finish the TLS handshake)
    pub header_read_timeout: Duration,
    /// time in-flight requests get to finish after shutdown begins
    pub shutdown_grace_period: Duration,
    /// time one request may take
    pub request_timeout: Duration,
    /// most connections open at once
    pub max_connections: usize,
    /// time a connection may stay open with no request in flight
    pub idle_timeout: Duration,
}

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
/// gets the same protection: the connection limit, a deadline from accept
/// to the first complete request (TLS handshake, protocol detection and the
/// HTTP/2 preface included), an idle timeout, a header read timeout and a
/// request timeout.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    settings: ServerSettings,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = GracefulShutdown::new();
    // Told when shutdown begins, so that a connection with no request in
    // flight closes at once (an idle HTTP/2 client that never answers the
    // GOAWAY's PING would otherwise hold the process the whole grace period).
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
        let connection = Connection {
            handler: Arc::clone(&handler),
            builder: Arc::clone(&builder),
            graceful: graceful.watcher(),
            draining: draining.clone(),
            permit: Arc::clone(&permits).try_acquire_owned().ok(),
            settings,
            first_request_by,
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                None => connection.serve(stream, ClientIdentity::default()).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout_at(first_request_by, acceptor.accept(stream)).await;
                    match handshake {
                        Ok(Ok(stream)) => {
                            let identity = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(<[_]>::first)
                                .map(|cert| ClientIdentity(crate::tls::identities(cert)))
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
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(settings.shutdown_grace_period) => {
            tracing::warn!(grace = ?settings.shutdown_grace_period, "grace period over; closing open connections");
        }
    }
}

/// One accepted connection and what serving it needs.
struct Connection<H> {
    handler: Arc<H>,
    builder: Arc<Builder<TokioExecutor>>,
    graceful: Watcher,
    /// becomes `true` when shutdown begins
    draining: watch::Receiver<bool>,
    /// `None` when the listener is at `max_connections`: every request on
    /// this connection is then refused
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    settings: ServerSettings,
    first_request_by: tokio::time::Instant,
}

/// What a connection's requests are doing, for its deadlines: whether one
/// has arrived, how many are in flight, when the last one ended.
struct Activity {
    born: tokio::time::Instant,
    first: Notify,
    in_flight: AtomicUsize,
    /// milliseconds after `born` when the last request ended
    last_ms: AtomicU64,
}

impl Activity {
    fn began(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.first.notify_one();
    }

    fn ended(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Resolves once the connection has had no request in flight for
    /// `idle`.
    async fn idle_for(&self, idle: Duration) {
        let tick = (idle / 4).max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(tick).await;
            let last = self.born + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            if self.in_flight.load(Ordering::Relaxed) == 0 && last.elapsed() >= idle {
                return;
            }
        }
    }

    /// Resolves once shutdown has begun and no request is in flight (nor
    /// ended within the last [`FLUSH`], whose answer may still be being
    /// written): the connection can close without cutting anyone off.
    async fn drained(&self, mut draining: watch::Receiver<bool>) {
        // A sender gone without a word also means the listener is done.
        let _ = draining.wait_for(|draining| *draining).await;
        loop {
            let last = self.born + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            if self.in_flight.load(Ordering::Relaxed) == 0 && last.elapsed() >= FLUSH {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// How long after a request's answer left the handler a draining
/// connection stays open for hyper to write it out.
const FLUSH: Duration = Duration::from_millis(100);

impl<H: Handler> Connection<H> {
    async fn serve<I>(self, io: I, identity: ClientIdentity)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            handler,
            builder,
            graceful,
            draining,
            permit,
            settings,
            first_request_by,
        } = self;
        let overloaded = permit.is_none();
        let identity = Arc::new(identity);
        let activity = Arc::new(Activity {
            born: tokio::time::Instant::now(),
            first: Notify::new(),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        });
        let service_activity = Arc::clone(&activity);
        let service = service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
            let handler = Arc::clone(&handler);
            let identity = Arc::clone(&identity);
            let activity = Arc::clone(&service_activity);
            async move {
                activity.began();
                let response = if overloaded {
                    handler.refuse(&ApiError::TooManyConnections(settings.max_connections))
                } else {
                    request.extensions_mut().insert((*identity).clone());
                    tokio::time::timeout(settings.request_timeout, handler.handle(request))
                        .await
                        .unwrap_or_else(|_| {
                            handler.refuse(&ApiError::RequestTimeout(settings.request_timeout))
                        })
                };
                activity.ended();
                Ok::<_, Infallible>(response)
            }
        });
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        let connection = graceful.watch(connection.into_owned());
        tokio::pin!(connection);
        // Until the first request arrives: the accept-to-request deadline.
        let first = tokio::select! {
            result = &mut connection => Some(result),
            arrived = tokio::time::timeout_at(first_request_by, activity.first.notified()) => {
                if arrived.is_err() {
                    crate::telemetry::metrics().refusal("first_request_timeout");
                    tracing::debug!("no complete request before the deadline; closing");
                    return;
                }
                None
            }
            () = activity.drained(draining.clone()) => {
                tracing::debug!("shutting down before a request; closing");
                return;
            }
        };
        // Then: served until it ends, or closed once idle.
        let result = match first {
            Some(result) => result,
            None => tokio::select! {
                result = &mut connection => result,
                () = activity.idle_for(settings.idle_timeout) => {
                    tracing::debug!("connection idle; closing");
                    return;
                }
                () = activity.drained(draining) => {
                    tracing::debug!("shutting down with nothing in flight; closing");
                    return;
                }
            },
        };
        if let Err(error) = result {
            if error
                .downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_timeout)
            {
                crate::telemetry::metrics().refusal("header_read_timeout");
            }
            tracing::debug!(%error, "connection ended with an error");
        }
        drop(permit);
    }
}
