"""Every run a search finds, as one table (docs/tracking.md, "Runs as a table")."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .._argument_error import invalid_argument
from .._numbers import whole
from .._page_tokens import check_token_is_new
from .._transport import Transport
from ..tracking.v1 import tracking_service_pb2 as api
from ..types import _tracking as types
from ..types._arguments import proto
from ..types._paging import order_keys
from ..types._tracking import ViewType
from ._experiment_ids import experiment_ids_of

if TYPE_CHECKING:
    import numpy as np

# As mlflow.search_runs: the most runs a table holds unless told otherwise.
TABLE_MAX_RESULTS_DEFAULT = 100_000
PAGE_SIZE = 1000


class _Tracking(Protocol):
    _transport: Transport
    _stub: Any

    @property
    def project(self) -> str: ...


class RunTables:
    """Mixed into TrackingClient."""

    async def search_runs_table(
        self: _Tracking,
        experiment_ids: Sequence[str | int] | str | int,
        filter_string: str = "",
        run_view_type: int | str = ViewType.ACTIVE_ONLY,
        max_results: int = TABLE_MAX_RESULTS_DEFAULT,
        order_by: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """The runs a search finds, up to max_results, as one table: a numpy column per
        attribute (`run_id`, `run_name`, `experiment_id`, `status`, `artifact_uri`,
        `start_time`, `end_time`), then `metrics.<key>` (float, NaN where a run lacks
        the metric), `params.<key>` and `tags.<key>` (None where a run lacks them), a
        row per run in the search's order. `pandas.DataFrame(table)` makes the
        DataFrame `mlflow.search_runs` answers.

        It reads the search's pages of 1,000 runs, the next one under way while the
        last is added to the table, and builds no object per run or per value.
        Arguments are search_runs's.

        Raises:
            InvalidArgumentError: a bad filter or order.
        """
        if whole(max_results, "max_results") < 1:
            raise invalid_argument("max_results", f"must be at least 1, got {max_results}")
        try:  # numpy is the server's dependency, not the client's
            from ..types._run_table import RunTable
        except ImportError as missing:
            raise ImportError(
                "search_runs_table makes numpy columns: pip install numpy"
            ) from missing
        request = proto(
            api.SearchRunsRequest,
            project=self.project,
            experiment_ids=experiment_ids_of(experiment_ids),
            filter=filter_string,
            order_by=order_keys(order_by),
            view_type=types.view_type_to_proto(run_view_type, "run_view_type"),
            page_size=min(PAGE_SIZE, max_results),
            columnar=True,
        )
        table, sent = RunTable(), set[str]()
        page: asyncio.Task[Any] | None = _search(self, request)
        try:
            while page is not None:
                reply = await page
                left = max_results - len(table) - _runs_in(reply)
                page = None
                if reply.next_page_token and left > 0:
                    sent.add(request.page_token)
                    check_token_is_new(reply.next_page_token, sent)
                    request.page_token = reply.next_page_token
                    request.page_size = min(PAGE_SIZE, left)
                    page = _search(self, request)
                # In a thread, so that the event loop sends the next request and takes
                # its answer meanwhile (a coroutine would hold the loop until it ends).
                await asyncio.to_thread(table.add, reply)
        finally:
            if page is not None:
                page.cancel()
        return await asyncio.to_thread(table.table)


def _search(client: _Tracking, request: api.SearchRunsRequest) -> asyncio.Task[Any]:
    """The SearchRuns call of a copy of request, under way."""
    sent = proto(api.SearchRunsRequest)
    sent.CopyFrom(request)
    return asyncio.ensure_future(client._transport.unary(client._stub.SearchRuns, sent))


def _runs_in(reply: api.SearchRunsResponse) -> int:
    return len(reply.columns.run_ids) if reply.HasField("columns") else len(reply.runs)
