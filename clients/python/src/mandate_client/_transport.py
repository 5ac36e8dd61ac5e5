"""httpx transports whose every socket operation ends by the call's deadline.

httpx's timeouts are per operation: a read timeout of 500 ms lets a server
that sends one byte every 400 ms hold a call for as long as it likes. The
contract is one total deadline per call, so these transports put httpcore's
connection pool (the engine of httpx's own ``HTTPTransport``) on a network
backend that cuts every connect, TLS handshake, read and write at the deadline
the calling client set in a context variable. Connections are pooled and
reused as with ``httpx.HTTPTransport``; a Unix socket is the pool's ``uds``.
"""

from __future__ import annotations

import contextlib
import ssl
import time
import typing
from contextvars import ContextVar
from typing import Any, AsyncIterator, Iterable, Iterator, Optional, Type

import httpcore
import httpx

DEADLINE: ContextVar[Optional[float]] = ContextVar("mandate_client_deadline", default=None)
"""The ``time.monotonic()`` by which the current call must end, set by the clients."""

_SocketOptions = Optional[Iterable[Any]]


def _clip(timeout: Optional[float], exc: Type[Exception]) -> Optional[float]:
    deadline = DEADLINE.get()
    if deadline is None:
        return timeout
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise exc("the call's deadline passed")
    return remaining if timeout is None else min(timeout, remaining)


def is_refused(exc: BaseException) -> bool:
    """Whether the chain of ``exc`` says the connection was refused (nothing was sent)."""
    seen = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ConnectionRefusedError):
            return True
        group = getattr(e, "exceptions", None)
        # Several addresses tried (::1 and 127.0.0.1): refused only if all were.
        if (
            isinstance(group, (tuple, list))
            and group
            and all(isinstance(g, BaseException) and is_refused(g) for g in group)
        ):
            return True
        for nxt in (e.__cause__, e.__context__):
            if nxt is not None:
                todo.append(nxt)
    return False


class ConnectRefused(httpcore.ConnectError):
    """The connection was refused: the request cannot have been sent."""


