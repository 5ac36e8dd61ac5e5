"""The FastAPI guard: the route runs on an allow; 403 on a deny or a failure."""

from __future__ import annotations

from typing import Any, Dict, List, Union

import pytest

from conftest import REAL_TIMEOUT, MandateServer
from stubs import ClosedPort

pytest.importorskip("fastapi")
from fastapi import Depends, FastAPI, Header
from fastapi.testclient import TestClient

from mandate_client import AsyncClient, Client, Decision, MandateError
from mandate_client.fastapi import require


def caller(x_user: str = Header(...)) -> Dict[str, str]:
    return {"type": "user", "id": x_user}


def account(account_id: str) -> Dict[str, str]:
    return {"type": "account", "id": account_id}


def order(side: str = "buy", instrument: str = "AAPL") -> Dict[str, str]:
    return {"side": side, "instrument": instrument}


def app_for(mandate: Union[Client, AsyncClient, Any]) -> FastAPI:
    app = FastAPI()
    guard = require(mandate, "place_order", subject=caller, resource=account, context=order)

    @app.post("/accounts/{account_id}/orders")
    async def place(account_id: str, decision: Decision = Depends(guard)) -> Dict[str, Any]:
        return {"placed": account_id, "by": decision.reasons}

    @app.get(
        "/accounts/{account_id}",
        dependencies=[
            Depends(require(mandate, {"name": "view_account"}, subject=caller, resource=account))
        ],
    )
    def view(account_id: str) -> Dict[str, str]:
        return {"account": account_id}

    return app


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_guard_on_the_real_server(kind: str, mandate: MandateServer) -> None:
    client: Union[Client, AsyncClient] = (
        AsyncClient(mandate.url, timeout=REAL_TIMEOUT)
        if kind == "async"
        else Client(mandate.url, timeout=REAL_TIMEOUT)
    )
    with TestClient(app_for(client)) as http:
        ok = http.post("/accounts/alice-personal/orders", headers={"X-User": "carol"})
        assert ok.status_code == 200
        assert ok.json() == {"placed": "alice-personal", "by": ["S2"]}
        denied = http.post("/accounts/alice-personal/orders", headers={"X-User": "bob"})
        assert denied.status_code == 403
        assert http.get("/accounts/alice-personal", headers={"X-User": "bob"}).status_code == 200
        assert (
            http.get("/accounts/alice-personal", headers={"X-User": "mallory"}).status_code == 403
        )
    assert client.failures == 0


def test_guard_fails_closed(mandate: MandateServer) -> None:
    hooked: List[MandateError] = []
    with ClosedPort() as closed:
        client = AsyncClient(closed.url, on_error=hooked.append)
        with TestClient(app_for(client)) as http:
            r = http.post("/accounts/alice-personal/orders", headers={"X-User": "carol"})
            assert r.status_code == 403
            assert r.json() == {"detail": "forbidden"}
    assert client.failures == 1
    assert len(hooked) == 1


def test_guard_takes_the_client_from_a_dependency(mandate: MandateServer) -> None:
    client = AsyncClient(mandate.url, timeout=REAL_TIMEOUT)

    def get_client() -> AsyncClient:
        return client

    with TestClient(app_for(get_client)) as http:
        r = http.post(
            "/accounts/alice-personal/orders",
            headers={"X-User": "carol", "X-Request-ID": "from-edge-1"},
        )
        assert r.status_code == 200


def test_guard_forwards_request_id_and_traceparent() -> None:
    from stubs import ALLOW, Stub, response

    with Stub(lambda req: response(200, ALLOW)) as stub:
        client = AsyncClient(stub.url)
        tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        with TestClient(app_for(client)) as http:
            r = http.post(
                "/accounts/a/orders",
                headers={
                    "X-User": "carol",
                    "X-Request-ID": "edge-7",
                    "traceparent": tp,
                },
            )
            assert r.status_code == 200
            assert stub.requests[-1].headers["x-request-id"] == "edge-7"
            assert stub.requests[-1].headers["traceparent"] == tp
            # An X-Request-ID Mandate would not echo is replaced, not fatal.
            r = http.post(
                "/accounts/a/orders", headers={"X-User": "carol", "X-Request-ID": "bad id"}
            )
            assert r.status_code == 200
            assert stub.requests[-1].headers["x-request-id"] != "bad id"


def test_importing_the_package_does_not_need_fastapi() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['fastapi'] = None\n"
        "import mandate_client\n"
        "assert mandate_client.Client and mandate_client.AsyncClient\n"
        "try:\n    import mandate_client.fastapi\nexcept ImportError:\n    print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
