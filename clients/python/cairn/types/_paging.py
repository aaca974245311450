"""List options, pages and the Pager every list and search call works with."""

from __future__ import annotations

import enum
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from .._argument_error import invalid_argument
from .._numbers import whole, whole_or_zero
from .._page_tokens import check_token_is_new

T = TypeVar("T")


class OrderByField(enum.Enum):
    """Fields every list can be ordered by."""

    CREATE_TIME = "create_time"
    UPDATE_TIME = "update_time"
    ID = "id"


# Kubeflow's OrderByField is a str enum of the names CREATE_TIME, LAST_UPDATE_TIME and
# ID, so code written for its client passes those; this enum's own names are taken too.
_FIELD_NAMES = {
    "CREATE_TIME": OrderByField.CREATE_TIME,
    "LAST_UPDATE_TIME": OrderByField.UPDATE_TIME,
    "UPDATE_TIME": OrderByField.UPDATE_TIME,
    "ID": OrderByField.ID,
}


def order_field(order_by: OrderByField | str | None) -> OrderByField | None:
    """The field a ListOptions.order_by names, an OrderByField or one of the names above."""
    if order_by is None or isinstance(order_by, OrderByField):
        return order_by
    field = _FIELD_NAMES.get(order_by) if isinstance(order_by, str) else None
    if field is None:
        accepted = ", ".join(_FIELD_NAMES)
        raise invalid_argument(
            "order_by", f"{order_by!r} is not an OrderByField nor one of {accepted}"
        )
    return field


def order_keys(order_by: Sequence[str] | None) -> list[str]:
    """The keys of a search's order_by: a list of them, or one key as a string (which
    would otherwise be read as a list of its characters)."""
    return [order_by] if isinstance(order_by, str) else list(order_by or [])


@dataclass
class ListOptions:
    """How to list: page size, order and where to continue.

    A list call reads `next_page_token` to know where to start and writes the token of
    the following page back into it (None after the last page), so passing the same
    options object again fetches the next page.

    Attributes:
        limit: items per page; None means the server's default.
        order_by: field to order by, an OrderByField or its name as Kubeflow's client
            passes it ("CREATE_TIME", "LAST_UPDATE_TIME" or "UPDATE_TIME", "ID"); None
            means the call's default order. Anything else is InvalidArgumentError.
        is_asc: ascending (default) or descending order.
        next_page_token: where the next call starts; None for the first page.
    """

    limit: int | None = None
    order_by: OrderByField | str | None = None
    is_asc: bool = True
    next_page_token: str | None = None

    @classmethod
    def order_by_creation_time(cls, is_asc: bool = True, **kwargs: Any) -> ListOptions:
        return cls(order_by=OrderByField.CREATE_TIME, is_asc=is_asc, **kwargs)

    @classmethod
    def order_by_update_time(cls, is_asc: bool = True, **kwargs: Any) -> ListOptions:
        return cls(order_by=OrderByField.UPDATE_TIME, is_asc=is_asc, **kwargs)

    @classmethod
    def order_by_id(cls, is_asc: bool = True, **kwargs: Any) -> ListOptions:
        return cls(order_by=OrderByField.ID, is_asc=is_asc, **kwargs)


class PagedList(list[T]):
    """One page of results: a list, plus the token of the next page (None at the end)."""

    def __init__(self, items: Iterable[T] = (), next_page_token: str | None = None) -> None:
        super().__init__(items)
        self.next_page_token = next_page_token or None

    @property
    def token(self) -> str | None:
        """MLflow's name for next_page_token."""
        return self.next_page_token


PageFunction = Callable[[ListOptions], "list[T] | Awaitable[list[T]]"]


