"""The typed errors: four kinds, one base class."""

from __future__ import annotations

from typing import Optional


class MandateError(Exception):
    """Base class of every error this SDK raises for a call that got no decision.

    ``request_id`` is the ``X-Request-ID`` the call sent (and the server logged,
    if the request reached it).
    """

    def __init__(self, message: str, *, request_id: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id


class TransportError(MandateError):
    """The connection failed: refused, reset, TLS, an HTTP exchange that broke off.

    ``refused`` is true when the connection was refused before anything was sent
    (the only transport failure that is retried, once).
    """

    def __init__(
        self, message: str, *, request_id: Optional[str] = None, refused: bool = False
    ) -> None:
        super().__init__(message, request_id=request_id)
        self.refused = refused


class MandateTimeoutError(MandateError, TimeoutError):
    """The call's deadline passed, or the connect's own limit did (``phase`` is
    ``"deadline"`` or ``"connect"``). Also a builtin :class:`TimeoutError`."""

    def __init__(
        self, message: str, *, request_id: Optional[str] = None, phase: str = "deadline"
    ) -> None:
        super().__init__(message, request_id=request_id)
        self.phase = phase


class ProtocolError(MandateError):
    """A 200 that is not Mandate's answer: not JSON, no boolean ``decision``,
    a batch answer of the wrong length or in the wrong order, a malformed page."""


class ServerError(MandateError):
    """A non-200 answer: ``status``, and Mandate's ``code``, ``message`` and
    ``field`` when it sent ``{"error": {...}}`` (otherwise ``code`` and ``field``
    are ``None`` and ``message`` is the start of the body or the reason phrase).

    ``retry_after`` is the wait the server asked for, in seconds, if it sent
    ``Retry-After``.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: Optional[str] = None,
        field: Optional[str] = None,
        retry_after: Optional[float] = None,
        request_id: Optional[str] = None,
    ) -> None:
        text = f"HTTP {status}"
        if code:
            text += f" {code}"
        if field:
            text += f" ({field})"
        if message:
            text += f": {message}"
        super().__init__(text, request_id=request_id)
        self.message = message
        self.status = status
        self.code = code
        self.field = field
        self.retry_after = retry_after


__all__ = [
    "MandateError",
    "MandateTimeoutError",
    "ProtocolError",
    "ServerError",
    "TransportError",
]
