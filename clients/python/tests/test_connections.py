"""Connections and headers: Unix socket, keep-alive, token, X-Request-ID, traceparent, env."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from typing import Iterator, List

import pytest

from conftest import REAL_TIMEOUT, MakeDriver, MandateServer
from mandate_client import Client, MandateError, TransportError
from stubs import ALLOW, Stub, UnixForwarder, allow_all, response

CAROL = {"type": "user", "id": "carol"}
ACCOUNT = {"type": "account", "id": "alice-personal"}
BUY = {"side": "buy", "instrument": "AAPL"}


@pytest.fixture
def allow_stub() -> Iterator[Stub]:
    with Stub(allow_all) as stub:
        yield stub


@pytest.fixture
def short_dir() -> Iterator[str]:
    # A Unix socket path must stay under ~100 bytes: pytest's tmp_path may not.
    d = tempfile.mkdtemp(prefix="mdt", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_unix_socket(mandate: MandateServer, make: MakeDriver, short_dir: str) -> None:
    path = os.path.join(short_dir, "mandate.sock")
    fwd = UnixForwarder(path, mandate.host, mandate.port)
    try:
        for url in (f"unix:{path}", f"unix://{path}"):
            client = make(url, timeout=REAL_TIMEOUT)
            assert client.client.url == url
            decision = client.evaluate(CAROL, "place_order", ACCOUNT, BUY)
            assert decision.decision is True
            assert decision.reasons == ["S2"]
            assert (
                client.allowed({"type": "user", "id": "bob"}, "place_order", ACCOUNT, BUY) is False
            )
            results, _ = client.search("action", CAROL, ACCOUNT, BUY, page_size=1)
            assert [r["name"] for r in results] == ["cancel_order", "place_order", "view_account"]
        assert fwd.connections == 2, "one kept-alive connection per client"
    finally:
        fwd.close()


def test_unix_socket_refused_is_retried_once(make: MakeDriver, short_dir: str) -> None:
    path = os.path.join(short_dir, "dead.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)  # bound, never listening: connect is refused
    try:
        client = make(f"unix:{path}")
        with pytest.raises(TransportError) as info:
            client.evaluate(CAROL, "place_order", ACCOUNT, BUY)
        assert info.value.refused
        assert client.retries == 1
    finally:
        s.close()


def test_a_missing_unix_socket_is_not_retried(make: MakeDriver, short_dir: str) -> None:
    client = make(f"unix:{short_dir}/none.sock")
    with pytest.raises(TransportError) as info:
        client.evaluate(CAROL, "place_order", ACCOUNT, BUY)
    assert not info.value.refused
    assert client.retries == 0


def test_connections_are_reused(allow_stub: Stub, make: MakeDriver) -> None:
    client = make(allow_stub.url)
    for _ in range(5):
        assert client.allowed(CAROL, "place_order", ACCOUNT, BUY)
    client.evaluations([{"action": "a"}], subject=CAROL, resource=ACCOUNT)
    assert allow_stub.connections == 1
    assert len(allow_stub.requests) == 6


def test_bearer_token_and_headers(allow_stub: Stub, make: MakeDriver) -> None:
    client = make(allow_stub.url, token="s3cr3t")
    client.evaluate(CAROL, "place_order", ACCOUNT, BUY)
    req = allow_stub.requests[-1]
    assert req.method == "POST"
    assert req.path == "/access/v1/evaluation"
    assert req.headers["authorization"] == "Bearer s3cr3t"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["user-agent"].startswith("mandate-client-python/")
    assert req.json() == {
        "subject": CAROL,
        "action": {"name": "place_order"},
        "resource": ACCOUNT,
        "context": BUY,
    }


def test_no_token_no_authorization(allow_stub: Stub, make: MakeDriver) -> None:
    make(allow_stub.url).evaluate(CAROL, "place_order", ACCOUNT)
    assert "authorization" not in allow_stub.requests[-1].headers
    assert "context" not in allow_stub.requests[-1].json()


def test_mandate_url_and_token_from_the_environment(
    allow_stub: Stub, make: MakeDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MANDATE_URL", allow_stub.url + "/")
    monkeypatch.setenv("MANDATE_TOKEN", "from-env")
    client = make(None)
    assert client.client.url == allow_stub.url
    assert client.allowed(CAROL, "place_order", ACCOUNT, BUY) is True
    assert allow_stub.requests[-1].headers["authorization"] == "Bearer from-env"
    # Code wins over the environment.
    make(allow_stub.url, token="from-code").evaluate(CAROL, "place_order", ACCOUNT)
    assert allow_stub.requests[-1].headers["authorization"] == "Bearer from-code"


def test_the_default_url_is_the_sidecar() -> None:
    with Client() as client:
        assert client.url == "http://127.0.0.1:8180"
        assert client.timeout == 0.5


def test_a_path_prefix_is_kept(make: MakeDriver) -> None:
    with Stub(lambda req: response(200, ALLOW)) as stub:
        make(stub.url + "/pdp/").evaluate(CAROL, "place_order", ACCOUNT)
        assert stub.requests[-1].path == "/pdp/access/v1/evaluation"


def test_the_callers_request_id_is_sent(allow_stub: Stub, make: MakeDriver) -> None:
    client = make(allow_stub.url)
    decision = client.evaluate(CAROL, "place_order", ACCOUNT, request_id="req-42:a.b_c")
    assert allow_stub.requests[-1].headers["x-request-id"] == "req-42:a.b_c"
    assert decision.request_id == "req-42:a.b_c"
    client.evaluate(CAROL, "place_order", ACCOUNT)
    fresh = allow_stub.requests[-1].headers["x-request-id"]
    assert fresh != "req-42:a.b_c"
    assert len(fresh) <= 128
    assert all(c.isalnum() or c in "._:-" for c in fresh)


@pytest.mark.parametrize("bad", ["", "has space", "x" * 129, "semi;colon", "ünï"])
def test_a_request_id_mandate_would_not_echo_is_refused(
    bad: str, allow_stub: Stub, make: MakeDriver
) -> None:
    hooked: List[MandateError] = []
    client = make(allow_stub.url, on_error=hooked.append)
    with pytest.raises(ValueError, match="request_id"):
        client.evaluate(CAROL, "place_order", ACCOUNT, request_id=bad)
    assert client.allowed(CAROL, "place_order", ACCOUNT, request_id=bad) is False
    assert client.failures == 2
    assert len(hooked) == 2
    assert all(isinstance(e, MandateError) for e in hooked)
    assert allow_stub.requests == []


def test_the_request_id_of_a_real_answer(mandate: MandateServer, make: MakeDriver) -> None:
    decision = make(mandate.url, timeout=REAL_TIMEOUT).evaluate(
        CAROL, "place_order", ACCOUNT, BUY, request_id="abc-123"
    )
    assert decision.request_id == "abc-123"


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_traceparent_per_call(allow_stub: Stub, make: MakeDriver) -> None:
    client = make(allow_stub.url)
    client.evaluate(CAROL, "place_order", ACCOUNT, traceparent=TRACEPARENT)
    assert allow_stub.requests[-1].headers["traceparent"] == TRACEPARENT
    client.evaluations([{"action": "a"}], subject=CAROL, resource=ACCOUNT, traceparent=TRACEPARENT)
    assert allow_stub.requests[-1].headers["traceparent"] == TRACEPARENT
    client.evaluate(CAROL, "place_order", ACCOUNT)
    assert "traceparent" not in allow_stub.requests[-1].headers


@pytest.mark.parametrize(
    "bad",
    [
        "garbage",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\nX-Evil: 1",
    ],
)
def test_a_malformed_traceparent_is_dropped_not_fatal(
    bad: str, allow_stub: Stub, make: MakeDriver
) -> None:
    client = make(allow_stub.url)
    assert client.allowed(CAROL, "place_order", ACCOUNT, traceparent=bad) is True
    assert "traceparent" not in allow_stub.requests[-1].headers
    assert client.failures == 0


def test_traceparent_from_opentelemetry(allow_stub: Stub, make: MakeDriver) -> None:
    trace = pytest.importorskip("opentelemetry.trace")
    span_context = trace.SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=False,
        trace_flags=trace.TraceFlags(1),
    )
    client = make(allow_stub.url)
    with trace.use_span(trace.NonRecordingSpan(span_context)):
        client.evaluate(CAROL, "place_order", ACCOUNT)
        assert allow_stub.requests[-1].headers["traceparent"] == TRACEPARENT
        # The caller's own wins over the current span.
        other = "00-11111111111111111111111111111111-2222222222222222-00"
        client.evaluate(CAROL, "place_order", ACCOUNT, traceparent=other)
        assert allow_stub.requests[-1].headers["traceparent"] == other
    client.evaluate(CAROL, "place_order", ACCOUNT)
    assert "traceparent" not in allow_stub.requests[-1].headers, "no current span, no header"
