"""`evaluations`: splitting into chunks, the three semantics, checking the answer."""

from __future__ import annotations

from typing import Any, Dict, List

import pytest

from conftest import REAL_TIMEOUT, MakeDriver, MandateServer
from mandate_client import ProtocolError
from stubs import Req, Stub, response

BOB = {"type": "user", "id": "bob"}
ACCOUNT = {"type": "account", "id": "alice-personal"}


def test_chunks_keep_the_order_on_the_real_server(mandate: MandateServer, make: MakeDriver) -> None:
    actions = [
        "view_account",
        "cancel_order",
        "place_order",
        "view_account",
        "cancel_order",
        "view_account",
        "place_order",
    ]
    buy = {"side": "buy", "instrument": "AAPL"}
    items = [
        {"action": {"name": a}, **({"context": buy} if a == "place_order" else {})} for a in actions
    ]
    whole = make(mandate.url, timeout=REAL_TIMEOUT).evaluations(
        items, subject=BOB, resource=ACCOUNT
    )
    expected = [a == "view_account" for a in actions]
    assert [d.decision for d in whole] == expected
    for size in (1, 2, 3, 7):
        chunked = make(mandate.url, timeout=REAL_TIMEOUT, max_batch_items=size).evaluations(
            items, subject=BOB, resource=ACCOUNT
        )
        assert [d.decision for d in chunked] == expected, f"max_batch_items={size}"
        assert [d.reasons for d in chunked] == [d.reasons for d in whole]


def test_items_override_the_defaults(mandate: MandateServer, make: MakeDriver) -> None:
    client = make(mandate.url, timeout=REAL_TIMEOUT, max_batch_items=1)
    decisions = client.evaluations(
        [
            {"action": "view_account"},  # bob, by default
            {"subject": {"type": "user", "id": "mallory"}, "action": "view_account"},
            {
                "subject": {"type": "user", "id": "carol"},
                "action": "place_order",
                "context": {"side": "buy", "instrument": "AAPL"},
            },
        ],
        subject=BOB,
        resource=ACCOUNT,
    )
    assert [d.decision for d in decisions] == [True, False, True]
    assert decisions[2].reasons == ["S2"]


def test_a_malformed_item_is_a_deny_not_a_failure(mandate: MandateServer, make: MakeDriver) -> None:
    client = make(mandate.url, timeout=REAL_TIMEOUT)
    decisions = client.evaluations(
        [{"action": "view_account"}, {"action": "view_account", "subject": {"type": "user"}}],
        subject=BOB,
        resource=ACCOUNT,
    )
    assert [d.decision for d in decisions] == [True, False]
    assert decisions[1].error is not None
    assert decisions[1].error["status"] == 400
    assert client.failures == 0


def test_an_empty_batch_sends_nothing(make: MakeDriver) -> None:
    with Stub(lambda req: response(500)) as stub:
        assert make(stub.url).evaluations([]) == []
        assert stub.requests == []


class Semantics:
    """A stub PDP that decides items by their action's name and applies the semantic."""

    def __init__(self) -> None:
        self.stub = Stub(self.handle)
        self.chunks: List[List[str]] = []

    def handle(self, req: Req) -> bytes:
        body = req.json()
        names = [item["action"]["name"] for item in body["evaluations"]]
        self.chunks.append(names)
        semantic = body.get("options", {}).get("evaluations_semantic", "execute_all")
        out: List[Dict[str, Any]] = []
        for name in names:
            decision = name == "allow"
            out.append({"decision": decision})
            if semantic == "deny_on_first_deny" and not decision:
                break
            if semantic == "permit_on_first_permit" and decision:
                break
        return response(200, {"evaluations": out})


@pytest.mark.parametrize(
    ("semantic", "names", "size", "decisions", "chunks_sent"),
    [
        # the stopping decision ends a chunk: nothing after it is sent
        ("deny_on_first_deny", "aa ad aa aa", 2, [True, True, True, False], 2),
        # it falls inside a chunk: the answer is short and stops there
        ("deny_on_first_deny", "aad aaa", 3, [True, True, False], 1),
        ("permit_on_first_permit", "dd da dd", 2, [False, False, False, True], 2),
        ("permit_on_first_permit", "dad ddd", 3, [False, True], 1),
        # no stopping decision: every chunk, every item
        ("deny_on_first_deny", "aa aa a", 2, [True] * 5, 3),
        ("execute_all", "ad da dd", 2, [True, False, False, True, False, False], 3),
    ],
)
def test_short_circuits_stop_sending(
    semantic: str,
    names: str,
    size: int,
    decisions: List[bool],
    chunks_sent: int,
    make: MakeDriver,
) -> None:
    pdp = Semantics()
    try:
        items = [{"action": "allow" if c == "a" else "deny"} for c in names.replace(" ", "")]
        client = make(pdp.stub.url, max_batch_items=size)
        got = client.evaluations(items, subject=BOB, resource=ACCOUNT, semantic=semantic)
        assert [d.decision for d in got] == decisions
        assert len(pdp.chunks) == chunks_sent
        assert all(len(c) <= size for c in pdp.chunks)
        sent = [n for chunk in pdp.chunks for n in chunk]
        assert sent == [i["action"] for i in items][: len(sent)], "chunks go in order"
        ids = {r.headers["x-request-id"] for r in pdp.stub.requests}
        assert len(ids) == 1, "one call, one X-Request-ID across its chunks"
    finally:
        pdp.stub.close()


@pytest.mark.parametrize(
    ("semantic", "answer", "items"),
    [
        ("execute_all", [True], 2),
        ("execute_all", [True, True, True], 2),
        ("deny_on_first_deny", [True], 2),  # short, but its last is no deny
        ("deny_on_first_deny", [False, True], 2),  # went on past a deny: wrong order
        ("permit_on_first_permit", [True, False], 2),
        ("permit_on_first_permit", [], 2),
        ("deny_on_first_deny", [True, True, True], 2),
    ],
)
def test_answers_that_do_not_fit_the_batch(
    semantic: str, answer: List[bool], items: int, make: MakeDriver
) -> None:
    body = {"evaluations": [{"decision": d} for d in answer]}
    with Stub(lambda req: response(200, body)) as stub:
        client = make(stub.url)
        with pytest.raises(ProtocolError):
            client.evaluations(
                [{"action": "x"}] * items, subject=BOB, resource=ACCOUNT, semantic=semantic
            )
        assert client.failures == 1


def test_a_bad_semantic_is_refused_before_sending(make: MakeDriver) -> None:
    with Stub(lambda req: response(500)) as stub:
        client = make(stub.url)
        with pytest.raises(ValueError, match="semantic"):
            client.evaluations([{"action": "x"}], semantic="first_deny")
        assert stub.requests == []


def test_chunks_share_one_deadline(make: MakeDriver) -> None:
    """Each chunk answers in 150 ms: four of them do not fit in 500 ms."""
    import time

    def slow(req: Req) -> bytes:
        time.sleep(0.15)
        n = len(req.json()["evaluations"])
        return response(200, {"evaluations": [{"decision": True}] * n})

    with Stub(slow) as stub:
        client = make(stub.url, max_batch_items=1)
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            client.evaluations([{"action": "x"}] * 4, subject=BOB, resource=ACCOUNT)
        assert time.monotonic() - start < 0.6
