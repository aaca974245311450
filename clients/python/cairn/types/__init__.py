"""Plain Python types of the Cairn client; none of them is a protobuf message."""

from ._paging import ListOptions, OrderByField, PagedList, Pager
from ._tracking import (
    Experiment,
    LifecycleStage,
    Metric,
    Param,
    Run,
    RunData,
    RunInfo,
    RunInput,
    RunStatus,
    RunTag,
    ViewType,
)

__all__ = [
    "Experiment",
    "LifecycleStage",
    "ListOptions",
    "Metric",
    "OrderByField",
    "PagedList",
    "Pager",
    "Param",
    "Run",
    "RunData",
    "RunInfo",
    "RunInput",
    "RunStatus",
    "RunTag",
    "ViewType",
]
