"""TrackingClient's metric histories: every point of a metric, streamed, for one run or many."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

from .._headers import Metadata
from .._numbers import whole_or_zero
from .._read_ahead import ReadAhead
from ..tracking.v1 import tracking_service_pb2 as api
from ..types import _tracking as types
from ..types._arguments import proto
from ..types._tracking import Metric
from .tracking_calls import TrackingCalls


class MetricHistories(TrackingCalls):
    """Mixed into TrackingClient."""

    async def get_metric_history(
        self,
        run_id: str,
        key: str,
        *,
        max_points: int | None = None,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> list[Metric]:
        """Every point of one metric in step order, or at most max_points of them
        (keeping the first, last, smallest and largest). A stream cut midway is read
        again from its start (docs/client.md, "Retries apply a write once")."""
        chunks = await self._transport.every_response(
            self._stub.GetMetricHistory,
            self._history_request(run_id, key, max_points),
            lambda chunk: types.metrics_from_columns(chunk.points),
            timeout=timeout,
            metadata=metadata,
        )
        return [point for chunk in chunks for point in chunk]

    def iter_metric_history(
        self,
        run_id: str,
        key: str,
        *,
        max_points: int | None = None,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> ReadAhead[Metric]:
        """Like get_metric_history, one point at a time, as the server streams them.

        The stream is read ahead of the loop over it, so however long the loop takes
        over a point, the server never waits on it; points not taken yet wait in memory.
        A stream cut after points were taken raises UnavailableError: call again.
        """
        return ReadAhead(self._history_chunks(run_id, key, max_points, timeout, metadata))

    async def _history_chunks(
        self,
        run_id: str,
        key: str,
        max_points: int | None,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> AsyncIterator[list[Metric]]:
        async for chunk in self._transport.server_stream(
            self._stub.GetMetricHistory,
            self._history_request(run_id, key, max_points),
            timeout=timeout,
            metadata=metadata,
        ):
            yield types.metrics_from_columns(chunk.points)

    def _history_request(
        self, run_id: str, key: str, max_points: int | None
    ) -> api.GetMetricHistoryRequest:
        return proto(
            api.GetMetricHistoryRequest,
            project=self.project,
            run_id=run_id,
            metric_key=key,
            max_points=whole_or_zero(max_points, "max_points", 32),
        )

    async def get_metric_history_bulk(
        self,
        run_ids: Iterable[str],
        key: str,
        *,
        max_points: int | None = None,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> dict[str, list[Metric]]:
        """The history of one metric for several runs (at most 100), by run id as given;
        read again from its start when its stream is cut midway, as get_metric_history."""
        run_ids = list(run_ids)  # read once: a generator would be used up
        request = proto(
            api.GetMetricHistoryBulkRequest,
            project=self.project,
            run_ids=run_ids,
            metric_key=key,
            max_points=whole_or_zero(max_points, "max_points", 32),
        )
        found: dict[str, list[Metric]] = {run_id: [] for run_id in run_ids}
        # The server takes a run id in either case and answers in lower case.
        given: dict[str, list[str]] = {}
        for run_id in found:
            given.setdefault(run_id.lower(), []).append(run_id)
        chunks = await self._transport.every_response(
            self._stub.GetMetricHistoryBulk,
            request,
            lambda chunk: (chunk.run_id, types.metrics_from_columns(chunk.points)),
            timeout=timeout,
            metadata=metadata,
        )
        for answered, metrics in chunks:
            for run_id in given[answered]:
                found[run_id].extend(metrics)
        return found
