"""Servers the tests start themselves: raw-socket HTTP/1.1 stubs and a Unix-socket forwarder."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Union

Body = Union[bytes, Dict[str, Any], List[Any]]


@dataclass
class Req:
    method: str
    path: str
    headers: Dict[str, str]
    body: bytes
    peer_cert: Optional[Dict[str, Any]] = None
    connection: int = 0

    def json(self) -> Any:
        return json.loads(self.body)


def response(
    status: int = 200, body: Body = b"", headers: Optional[Dict[str, str]] = None
) -> bytes:
    """A whole HTTP/1.1 answer, keep-alive."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    reasons = {200: "OK", 400: "Bad Request", 500: "Internal Server Error", 503: "Unavailable"}
    lines = [f"HTTP/1.1 {status} {reasons.get(status, 'Status')}"]
    hdrs = {"Content-Type": "application/json", "Content-Length": str(len(data))}
    hdrs.update(headers or {})
    lines += [f"{k}: {v}" for k, v in hdrs.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


Handler = Callable[[Req], Union[bytes, Callable[[socket.socket], None], None]]
"""Answers a request: raw bytes, ``None`` to never answer, or a function that writes itself."""


class Stub:
    """An HTTP/1.1 server on 127.0.0.1 answering through ``handler``; records what it got."""

    def __init__(self, handler: Handler, *, tls: Optional[ssl.SSLContext] = None) -> None:
        self.handler = handler
        self.tls = tls
        self.requests: List[Req] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._socks: List[socket.socket] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                number = self.connections
                self._socks.append(conn)
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        peer_cert = None
        try:
            if self.tls is not None:
                conn.settimeout(5)
                conn = self.tls.wrap_socket(conn, server_side=True)
                peer_cert = conn.getpeercert()
                with self._lock:
                    self._socks.append(conn)
            conn.settimeout(None)
            buf = b""
            while not self._stop.is_set():
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length", "0"))
                while len(buf) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                body, buf = buf[:length], buf[length:]
                req = Req(method, path, headers, body, peer_cert, number)
                with self._lock:
                    self.requests.append(req)
                answer = self.handler(req)
                if answer is None:
                    self._stop.wait()  # accept, read, and never answer
                    return
                if callable(answer):
                    answer(conn)
                    return
                conn.sendall(answer)
        except (OSError, ValueError):
            return
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.close()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def __enter__(self) -> Stub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ClosedPort:
    """A port bound but not listening: every connect is refused, and nobody else gets it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> ClosedPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


ALLOW = {"decision": True, "context": {"reasons": ["stub"], "errors": []}}


def allow_all(req: Req) -> bytes:
    """Allows everything, single or batch."""
    if req.path.endswith("/evaluations"):
        return response(200, {"evaluations": [ALLOW] * len(req.json()["evaluations"])})
    return response(200, ALLOW)


def fault_handler(name: str) -> Handler:
    """The stubs that ``faults`` in cases.json name."""
    seen: Dict[str, int] = {}
    lock = threading.Lock()

    def handler(req: Req) -> Union[bytes, None]:
        if name == "silent":
            return None
        if name == "status_500":
            return response(500, {"error": {"code": "internal", "message": "stub failure"}})
        if name == "bad_json":
            return response(200, b"<html>not json</html>", {"Content-Type": "text/html"})
        if name == "bad_decision":
            return response(200, {"decision": "yes", "context": {}})
        if name == "short_batch":
            if req.path.endswith("/evaluations"):
                return response(200, {"evaluations": [ALLOW]})
            return response(200, ALLOW)
        if name == "unavailable_then_allow":
            rid = req.headers.get("x-request-id", "")
            with lock:
                seen[rid] = seen.get(rid, 0) + 1
                first = seen[rid] == 1
            if first:
                return response(
                    503,
                    {"error": {"code": "unavailable", "message": "busy"}},
                    {"Retry-After": "0"},
                )
            if req.path.endswith("/evaluations"):
                n = len(req.json().get("evaluations", []))
                return response(200, {"evaluations": [ALLOW] * n})
            return response(200, ALLOW)
        if name == "unavailable_long":
            return response(
                503, {"error": {"code": "unavailable", "message": "busy"}}, {"Retry-After": "5"}
            )
        raise AssertionError(f"no stub {name}")

    return handler


class UnixForwarder:
    """A Unix socket whose connections are piped to a TCP address (a local proxy's stand-in)."""

    def __init__(self, path: str, host: str, port: int) -> None:
        self.path = path
        self.target = (host, port)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(16)
        self.connections = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                conn.close()
                continue
            upstream.settimeout(None)
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def trickle(conn: socket.socket) -> None:
    """A server that answers one byte every 50 ms, forever: per-read timeouts never fire."""
    data = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Slow: " + b"a" * 10_000
    for byte in data:
        try:
            conn.sendall(bytes([byte]))
        except OSError:
            return
        time.sleep(0.05)
