"""Experiments' tags are bounded, so that any experiment fits in a response, and a
search of experiments whose tags take more than the largest message is answered in
pages that each fit."""

import asyncio
import itertools
from collections.abc import Iterator

import asyncpg
import pytest

import cairn
from cairn.exceptions import InvalidArgumentError
from cairn.tracking.v1 import tracking_pb2 as pb
from cairn.types import Experiment
from cairn_server.tracking.validation import (
    EXPERIMENT_TAG_FRAMING,
    MAX_EXPERIMENT_TAG_BYTES,
    tag_bytes,
)

EXPERIMENTS = 40
MAX_TAG_BYTES = MAX_EXPERIMENT_TAG_BYTES  # keys and values in UTF-8, and framing
TAG_FRAMING = EXPERIMENT_TAG_FRAMING  # what each tag counts beside its strings
# A tag's value of 8,000 characters (the longest) of three bytes each in UTF-8.
LONG_VALUE = "€" * 8_000


def _tags(experiment: int) -> dict[str, str]:
    """About 48 kB of tags, a note as MLflow keeps an experiment's description among them."""
    return {"mlflow.note.content": f"{experiment}:{LONG_VALUE}"[:8_000], "owner": LONG_VALUE}


async def test_a_search_of_experiments_larger_than_a_message_is_answered_in_pages(
    small_messages: int, unique: str
) -> None:
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", small_messages) as tracking:
        ids = [
            await tracking.create_experiment(f"big-{unique}-{n:02}", tags=_tags(n))
            for n in range(EXPERIMENTS)
        ]
        found: list[Experiment] = []
        pages, token = 0, None
        while True:
            page = await tracking.search_experiments(
                filter_string=f"name LIKE 'big-{unique}-%'",
                order_by=["name ASC"],
                max_results=1000,
                page_token=token,
            )
            found += page
            pages += 1
            if not (token := page.token):
                break
    assert pages > 1
    assert [e.experiment_id for e in found] == ids
    assert [e.tags for e in found] == [_tags(n) for n in range(EXPERIMENTS)]


async def _tag_bytes(tracking: cairn.TrackingClient, experiment_id: str) -> int:
    tags = (await tracking.get_experiment(experiment_id)).tags
    return sum(len(k.encode()) + len(v.encode()) + TAG_FRAMING for k, v in tags.items())


def _filling(room: int) -> dict[str, str]:
    """Tags that leave exactly room bytes of the bound."""
    tags: dict[str, str] = {}
    left = MAX_TAG_BYTES - room
    while left > 8_000 + TAG_FRAMING:
        tags[f"f{len(tags):03}"] = "x" * 7_996
        left -= 8_000 + TAG_FRAMING
    tags["r"] = "x" * (left - 1 - TAG_FRAMING)
    return tags


async def test_a_tag_past_the_experiments_bound_is_refused(
    tracking: cairn.TrackingClient, unique: str
) -> None:
    experiment_id = await tracking.create_experiment(f"full-{unique}", tags=_filling(24_000))
    before = (await tracking.get_experiment(experiment_id)).tags
    with pytest.raises(InvalidArgumentError) as refused:
        # 24,008 bytes and a tag's framing
        await tracking.set_experiment_tag(experiment_id, "one-more", LONG_VALUE)
    assert refused.value.reason == "TAGS_TOO_LARGE"
    assert (await tracking.get_experiment(experiment_id)).tags == before
    # What is left takes tags exactly; replacing a tag counts its new value in place
    # of the old one; deleting a tag makes room.
    for key, length in (("a", 8_000), ("b", 8_000), ("c", 7_997 - 3 * TAG_FRAMING)):
        await tracking.set_experiment_tag(experiment_id, key, "x" * length)
    assert await _tag_bytes(tracking, experiment_id) == MAX_TAG_BYTES
    await tracking.set_experiment_tag(experiment_id, "f000", "€" * 2_665)
    assert await _tag_bytes(tracking, experiment_id) == MAX_TAG_BYTES - 1
    with pytest.raises(InvalidArgumentError):
        await tracking.set_experiment_tag(experiment_id, "f000", "€" * 2_666)
    await tracking.delete_experiment_tag(experiment_id, "a")
    await tracking.set_experiment_tag(experiment_id, "f000", "€" * 2_666)


