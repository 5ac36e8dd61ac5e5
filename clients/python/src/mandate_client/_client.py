"""The synchronous client."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import httpx

from . import _protocol as p
from ._base import ClientBase, RetryBudget, no_cookies
from ._config import MAX_RESPONSE_BYTES
from ._errors import MandateError, TransportError
from ._models import (
    ActionLike,
    ActionRef,
    Decision,
    EntityLike,
    EntityRef,
    SearchPage,
    Semantic,
    TypeLike,
)
from ._search import SearchResults
from ._transport import DEADLINE, SyncTransport


class Client(ClientBase):
    """Ask Mandate, synchronously. Thread-safe; reuses its connections.

    >>> with Client() as mandate:  # MANDATE_URL, else http://127.0.0.1:8180
    ...     if mandate.allowed({"type": "user", "id": "carol"}, "place_order",
    ...                        {"type": "account", "id": "alice-personal"},
    ...                        {"side": "buy", "instrument": "AAPL"}):
    ...         ...

    Every call has one total deadline (``timeout``, 500 ms by default) covering
    the connect (at most ``connect_timeout``, 100 ms by default), TLS, the
    request, the answer and the one retry there may be.
    """

    def _setup(self) -> None:
        self._http = httpx.Client(
            base_url=self._endpoint.base,
            transport=SyncTransport(
                ssl_context=self._ssl_context, uds=self._endpoint.uds, limits=self._limits
            ),
            trust_env=False,
            follow_redirects=False,
            cookies=no_cookies(),
        )

    # --- lifecycle -------------------------------------------------------------

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- the calls ---------------------------------------------------------------

    def allowed(
        self,
        subject: EntityLike,
        action: ActionLike,
        resource: EntityLike,
        context: Optional[Mapping[str, Any]] = None,
        *,
        request_id: Optional[str] = None,
        traceparent: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> bool:
        """True only for Mandate's allow. Never raises: every failure is ``False``,
        counted in ``failures`` and given to ``on_error``."""
        try:
            return self.evaluate(
                subject,
                action,
                resource,
                context,
                request_id=request_id,
                traceparent=traceparent,
                timeout=timeout,
            ).decision
        except Exception:
            return False

    def evaluate(
        self,
        subject: EntityLike,
        action: ActionLike,
        resource: EntityLike,
        context: Optional[Mapping[str, Any]] = None,
        *,
        request_id: Optional[str] = None,
        traceparent: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Decision:
        """The decision and why. Raises :class:`MandateError`'s four kinds."""
        try:
            rid = p.request_id_for(request_id)
            deadline = self._deadline(timeout)
            body = p.encode(p.evaluation_body(subject, action, resource, context))
            data = self._exchange(
                p.EVALUATION_PATH, body, rid, p.trace_headers(traceparent), deadline, RetryBudget()
            )
            return p.decision_from(data, rid)
        except Exception as exc:
            self._failed(exc)
            raise

    def evaluations(
        self,
        evaluations: Sequence[Mapping[str, Any]],
        *,
        subject: Optional[EntityLike] = None,
        action: Optional[ActionLike] = None,
        resource: Optional[EntityLike] = None,
        context: Optional[Mapping[str, Any]] = None,
        semantic: Semantic = "execute_all",
        request_id: Optional[str] = None,
        traceparent: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> List[Decision]:
        """An AuthZEN batch: one decision per item, in order.

        ``subject``, ``action``, ``resource`` and ``context`` are defaults each
        item overrides. Past ``max_batch_items`` items the batch is split into
        requests sent in order, all within the one deadline; with a short-circuit
        ``semantic`` the list ends at the stopping decision and nothing after its
        chunk is sent.
        """
        try:
            rid = p.request_id_for(request_id)
            deadline = self._deadline(timeout)
            sem = p.check_semantic(semantic)
            items = p.batch_items(evaluations)
            defaults = p.batch_defaults(subject, action, resource, context)
            trace = p.trace_headers(traceparent)
            budget = RetryBudget()
            out: List[Decision] = []
            size = self._max_batch_items
            for start in range(0, len(items), size):
                chunk = items[start : start + size]
                body = p.encode(
                    {**defaults, "evaluations": chunk, "options": {"evaluations_semantic": sem}}
                )
                data = self._exchange(p.EVALUATIONS_PATH, body, rid, trace, deadline, budget)
                decisions, stopped = p.batch_decisions(data, len(chunk), sem, rid)
                out.extend(decisions)
                if stopped:
                    break
            return out
        except Exception as exc:
            self._failed(exc)
            raise

    def search_subjects(
        self,
        subject: TypeLike,
        action: ActionLike,
        resource: EntityLike,
        context: Optional[Mapping[str, Any]] = None,
        *,
        page_size: Optional[int] = None,
        request_id: Optional[str] = None,
        traceparent: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> SearchResults[EntityRef]:
        """Who may do ``action`` on ``resource``: ``subject`` is the searched type,
        ``"user"`` or ``{"type": "user"}``."""
        return SearchResults(
            self._pager(
                "subject",
                lambda: p.search_body("subject", subject, action, resource, context),
                page_size,
                request_id,
                traceparent,
                timeout,
            ),
            self._failed,
        )

    def search_resources(
        self,
        subject: EntityLike,
        action: ActionLike,
        resource: TypeLike,
        context: Optional[Mapping[str, Any]] = None,
        *,
        page_size: Optional[int] = None,
        request_id: Optional[str] = None,
        traceparent: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> SearchResults[EntityRef]:
        """On which resources (of ``resource``'s type) ``subject`` may do ``action``."""
        return SearchResults(
            self._pager(
                "resource",
                lambda: p.search_body("resource", subject, action, resource, context),
                page_size,
                request_id,
                traceparent,
                timeout,
            ),
            self._failed,
        )

    def search_actions(
        self,
        subject: EntityLike,
        resource: EntityLike,
        context: Optional[Mapping[str, Any]] = None,
        *,
        page_size: Optional[int] = None,
        request_id: Optional[str] = None,
        traceparent: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> SearchResults[ActionRef]:
        """What ``subject`` may do on ``resource``; ``.skipped`` names the actions
        the server could not decide with this context."""
        return SearchResults(
            self._pager(
                "action",
                lambda: p.search_body("action", subject, None, resource, context),
                page_size,
                request_id,
                traceparent,
                timeout,
            ),
            self._failed,
        )

    # --- machinery -----------------------------------------------------------------

    def _pager(
        self,
        kind: str,
        make_body: Callable[[], Dict[str, Any]],
        page_size: Optional[int],
        request_id: Optional[str],
        traceparent: Optional[str],
        timeout: Optional[float],
    ) -> Callable[[Optional[str]], SearchPage]:
        try:
            body = p.search_setup(make_body, page_size, request_id)
        except Exception as exc:
            self._failed(exc)
            raise
        path = p.SEARCH_PATHS[kind]

        def fetch(token: Optional[str]) -> SearchPage:
            try:
                rid = p.request_id_for(request_id)
                deadline = self._deadline(timeout)
                page: Dict[str, Any] = {}
                if page_size is not None:
                    page["limit"] = page_size
                if token:
                    page["token"] = token
                payload = p.encode({**body, "page": page} if page else body)
                data = self._exchange(
                    path, payload, rid, p.trace_headers(traceparent), deadline, RetryBudget()
                )
                return p.search_page(kind, data, rid)
            except Exception as exc:
                self._failed(exc)
                raise

        return fetch

    def _exchange(
        self,
        path: str,
        body: bytes,
        request_id: str,
        trace: Mapping[str, str],
        deadline: float,
        budget: RetryBudget,
    ) -> Dict[str, Any]:
        """POST ``body`` until an answer within ``deadline``, retrying as the budget allows."""
        headers = self._headers_for(request_id, trace)
        while True:
            status, reason, resp_headers, data = self._send(
                path, body, headers, request_id, deadline, budget
            )
            if status == 200:
                return p.parse_json_object(data, request_id)
            retry_after = p.retry_after_seconds(resp_headers.get("retry-after"))
            if (
                status == 503
                and retry_after is not None
                and time.monotonic() + retry_after < deadline
                and budget.take()
            ):
                self._count_retry(f"503, Retry-After {retry_after:g}s", request_id)
                if retry_after > 0:
                    time.sleep(retry_after)
                continue
            raise p.server_error(status, reason, data, retry_after, request_id)

    def _send(
        self,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        request_id: str,
        deadline: float,
        budget: RetryBudget,
    ) -> Tuple[int, str, httpx.Headers, bytes]:
        while True:
            timeout = self._httpx_timeout(deadline, request_id)
            token = DEADLINE.set(deadline)
            try:
                request = self._http.build_request(
                    "POST", path, content=body, headers=headers, timeout=timeout
                )
                response = self._http.send(request, stream=True)
                try:
                    data = self._read(response, request_id)
                finally:
                    response.close()
                return response.status_code, response.reason_phrase, response.headers, data
            except MandateError:
                raise
            except httpx.HTTPError as exc:
                err = self._transport_error(exc, request_id, deadline)
                if getattr(err, "refused", False) and budget.take():
                    self._count_retry("connection refused before sending", request_id)
                    continue
                raise err from exc
            except OSError as exc:  # a socket or TLS error no layer mapped
                raise TransportError(str(exc) or type(exc).__name__, request_id=request_id) from exc
            finally:
                DEADLINE.reset(token)

    def _read(self, response: httpx.Response, request_id: str) -> bytes:
        chunks: List[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                if response.status_code == 200:
                    raise self._too_large(request_id)
                break
            chunks.append(chunk)
        return b"".join(chunks)
