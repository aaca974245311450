"""Experiments through TrackingClient, the real service and PostgreSQL."""

import asyncio
import base64
import contextlib

import asyncpg
import pytest

import cairn
from cairn.exceptions import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from cairn.types import ListOptions, Pager, ViewType
from cairn_server.tracking.store.experiments import take_turns_renaming
from tests.conftest import another_transaction, eventually, holds_up_another, sealed_by


async def test_create_get_and_get_by_name(tracking: cairn.TrackingClient, unique: str) -> None:
    experiment_id = await tracking.create_experiment(f"churn-{unique}", tags={"team": "growth"})
    experiment = await tracking.get_experiment(experiment_id)
    assert experiment.name == f"churn-{unique}"
    assert experiment.tags == {"team": "growth"}
    assert experiment.lifecycle_stage == "active"
    assert experiment.artifact_location == f"cairn-artifacts://default/experiments/{experiment_id}"
    assert experiment.creation_time > 0
    assert await tracking.get_experiment_by_name(f"churn-{unique}") == experiment
    assert await tracking.get_experiment_by_name(f"absent-{unique}") is None
    # Names no experiment can have are absent too, as MLflow answers them; they were
    # INVALID_ARGUMENT.
    for impossible in (f" churn-{unique}", "", "x" * 10_000, "a\nb"):
        assert await tracking.get_experiment_by_name(impossible) is None


async def test_names_are_unique_even_after_delete(
    tracking: cairn.TrackingClient, unique: str
) -> None:
    """A deleted experiment keeps its name until restored or purged: it could be renamed,
    though it took no other write; MLflow refuses it too."""
    experiment_id = await tracking.create_experiment(f"dup-{unique}")
    await tracking.delete_experiment(experiment_id)
    with pytest.raises(AlreadyExistsError) as raised:
        await tracking.create_experiment(f"dup-{unique}")
    assert raised.value.reason == "EXPERIMENT_ALREADY_EXISTS"
    with pytest.raises(FailedPreconditionError) as refused:
        await tracking.rename_experiment(experiment_id, f"renamed-{unique}")
    assert refused.value.reason == "EXPERIMENT_DELETED"
    assert (await tracking.get_experiment(experiment_id)).name == f"dup-{unique}"


async def test_rename(tracking: cairn.TrackingClient, unique: str) -> None:
    first = await tracking.create_experiment(f"a-{unique}")
    await tracking.create_experiment(f"b-{unique}")
    await tracking.rename_experiment(first, f"c-{unique}")
    assert (await tracking.get_experiment(first)).name == f"c-{unique}"
    with pytest.raises(AlreadyExistsError):
        await tracking.rename_experiment(first, f"b-{unique}")


async def test_renames_taking_each_others_names_at_once_are_already_exists(
    tracking: cairn.TrackingClient, pool: asyncpg.Pool, unique: str
) -> None:
    """Renamed into each other's names at once, two experiments answer ALREADY_EXISTS,
    as in either order. Each rename updated its own row, then waited for the other's
    to give its name up, and PostgreSQL aborted one of the two as a deadlock: ABORTED
    (TRANSACTION_CONFLICT, "call again"), which could only end in ALREADY_EXISTS. The
    other rename is a transaction here, held open half done."""
    first = await tracking.create_experiment(f"first-{unique}")
    second = await tracking.create_experiment(f"second-{unique}")
    async with another_transaction(pool) as other:
        project = await other.fetchval(
            "SELECT project FROM tracking.experiments WHERE experiment_id = $1", int(second)
        )
        await take_turns_renaming(other, project)
        await _rename(other, second, f"moving-{unique}")
        rename = asyncio.create_task(tracking.rename_experiment(first, f"second-{unique}"))
        await eventually(lambda: holds_up_another(other), what="the rename waiting")
        # The other rename's second half: PostgreSQL found the deadlock here and
        # aborted the server's call; now the server's waits its turn, and the name
        # is taken.
        with contextlib.suppress(asyncpg.UniqueViolationError):
            await _rename(other, second, f"first-{unique}")
    with pytest.raises(AlreadyExistsError):
        await rename