class Pager(Generic[T]):
    """Iterates every item of a paged list call, fetching pages as needed.

    Wrap any function that takes `ListOptions` and returns a page (sync or async):
    `for` works with a sync function, `async for` with an async one. Paging ends as
    soon as a page comes back without a next-page token: no request is wasted to find
    the end. Builder methods set the options and restart from the first page::

        async for model in Pager(client.get_registered_models).order_by_update_time().descending():
            ...
    """

    def __init__(self, page_fn: PageFunction[T], options: ListOptions | None = None) -> None:
        self.page_fn = page_fn
        self.options = replace(options) if options else ListOptions()
        # Whether page_fn answers with awaitables; known for sure after its first call.
        self._async_mode = inspect.iscoroutinefunction(page_fn)
        self.restart()

    def restart(self) -> Pager[T]:
        """Starts again from the first page, keeping the options."""
        self.options.next_page_token = None
        self._done = False
        self._sent: set[str] = set()
        # The page iteration takes items from, and the place of the next one in it.
        self._page: list[T] = []
        self._taken = 0
        return self

    def order_by_creation_time(self) -> Pager[T]:
        return self._set(order_by=OrderByField.CREATE_TIME)

    def order_by_update_time(self) -> Pager[T]:
        return self._set(order_by=OrderByField.UPDATE_TIME)

    def order_by_id(self) -> Pager[T]:
        return self._set(order_by=OrderByField.ID)

    def ascending(self) -> Pager[T]:
        return self._set(is_asc=True)

    def descending(self) -> Pager[T]:
        return self._set(is_asc=False)

    def limit(self, n: int) -> Pager[T]:
        """Items per page (ListOptions.limit)."""
        return self._set(limit=_items_per_page(n, "limit"))

    def page_size(self, n: int) -> Pager[T]:
        """Items per page: limit by another name, which its errors name."""
        return self._set(limit=_items_per_page(n, "page_size"))

    @property
    def done(self) -> bool:
        """True once the last page has been fetched and iteration took all its items."""
        return self._done and self._taken >= len(self._page)

    def next_page(self) -> Any:
        """The next page: a list, or an awaitable of one when the page function is async.

        What iteration left of the page it was taking items from comes first, as a page
        of its own. After the last page it returns (or resolves to) an empty list
        without calling the page function.
        """
        if self._taken < len(self._page):
            rest = PagedList(self._page[self._taken :], self.options.next_page_token)
            self._page, self._taken = [], 0
            return _ready(rest) if self._async_mode else rest
        if self._done:
            return _ready([]) if self._async_mode else []
        result: Any = self._call_page_fn()
        self._async_mode = inspect.isawaitable(result)
        if self._async_mode:
            return self._finish_async(result)
        return self._finish(result)

    # An iterator, as Kubeflow's Pager: a walk stopped (a `break`, `next()` taken once)
    # goes on where it stopped, the rest of its page first.
    def __iter__(self) -> Iterator[T]:
        return self

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    def __next__(self) -> T:
        while self._taken >= len(self._page):
            if self._done:
                raise StopIteration
            result: Any = self._call_page_fn()
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()
                raise TypeError("this Pager wraps an async function: use 'async for'")
            self._page, self._taken = self._finish(result), 0
        return self._take()

    async def __anext__(self) -> T:
        while self._taken >= len(self._page):
            if self._done:
                raise StopAsyncIteration
            page = self.next_page()
            self._page, self._taken = (await page if inspect.isawaitable(page) else page), 0
        return self._take()

    def _take(self) -> T:
        item = self._page[self._taken]
        self._taken += 1
        return item

    async def _finish_async(self, pending: Awaitable[list[T]]) -> list[T]:
        return self._finish(await pending)

    def _call_page_fn(self) -> Any:
        if self.options.next_page_token:
            self._sent.add(self.options.next_page_token)
        return self.page_fn(self.options)

    def _finish(self, page: list[T]) -> list[T]:
        token = getattr(page, "next_page_token", self.options.next_page_token)
        if hasattr(page, "next_page_token"):
            check_token_is_new(token, self._sent)
        self.options.next_page_token = token or None
        self._done = not token
        return page

    def _set(self, **changes: Any) -> Pager[T]:
        for name, value in changes.items():
            setattr(self.options, name, value)
        return self.restart()


def _items_per_page(n: int, argument: str) -> int:
    """n, checked as a page's item count given as argument."""
    n = whole(n, argument, 32)
    if n < 1:
        raise invalid_argument(argument, f"must be at least 1, got {n}")
    return n


# The most items a server page holds (a list's page_size).
SERVER_PAGE = 1000


def page_size_of(options: ListOptions) -> int:
    """The page_size a list of a registry sends for options.limit: 0, the server's
    default, when None. Checked here so that a limit out of range names `limit`, the
    argument the caller gave, as one of the wrong type does, not the server's field."""
    limit = whole_or_zero(options.limit, "limit", 32)
    if limit < 0:
        raise invalid_argument("limit", f"must not be negative, got {limit}")
    if limit > SERVER_PAGE:
        raise invalid_argument("limit", f"must be at most {SERVER_PAGE}, got {limit}")
    return limit


async def gathered(
    page: Callable[[int, str], Awaitable[tuple[list[T], str]]],
    max_results: Any,
    token: str,
    most: int | None = None,
    short_page_ends: bool = False,
) -> PagedList[T]:
    """Up to max_results items (most at most) from pages of at most SERVER_PAGE, and the
    token of what follows them: MLflow's max_results may exceed one server page. With
    short_page_ends, a page holding fewer than asked for ends them too (a search's page
    cut to fit one message, which MLflow's may be as well): a search of large runs then
    holds about a message's worth at a time, as a page does."""
    wanted = whole(max_results, "max_results")
    if wanted < 1:
        raise invalid_argument("max_results", "must be at least 1")
    if most is not None and wanted > most:
        raise invalid_argument("max_results", f"must be at most {most}, as in MLflow")
    items: list[T] = []
    sent = set[str]()
    while True:
        sent.add(token)
        asked = min(SERVER_PAGE, wanted - len(items))
        found, token = await page(asked, token)
        items.extend(found)
        if not token or len(items) >= wanted or (short_page_ends and len(found) < asked):
            return PagedList(items, token)
        check_token_is_new(token, sent)


async def _ready(value: list[T]) -> list[T]:
    return value
