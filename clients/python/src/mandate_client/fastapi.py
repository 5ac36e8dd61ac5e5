"""A FastAPI dependency that guards a route with Mandate: 403 on a deny or a failure.

Needs the ``fastapi`` extra (``pip install 'mandate-client[fastapi]'``)::

    from fastapi import Depends, FastAPI
    from mandate_client import AsyncClient
    from mandate_client.fastapi import require

    mandate = AsyncClient()
    app = FastAPI()

    def caller(user: User = Depends(current_user)) -> dict:
        return {"type": "user", "id": user.id}

    def account(account_id: str) -> dict:
        return {"type": "account", "id": account_id}

    @app.post("/accounts/{account_id}/orders",
              dependencies=[Depends(require(mandate, "place_order",
                                            subject=caller, resource=account))])
    async def place_order(account_id: str) -> dict: ...

``subject``, ``resource`` and ``context`` are themselves FastAPI dependencies:
they may take path and query parameters, the body, or other dependencies. The
guard returns the :class:`~mandate_client.Decision`, so a route that takes it
(``decision: Decision = Depends(guard)``) can read its reasons.
"""

# No `from __future__ import annotations`: FastAPI reads these annotations at run time.

import logging
from typing import Any, Awaitable, Callable, Optional, Union

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from . import _protocol as p
from ._async_client import AsyncClient
from ._client import Client
from ._models import ActionLike, Decision

__all__ = ["require"]

logger = logging.getLogger("mandate_client.fastapi")

AnyClient = Union[Client, AsyncClient]


async def _no_context() -> None:
    return None


def require(
    client: Union[AnyClient, Callable[..., Any]],
    action: ActionLike,
    *,
    subject: Callable[..., Any],
    resource: Callable[..., Any],
    context: Optional[Callable[..., Any]] = None,
    status_code: int = 403,
    detail: str = "forbidden",
) -> Callable[..., Awaitable[Decision]]:
    """A dependency that lets the request through only on Mandate's allow.

    A deny, and every failure (timeout, error, malformed answer: anything
    that is not an allow), answer ``status_code`` (403) with ``detail``; the
    failure is counted in the client's ``failures`` and given to its
    ``on_error``, never to the caller of the route.

    ``client`` is a :class:`Client`, an :class:`AsyncClient` (preferred: a
    sync client is called in the thread pool), or a dependency returning one.
    The incoming ``X-Request-ID`` is forwarded when Mandate would accept it,
    and so is the incoming ``traceparent`` unless OpenTelemetry has a
    current span (which then is the parent).
    """
    if isinstance(client, (Client, AsyncClient)):
        fixed = client

        def client_dep() -> AnyClient:
            return fixed

        get_client: Callable[..., Any] = client_dep
    elif callable(client):
        get_client = client
    else:
        raise TypeError("client must be a Client, an AsyncClient or a dependency returning one")
    get_context = context if context is not None else _no_context

    async def guard(
        request: Request,
        subject_: Any = Depends(subject),
        resource_: Any = Depends(resource),
        context_: Any = Depends(get_context),
        mandate: Any = Depends(get_client),
    ) -> Decision:
        incoming_id = request.headers.get("x-request-id")
        request_id = incoming_id if incoming_id and p.valid_request_id(incoming_id) else None
        traceparent = None
        if "traceparent" not in p.trace_headers(None):
            traceparent = request.headers.get("traceparent")
        try:
            if isinstance(mandate, AsyncClient):
                decision = await mandate.evaluate(
                    subject_,
                    action,
                    resource_,
                    context_,
                    request_id=request_id,
                    traceparent=traceparent,
                )
            elif isinstance(mandate, Client):
                decision = await run_in_threadpool(
                    mandate.evaluate,
                    subject_,
                    action,
                    resource_,
                    context_,
                    request_id=request_id,
                    traceparent=traceparent,
                )
            else:
                raise TypeError(f"the client dependency returned {mandate!r}")
        except Exception as exc:  # fail closed, whatever went wrong
            logger.warning(
                "mandate: %s %s refused: no decision: %s", request.method, request.url.path, exc
            )
            raise HTTPException(status_code=status_code, detail=detail) from exc
        if not decision.decision:
            raise HTTPException(status_code=status_code, detail=detail)
        return decision

    return guard