async def test_two_tags_that_fit_only_one_at_a_time_are_not_both_taken(
    tracking: cairn.TrackingClient, unique: str
) -> None:
    experiment_id = await tracking.create_experiment(f"race-{unique}", tags=_filling(40_000))
    outcomes = await asyncio.gather(
        *(tracking.set_experiment_tag(experiment_id, key, LONG_VALUE) for key in ("a", "b")),
        return_exceptions=True,
    )
    refused = [o for o in outcomes if isinstance(o, InvalidArgumentError)]
    assert len(refused) == 1 and refused[0].reason == "TAGS_TOO_LARGE"
    assert outcomes.count(None) == 1
    taken = MAX_TAG_BYTES - 40_000 + 24_001 + TAG_FRAMING
    assert await _tag_bytes(tracking, experiment_id) == taken


async def test_an_experiment_created_with_tags_past_the_bound_is_refused(
    tracking: cairn.TrackingClient, unique: str
) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        await tracking.create_experiment(f"too-big-{unique}", tags=_filling(-1))
    assert refused.value.reason == "TAGS_TOO_LARGE"
    assert not await tracking.search_experiments(filter_string=f"name = 'too-big-{unique}'")


@pytest.mark.parametrize(
    ("key", "value"),
    [("k", ""), ("k", "v"), ("k" * 127, "v" * 127), ("😀" * 250, ""), ("😀" * 250, "😀" * 8_000)],
)
def test_a_tag_counts_at_least_what_it_takes_in_an_experiment_on_the_wire(
    key: str, value: str
) -> None:
    tagged = pb.Experiment(tags=[pb.Tag(key=key, value=value)]).ByteSize()
    assert tagged - pb.Experiment().ByteSize() <= tag_bytes({key: value})


def _shortest_keys() -> Iterator[str]:
    """Every key, the shortest first: those of one byte a character (no key starts
    or ends with a space)."""
    alphabet = [chr(c) for c in range(ord("!"), ord("~") + 1)]
    for length in itertools.count(1):
        yield from map("".join, itertools.product(alphabet, repeat=length))


def _most_tags() -> list[str]:
    """The keys of the most tags of empty values the bound takes, then one more."""
    shortest = _shortest_keys()
    keys: list[str] = []
    taken = 0
    while taken <= MAX_TAG_BYTES:
        keys.append(next(shortest))
        taken += tag_bytes({keys[-1]: ""})
    return keys


async def test_an_experiment_of_the_most_and_shortest_tags_is_answered_in_a_message(
    small_messages: int, pool: asyncpg.Pool, unique: str
) -> None:
    """The tags but the last two are copied into the table, not set one by one
    (hundreds of thousands of calls before tags' framing counted): a state the API
    takes, as the last is then set and the one after refused. The name and artifact
    location are the longest, of four bytes a character, beside them."""
    name = f"{unique}-" + "😀" * (500 - len(unique) - 1)
    prefix = f"cairn-artifacts://default/{unique}/"
    location = prefix + "😀" * (2048 - len(prefix))
    *stored, last, one_more = _most_tags()
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", small_messages) as tracking:
        experiment_id = await tracking.create_experiment(name, location)
        await pool.copy_records_to_table(
            "experiment_tags",
            schema_name="tracking",
            columns=["experiment_id", "key", "value"],
            records=[(int(experiment_id), key, "") for key in stored],
        )
        await tracking.set_experiment_tag(experiment_id, last, "")
        with pytest.raises(InvalidArgumentError) as refused:
            await tracking.set_experiment_tag(experiment_id, one_more, "")
        assert refused.value.reason == "TAGS_TOO_LARGE"

        found = await tracking.get_experiment(experiment_id)
        assert found.tags == dict.fromkeys([*stored, last], "")
        by_name = await tracking.get_experiment_by_name(name)
        assert by_name is not None and by_name.tags == found.tags
        page = await tracking.search_experiments(filter_string=f"name = '{name}'", max_results=1)
        assert [e.tags for e in page] == [found.tags]
