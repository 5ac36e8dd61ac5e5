"""What the sync and the async client share: settings, counters, the error hook."""

from __future__ import annotations

import inspect
import logging
import ssl
import threading
import time
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Dict, Mapping, Optional

import httpx

from ._config import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_BATCH_ITEMS,
    DEFAULT_TIMEOUT,
    MAX_RESPONSE_BYTES,
    Endpoint,
    ErrorHook,
    PathLike,
    check_batch_items,
    check_timeout,
    make_ssl_context,
    resolve_endpoint,
    resolve_token,
)
from ._errors import MandateError, MandateTimeoutError, ProtocolError, TransportError
from ._transport import ConnectRefused
from ._version import __version__

logger = logging.getLogger("mandate_client")


def no_cookies() -> CookieJar:
    """A jar that keeps nothing: a decision never depends on state a server set."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


class RetryBudget:
    """At most one retry per call, whatever the call sends (a batch's chunks share it)."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = 1

    def take(self) -> bool:
        if self.left > 0:
            self.left -= 1
            return True
        return False


class ClientBase:
    """Settings and counters; the I/O is in :class:`Client` and :class:`AsyncClient`."""

    def __init__(
        self,
        url: Optional[str] = None,
        *,
        token: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        ca_file: Optional[PathLike] = None,
        cert_file: Optional[PathLike] = None,
        key_file: Optional[PathLike] = None,
        key_password: Optional[str] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
        max_batch_items: int = DEFAULT_MAX_BATCH_ITEMS,
        on_error: Optional[ErrorHook] = None,
        headers: Optional[Mapping[str, str]] = None,
        max_connections: int = 100,
        max_keepalive_connections: int = 20,
        keepalive_expiry: float = 5.0,
    ) -> None:
        self._endpoint: Endpoint = resolve_endpoint(url)
        self._token = resolve_token(token)
        self._timeout = check_timeout("timeout", timeout)
        self._connect_timeout = check_timeout("connect_timeout", connect_timeout)
        self._max_batch_items = check_batch_items(max_batch_items)
        if on_error is not None and not callable(on_error):
            raise TypeError("on_error must be callable")
        self._on_error = on_error
        self._failures = 0
        self._retries = 0
        self._lock = threading.Lock()
        tls_given = any(v is not None for v in (ca_file, cert_file, key_file, ssl_context))
        if tls_given and not self._endpoint.tls:
            raise ValueError("ca_file, cert_file, key_file and ssl_context need an https:// URL")
        if ssl_context is not None and any(v is not None for v in (ca_file, cert_file, key_file)):
            raise ValueError("give either ssl_context or ca_file/cert_file/key_file, not both")
        self._ssl_context: Optional[ssl.SSLContext] = None
        if self._endpoint.tls:
            self._ssl_context = ssl_context or make_ssl_context(
                ca_file=ca_file, cert_file=cert_file, key_file=key_file, key_password=key_password
            )
        self._limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive_connections,
            keepalive_expiry=keepalive_expiry,
        )
        base_headers: Dict[str, str] = {
            "Accept": "application/json",
            "Content-Type": "application/json",
            "User-Agent": f"mandate-client-python/{__version__}",
        }
        if headers:
            for name, value in headers.items():
                if name.lower() in ("authorization", "x-request-id", "content-type"):
                    raise ValueError(f"{name} is set by the client, not through headers=")
                base_headers[name] = value
        if self._token is not None:
            base_headers["Authorization"] = f"Bearer {self._token}"
            if not self._endpoint.tls and not self._endpoint.local:
                logger.warning(
                    "mandate: the bearer token goes in clear text to %s: use https://",
                    self._endpoint.url,
                )
        self._headers = base_headers
        self._setup()

    def _setup(self) -> None:
        """Make the HTTP client (each subclass its own kind)."""
        raise NotImplementedError

    # --- what the caller sees ------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL in use (``unix:/path`` for a Unix socket)."""
        return self._endpoint.url

    @property
    def timeout(self) -> float:
        """The default total deadline of a call, in seconds."""
        return self._timeout

    @property
    def max_batch_items(self) -> int:
        return self._max_batch_items

    @property
    def failures(self) -> int:
        """How many calls ended without a decision (a policy's deny is not one)."""
        return self._failures

    @property
    def retries(self) -> int:
        """How many retries were made (refused connections, 503 with ``Retry-After``)."""
        return self._retries

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r}, timeout={self._timeout})"

    # --- shared machinery ------------------------------------------------------

    def _deadline(self, timeout: Optional[float]) -> float:
        seconds = self._timeout if timeout is None else check_timeout("timeout", timeout)
        return time.monotonic() + seconds

    def _httpx_timeout(self, deadline: float, request_id: str) -> httpx.Timeout:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise MandateTimeoutError("the call's deadline passed", request_id=request_id)
        return httpx.Timeout(
            connect=min(self._connect_timeout, remaining),
            read=remaining,
            write=remaining,
            pool=remaining,
        )

    def _headers_for(self, request_id: str, trace: Mapping[str, str]) -> Dict[str, str]:
        headers = dict(self._headers)
        headers["X-Request-ID"] = request_id
        headers.update(trace)
        return headers

    def _count_retry(self, why: str, request_id: str) -> None:
        with self._lock:
            self._retries += 1
        logger.info("mandate: retrying request %s once: %s", request_id, why)

    def _failed(self, exc: BaseException) -> None:
        """Count a call that got no decision and tell the hook."""
        with self._lock:
            self._failures += 1
        if isinstance(exc, MandateError):
            err = exc
        else:
            # A call that could not even be sent (an argument JSON cannot carry,
            # a malformed request_id): the hook still hears of it.
            err = MandateError(f"the call could not be made: {exc!r}")
            err.__cause__ = exc
        logger.debug("mandate: call failed: %s", err)
        hook = self._on_error
        if hook is not None:
            try:
                result = hook(err)
            except Exception:
                logger.exception("mandate: the on_error hook raised")
                return
            if inspect.isawaitable(result):
                # A coroutine function was given: it cannot be awaited here.
                close = getattr(result, "close", None)
                if close is not None:
                    close()
                logger.error("mandate: on_error must be a plain function, not a coroutine function")

    def _transport_error(
        self, exc: httpx.HTTPError, request_id: str, deadline: float
    ) -> MandateError:
        if isinstance(exc, httpx.TimeoutException):
            if isinstance(exc, httpx.ConnectTimeout) and time.monotonic() < deadline:
                message = (
                    f"the connect took over connect_timeout ({self._connect_timeout * 1000:g} ms)"
                )
                return MandateTimeoutError(message, request_id=request_id, phase="connect")
            message = f"the call's deadline passed ({type(exc).__name__})"
            return MandateTimeoutError(message, request_id=request_id)
        refused = refused_before_send(exc)
        detail = str(exc) or type(exc).__name__
        return TransportError(detail, request_id=request_id, refused=refused)

    @staticmethod
    def _too_large(request_id: str) -> ProtocolError:
        return ProtocolError(
            f"the answer is over {MAX_RESPONSE_BYTES} bytes", request_id=request_id
        )


def refused_before_send(exc: BaseException) -> bool:
    e: Optional[BaseException] = exc
    seen = 0
    while e is not None and seen < 16:
        if isinstance(e, ConnectRefused):
            return True
        e = e.__cause__ or e.__context__
        seen += 1
    return False
