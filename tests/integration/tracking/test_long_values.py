"""Values as long as their limits, even ones that do not compress, are stored and found:
an index entry of a whole value could pass PostgreSQL's 2,704 bytes (migration 0009)."""

import random

import pytest

import cairn
from cairn.exceptions import InvalidArgumentError
from cairn.types import Param, RunInput, RunTag


def _incompressible(length: int, seed: int) -> str:
    """CJK characters at random: three bytes each in UTF-8, and no quote among them."""
    pick = random.Random(seed)
    return "".join(chr(pick.randrange(0x4E00, 0x9FFF)) for _ in range(length))


async def test_a_long_param_and_tag_are_stored_and_found_by_their_value(
    tracking: cairn.TrackingClient, experiment_id: str
) -> None:
    config = _incompressible(3000, seed=1)  # 9,000 bytes; a filter holds 4,096 characters
    note = _incompressible(8000, seed=2)  # the longest tag value
    run_id = (await tracking.create_run(experiment_id)).info.run_id
    other = (await tracking.create_run(experiment_id)).info.run_id
    await tracking.log_batch(run_id, params=[Param("config", config)], tags=[RunTag("note", note)])
    # The same first 200 characters, another value: the prefix alone must not match.
    await tracking.log_param(other, "config", config[:200] + "x")

    run = await tracking.get_run(run_id)
    assert run.data.params["config"] == config and run.data.tags["note"] == note
    for filter_string in (f"params.config = '{config}'", f"params.config IN ('{config}', 'a')"):
        found = await tracking.search_runs([experiment_id], filter_string)
        assert [r.info.run_id for r in found] == [run_id]
    unequal = await tracking.search_runs([experiment_id], f"params.config != '{config}'")
    assert [r.info.run_id for r in unequal] == [other]


async def test_values_about_as_long_as_the_indexed_prefix_are_told_apart(
    tracking: cairn.TrackingClient, experiment_id: str
) -> None:
    """A value shorter than the indexed prefix (200 characters) is compared by its
    prefix alone; one of 200 is not, since longer values begin with it."""
    values = {"short": "a" * 199, "same start": "a" * 199 + "b", "at": "a" * 200}
    values["past"] = values["at"] + "c"
    runs = {}
    for name, value in values.items():
        runs[name] = (await tracking.create_run(experiment_id)).info.run_id
        await tracking.log_param(runs[name], "p", value)
    for filter_string, expected in [
        (f"params.p = '{values['short']}'", {"short"}),
        (f"params.p = '{values['at']}'", {"at"}),
        (f"params.p IN ('{values['short']}', 'zzz')", {"short"}),
        (f"params.p IN ('{values['short']}', '{values['at']}')", {"short", "at"}),
    ]:
        found = await tracking.search_runs([experiment_id], filter_string)
        assert {r.info.run_id for r in found} == {runs[name] for name in expected}


async def test_an_input_longer_in_bytes_than_its_key_allows_is_refused(
    tracking: cairn.TrackingClient, run_id: str
) -> None:
    """kind, uri and context make the inputs' primary key: each is held to its length in
    UTF-8 bytes; the longest ASCII ones are stored."""
    ascii_input = RunInput("s3://b/" + "u" * 2041, "k" * 250, "name", "", "c" * 250)
    await tracking.log_inputs(run_id, [ascii_input])
    with pytest.raises(InvalidArgumentError) as refused:
        await tracking.log_inputs(run_id, [RunInput("s3://b/" + _incompressible(1000, 3))])
    assert "inputs[0].uri" in refused.value.message and "bytes" in refused.value.message
    assert (await tracking.get_run(run_id)).inputs == [ascii_input]
