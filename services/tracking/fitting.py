"""How many runs (or experiments) of a page one search response holds.

A run takes about its strings' UTF-8 bytes on the wire, in either form of the response
(run by run, or by column), plus framing. A page is cut before the first run that would
take the response past its budget, so runs whose params and tags are large are read in
smaller pages rather than not at all. The budget also holds the token that continues
after the page's last run, which holds that run's sort values and so is sized as made.
Experiments are cut the same way, before their tags are read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from operator import attrgetter

import numpy as np

from .model import Experiment, RunInfo
from .store.experiments import TagSize
from .store.pages import Logged, RunPage
from .store.search import MAX_TOKEN_LENGTH

# Upper bounds of what the wire adds to the strings' bytes: a run's info (its numbers,
# parent run id, field tags and lengths), a metric's three numbers, and each string's
# tag and length.
RUN_FRAMING = 256
METRIC_FRAMING = 48
STRING_FRAMING = 8
# An experiment's lifecycle stage, times and framing; its tags' framing (a message of two
# strings).
EXPERIMENT_FRAMING = 128
TAG_FRAMING = 3 * STRING_FRAMING
# Tokens tried, each after fewer runs, before a page keeps room for the longest token.
_TOKEN_TRIES = 3
# UTF-8 takes at most this many bytes per character.
_MAX_CHAR_BYTES = 4
# A run info's strings but its parent run id (32 characters or none).
_INFO_STRINGS = [
    attrgetter(name)
    for name in ("project", "run_id", "experiment_id", "run_name", "user_id", "artifact_uri")
]


def fitting_runs(page: RunPage, token_bytes: Callable[[int], int], *, budget: int) -> int:
    """How many of the page's runs, from the first, a response holds in budget bytes
    beside the token that continues after them (token_bytes(count) long); at least one."""
    runs = len(page.infos)
    if _at_most(page) + token_bytes(runs) <= budget:  # nearly every page: nothing encoded
        return runs
    ends = np.cumsum(_run_bytes(page))
    count = _within(ends, budget)
    for _ in range(_TOKEN_TRIES):
        fewer = _within(ends, budget - token_bytes(count))
        if fewer >= count:
            return count
        count = fewer
    # Each try ended on a run of long sort values: room for any token ends the search.
    return _within(ends, budget - MAX_TOKEN_LENGTH)


def _run_bytes(page: RunPage) -> np.ndarray:
    """Each run's bytes in the response."""
    sizes = _info_bytes(page.infos)
    for table, framing in _tables(page):
        sizes += _per_run(table, framing)
    return sizes


def _within(ends: np.ndarray, budget: int) -> int:
    """How many runs, of these cumulative sizes, hold budget bytes; at least one."""
    return max(int(np.searchsorted(ends, budget, side="right")), 1)


def _at_most(page: RunPage) -> int:
    """What the page takes at most, from its characters (counted, not encoded)."""
    chars = sum(sum(map(len, map(field, page.infos))) for field in _INFO_STRINGS)
    framing = (RUN_FRAMING + STRING_FRAMING * len(_INFO_STRINGS)) * len(page.infos)
    for table, row_framing in _tables(page):
        framing += row_framing * table.starts[-1]
        for column in _strings(table):
            chars += sum(map(len, column))
            framing += STRING_FRAMING * len(column)
    return _MAX_CHAR_BYTES * chars + framing


def _tables(page: RunPage) -> list[tuple[Logged, int]]:
    """Each table of the page, with what each of its rows adds beside its strings."""
    return [(page.metrics, METRIC_FRAMING), (page.params, 0), (page.tags, 0), (page.inputs, 0)]


def _strings(table: Logged) -> list[Sequence[str]]:
    """The table's columns of strings (a metric's value, time and step are numbers)."""
    return [c for c in table.columns if c and isinstance(c[0], str)]


def _info_bytes(infos: list[RunInfo]) -> np.ndarray:
    sizes = np.full(len(infos), RUN_FRAMING, np.int64)
    for field in _INFO_STRINGS:
        sizes += np.fromiter(_encoded(map(field, infos)), np.int64, len(infos))
    return sizes


def _per_run(table: Logged, framing: int) -> np.ndarray:
    """Each run's bytes in the table: its rows' strings and framing."""
    rows = table.starts[-1]
    cost = np.full(rows, framing, np.int64)
    for column in _strings(table):
        cost += np.fromiter(_encoded(column), np.int64, rows)
    ends = np.concatenate(([0], np.cumsum(cost)))
    return ends[table.starts[1:]] - ends[table.starts[:-1]]


def _encoded(strings: Iterable[str]) -> Iterable[int]:
    return (len(s.encode()) + STRING_FRAMING for s in strings)


def fitting_experiments(experiments: list[Experiment], tags: list[TagSize], budget: int) -> int:
    """How many of the experiments (given without their tags), from the first, a
    response holds in budget bytes, with tags of the sizes given; at least one."""
    total = 0
    for count, (experiment, size) in enumerate(zip(experiments, tags, strict=True)):
        strings = (experiment.project, experiment.experiment_id, experiment.name)
        chars = sum(map(len, strings)) + len(experiment.artifact_location)
        total += _MAX_CHAR_BYTES * chars + EXPERIMENT_FRAMING
        total += size.bytes + TAG_FRAMING * size.entries
        if total > budget:
            return max(count, 1)
    return len(experiments)
