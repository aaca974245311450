"""What TrackingClient's mixins share: the stub they call through, and how searches answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .._argument_error import invalid_argument
from .._numbers import whole_or_zero
from .._transport import Transport
from ..tracking.v1 import tracking_pb2 as pb
from ..types._arguments import proto
from ..types._paging import ListOptions, OrderByField, PagedList, gathered, order_field

SEARCH_MAX_RESULTS_DEFAULT = 1000
# The most results one search_runs or search_experiments gathers, as in MLflow.
SEARCH_MAX_RESULTS_THRESHOLD = 50_000
T = TypeVar("T")


class TrackingCalls:
    """What the mixins of TrackingClient call through: BaseClient's transport and
    project, and the stub TrackingClient binds. Declared only (nothing at run time), so
    the mixins' methods need no annotated `self` and keep their signatures in help()."""

    _transport: Transport
    _stub: Any

    if TYPE_CHECKING:

        @property
        def project(self) -> str: ...


def tag_messages(tags: dict[str, Any] | None) -> list[pb.Tag]:
    return [proto(pb.Tag, key=k, value=str(v)) for k, v in (tags or {}).items()]


def apply_options(
    options: ListOptions, fields: dict[OrderByField, str]
) -> tuple[int | None, str | None, str | None]:
    """A search's page size, token and order from options: the field options order by,
    in their direction; None (no field) keeps the call's own order, its order_by or its
    default, MLflow's newest first (a direction alone, as Kubeflow's lists take it,
    would turn that default round)."""
    field = order_field(options.order_by)
    if field is None:
        return options.limit, options.next_page_token, None
    if field not in fields:
        raise invalid_argument("order_by", f"cannot order by {field.name} here")
    order = f"{fields[field]} {'ASC' if options.is_asc else 'DESC'}"
    return options.limit, options.next_page_token, order


async def searched(
    page: Callable[[int, str], Awaitable[tuple[list[T], str]]],
    options: ListOptions | None,
    max_results: int | None,
    page_token: str | None,
) -> PagedList[T]:
    """A search's answer: with options (a Pager's), one page of their limit; else up to
    max_results (MLflow's default 1,000, its most 50,000), gathered from pages until
    one is cut short to fit its message."""
    if options is None:
        wanted = SEARCH_MAX_RESULTS_DEFAULT if max_results is None else max_results
        return await gathered(
            page, wanted, page_token or "", SEARCH_MAX_RESULTS_THRESHOLD, short_page_ends=True
        )
    items, token = await page(whole_or_zero(max_results, "max_results", 32), page_token or "")
    options.next_page_token = token
    return PagedList(items, token)
