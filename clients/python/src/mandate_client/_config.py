"""Settings shared by both clients: where Mandate is, how to reach it, how long to wait."""

from __future__ import annotations

import ipaddress
import math
import os
import ssl
from dataclasses import dataclass
from typing import Callable, Optional, Union
from urllib.parse import urlsplit

from ._errors import MandateError

DEFAULT_URL = "http://127.0.0.1:8180"
DEFAULT_TIMEOUT = 0.5
DEFAULT_CONNECT_TIMEOUT = 0.1
DEFAULT_MAX_BATCH_ITEMS = 1000
MAX_RESPONSE_BYTES = 64 * 1024 * 1024

PathLike = Union[str, "os.PathLike[str]"]
ErrorHook = Callable[[MandateError], object]


@dataclass(frozen=True)
class Endpoint:
    """Where requests go: ``base`` is the httpx base URL, ``uds`` a Unix socket path."""

    url: str
    base: str
    uds: Optional[str]
    tls: bool

    @property
    def local(self) -> bool:
        """A Unix socket or a loopback address: nothing crosses a network."""
        if self.uds is not None:
            return True
        host = urlsplit(self.base).hostname or ""
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


def resolve_endpoint(url: Optional[str]) -> Endpoint:
    """The base URL from code, else ``MANDATE_URL``, else the sidecar default."""
    raw = url if url is not None else os.environ.get("MANDATE_URL") or DEFAULT_URL
    raw = raw.strip()
    if not raw:
        raise ValueError("the Mandate URL is empty")
    if raw.startswith("unix:"):
        path = raw[len("unix:") :]
        if path.startswith("//"):
            # unix:///run/mandate.sock, the URL form of the same path
            path = path[2:]
        if not path.startswith("/"):
            raise ValueError(f"a unix: URL needs an absolute socket path, not {raw!r}")
        # The host is only the Host header's value: the socket is the address.
        return Endpoint(url=raw, base="http://localhost", uds=path, tls=False)
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"the Mandate URL must be http://, https:// or unix:/path, not {raw!r}")
    if not parts.hostname:
        raise ValueError(f"the Mandate URL has no host: {raw!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the Mandate URL must not carry credentials: give token= instead")
    if parts.query or parts.fragment:
        raise ValueError(f"the Mandate URL must not have a query or fragment: {raw!r}")
    base = raw.rstrip("/")
    return Endpoint(url=base, base=base, uds=None, tls=parts.scheme == "https")


def resolve_token(token: Optional[str]) -> Optional[str]:
    """The bearer token from code, else ``MANDATE_TOKEN``; none when empty."""
    value = token if token is not None else os.environ.get("MANDATE_TOKEN")
    if value is None or value == "":
        return None
    if any(c in value for c in "\r\n") or value != value.strip():
        raise ValueError("the bearer token must be one line without surrounding blanks")
    return value


def check_timeout(name: str, value: float) -> float:
    """A deadline is a positive, finite number of seconds: never "no deadline"."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be a positive, finite number of seconds, not {value!r}")
    return seconds


def check_batch_items(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_batch_items must be a positive integer, not {value!r}")
    return value


def make_ssl_context(
    *,
    ca_file: Optional[PathLike],
    cert_file: Optional[PathLike],
    key_file: Optional[PathLike],
    key_password: Optional[str],
) -> ssl.SSLContext:
    """A verifying TLS context: the given CA file, else the system roots.

    A client certificate (and its key, if not in the same file) makes it mutual TLS.
    """
    if key_file is not None and cert_file is None:
        raise ValueError("key_file needs cert_file")
    if ca_file is not None:
        context = ssl.create_default_context(cafile=os.fspath(ca_file))
    else:
        context = ssl.create_default_context()
        paths = ssl.get_default_verify_paths()
        if not (paths.cafile and os.path.exists(paths.cafile)) and not (
            paths.capath and os.path.isdir(paths.capath)
        ):
            # No system roots where OpenSSL looks (some macOS and slim images):
            # fall back on certifi's, which httpx depends on.
            try:
                import certifi
            except ImportError:  # pragma: no cover - httpx installs it
                pass
            else:
                context.load_verify_locations(cafile=certifi.where())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        context.load_cert_chain(
            os.fspath(cert_file),
            keyfile=os.fspath(key_file) if key_file is not None else None,
            password=key_password,
        )
    return context
