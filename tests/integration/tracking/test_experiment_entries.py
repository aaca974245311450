"""A page of experiments is bounded by its tags as a page of runs is by its entries:
experiments of many short tags, far within a message's bytes, are read in smaller
pages, each ending with a token that continues after its last experiment, and the
answers of many tags are built off the event loop.

The page's bound is lowered so that a few experiments of a few tags reach it."""

from typing import Any

import pytest

import cairn
from cairn.types import Experiment, PagedList
from cairn_server.common import answers
from cairn_server.tracking import convert
from cairn_server.tracking.store import sizes
from tests.conftest import on_event_loop

# Three experiments of TAGS tags fit a page's entries, a fourth does not.
PAGE_ENTRIES = 35
TAGS = 10


def _tags(experiment: int, count: int = TAGS) -> dict[str, str]:
    return {f"k{n:02}": f"{experiment}" for n in range(count)}


async def _walk(tracking: cairn.TrackingClient, prefix: str) -> list[PagedList[Experiment]]:
    """Every page of the experiments named prefix..., by name, as the server cuts them."""
    pages, token = [], None
    while True:
        page = await tracking.search_experiments(
            filter_string=f"name LIKE '{prefix}%'",
            order_by=["name ASC"],
            max_results=1000,
            page_token=token,
        )
        pages.append(page)
        if not (token := page.token):
            return pages


async def test_a_page_of_experiments_stops_before_the_one_past_its_entries(
    tracking: cairn.TrackingClient, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sizes, "MAX_PAGE_LOAD_ENTRIES", PAGE_ENTRIES)
    prefix = f"tagged-{unique}-"
    counts = [TAGS] * 7 + [PAGE_ENTRIES * 2] + [TAGS] * 2  # one alone past the bound
    ids = [
        await tracking.create_experiment(f"{prefix}{n:02}", tags=_tags(n, count))
        for n, count in enumerate(counts)
    ]

    pages = await _walk(tracking, prefix)

    assert [len(page) for page in pages] == [3, 3, 1, 1, 2]
    assert all(page.token for page in pages[:-1])
    found: list[Experiment] = [experiment for page in pages for experiment in page]
    assert [e.experiment_id for e in found] == ids
    assert [e.tags for e in found] == [_tags(n, count) for n, count in enumerate(counts)]


async def test_answers_of_many_tags_are_built_off_the_event_loop(
    tracking: cairn.TrackingClient, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(answers, "ON_LOOP_ENTRIES", TAGS)
    built_on_loop: list[bool] = []
    experiment = convert.experiment

    def converting(record: Any) -> Any:
        built_on_loop.append(on_event_loop())
        return experiment(record)

    experiment_id = await tracking.create_experiment(f"many-{unique}", tags=_tags(0, TAGS + 1))
    monkeypatch.setattr(convert, "experiment", converting)

    [found] = await tracking.search_experiments(filter_string=f"name = 'many-{unique}'")
    assert found.tags == _tags(0, TAGS + 1)
    assert (await tracking.get_experiment(experiment_id)).tags == found.tags
    named = await tracking.get_experiment_by_name(f"many-{unique}")
    assert named is not None and named.tags == found.tags
    assert built_on_loop == [False, False, False]