async def _rename(conn: asyncpg.Connection, experiment_id: str, name: str) -> None:
    await conn.execute(
        "UPDATE tracking.experiments SET name = $2 WHERE experiment_id = $1",
        int(experiment_id),
        name,
    )


async def test_tags_set_and_delete(tracking: cairn.TrackingClient, experiment_id: str) -> None:
    await tracking.set_experiment_tag(experiment_id, "stage", 2)
    await tracking.set_experiment_tag(experiment_id, "stage", 3)
    assert (await tracking.get_experiment(experiment_id)).tags == {"stage": "3"}
    await tracking.delete_experiment_tag(experiment_id, "stage")
    assert (await tracking.get_experiment(experiment_id)).tags == {}
    with pytest.raises(NotFoundError):
        await tracking.delete_experiment_tag(experiment_id, "stage")


async def test_delete_and_restore_hide_and_bring_back_runs(
    tracking: cairn.TrackingClient, experiment_id: str
) -> None:
    kept = (await tracking.create_run(experiment_id)).info.run_id
    deleted_before = (await tracking.create_run(experiment_id)).info.run_id
    await tracking.delete_run(deleted_before)
    await tracking.delete_experiment(experiment_id)
    assert (await tracking.get_experiment(experiment_id)).lifecycle_stage == "deleted"
    assert await tracking.search_runs([experiment_id]) == []
    assert (await tracking.get_run(kept)).info.lifecycle_stage == "deleted"
    with pytest.raises(FailedPreconditionError) as raised:
        await tracking.log_metric(kept, "loss", 1.0)
    assert raised.value.reason == "EXPERIMENT_DELETED"
    with pytest.raises(FailedPreconditionError):
        await tracking.create_run(experiment_id)
    await tracking.restore_experiment(experiment_id)
    back = await tracking.search_runs([experiment_id])
    # The run deleted on its own before stays deleted.
    assert [r.info.run_id for r in back] == [kept]


async def test_search_filter_order_and_view_types(
    tracking: cairn.TrackingClient, unique: str
) -> None:
    ids = [
        await tracking.create_experiment(f"s-{unique}-{n}", tags={"n": str(n)}) for n in range(3)
    ]
    await tracking.delete_experiment(ids[1])
    active = await tracking.search_experiments(filter_string=f"name LIKE 's-{unique}-%'")
    assert [e.experiment_id for e in active] == [ids[2], ids[0]]  # newest first by default
    by_name = await tracking.search_experiments(
        ViewType.ALL, filter_string=f"name LIKE 's-{unique}-%'", order_by=["name ASC"]
    )
    assert [e.experiment_id for e in by_name] == ids
    deleted = await tracking.search_experiments(
        ViewType.DELETED_ONLY, filter_string=f"name LIKE 's-{unique}-%'"
    )
    assert [e.experiment_id for e in deleted] == [ids[1]]
    tagged = await tracking.search_experiments(
        filter_string=f"name LIKE 's-{unique}-%' AND (tags.n = '0' OR tags.n = '2')"
    )
    assert {e.experiment_id for e in tagged} == {ids[0], ids[2]}


