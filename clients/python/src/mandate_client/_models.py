"""What calls take and what they return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Mapping, Optional, TypedDict, Union


class _EntityRefBase(TypedDict):
    type: str
    id: str


class Entity(_EntityRefBase, total=False):
    """An AuthZEN subject or resource: ``{"type", "id", "properties"?}``."""

    properties: Dict[str, Any]


class EntityRef(TypedDict):
    """A subject or resource found by a search: ``{"type", "id"}``."""

    type: str
    id: str


class _ActionBase(TypedDict):
    name: str


class Action(_ActionBase, total=False):
    """An AuthZEN action: ``{"name", "properties"?}``."""

    properties: Dict[str, Any]


class ActionRef(TypedDict):
    """An action found by an action search: ``{"name"}``."""

    name: str


class _DecisionErrorBase(TypedDict):
    code: str
    message: str


class DecisionError(_DecisionErrorBase, total=False):
    """An error in a decision (any error makes it a deny): ``{code, message, policy?}``."""

    policy: str


class _ItemErrorBase(TypedDict):
    status: int
    code: str
    message: str


class ItemError(_ItemErrorBase, total=False):
    """Why a batch item was refused as malformed (a deny, not a failure)."""

    field: str


class Skipped(TypedDict):
    """An action an action search could not decide for lack of context."""

    name: str
    reason: str


EntityLike = Mapping[str, Any]
"""A subject or resource as a mapping: ``{"type": "user", "id": "carol"}``."""

ActionLike = Union[str, Mapping[str, Any]]
"""An action: a name (``"withdraw"``) or ``{"name": ..., "properties"?: {...}}``."""

TypeLike = Union[str, Mapping[str, Any]]
"""The searched side of a search: a type name (``"user"``) or ``{"type": "user"}``."""

Semantic = Literal["execute_all", "deny_on_first_deny", "permit_on_first_permit"]
"""AuthZEN's ``evaluations_semantic``."""

SEMANTICS: tuple[str, ...] = ("execute_all", "deny_on_first_deny", "permit_on_first_permit")


@dataclass(frozen=True)
class Decision:
    """A decision and why.

    ``bool(decision)`` is ``decision.decision``, so ``if client.evaluate(...):``
    cannot be an accidental allow.
    """

    decision: bool
    """True for an allow."""
    reasons: List[str] = field(default_factory=list)
    """The ``@id`` of each determining policy (the permits of an allow, the
    forbids of a deny; empty for a default deny)."""
    errors: List[DecisionError] = field(default_factory=list)
    """What went wrong while deciding (any error makes the decision a deny)."""
    policy_version: Optional[str] = None
    summary: Optional[str] = None
    """One line: ``allowed by S2``, ``denied by F1``, ..."""
    error: Optional[ItemError] = None
    """In a batch: why this item was refused as malformed (it is then a deny)."""
    stale_data: bool = False
    """True when an entity was served stale because the store failed."""
    context: Dict[str, Any] = field(default_factory=dict)
    """The answer's whole ``context``, as sent."""
    request_id: Optional[str] = None
    """The ``X-Request-ID`` of the exchange that carried this decision."""

    def __bool__(self) -> bool:
        return self.decision


@dataclass(frozen=True)
class SearchPage:
    """One page of a search answer."""

    results: List[Dict[str, str]]
    """``{"type", "id"}`` for a subject or resource search, ``{"name"}`` for an action search."""
    next_token: str
    """Empty on the last page."""
    count: Optional[int] = None
    total: Optional[int] = None
    skipped: List[Skipped] = field(default_factory=list)
    """Action search only: the actions the server could not decide for lack of context."""
    request_id: Optional[str] = None
