"""Search: an iterator that follows page.next_token; skipped actions; malformed pages."""

from __future__ import annotations

from typing import Any, Dict, List

import pytest

from conftest import CASES, REAL_TIMEOUT, MakeDriver, MandateServer
from mandate_client import Client, ProtocolError
from stubs import Req, Stub, response

WHO = next(c for c in CASES["searches"] if c["kind"] == "subject")
WHAT = next(c for c in CASES["searches"] if c["kind"] == "action")


def test_pages_of_one_on_the_real_server(mandate: MandateServer, make: MakeDriver) -> None:
    req = WHO["request"]
    client = make(mandate.url, timeout=REAL_TIMEOUT)
    pages = client.search_pages(
        "subject", "user", req["action"], req["resource"], req["context"], page_size=1
    )
    assert [r for page in pages for r in page.results] == WHO["results"]
    assert len(pages) == len(WHO["results"])
    assert all(page.next_token for page in pages[:-1])
    assert pages[-1].next_token == ""
    assert all(page.total == len(WHO["results"]) for page in pages)


def test_pages_of_two(mandate: MandateServer, make: MakeDriver) -> None:
    req = WHO["request"]
    results, it = make(mandate.url, timeout=REAL_TIMEOUT).search(
        "subject", {"type": "user"}, req["action"], req["resource"], req["context"], page_size=2
    )
    assert results == WHO["results"]
    assert it.pages_fetched == 3


def test_skipped_actions_on_every_page_are_named_once(
    mandate: MandateServer, make: MakeDriver
) -> None:
    req = WHAT["request"]
    client = make(mandate.url, timeout=REAL_TIMEOUT)
    pages = client.search_pages(
        "action", req["subject"], req["resource"], req["context"], page_size=1
    )
    _, it = client.search("action", req["subject"], req["resource"], req["context"], page_size=1)
    names = [s["name"] for s in it.skipped]
    assert len(names) == len(set(names))
    assert set(names) == {s["name"] for page in pages for s in page.skipped}


def test_nothing_is_sent_before_iterating(mandate: MandateServer) -> None:
    with Stub(lambda req: response(500)) as stub, Client(stub.url) as client:
        client.search_subjects("user", "view_account", {"type": "account", "id": "a"})
        assert stub.requests == []


def test_the_next_page_sends_the_token_and_the_request() -> None:
    bodies: List[Dict[str, Any]] = []

    def handler(req: Req) -> bytes:
        body = req.json()
        bodies.append(body)
        token = body.get("page", {}).get("token")
        if token is None:
            return response(
                200,
                {
                    "page": {"next_token": "t1", "count": 1, "total": 2},
                    "results": [{"type": "user", "id": "a"}],
                },
            )
        return response(
            200,
            {
                "page": {"next_token": "", "count": 1, "total": 2},
                "results": [{"type": "user", "id": "b"}],
            },
        )

    with Stub(handler) as stub, Client(stub.url) as client:
        it = client.search_subjects("user", "view", {"type": "account", "id": "x"}, page_size=1)
        assert [r["id"] for r in it] == ["a", "b"]
        assert bodies[0]["page"] == {"limit": 1}
        assert bodies[1]["page"] == {"limit": 1, "token": "t1"}
        assert bodies[1]["subject"] == {"type": "user"}
        ids = [r.headers["x-request-id"] for r in stub.requests]
        assert len(set(ids)) == 2, "each page is its own call"


@pytest.mark.parametrize(
    "answer",
    [
        {"page": {"next_token": "same"}, "results": [{"type": "user", "id": "a"}]},  # loops
        {"page": {"next_token": ""}, "results": [{"type": "user"}]},
        {"page": {"next_token": ""}, "results": {"type": "user", "id": "a"}},
        {"page": {"next_token": 7}, "results": []},
        {"page": {"next_token": ""}, "results": [], "context": {"skipped": "all"}},
        {"page": "last", "results": []},
    ],
)
def test_malformed_pages_are_protocol_errors(answer: Dict[str, Any], make: MakeDriver) -> None:
    with Stub(lambda req: response(200, answer)) as stub:
        client = make(stub.url)
        with pytest.raises(ProtocolError):
            client.search("subject", "user", "view", {"type": "account", "id": "x"})
        assert client.failures == 1


def test_endless_empty_pages_end() -> None:
    count = [0]

    def handler(req: Req) -> bytes:
        count[0] += 1
        return response(200, {"page": {"next_token": f"t{count[0]}"}, "results": []})

    with Stub(handler) as stub, Client(stub.url) as client, pytest.raises(ProtocolError):
        list(client.search_subjects("user", "view", {"type": "account", "id": "x"}))
    assert count[0] == 16


def test_results_and_pages_do_not_mix(mandate: MandateServer) -> None:
    req = WHO["request"]
    with Client(mandate.url, timeout=REAL_TIMEOUT) as client:
        it = client.search_subjects(
            "user", req["action"], req["resource"], req["context"], page_size=1
        )
        next(it)
        with pytest.raises(RuntimeError):
            next(iter(it.pages()))


def test_a_bad_page_size_is_refused_at_once(mandate: MandateServer) -> None:
    with (
        Client(mandate.url, timeout=REAL_TIMEOUT) as client,
        pytest.raises(ValueError, match="page_size"),
    ):
        client.search_actions(
            {"type": "user", "id": "x"}, {"type": "account", "id": "y"}, page_size=0
        )
