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
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::api::{Api, ApiError, ClientIdentity, refusal};

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

/// Serves `api` on `listener` (TLS when `tls` is given) until `shutdown`
/// resolves, then stops accepting and waits up to the grace period for open
/// connections to finish.
pub async fn serve(
    listener: TcpListener,
    api: Arc<Api>,
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
        let connection = Connection {
            api: Arc::clone(&api),
            builder: Arc::clone(&builder),
            graceful: graceful.watcher(),
            permit: Arc::clone(&permits).try_acquire_owned().ok(),
            settings,
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                None => connection.serve(stream, ClientIdentity::default()).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(settings.header_read_timeout, acceptor.accept(stream))
                            .await;
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
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(settings.shutdown_grace_period) => {
            tracing::warn!(grace = ?settings.shutdown_grace_period, "grace period over; closing open connections");
        }
    }
}

/// One accepted connection and what serving it needs.
struct Connection {
    api: Arc<Api>,
    builder: Arc<Builder<TokioExecutor>>,
    graceful: Watcher,
    /// `None` when the listener is at `max_connections`: every request on
    /// this connection is then answered 503
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    settings: ServerSettings,
}

impl Connection {
    async fn serve<I>(self, io: I, identity: ClientIdentity)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            api,
            builder,
            graceful,
            permit,
            settings,
        } = self;
        let overloaded = permit.is_none();
        let identity = Arc::new(identity);
        let service = service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
            let api = Arc::clone(&api);
            let identity = Arc::clone(&identity);
            async move {
                if overloaded {
                    let mut response =
                        refusal(&ApiError::TooManyConnections(settings.max_connections));
                    response.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                    return Ok::<_, Infallible>(response);
                }
                request.extensions_mut().insert((*identity).clone());
                let response = tokio::time::timeout(settings.request_timeout, api.handle(request))
                    .await
                    .unwrap_or_else(|_| {
                        refusal(&ApiError::RequestTimeout(settings.request_timeout))
                    });
                Ok(response)
            }
        });
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        let connection = graceful.watch(connection.into_owned());
        if let Err(error) = connection.await {
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

/// Serves Envoy's gRPC `ext_authz` on `listener` until `shutdown` resolves.
pub async fn serve_ext_authz(
    listener: TcpListener,
    service: envoy_types::ext_authz::v3::pb::AuthorizationServer<crate::api::ext_authz::ExtAuthz>,
    shutdown: impl Future<Output = ()>,
) {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let served = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    if let Err(error) = served {
        tracing::error!(%error, "the ext_authz gRPC listener stopped");
    }
}
