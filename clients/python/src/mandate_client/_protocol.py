"""AuthZEN on the wire: request bodies, answers and their checks, headers.

Everything here is pure (no I/O), shared by the sync and the async client.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import re
import time
import uuid
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ._errors import ProtocolError, ServerError
from ._models import (
    SEMANTICS,
    ActionLike,
    Decision,
    DecisionError,
    EntityLike,
    ItemError,
    SearchPage,
    Skipped,
    TypeLike,
)

logger = logging.getLogger("mandate_client")

EVALUATION_PATH = "/access/v1/evaluation"
EVALUATIONS_PATH = "/access/v1/evaluations"
SEARCH_PATHS = {
    "subject": "/access/v1/search/subject",
    "resource": "/access/v1/search/resource",
    "action": "/access/v1/search/action",
}

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_TRACESTATE_MAX = 512


# --- headers -----------------------------------------------------------------


def valid_request_id(value: str) -> bool:
    """Whether Mandate accepts (and echoes) ``value`` as an ``X-Request-ID``."""
    return isinstance(value, str) and _REQUEST_ID.fullmatch(value) is not None


def request_id_for(given: Optional[str]) -> str:
    """The caller's request id, checked against what the server accepts, or a fresh one."""
    if given is None:
        return uuid.uuid4().hex
    if not valid_request_id(given):
        raise ValueError(
            "request_id must be 1 to 128 characters of [A-Za-z0-9._:-] "
            f"(what Mandate accepts and echoes), not {given!r}"
        )
    return given


def valid_traceparent(value: str) -> bool:
    """A W3C ``traceparent`` of a known shape (version 00, or a later one read as 00)."""
    m = _TRACEPARENT.match(value)
    if m is None:
        return False
    version, trace_id, parent_id, _flags = m.groups()
    if version == "ff" or trace_id == "0" * 32 or parent_id == "0" * 16:
        return False
    # Version 00 is exactly that long; a later version may append fields.
    return len(value) == 55 if version == "00" else len(value) == 55 or value[55] == "-"


_otel_inject: Optional[Callable[[Dict[str, str]], None]] = None
_otel_loaded = False


def _load_otel() -> Optional[Callable[[Dict[str, str]], None]]:
    global _otel_inject, _otel_loaded
    if _otel_loaded:
        return _otel_inject
    _otel_loaded = True
    try:
        from opentelemetry.trace.propagation.tracecontext import (
            TraceContextTextMapPropagator,
        )
    except Exception:  # not installed, or broken: tracing is optional
        return None
    propagator = TraceContextTextMapPropagator()

    def inject(carrier: Dict[str, str]) -> None:
        propagator.inject(carrier)

    _otel_inject = inject
    return inject


def trace_headers(traceparent: Optional[str]) -> Dict[str, str]:
    """``traceparent``: the caller's, else OpenTelemetry's current one (with its ``tracestate``).

    A malformed ``traceparent`` is dropped, not sent, and never fails the call:
    it often comes from an incoming request, and a tracing header must not
    decide an authorization.
    """
    headers: Dict[str, str] = {}
    if traceparent is not None:
        value = traceparent.strip().lower() if isinstance(traceparent, str) else ""
        if valid_traceparent(value):
            headers["traceparent"] = value
        else:
            logger.warning("mandate: dropping a malformed traceparent: %r", str(traceparent)[:80])
        return headers
    inject = _load_otel()
    if inject is not None:
        carrier: Dict[str, str] = {}
        try:
            inject(carrier)
        except Exception:  # a broken tracer must not fail a decision
            logger.debug("OpenTelemetry injection failed", exc_info=True)
            return headers
        injected = carrier.get("traceparent")
        if injected and valid_traceparent(injected):
            headers["traceparent"] = injected
            state = carrier.get("tracestate")
            if state and len(state) <= _TRACESTATE_MAX and "\n" not in state:
                headers["tracestate"] = state
    return headers


