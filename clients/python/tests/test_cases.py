"""cases.json's decisions, batches, searches and bad requests against a real `mandate serve`."""

from __future__ import annotations

from typing import Any, Dict

import pytest

from conftest import CASES, MakeDriver, MandateServer
from mandate_client import ServerError


def ids(section: str) -> Any:
    return [c["name"] for c in CASES[section]]


@pytest.mark.parametrize("case", CASES["decisions"], ids=ids("decisions"))
def test_decision(case: Dict[str, Any], mandate: MandateServer, make: MakeDriver) -> None:
    client = make(mandate.url)
    req = case["request"]
    args = (req["subject"], req["action"], req["resource"], req.get("context"))
    decision = client.evaluate(*args)
    assert decision.decision is case["decision"]
    assert bool(decision) is case["decision"]
    assert decision.reasons == case["reasons"]
    assert [e["code"] for e in decision.errors] == case["errors"]
    assert decision.policy_version
    assert decision.summary
    assert client.allowed(*args) is case["decision"]
    # The action as a bare name is the same request.
    assert (
        client.allowed(req["subject"], req["action"]["name"], req["resource"], req.get("context"))
        is (case["decision"])
    )
    assert client.failures == 0, "a policy's deny is not a failure"


@pytest.mark.parametrize("case", CASES["batches"], ids=ids("batches"))
@pytest.mark.parametrize("max_batch_items", [1000, 1, 2])
def test_batch(
    case: Dict[str, Any], max_batch_items: int, mandate: MandateServer, make: MakeDriver
) -> None:
    client = make(mandate.url, max_batch_items=max_batch_items)
    req = case["request"]
    semantic = req.get("options", {}).get("evaluations_semantic", "execute_all")
    decisions = client.evaluations(
        req["evaluations"],
        subject=req.get("subject"),
        action=req.get("action"),
        resource=req.get("resource"),
        context=req.get("context"),
        semantic=semantic,
    )
    assert [d.decision for d in decisions] == case["decisions"]
    assert client.failures == 0


@pytest.mark.parametrize("case", CASES["searches"], ids=ids("searches"))
@pytest.mark.parametrize("page_size", [None, 1])
def test_search(
    case: Dict[str, Any], page_size: Any, mandate: MandateServer, make: MakeDriver
) -> None:
    client = make(mandate.url)
    req = case["request"]
    kind = case["kind"]
    if kind == "action":
        args: tuple[Any, ...] = (req["subject"], req["resource"], req.get("context"))
    else:
        args = (req["subject"], req["action"], req["resource"], req.get("context"))
    results, it = client.search(kind, *args, page_size=page_size)
    assert results == case["results"]
    if page_size == 1:
        assert it.pages_fetched == len(case["results"])
    assert it.total == len(case["results"])
    if kind == "action":
        names = {s["name"] for s in it.skipped}
        assert "withdraw" in names, "withdraw needs a destination the context lacks"
        assert all(s["reason"] for s in it.skipped)
        assert not names & {r["name"] for r in results}
    else:
        assert it.skipped == []


@pytest.mark.parametrize("case", CASES["bad_requests"], ids=ids("bad_requests"))
def test_bad_request(case: Dict[str, Any], mandate: MandateServer, make: MakeDriver) -> None:
    seen = []
    client = make(mandate.url, on_error=seen.append)
    req = case["request"]
    args = (req["subject"], req["action"], req["resource"], req.get("context"))
    with pytest.raises(ServerError) as info:
        client.evaluate(*args)
    assert info.value.status == case["status"]
    assert info.value.code == case["code"]
    assert info.value.field == case["field"]
    assert info.value.message
    assert client.allowed(*args) is False
    assert client.failures == 2
    assert len(seen) == 2
    assert all(isinstance(e, ServerError) for e in seen)
    assert client.retries == 0
