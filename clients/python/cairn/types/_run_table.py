"""Runs as one table, a column per attribute, metric, param and tag, as MLflow's
`mlflow.search_runs` makes its DataFrame (docs/tracking.md, "Runs as a table").

A columnar SearchRuns page (pb.RunColumns) already holds each kind of value as flat
lists with a count per run: the table is made from those lists with numpy, a few
operations per page and per key, and no Python object per run or per value. A page of
a server that answers Run messages instead is read through runs_from_search first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate, chain
from typing import Any

import numpy as np

from ..tracking.v1 import tracking_pb2 as pb
from ..tracking.v1 import tracking_service_pb2 as api
from ._tracking import _STATUSES, ATTRIBUTES, Run, check_columns, runs_from_search


@dataclass(frozen=True)
class _Entries:
    """One kind of logged value of a page, an entry per value: its run's row in the
    table, its key's number (RunTable numbers each kind's keys) and its value."""

    rows: np.ndarray
    key_ids: np.ndarray
    values: list[Any]


class RunTable:
    """Gathers pages of runs, then makes the table."""

    def __init__(self) -> None:
        self._attributes: dict[str, list[Any]] = {name: [] for name in ATTRIBUTES}
        self._logged: dict[str, list[_Entries]] = {kind: [] for kind in _KINDS}
        self._key_ids: dict[str, dict[str, int]] = {kind: {} for kind in _KINDS}
        self._runs = 0

    def __len__(self) -> int:
        return self._runs

    def add(self, reply: api.SearchRunsResponse) -> None:
        """Adds a SearchRuns page, in whichever layout the server answered.

        Raises:
            ValueError: a columnar page that does not add up (check_columns); nothing
                of it is added.
        """
        if reply.HasField("columns"):
            self._add_columns(reply.columns)
        else:
            self._add_runs(runs_from_search(reply))

    def table(self) -> dict[str, np.ndarray]:
        """Every run added, a row each in the order added: the attributes, then
        `metrics.<key>` (float, NaN where a run lacks it), `params.<key>` and
        `tags.<key>` (str, None where a run lacks it), each kind's keys sorted."""
        columns = {name: _attribute(name, values) for name, values in self._attributes.items()}
        for kind in _KINDS:
            columns.update(self._pivot(kind))
        return columns

    def _add_columns(self, page: pb.RunColumns) -> None:
        check_columns(page)
        attributes = (
            page.run_ids,
            page.run_names,
            page.experiment_ids,
            list(map(_STATUS_NAMES.__getitem__, list(page.statuses))),
            page.artifact_uris,
            page.start_times_ms,
            page.end_times_ms,
        )
        logged = [
            (counts, list(columns.keys), columns.key_indexes, columns.values)
            for counts, columns in (
                (page.metric_counts, page.metrics),
                (page.param_counts, page.params),
                (page.tag_counts, page.tags),
            )
        ]
        self._add_page(attributes, logged)

    def _add_runs(self, runs: list[Run]) -> None:
        infos = [run.info for run in runs]
        attributes = (
            [i.run_id for i in infos],
            [i.run_name for i in infos],
            [i.experiment_id for i in infos],
            [i.status.value for i in infos],
            [i.artifact_uri for i in infos],
            [i.start_time for i in infos],
            [i.end_time or 0 for i in infos],
        )
        logged: list[_PageEntries] = []
        for kind in _KINDS:
            by_run: list[dict[str, Any]] = [getattr(run.data, kind) for run in runs]
            keys = list(chain.from_iterable(by_run))
            distinct = list(dict.fromkeys(keys))
            position = {key: i for i, key in enumerate(distinct)}
            values = chain.from_iterable(d.values() for d in by_run)
            logged.append(
                ([len(d) for d in by_run], distinct, map(position.__getitem__, keys), values)
            )
        self._add_page(attributes, logged)

    def _add_page(
        self, attributes: Sequence[Iterable[Any]], logged: Sequence[_PageEntries]
    ) -> None:
        """Adds a page that adds up (check_columns): its attribute columns (ATTRIBUTES),
        and for each kind (_KINDS) each run's count of entries, the page's keys, each
        entry's position in those keys and its value."""
        columns = [list(column) for column in attributes]
        runs = len(columns[0])
        for name, column in zip(ATTRIBUTES, columns, strict=True):
            self._attributes[name].extend(column)
        for kind, (counts, keys, indexes, values) in zip(_KINDS, logged, strict=True):
            numbers = self._key_ids[kind]
            ids = np.asarray([numbers.setdefault(key, len(numbers)) for key in keys], np.int64)
            rows = np.repeat(np.arange(self._runs, self._runs + runs), list(counts))
            self._logged[kind].append(
                _Entries(rows, ids[np.array(list(indexes), np.int64)], list(values))
            )
        self._runs += runs

    def _pivot(self, kind: str) -> dict[str, np.ndarray]:
        """A column per key of the kind: the entries grouped by key, each key's values
        set at its runs' rows."""
        pages, numbers = self._logged[kind], self._key_ids[kind]
        if not numbers:
            return {}
        rows = np.concatenate([p.rows for p in pages])
        key_ids = np.concatenate([p.key_ids for p in pages])
        dtype, missing = (np.float64, np.nan) if kind == "metrics" else (object, None)
        values = np.asarray(list(chain.from_iterable(p.values for p in pages)), dtype=dtype)
        by_key = np.argsort(key_ids, kind="stable")
        bounds = [0, *accumulate(np.bincount(key_ids, minlength=len(numbers)).tolist())]
        columns = {}
        for name in sorted(numbers):
            at = by_key[bounds[numbers[name]] : bounds[numbers[name] + 1]]
            column = np.full(self._runs, missing, dtype=dtype)
            column[rows[at]] = values[at]
            columns[f"{kind}.{name}"] = column
        return columns


def _attribute(name: str, values: list[Any]) -> np.ndarray:
    if name not in ("start_time", "end_time"):
        return np.asarray(values, dtype=object)
    # Milliseconds since the epoch, UTC; a run not ended has NaT, as in MLflow.
    milliseconds = np.asarray(values, dtype=np.int64)
    times = milliseconds.astype("datetime64[ms]")
    if name == "end_time":
        times[milliseconds == 0] = np.datetime64("NaT")
    return times


_KINDS = ("metrics", "params", "tags")
_STATUS_NAMES = {number: status.value for number, status in _STATUSES.items()}
# A page's entries of one kind, as _add_page takes them.
_PageEntries = tuple[Iterable[int], list[str], Iterable[int], Iterable[Any]]