def retry_after_seconds(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """``Retry-After`` as seconds to wait: delay-seconds or an HTTP date; ``None`` if unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    wait = when.timestamp() - (time.time() if now is None else now)
    return max(wait, 0.0) if math.isfinite(wait) else None


# --- request bodies ------------------------------------------------------------


def _entity(value: EntityLike, what: str) -> Dict[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{what} must be a mapping such as {{'type': ..., 'id': ...}}, not {value!r}"
        )
    return dict(value)


def _action(value: ActionLike) -> Dict[str, Any]:
    if isinstance(value, str):
        return {"name": value}
    if not isinstance(value, Mapping):
        raise TypeError(f"action must be a name or a mapping with 'name', not {value!r}")
    return dict(value)


def _context(value: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"context must be a mapping (a JSON object), not {value!r}")
    return dict(value)


def _searched(value: TypeLike, what: str) -> Dict[str, Any]:
    if isinstance(value, str):
        return {"type": value}
    return _entity(value, what)


def evaluation_body(
    subject: EntityLike,
    action: ActionLike,
    resource: EntityLike,
    context: Optional[Mapping[str, Any]],
) -> Dict[str, Any]:
    body: Dict[str, Any] = {
        "subject": _entity(subject, "subject"),
        "action": _action(action),
        "resource": _entity(resource, "resource"),
    }
    ctx = _context(context)
    if ctx is not None:
        body["context"] = ctx
    return body


def batch_defaults(
    subject: Optional[EntityLike],
    action: Optional[ActionLike],
    resource: Optional[EntityLike],
    context: Optional[Mapping[str, Any]],
) -> Dict[str, Any]:
    body: Dict[str, Any] = {}
    if subject is not None:
        body["subject"] = _entity(subject, "subject")
    if action is not None:
        body["action"] = _action(action)
    if resource is not None:
        body["resource"] = _entity(resource, "resource")
    ctx = _context(context)
    if ctx is not None:
        body["context"] = ctx
    return body


def batch_items(items: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    given: object = items
    if isinstance(given, (str, bytes)) or not isinstance(given, Sequence):
        raise TypeError("evaluations must be a sequence of mappings")
    out: List[Dict[str, Any]] = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise TypeError(f"evaluations[{i}] must be a mapping, not {item!r}")
        one = dict(item)
        if "action" in one and isinstance(one["action"], str):
            one["action"] = {"name": one["action"]}
        out.append(one)
    return out


def check_semantic(semantic: str) -> str:
    if semantic not in SEMANTICS:
        raise ValueError(f"semantic must be one of {', '.join(SEMANTICS)}, not {semantic!r}")
    return semantic


def search_body(
    kind: str,
    subject: Any,
    action: Optional[ActionLike],
    resource: Any,
    context: Optional[Mapping[str, Any]],
) -> Dict[str, Any]:
    body: Dict[str, Any] = {
        "subject": _searched(subject, "subject")
        if kind == "subject"
        else _entity(subject, "subject"),
        "resource": (
            _searched(resource, "resource") if kind == "resource" else _entity(resource, "resource")
        ),
    }
    if action is not None:
        body["action"] = _action(action)
    ctx = _context(context)
    if ctx is not None:
        body["context"] = ctx
    return body


def encode(body: Mapping[str, Any]) -> bytes:
    """Compact JSON; what JSON cannot carry (NaN, an object) is a TypeError or ValueError."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


# --- answers ---------------------------------------------------------------------


def server_error(
    status: int, reason: str, body: bytes, retry_after: Optional[float], request_id: str
) -> ServerError:
    """A non-200 as a :class:`ServerError`, with Mandate's ``{"error": ...}`` when it sent one."""
    code: Optional[str] = None
    field: Optional[str] = None
    message = ""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        code = err["code"] if isinstance(err.get("code"), str) else None
        field = err["field"] if isinstance(err.get("field"), str) else None
        message = err["message"] if isinstance(err.get("message"), str) else ""
    if not message:
        snippet = body[:200].decode("utf-8", "replace").strip() if body else ""
        message = snippet if snippet and data is None else reason
    return ServerError(
        status,
        message,
        code=code,
        field=field,
        retry_after=retry_after,
        request_id=request_id,
    )


def parse_json_object(body: bytes, request_id: str) -> Dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ProtocolError(
            f"the answer is not JSON: {body[:80]!r}", request_id=request_id
        ) from exc
    if not isinstance(data, dict):
        raise ProtocolError(
            f"the answer is not a JSON object: {type(data).__name__}", request_id=request_id
        )
    return data


def _str_list(value: Any, what: str, request_id: str) -> List[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProtocolError(f"{what} is not a list of strings", request_id=request_id)
    return list(value)


def decision_from(data: Any, request_id: str, where: str = "the answer") -> Decision:
    """One AuthZEN evaluation answer: a boolean ``decision`` and an optional ``context``."""
    if not isinstance(data, dict):
        raise ProtocolError(f"{where} is not a JSON object", request_id=request_id)
    decision = data.get("decision")
    if not isinstance(decision, bool):
        raise ProtocolError(
            f"{where} has no boolean decision (got {decision!r})", request_id=request_id
        )
    context = data.get("context")
    if context is None:
        context = {}
    if not isinstance(context, dict):
        raise ProtocolError(f"{where}: context is not an object", request_id=request_id)
    errors_raw = context.get("errors")
    errors: List[DecisionError] = []
    if errors_raw is not None:
        if not isinstance(errors_raw, list):
            raise ProtocolError(f"{where}: context.errors is not a list", request_id=request_id)
        for e in errors_raw:
            if not (
                isinstance(e, dict)
                and isinstance(e.get("code"), str)
                and isinstance(e.get("message", ""), str)
            ):
                raise ProtocolError(
                    f"{where}: an error in context.errors is not {{code, message}}",
                    request_id=request_id,
                )
            errors.append(e)  # type: ignore[arg-type]
    item_error = context.get("error")
    error: Optional[ItemError] = None
    if item_error is not None:
        if not isinstance(item_error, dict):
            raise ProtocolError(f"{where}: context.error is not an object", request_id=request_id)
        error = item_error  # type: ignore[assignment]
    policy_version = context.get("policy_version")
    summary = context.get("summary")
    return Decision(
        decision=decision,
        reasons=_str_list(context.get("reasons"), f"{where}: context.reasons", request_id),
        errors=errors,
        policy_version=policy_version if isinstance(policy_version, str) else None,
        summary=summary if isinstance(summary, str) else None,
        error=error,
        stale_data=context.get("stale_data") is True,
        context=context,
        request_id=request_id,
    )


def batch_decisions(
    data: Dict[str, Any], expected: int, semantic: str, request_id: str
) -> Tuple[List[Decision], bool]:
    """The decisions of one batch request, checked against what was asked.

    Returns the decisions and whether the batch stopped (a short-circuit
    semantic met its stopping decision): nothing after it must be sent.
    """
    raw = data.get("evaluations")
    if not isinstance(raw, list):
        raise ProtocolError("the batch answer has no evaluations list", request_id=request_id)
    decisions = [decision_from(item, request_id, f"evaluations[{i}]") for i, item in enumerate(raw)]
    n = len(decisions)
    if semantic == "execute_all":
        if n != expected:
            raise ProtocolError(
                f"the batch answer holds {n} decisions for {expected} evaluations",
                request_id=request_id,
            )
        return decisions, False
    stopping = semantic == "permit_on_first_permit"  # the decision value that stops
    if n > expected or (n == 0 and expected > 0):
        raise ProtocolError(
            f"the batch answer holds {n} decisions for {expected} evaluations",
            request_id=request_id,
        )
    for i, d in enumerate(decisions[:-1]):
        if d.decision is stopping:
            raise ProtocolError(
                f"evaluations[{i}] is a {'permit' if stopping else 'deny'} under {semantic} "
                "but the answer goes on: wrong order, or the semantic was not applied",
                request_id=request_id,
            )
    stopped = n > 0 and decisions[-1].decision is stopping
    if n < expected and not stopped:
        raise ProtocolError(
            f"the batch answer holds {n} decisions for {expected} evaluations and its last "
            f"is not the {'permit' if stopping else 'deny'} that stops {semantic}",
            request_id=request_id,
        )
    return decisions, stopped


def search_page(kind: str, data: Dict[str, Any], request_id: str) -> SearchPage:
    """One AuthZEN search answer, checked."""
    results_raw = data.get("results")
    if not isinstance(results_raw, list):
        raise ProtocolError("the search answer has no results list", request_id=request_id)
    results: List[Dict[str, str]] = []
    for i, r in enumerate(results_raw):
        if kind == "action":
            ok = isinstance(r, dict) and isinstance(r.get("name"), str)
            if ok:
                results.append({"name": r["name"]})
        else:
            ok = (
                isinstance(r, dict)
                and isinstance(r.get("type"), str)
                and isinstance(r.get("id"), str)
            )
            if ok:
                results.append({"type": r["type"], "id": r["id"]})
        if not ok:
            raise ProtocolError(f"results[{i}] is not a {kind}: {r!r}", request_id=request_id)
    page = data.get("page")
    next_token = ""
    count: Optional[int] = None
    total: Optional[int] = None
    if page is not None:
        if not isinstance(page, dict):
            raise ProtocolError("the search answer's page is not an object", request_id=request_id)
        token = page.get("next_token", "")
        if token is None:
            token = ""
        if not isinstance(token, str):
            raise ProtocolError("page.next_token is not a string", request_id=request_id)
        next_token = token
        c, t = page.get("count"), page.get("total")
        count = c if isinstance(c, int) and not isinstance(c, bool) else None
        total = t if isinstance(t, int) and not isinstance(t, bool) else None
    skipped: List[Skipped] = []
    context = data.get("context")
    if isinstance(context, dict) and context.get("skipped") is not None:
        raw = context["skipped"]
        if not isinstance(raw, list):
            raise ProtocolError("context.skipped is not a list", request_id=request_id)
        for s in raw:
            if not (isinstance(s, dict) and isinstance(s.get("name"), str)):
                raise ProtocolError(f"a skipped action is malformed: {s!r}", request_id=request_id)
            reason = s.get("reason")
            skipped.append({"name": s["name"], "reason": reason if isinstance(reason, str) else ""})
    return SearchPage(
        results=results,
        next_token=next_token,
        count=count,
        total=total,
        skipped=skipped,
        request_id=request_id,
    )


def search_setup(
    make_body: Callable[[], Dict[str, Any]], page_size: Optional[int], request_id: Optional[str]
) -> Dict[str, Any]:
    """A search's body and arguments, checked when the search is made, not at its first page."""
    if page_size is not None and (
        isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1
    ):
        raise ValueError(f"page_size must be a positive integer, not {page_size!r}")
    request_id_for(request_id)
    body = make_body()
    encode(body)
    return body
