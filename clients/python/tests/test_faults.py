"""cases.json's faults against stubs: fail closed, in time, with the named error."""

from __future__ import annotations

import time
from typing import Any, Dict, Iterator, Union

import pytest

from conftest import CASES, MakeDriver, timed
from mandate_client import (
    MandateError,
    MandateTimeoutError,
    ProtocolError,
    ServerError,
    TransportError,
)
from stubs import ClosedPort, Stub, fault_handler, trickle

ERRORS = {
    "transport": TransportError,
    "timeout": MandateTimeoutError,
    "protocol": ProtocolError,
    "server": ServerError,
}
DEADLINE = 0.5  # the default
SLACK = 0.1  # the contract's "within the deadline (plus 100 ms)"

SUBJECT = {"type": "user", "id": "carol"}
RESOURCE = {"type": "account", "id": "alice-personal"}
CONTEXT = {"side": "buy", "instrument": "AAPL"}
ARGS = (SUBJECT, "place_order", RESOURCE, CONTEXT)


@pytest.fixture
def fault(request: pytest.FixtureRequest) -> Iterator[Union[Stub, ClosedPort]]:
    case = request.param
    server: Union[Stub, ClosedPort]
    server = ClosedPort() if case["stub"] == "closed_port" else Stub(fault_handler(case["stub"]))
    yield server
    server.close()


@pytest.mark.parametrize(
    ("case", "fault"),
    [(c, c) for c in CASES["faults"]],
    ids=[c["name"] for c in CASES["faults"]],
    indirect=["fault"],
)
def test_fault(case: Dict[str, Any], fault: Union[Stub, ClosedPort], make: MakeDriver) -> None:
    hooked: list[MandateError] = []
    client = make(fault.url, on_error=hooked.append)
    calls = 0  # HTTP exchanges the client meant to make (without retries)
    expected_failures = 0

    if "allowed" in case:
        allowed, took = timed(lambda: client.allowed(*ARGS))
        calls += 1
        assert allowed is case["allowed"]
        assert took < DEADLINE + SLACK, f"allowed took {took:.3f}s"
        if not case["allowed"]:
            expected_failures += 1
            assert len(hooked) == expected_failures
            assert isinstance(hooked[-1], ERRORS[case["evaluate_raises"]])

    if "evaluate_raises" in case:
        error = ERRORS[case["evaluate_raises"]]
        start = time.monotonic()
        with pytest.raises(error) as info:
            client.evaluate(*ARGS)
        took = time.monotonic() - start
        assert took < DEADLINE + SLACK, f"evaluate took {took:.3f}s"
        calls += 1
        expected_failures += 1
        err = info.value
        assert isinstance(err, MandateError)
        assert err.request_id
        if "status" in case:
            assert isinstance(err, ServerError)
            assert err.status == case["status"]
        if "code" in case:
            assert isinstance(err, ServerError)
            assert err.code == case["code"]
        if case["stub"] == "unavailable_long":
            assert isinstance(err, ServerError)
            assert err.retry_after == case["retry_after_seconds"]
        if case["evaluate_raises"] == "timeout":
            assert isinstance(err, MandateTimeoutError)
            assert isinstance(err, TimeoutError), "MandateTimeoutError is a TimeoutError"
            assert err.phase == "deadline"
        if case["evaluate_raises"] == "transport":
            assert isinstance(err, TransportError)
            assert err.refused is (case["stub"] == "closed_port")

    if "evaluate_decision" in case:
        decision = client.evaluate(*ARGS)
        calls += 1
        assert decision.decision is case["evaluate_decision"]

    if "evaluations_raises" in case:
        with pytest.raises(ERRORS[case["evaluations_raises"]]):
            client.evaluations(
                [{"action": "view_account"}, {"action": "cancel_order"}],
                subject=SUBJECT,
                resource=RESOURCE,
            )
        calls += 1
        expected_failures += 1

    assert client.failures == expected_failures
    assert len(hooked) == expected_failures
    if case["retried"]:
        assert client.retries == calls, "each call retried once"
    else:
        assert client.retries == 0
    if isinstance(fault, Stub):
        assert len(fault.requests) == calls + client.retries
        if case.get("same_request_id"):
            ids = [r.headers["x-request-id"] for r in fault.requests]
            assert ids[0::2] == ids[1::2], "the retry carries the first try's X-Request-ID"
            assert len(set(ids)) == calls, "each call has its own"


@pytest.mark.parametrize("timeout", [0.2, 0.5])
def test_silent_server_honours_the_deadline_given(timeout: float, make: MakeDriver) -> None:
    with Stub(fault_handler("silent")) as stub:
        client = make(stub.url, timeout=timeout)
        allowed, took = timed(lambda: client.allowed(*ARGS))
        assert allowed is False
        assert timeout - 0.02 <= took < timeout + SLACK
        with pytest.raises(MandateTimeoutError):
            client.evaluate(*ARGS, timeout=0.1)


