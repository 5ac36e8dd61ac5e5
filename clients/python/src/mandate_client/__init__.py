"""Mandate's Python client: ask a Cedar policy decision point over AuthZEN 1.0.

``allowed`` is the guard for application code: it never raises, and every
failure (an error, a timeout, a non-200, a malformed answer) is ``False``,
counted in ``failures`` and handed to ``on_error``. ``evaluate`` returns the
decision with its reasons and raises one of four typed errors, all
:class:`MandateError`.
"""

from ._async_client import AsyncClient
from ._client import Client
from ._errors import (
    MandateError,
    MandateTimeoutError,
    ProtocolError,
    ServerError,
    TransportError,
)
from ._models import (
    Action,
    ActionLike,
    ActionRef,
    Decision,
    DecisionError,
    Entity,
    EntityLike,
    EntityRef,
    ItemError,
    SearchPage,
    Semantic,
    Skipped,
    TypeLike,
)
from ._search import AsyncSearchResults, SearchResults
from ._version import __version__

__all__ = [
    "Action",
    "ActionLike",
    "ActionRef",
    "AsyncClient",
    "AsyncSearchResults",
    "Client",
    "Decision",
    "DecisionError",
    "Entity",
    "EntityLike",
    "EntityRef",
    "ItemError",
    "MandateError",
    "MandateTimeoutError",
    "ProtocolError",
    "SearchPage",
    "SearchResults",
    "Semantic",
    "ServerError",
    "Skipped",
    "TransportError",
    "TypeLike",
    "__version__",
]
