//! The listener: accept connections, speak HTTP/1.1 and HTTP/2 (h2c) on one
//! port through hyper-util's auto builder, cut off slow-header clients, and
//! drain in-flight requests on shutdown.
//!
//! Knows sockets and HTTP framing, never wire formats or policies.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::api::Api;

/// Timeouts of the listener.
#[derive(Debug, Clone, Copy)]
pub struct ServerSettings {
    /// time a client has to send its request headers
    pub header_read_timeout: Duration,
    /// time in-flight requests get to finish after shutdown begins
    pub shutdown_grace_period: Duration,
}

/// Why the server stopped abnormally.
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

/// Binds `addr`.
///
/// # Errors
/// [`ServerError::Bind`] when the address is taken or not ours.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Serves `api` on `listener` until `shutdown` resolves, then stops accepting
/// and waits up to the grace period for open connections to finish.
pub async fn serve(
    listener: TcpListener,
    api: Arc<Api>,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
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
        let api = Arc::clone(&api);
        let service = service_fn(move |request| {
            let api = Arc::clone(&api);
            async move { Ok::<_, Infallible>(api.handle(request).await) }
        });
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
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
