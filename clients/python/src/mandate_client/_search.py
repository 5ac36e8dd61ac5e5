"""Search answers as iterators that follow ``page.next_token``."""

from __future__ import annotations

from collections import deque
from typing import (
    AsyncIterator,
    Awaitable,
    Callable,
    Deque,
    Generic,
    Iterator,
    List,
    Optional,
    Set,
    TypeVar,
    cast,
)

from ._errors import ProtocolError
from ._models import SearchPage, Skipped

R = TypeVar("R")

MAX_EMPTY_PAGES = 16
"""Pages in a row with no result but a next token before the answer is judged malformed."""


class _Pager:
    """Bookkeeping shared by both iterators: tokens, skipped actions, loop guards."""

    def __init__(self) -> None:
        self.token: Optional[str] = None
        self.done = False
        self.mode: Optional[str] = None
        self.seen: Set[str] = set()
        self.empty_run = 0
        self.skipped: List[Skipped] = []
        self.skipped_names: Set[str] = set()
        self.total: Optional[int] = None
        self.pages = 0

    def use(self, mode: str) -> None:
        if self.mode is None:
            self.mode = mode
        elif self.mode != mode:
            raise RuntimeError("iterate a search either by result or by page, not both")

    def take(self, page: SearchPage) -> None:
        self.pages += 1
        if page.total is not None:
            self.total = page.total
        for s in page.skipped:
            if s["name"] not in self.skipped_names:
                self.skipped_names.add(s["name"])
                self.skipped.append(s)
        token = page.next_token
        if not token:
            self.done = True
            return
        if token in self.seen:
            raise ProtocolError(
                "the search answer repeats a page token: it would never end",
                request_id=page.request_id,
            )
        self.seen.add(token)
        self.empty_run = self.empty_run + 1 if not page.results else 0
        if self.empty_run >= MAX_EMPTY_PAGES:
            raise ProtocolError(
                f"{MAX_EMPTY_PAGES} empty search pages in a row", request_id=page.request_id
            )
        self.token = token


class SearchResults(Generic[R]):
    """The results of a search, fetched page by page as the iteration needs them.

    Nothing is sent before the iteration starts. Each page is one call, with
    its own deadline and retry. ``skipped`` (action search) holds the actions
    the server could not decide for lack of context, from the pages fetched so
    far; ``total`` is the server's count of results, once a page said it.
    Iterate by result (``for r in results``) or by page (``results.pages()``),
    not both.
    """

    def __init__(
        self,
        fetch: Callable[[Optional[str]], SearchPage],
        failed: Callable[[BaseException], None],
    ) -> None:
        self._fetch = fetch
        self._failed = failed
        self._pager = _Pager()
        self._buffer: Deque[R] = deque()

    @property
    def skipped(self) -> List[Skipped]:
        return list(self._pager.skipped)

    @property
    def total(self) -> Optional[int]:
        return self._pager.total

    @property
    def pages_fetched(self) -> int:
        return self._pager.pages

    def _next_page(self) -> SearchPage:
        page = self._fetch(self._pager.token)
        try:
            self._pager.take(page)
        except ProtocolError as exc:
            self._failed(exc)
            raise
        return page

    def __iter__(self) -> Iterator[R]:
        return self

    def __next__(self) -> R:
        self._pager.use("results")
        while not self._buffer:
            if self._pager.done:
                raise StopIteration
            page = self._next_page()
            self._buffer.extend(cast(List[R], page.results))
        return self._buffer.popleft()

    def pages(self) -> Iterator[SearchPage]:
        """The answer page by page, as the server cut it."""
        self._pager.use("pages")
        while not self._pager.done:
            yield self._next_page()

    def to_list(self) -> List[R]:
        """Every result, every page fetched."""
        return list(self)


class AsyncSearchResults(Generic[R]):
    """The async twin of :class:`SearchResults`: ``async for r in results``."""

    def __init__(
        self,
        fetch: Callable[[Optional[str]], Awaitable[SearchPage]],
        failed: Callable[[BaseException], None],
    ) -> None:
        self._fetch = fetch
        self._failed = failed
        self._pager = _Pager()
        self._buffer: Deque[R] = deque()

    @property
    def skipped(self) -> List[Skipped]:
        return list(self._pager.skipped)

    @property
    def total(self) -> Optional[int]:
        return self._pager.total

    @property
    def pages_fetched(self) -> int:
        return self._pager.pages

    async def _next_page(self) -> SearchPage:
        page = await self._fetch(self._pager.token)
        try:
            self._pager.take(page)
        except ProtocolError as exc:
            self._failed(exc)
            raise
        return page

    def __aiter__(self) -> AsyncIterator[R]:
        return self

    async def __anext__(self) -> R:
        self._pager.use("results")
        while not self._buffer:
            if self._pager.done:
                raise StopAsyncIteration
            page = await self._next_page()
            self._buffer.extend(cast(List[R], page.results))
        return self._buffer.popleft()

    async def pages(self) -> AsyncIterator[SearchPage]:
        """The answer page by page, as the server cut it."""
        self._pager.use("pages")
        while not self._pager.done:
            yield await self._next_page()

    async def to_list(self) -> List[R]:
        """Every result, every page fetched."""
        return [r async for r in self]
