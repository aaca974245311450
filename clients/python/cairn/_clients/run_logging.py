"""TrackingClient's writes to a run: metrics, params, tags and inputs, one at a time or batched."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from .._argument_error import invalid_argument
from .._headers import REQUEST_ID_HEADER, Metadata
from .._numbers import real, whole, whole_or_zero
from ..tracking.v1 import tracking_pb2 as pb
from ..tracking.v1 import tracking_service_pb2 as api
from ..types import _tracking as types
from ..types._arguments import proto
from ..types._tracking import Metric, Param, RunInput, RunTag
from .run_operations import RunOperations
from .tracking_calls import TrackingCalls

M = TypeVar("M", pb.Param, pb.Tag)


class RunLogging(TrackingCalls):
    """Mixed into TrackingClient; its writes go through BackgroundWrites' `_write`."""

    if TYPE_CHECKING:

        async def _write(
            self, write: Awaitable[Any], synchronous: bool | None, size: Callable[[], int]
        ) -> RunOperations | None: ...

    async def log_metric(
        self,
        run_id: str,
        key: str,
        value: float,
        timestamp: int | None = None,
        step: int | None = None,
        synchronous: bool | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> RunOperations | None:
        """Logs one point, at timestamp or now (the server's time as it stores the point:
        a repeat under the same request id is the same request). With synchronous=False
        it returns at once a RunOperations whose wait() waits for the write
        (docs/client.md, "MLflow")."""
        metric = proto(
            pb.Metric,
            key=key,
            value=real(value, "value"),
            step=whole_or_zero(step, "step"),
        )
        if timestamp is not None:
            metric.timestamp_ms = whole(timestamp, "timestamp")
        request = proto(api.LogMetricRequest, project=self.project, run_id=run_id, metric=metric)
        return await self._write(
            self._transport.unary(
                self._stub.LogMetric, request, timeout=timeout, metadata=metadata
            ),
            synchronous,
            request.ByteSize,
        )

    async def log_param(
        self,
        run_id: str,
        key: str,
        value: Any,
        synchronous: bool | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> Any:
        """Logs a param; returns value (a RunOperations with synchronous=False, as in
        MLflow). Logging another value for the key later raises
        FailedPreconditionError (reason PARAM_ALREADY_LOGGED)."""
        request = proto(
            api.LogParamRequest,
            project=self.project,
            run_id=run_id,
            param=proto(pb.Param, key=key, value=str(value)),
        )
        started = await self._write(
            self._transport.unary(self._stub.LogParam, request, timeout=timeout, metadata=metadata),
            synchronous,
            request.ByteSize,
        )
        return value if started is None else started

    async def set_tag(
        self,
        run_id: str,
        key: str,
        value: Any,
        synchronous: bool | None = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> RunOperations | None:
        request = proto(
            api.SetTagRequest,
            project=self.project,
            run_id=run_id,
            tag=proto(pb.Tag, key=key, value=str(value)),
        )
        return await self._write(
            self._transport.unary(self._stub.SetTag, request, timeout=timeout, metadata=metadata),
            synchronous,
            request.ByteSize,
        )

    async def delete_tag(
        self,
        run_id: str,
        key: str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        request = proto(api.DeleteTagRequest, project=self.project, run_id=run_id, key=key)
        await self._transport.unary(
            self._stub.DeleteTag, request, timeout=timeout, metadata=metadata
        )

    async def log_batch(
        self,
        run_id: str,
        metrics: Sequence[Metric] = (),
        params: Sequence[Param] = (),
        tags: Sequence[RunTag] = (),
        synchronous: bool | None = None,
        *,
        request_id: str | None = None,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> RunOperations | None:
        """Logs metrics, params and tags atomically: all of them or none.

        The batch's request id is request_id, else the `x-cairn-request-id` of metadata,
        else a new one; it is sent with every retry, so a batch the client sends again, or
        a caller sends again under its id, is applied once.
        """
        request = proto(
            api.LogBatchRequest,
            project=self.project,
            run_id=run_id,
            request_id=request_id or _request_id_of(metadata) or uuid.uuid4().hex,
            metrics=_columns(metrics),
            params=_pairs(params, pb.Param, "params"),
            tags=_pairs(tags, pb.Tag, "tags"),
        )
        return await self._write(
            self._transport.unary(self._stub.LogBatch, request, timeout=timeout, metadata=metadata),
            synchronous,
            request.ByteSize,
        )

    async def log_inputs(
        self,
        run_id: str,
        inputs: Iterable[RunInput],
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        """Records what the run used (its input lineage)."""
        request = proto(
            api.LogInputsRequest,
            project=self.project,
            run_id=run_id,
            inputs=[
                proto(
                    pb.RunInput,
                    kind=i.kind,
                    name=i.name,
                    uri=i.uri,
                    digest=i.digest,
                    context=i.context,
                )
                for i in inputs
            ],
        )
        await self._transport.unary(
            self._stub.LogInputs, request, timeout=timeout, metadata=metadata
        )


def _columns(metrics: Sequence[Metric]) -> pb.MetricColumns:
    refuse_mapping(metrics, "metrics", "Metric")
    try:
        return types.metrics_to_columns(list(metrics))
    # A step past 64 bits, a value of no number or none a float can hold (10**400), an
    # item that is no Metric.
    except (TypeError, ValueError, OverflowError, AttributeError) as error:
        raise invalid_argument("metrics", str(error)) from None


def _pairs(items: Sequence[Param] | Sequence[RunTag], kind: type[M], argument: str) -> list[M]:
    """log_batch's params or tags as messages: each item has a key and a value, as a
    Param and a RunTag (or MLflow's own) have; anything else is an InvalidArgumentError
    naming the argument, not an AttributeError of a str."""
    name = kind.DESCRIPTOR.name
    refuse_mapping(items, argument, name)
    pairs = []
    for item in items:
        if not (hasattr(item, "key") and hasattr(item, "value")):
            raise invalid_argument(argument, f"{item!r} is no {name} (a key and a value)")
        pairs.append(proto(kind, key=item.key, value=str(item.value)))
    return pairs


def refuse_mapping(items: object, argument: str, name: str) -> None:
    # A dict of keys and values is MLflow's log_params(params), a common slip here.
    if isinstance(items, Mapping | str):
        raise invalid_argument(argument, f"{items!r} is no list of {name}")


def _request_id_of(metadata: Metadata | None) -> str | None:
    """The request id a caller gave in a call's metadata, if any."""
    return next((value for key, value in metadata or () if key == REQUEST_ID_HEADER), None)