def test_a_trickling_server_cannot_stretch_the_deadline(make: MakeDriver) -> None:
    """One byte every 50 ms never trips a per-read timeout; the total deadline still holds."""
    with Stub(lambda req: trickle) as stub:
        client = make(stub.url)
        allowed, took = timed(lambda: client.allowed(*ARGS))
        assert allowed is False
        assert took < DEADLINE + SLACK, f"took {took:.3f}s"
        start = time.monotonic()
        with pytest.raises(MandateTimeoutError):
            client.evaluate(*ARGS)
        assert time.monotonic() - start < DEADLINE + SLACK


def test_a_retry_after_that_fits_is_waited_for(make: MakeDriver) -> None:
    from stubs import ALLOW, response

    seen: Dict[str, int] = {}

    def handler(req: Any) -> bytes:
        rid = req.headers["x-request-id"]
        seen[rid] = seen.get(rid, 0) + 1
        if seen[rid] == 1:
            return response(503, {"error": {"code": "x", "message": "y"}}, {"Retry-After": "1"})
        return response(200, ALLOW)

    with Stub(handler) as stub:
        client = make(stub.url, timeout=1.5)
        decision, took = timed(lambda: client.evaluate(*ARGS))
        assert decision.decision is True
        assert 1.0 <= took < 1.5
        assert client.retries == 1


def test_a_second_503_is_not_retried(make: MakeDriver) -> None:
    from stubs import response

    with Stub(
        lambda req: response(503, {"error": {"code": "busy", "message": "m"}}, {"Retry-After": "0"})
    ) as stub:
        client = make(stub.url)
        with pytest.raises(ServerError) as info:
            client.evaluate(*ARGS)
        assert info.value.status == 503
        assert info.value.code == "busy"
        assert len(stub.requests) == 2, "one retry, not more"
        assert client.retries == 1


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (503, {}),
        (503, {"Retry-After": "soon"}),
        (500, {"Retry-After": "0"}),
        (429, {"Retry-After": "0"}),
    ],
    ids=["503 without Retry-After", "503 unreadable Retry-After", "500", "429"],
)
def test_no_retry_without_a_usable_retry_after_on_503(
    status: int, headers: Dict[str, str], make: MakeDriver
) -> None:
    from stubs import response

    with Stub(lambda req: response(status, b"plain text failure", headers)) as stub:
        client = make(stub.url)
        with pytest.raises(ServerError) as info:
            client.evaluate(*ARGS)
        assert info.value.status == status
        assert info.value.code is None
        assert info.value.message == "plain text failure"
        assert len(stub.requests) == 1
        assert client.retries == 0


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'{"decision": null}',
        b'{"decision": 1}',
        b'{"context": {}}',
        b'{"decision": true, "context": []}',
        b'{"decision": true, "context": {"reasons": "S1"}}',
        b"",
    ],
)
def test_malformed_answers_are_protocol_errors(body: bytes, make: MakeDriver) -> None:
    from stubs import response

    with Stub(lambda req: response(200, body)) as stub:
        client = make(stub.url)
        assert client.allowed(*ARGS) is False
        with pytest.raises(ProtocolError):
            client.evaluate(*ARGS)
        assert client.failures == 2


def test_a_non_200_success_is_not_an_answer(make: MakeDriver) -> None:
    from stubs import ALLOW, response

    with Stub(lambda req: response(201, ALLOW)) as stub:
        client = make(stub.url)
        assert client.allowed(*ARGS) is False
        with pytest.raises(ServerError) as info:
            client.evaluate(*ARGS)
        assert info.value.status == 201


def test_a_redirect_is_not_followed(make: MakeDriver) -> None:
    from stubs import response

    with Stub(lambda req: response(307, b"", {"Location": "http://127.0.0.1:1/"})) as stub:
        client = make(stub.url, token="t0k")
        assert client.allowed(*ARGS) is False
        assert len(stub.requests) == 1


def _unanswered_syn_port() -> Any:
    """A listener whose accept queue is full: a new SYN is dropped and connect() hangs."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    port = listener.getsockname()[1]
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    time.sleep(0.05)
    probe = socket.socket()
    probe.settimeout(0.2)
    try:
        probe.connect(("127.0.0.1", port))
    except socket.timeout:
        return listener, fillers
    except OSError:
        pass
    finally:
        probe.close()
    for s in [listener, *fillers]:
        s.close()
    pytest.skip("this kernel answers SYNs past a full accept queue")


def test_the_connect_has_its_own_shorter_limit(make: MakeDriver) -> None:
    listener, fillers = _unanswered_syn_port()
    try:
        client = make(f"http://127.0.0.1:{listener.getsockname()[1]}", connect_timeout=0.1)
        with pytest.raises(MandateTimeoutError, match="connect") as info:
            client.evaluate(*ARGS)
        assert client.retries == 0, "never a retry after a timeout"
        assert isinstance(info.value, TimeoutError)
        assert info.value.phase == "connect"
        allowed, took = timed(lambda: client.allowed(*ARGS))
        assert allowed is False
        assert 0.09 <= took < 0.1 + SLACK, f"took {took:.3f}s, not the 100 ms connect limit"
    finally:
        for s in [listener, *fillers]:
            s.close()