# --- sync ---------------------------------------------------------------------


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: Optional[float] = None) -> bytes:
        return self._inner.read(max_bytes, _clip(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: Optional[float] = None) -> None:
        self._inner.write(buffer, _clip(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(
            ssl_context, server_hostname, _clip(timeout, httpcore.ConnectTimeout)
        )
        return _Stream(inner)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: Optional[float] = None,
        local_address: Optional[str] = None,
        socket_options: _SocketOptions = None,
    ) -> httpcore.NetworkStream:
        t = _clip(timeout, httpcore.ConnectTimeout)
        try:
            return _Stream(self._inner.connect_tcp(host, port, t, local_address, socket_options))
        except httpcore.ConnectError as exc:
            if is_refused(exc):
                raise ConnectRefused(str(exc)) from exc
            raise

    def connect_unix_socket(
        self, path: str, timeout: Optional[float] = None, socket_options: _SocketOptions = None
    ) -> httpcore.NetworkStream:
        t = _clip(timeout, httpcore.ConnectTimeout)
        try:
            return _Stream(self._inner.connect_unix_socket(path, t, socket_options))
        except httpcore.ConnectError as exc:
            if is_refused(exc):
                raise ConnectRefused(str(exc)) from exc
            raise

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


_EXCEPTIONS: list[tuple[type[Exception], type[httpx.HTTPError]]] = [
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProtocolError, httpx.ProtocolError),
]


@contextlib.contextmanager
def _mapped(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for core, mapped in _EXCEPTIONS:
            if isinstance(exc, core):
                if issubclass(mapped, httpx.TransportError):
                    raise mapped(str(exc) or type(exc).__name__, request=request) from exc
                raise mapped(str(exc) or type(exc).__name__) from exc
        raise


def _core_request(request: httpx.Request, content: Any) -> httpcore.Request:
    return httpcore.Request(
        method=request.method,
        url=httpcore.URL(
            scheme=request.url.raw_scheme,
            host=request.url.raw_host,
            port=request.url.port,
            target=request.url.raw_path,
        ),
        headers=request.headers.raw,
        content=content,
        extensions=request.extensions,
    )


class _SyncBody(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes], request: httpx.Request) -> None:
        self._stream = stream
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        with _mapped(self._request):
            yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


class SyncTransport(httpx.BaseTransport):
    """A pooled, keep-alive HTTP/1.1 transport whose I/O ends by the call's deadline."""

    def __init__(
        self, *, ssl_context: Optional[ssl.SSLContext], uds: Optional[str], limits: httpx.Limits
    ) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            uds=uds,
            network_backend=_Backend(),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not isinstance(request.stream, httpx.SyncByteStream):
            raise TypeError("the sync transport needs a sync request body")
        with _mapped(request):
            resp = self._pool.handle_request(_core_request(request, request.stream))
        if not isinstance(resp.stream, typing.Iterable):  # pragma: no cover - httpcore's contract
            raise TypeError("httpcore answered a sync request with an async body")
        return httpx.Response(
            status_code=resp.status,
            headers=resp.headers,
            stream=_SyncBody(resp.stream, request),
            extensions=resp.extensions,
        )

    def close(self) -> None:
        self._pool.close()


# --- async --------------------------------------------------------------------


class _AsyncStream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner

    # httpcore's anyio backend lets a TLS alert (ssl.SSLError) through unmapped.
    async def read(self, max_bytes: int, timeout: Optional[float] = None) -> bytes:
        t = _clip(timeout, httpcore.ReadTimeout)
        try:
            return await self._inner.read(max_bytes, t)
        except OSError as exc:
            raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc

    async def write(self, buffer: bytes, timeout: Optional[float] = None) -> None:
        t = _clip(timeout, httpcore.WriteTimeout)
        try:
            await self._inner.write(buffer, t)
        except OSError as exc:
            raise httpcore.WriteError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> httpcore.AsyncNetworkStream:
        inner = await self._inner.start_tls(
            ssl_context, server_hostname, _clip(timeout, httpcore.ConnectTimeout)
        )
        return _AsyncStream(inner)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _AsyncBackend(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        # anyio runs on asyncio and on trio alike.
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: Optional[float] = None,
        local_address: Optional[str] = None,
        socket_options: _SocketOptions = None,
    ) -> httpcore.AsyncNetworkStream:
        t = _clip(timeout, httpcore.ConnectTimeout)
        try:
            stream = await self._inner.connect_tcp(host, port, t, local_address, socket_options)
        except httpcore.ConnectError as exc:
            if is_refused(exc):
                raise ConnectRefused(str(exc)) from exc
            raise
        return _AsyncStream(stream)

    async def connect_unix_socket(
        self, path: str, timeout: Optional[float] = None, socket_options: _SocketOptions = None
    ) -> httpcore.AsyncNetworkStream:
        t = _clip(timeout, httpcore.ConnectTimeout)
        try:
            stream = await self._inner.connect_unix_socket(path, t, socket_options)
        except httpcore.ConnectError as exc:
            if is_refused(exc):
                raise ConnectRefused(str(exc)) from exc
            raise
        return _AsyncStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _AsyncBody(httpx.AsyncByteStream):
    def __init__(self, stream: typing.AsyncIterable[bytes], request: httpx.Request) -> None:
        self._stream = stream
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped(self._request):
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        aclose = getattr(self._stream, "aclose", None)
        if aclose is not None:
            await aclose()


class AsyncTransport(httpx.AsyncBaseTransport):
    """The async twin of :class:`SyncTransport`."""

    def __init__(
        self, *, ssl_context: Optional[ssl.SSLContext], uds: Optional[str], limits: httpx.Limits
    ) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            uds=uds,
            network_backend=_AsyncBackend(),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not isinstance(request.stream, httpx.AsyncByteStream):
            raise TypeError("the async transport needs an async request body")
        with _mapped(request):
            resp = await self._pool.handle_async_request(_core_request(request, request.stream))
        if not isinstance(resp.stream, typing.AsyncIterable):  # pragma: no cover
            raise TypeError("httpcore answered an async request with a sync body")
        return httpx.Response(
            status_code=resp.status,
            headers=resp.headers,
            stream=_AsyncBody(resp.stream, request),
            extensions=resp.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()