async def test_search_pages_with_the_pager(tracking: cairn.TrackingClient, unique: str) -> None:
    ids = [await tracking.create_experiment(f"p-{unique}-{n:02}") for n in range(7)]
    calls = []

    async def page(options: ListOptions):
        calls.append(options.next_page_token)
        return await tracking.search_experiments(
            filter_string=f"name LIKE 'p-{unique}-%'", options=options
        )

    pager = Pager(page).order_by_creation_time().ascending().limit(3)
    assert [e.experiment_id async for e in pager] == ids
    assert len(calls) == 3  # 3 + 3 + 1, and no extra request to find the end


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (lambda t: t.create_experiment(""), "INVALID_ARGUMENT"),
        (lambda t: t.create_experiment("x" * 501), "INVALID_ARGUMENT"),
        (lambda t: t.create_experiment("bad\x07name"), "INVALID_ARGUMENT"),
        (lambda t: t.get_experiment("abc"), "INVALID_ARGUMENT"),
        (lambda t: t.search_experiments(filter_string="name ~ 'x'"), "INVALID_FILTER"),
        (lambda t: t.search_experiments(filter_string="tags.a = 1"), "INVALID_FILTER"),
        (lambda t: t.search_experiments(order_by=["metrics.acc"]), "INVALID_ORDER_BY"),
        (lambda t: t.search_experiments(page_token="garbage!"), "INVALID_PAGE_TOKEN"),
        # Each of these two was accepted or INTERNAL.
        (lambda t: t.search_experiments(filter_string="name LIKE '\\'"), "INVALID_FILTER"),
        (lambda t: t.search_experiments(order_by=["name" + " " * 4096]), "INVALID_ORDER_BY"),
    ],
)
async def test_bad_input_is_invalid_argument(
    tracking: cairn.TrackingClient, call, reason: str
) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        await call(tracking)
    assert raised.value.reason == reason


@pytest.mark.parametrize(
    ("order_by", "position"),
    [
        (["name ASC", "creation_tme DESC"], 10),  # sent as "name ASC, creation_tme DESC"
        (["name", "experiment_id", "creation_time", "bogus"], 36),
        (["name", "name"], 6),
        ("name,,creation_time", 5),
        ("name DESC,", 10),
    ],
)
async def test_a_bad_order_term_is_named_by_its_place_in_the_order_sent(
    tracking: cairn.TrackingClient, order_by: list[str] | str, position: int
) -> None:
    """Each term was parsed apart, its position counted from its own start: every one
    but the first was named at the position of some other character."""
    with pytest.raises(InvalidArgumentError) as raised:
        await tracking.search_experiments(order_by=order_by)
    assert raised.value.reason == "INVALID_ORDER_BY"
    assert raised.value.metadata["position"] == str(position), raised.value.message


async def test_a_token_nested_too_deep_is_invalid_page_token(
    tracking: cairn.TrackingClient, pool: asyncpg.Pool
) -> None:
    """Too deep for json.loads, it was INTERNAL; sealed as the service seals its tokens,
    to reach the decoder behind the seal."""
    nested = await sealed_by(pool, "tracking", base64.urlsafe_b64encode(b"[" * 3000).decode())
    with pytest.raises(InvalidArgumentError) as raised:
        await tracking.search_experiments(page_token=nested)
    assert raised.value.reason == "INVALID_PAGE_TOKEN"


# str(2**63) and "9999999999999999999" are well-formed but beyond bigint: they were
# INTERNAL. The ids of 20 digits and more were INVALID_ARGUMENT, though the docs say an
# id past the largest is NOT_FOUND.
@pytest.mark.parametrize(
    "experiment_id",
    [
        "999999999",
        str(2**63 - 1),
        str(2**63),
        "9999999999999999999",
        "10000000000000000000",
        "9" * 64,
    ],
)
async def test_unknown_experiment_is_not_found(
    tracking: cairn.TrackingClient, experiment_id: str
) -> None:
    with pytest.raises(NotFoundError) as raised:
        await tracking.get_experiment(experiment_id)
    assert raised.value.reason == "EXPERIMENT_NOT_FOUND"
    with pytest.raises(NotFoundError) as raised:
        await tracking.create_run(experiment_id)
    assert raised.value.reason == "EXPERIMENT_NOT_FOUND"
    # A search naming it finds no run there, as for any unknown id, and still searches
    # the other experiments it names.
    known = await tracking.create_experiment(f"beside-{experiment_id}")
    run_id = (await tracking.create_run(known)).info.run_id
    found = await tracking.search_runs([experiment_id, known])
    assert [r.info.run_id for r in found] == [run_id]
    assert len(await tracking.search_runs([experiment_id])) == 0


