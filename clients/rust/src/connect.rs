//! The connections: TCP, TLS over TCP, or a Unix domain socket, each
//! within the connect limit, behind hyper's pooled client.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Where connections go.
#[derive(Clone)]
pub(crate) enum Target {
    /// plain TCP to the URL's host and port
    Tcp,
    /// TLS to the URL's host and port
    Tls(TlsConnector),
    /// a Unix domain socket, whatever the URL's host
    Unix(Arc<PathBuf>),
}

/// Opens one connection to the target, within `limit`.
#[derive(Clone)]
pub(crate) struct Connector {
    pub(crate) target: Target,
    pub(crate) limit: Duration,
}

/// One open connection.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Unix(UnixStream),
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let target = self.target.clone();
        let limit = self.limit;
        Box::pin(async move {
            let within = |what| io::Error::new(io::ErrorKind::TimedOut, what);
            let stream = match target {
                Target::Unix(path) => tokio::time::timeout(limit, UnixStream::connect(&*path))
                    .await
                    .map_err(|_| within("connect timed out"))??
                    .into(),
                Target::Tcp | Target::Tls(_) => {
                    let host = uri.host().unwrap_or("127.0.0.1").trim_matches(['[', ']']);
                    let port = uri.port_u16().unwrap_or(match target {
                        Target::Tls(_) => 443,
                        _ => 80,
                    });
                    let tcp = tokio::time::timeout(limit, TcpStream::connect((host, port)))
                        .await
                        .map_err(|_| within("connect timed out"))??;
                    let _ = tcp.set_nodelay(true);
                    match target {
                        Target::Tls(connector) => {
                            let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                            Stream::Tls(Box::new(connector.connect(name, tcp).await?))
                        }
                        _ => Stream::Tcp(tcp),
                    }
                }
            };
            Ok(TokioIo::new(stream))
        })
    }
}

impl From<UnixStream> for Stream {
    fn from(stream: UnixStream) -> Self {
        Self::Unix(stream)
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
