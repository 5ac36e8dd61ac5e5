"""The API's small print: settings, errors, the hook, async concurrency, Retry-After dates."""

from __future__ import annotations

import email.utils
import time
from typing import Any, List

import anyio
import pytest

from conftest import REAL_TIMEOUT, MandateServer
from mandate_client import (
    AsyncClient,
    Client,
    Decision,
    MandateError,
    MandateTimeoutError,
    ProtocolError,
    ServerError,
    TransportError,
)
from mandate_client._protocol import retry_after_seconds, valid_traceparent
from stubs import ALLOW, ClosedPort, Stub, fault_handler, response

ARGS = (
    {"type": "user", "id": "carol"},
    "place_order",
    {"type": "account", "id": "alice-personal"},
    {"side": "buy", "instrument": "AAPL"},
)


def test_errors_share_one_base() -> None:
    for cls in (TransportError, MandateTimeoutError, ProtocolError, ServerError):
        assert issubclass(cls, MandateError)
    assert issubclass(MandateTimeoutError, TimeoutError)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout": 0},
        {"timeout": -1},
        {"timeout": float("inf")},
        {"timeout": float("nan")},
        {"connect_timeout": 0},
        {"max_batch_items": 0},
    ],
)
def test_there_is_always_a_deadline(kwargs: Any) -> None:
    with pytest.raises(ValueError):
        Client(**kwargs)


def test_no_deadline_is_not_a_setting() -> None:
    with pytest.raises(TypeError):
        Client(timeout=None)  # type: ignore[arg-type]
    with Client() as c, pytest.raises(ValueError):
        c.evaluate(*ARGS, timeout=0)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://x",
        "localhost:8180",
        "http://",
        "unix:relative.sock",
        "http://u:p@h/",
        "http://h/?q=1",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(ValueError):
        Client(url)


def test_headers_cannot_override_what_the_client_sets() -> None:
    with pytest.raises(ValueError):
        Client(headers={"Authorization": "Basic x"})


def test_decision_truthiness() -> None:
    assert not Decision(decision=False)
    assert Decision(decision=True)


def test_allowed_survives_a_raising_hook() -> None:
    def hook(err: MandateError) -> None:
        raise RuntimeError("the hook itself is broken")

    with ClosedPort() as closed, Client(closed.url, on_error=hook) as client:
        assert client.allowed(*ARGS) is False
        assert client.failures == 1


def test_allowed_survives_arguments_json_cannot_carry() -> None:
    hooked: List[MandateError] = []
    with (
        Stub(lambda req: response(200, ALLOW)) as stub,
        Client(stub.url, on_error=hooked.append) as client,
    ):
        assert client.allowed(ARGS[0], "a", ARGS[2], {"x": object()}) is False
        assert client.allowed(ARGS[0], "a", ARGS[2], {"x": float("nan")}) is False
        assert client.allowed("carol", "a", ARGS[2]) is False  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            client.evaluate(ARGS[0], "a", ARGS[2], {"x": object()})
        assert client.failures == 4
        assert len(hooked) == 4
        assert all(type(e) is MandateError and e.__cause__ is not None for e in hooked)
        assert stub.requests == []


def test_a_huge_answer_is_not_read_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    import mandate_client._client as sync_client

    monkeypatch.setattr(sync_client, "MAX_RESPONSE_BYTES", 1000)
    big = {"decision": True, "context": {"summary": "x" * 5000}}
    with (
        Stub(lambda req: response(200, big)) as stub,
        Client(stub.url) as client,
        pytest.raises(ProtocolError, match="over"),
    ):
        client.evaluate(*ARGS)


@pytest.mark.anyio
async def test_async_calls_run_concurrently(mandate: MandateServer) -> None:
    async with AsyncClient(mandate.url, timeout=REAL_TIMEOUT) as client:
        results: List[bool] = []

        async def one(user: str) -> None:
            results.append(await client.allowed({"type": "user", "id": user}, *ARGS[1:]))

        async with anyio.create_task_group() as tg:
            for user in ["carol", "bob"] * 25:
                tg.start_soon(one, user)
        assert sorted(results) == [False] * 25 + [True] * 25
        assert client.failures == 0


@pytest.mark.anyio
async def test_async_silent_servers_do_not_add_up() -> None:
    """Twenty calls to a silent PDP, side by side, all end by the one deadline."""
    with Stub(fault_handler("silent")) as stub:
        async with AsyncClient(stub.url) as client:
            start = time.monotonic()
            results: List[bool] = []

            async def one() -> None:
                results.append(await client.allowed(*ARGS))

            async with anyio.create_task_group() as tg:
                for _ in range(20):
                    tg.start_soon(one)
            assert time.monotonic() - start < 0.6
            assert results == [False] * 20
            assert client.failures == 20


@pytest.mark.anyio
async def test_async_cancellation_is_not_swallowed() -> None:
    with Stub(fault_handler("silent")) as stub:
        async with AsyncClient(stub.url, timeout=5) as client:
            with anyio.move_on_after(0.1) as scope:
                await client.allowed(*ARGS)
            assert scope.cancelled_caught, "allowed let the cancellation through"


def test_sync_client_is_thread_safe(mandate: MandateServer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with Client(mandate.url, timeout=REAL_TIMEOUT) as client, ThreadPoolExecutor(8) as pool:
        users = ["carol", "bob"] * 40
        got = list(pool.map(lambda u: client.allowed({"type": "user", "id": u}, *ARGS[1:]), users))
        assert got == [u == "carol" for u in users]
        assert client.failures == 0


def test_retry_after_forms() -> None:
    now = time.time()
    assert retry_after_seconds("0") == 0
    assert retry_after_seconds(" 5 ") == 5
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("-1") is None
    assert retry_after_seconds("soon") is None
    date = email.utils.formatdate(now + 3, usegmt=True)
    wait = retry_after_seconds(date, now=now)
    assert wait is not None
    assert 2 <= wait <= 3
    assert retry_after_seconds(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0


def test_traceparent_shapes() -> None:
    assert valid_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    assert valid_traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra")
    assert not valid_traceparent("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01")
    assert not valid_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x")


def test_no_cookie_is_kept() -> None:
    def handler(req: Any) -> bytes:
        return response(200, ALLOW, {"Set-Cookie": "session=abc; Path=/"})

    with Stub(handler) as stub, Client(stub.url) as client:
        client.evaluate(*ARGS)
        client.evaluate(*ARGS)
        assert "cookie" not in stub.requests[-1].headers


def test_a_coroutine_hook_is_not_left_unawaited(caplog: pytest.LogCaptureFixture) -> None:
    async def hook(err: MandateError) -> None:
        raise AssertionError("never run")

    with ClosedPort() as closed, Client(closed.url, on_error=hook) as client:
        assert client.allowed(*ARGS) is False
    assert "plain function" in caplog.text