async def test_mlflows_default_experiment_0_is_refused_saying_what_to_do(
    tracking: cairn.TrackingClient,
) -> None:
    """MLflow's examples write create_run("0"), its Default experiment, which Cairn does
    not have; the answer said only "must be a positive integer", as for "abc"."""
    for call in (tracking.create_run, tracking.get_experiment, lambda i: tracking.search_runs([i])):
        with pytest.raises(InvalidArgumentError) as raised:
            await call("0")
        assert "Cairn has no Default experiment 0" in raised.value.message
        assert "get_experiment_by_name" in raised.value.message


@pytest.mark.parametrize("experiment_id", ["1" + "0" * 64, "007", "-1", "1.0", "\uff11"])
async def test_an_id_that_is_no_number_or_too_long_is_invalid(
    tracking: cairn.TrackingClient, experiment_id: str
) -> None:
    """Past 64 digits an id is refused rather than read, as one that is no number is."""
    with pytest.raises(InvalidArgumentError) as raised:
        await tracking.get_experiment(experiment_id)
    assert [field for field, _ in raised.value.field_violations] == ["experiment_id"]


async def test_an_artifact_location_lies_in_the_experiments_own_project(
    server_port: int, unique: str
) -> None:
    from tests.conftest import new_project

    other = await new_project(server_port, f"secret-{unique}")
    mine = await new_project(server_port, f"mine-{unique}")
    async with cairn.TrackingClient.insecure_connection(
        "127.0.0.1", server_port, project=mine
    ) as tracking:
        for n, location in enumerate(
            [
                f"cairn-artifacts://{other}/secret",
                f"cairn-artifacts://{mine}/../{other}",
                f"cairn-artifacts://{mine}",
                f"cairn-artifacts://{mine}/a?b=c",
                "s3://bucket/runs",
                "/absolute/path",
                f"cairn-artifacts://[{mine}/x",
            ]
        ):
            with pytest.raises(InvalidArgumentError) as raised:
                await tracking.create_experiment(f"bad-{n}", artifact_location=location)
            assert raised.value.reason == "INVALID_ARTIFACT_LOCATION", location
        experiment_id = await tracking.create_experiment(
            "shared-root", artifact_location=f"cairn-artifacts://{mine}/team/runs"
        )
        experiment = await tracking.get_experiment(experiment_id)
        assert experiment.artifact_location == f"cairn-artifacts://{mine}/team/runs"


async def test_an_experiment_is_found_by_the_times_it_reports(
    tracking: cairn.TrackingClient, pool: asyncpg.Pool, unique: str
) -> None:
    """Stored to the microsecond, reported in whole milliseconds (cut, not rounded):
    a filter compares the same milliseconds, as MLflow's, which stores them."""
    name = f"timed-{unique}"
    experiment_id = await tracking.create_experiment(name)
    await pool.execute(
        """UPDATE tracking.experiments SET creation_time = '2026-01-01 00:00:00.000700+00',
               last_update_time = '2026-01-01 00:00:01.999900+00'
           WHERE experiment_id = $1""",
        int(experiment_id),
    )
    experiment = await tracking.get_experiment(experiment_id)
    assert (experiment.creation_time, experiment.last_update_time) == (
        1767225600000,
        1767225601999,
    )
    for attribute, value in (
        ("creation_time", experiment.creation_time),
        ("last_update_time", experiment.last_update_time),
    ):
        for comparison in ("=", "<=", ">="):
            found = await tracking.search_experiments(
                filter_string=f"name = '{name}' AND {attribute} {comparison} {value}"
            )
            assert [e.experiment_id for e in found] == [experiment_id], (attribute, comparison)
