"""Which runs used an input: a search with `inputs.uri = '...'` finds the few runs that
used a URI from the index of input URIs, reading about those runs alone in a project
of thousands, and answers what it answered when it tested every run (audit 23,
finding 4); get_runs_using answers from it across the project's experiments."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg
import pytest
import pytest_asyncio

import cairn
from cairn.types import RunInput, ViewType
from cairn_server.tracking.model import ViewType as StoreViewType
from cairn_server.tracking.store import search
from tests.conftest import new_project

from .rows_read import RecordingPool, rows_read

CROWD = 3_000  # runs of experiment a, each with an input of its own
COMMON = search.RARE_LIMIT + 100  # runs of experiment b that used one common URI
WANTED = "s3://lineage/wanted.csv"
OTHER = "s3://lineage/other.csv"
SHARED = "s3://lineage/common.csv"
_VIEWS = {
    ViewType.ACTIVE_ONLY: "r.lifecycle_stage = 1 AND e.lifecycle_stage = 1",
    ViewType.DELETED_ONLY: "NOT (r.lifecycle_stage = 1 AND e.lifecycle_stage = 1)",
    ViewType.ALL: "TRUE",
}


@dataclass
class Lineage:
    project: str
    experiments: dict[str, str]  # a, b, c (deleted), d
    users: list[str]  # runs with an input of WANTED


async def _run_using(client: cairn.TrackingClient, experiment: str, *inputs: RunInput) -> str:
    run_id = (await client.create_run(experiment)).info.run_id
    await client.log_inputs(run_id, list(inputs))
    return run_id


async def _crowd(pool: asyncpg.Pool, project: str, experiment: str, count: int, uri: str) -> None:
    """count runs of the experiment, each with one input: uri, or a URI of its own."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO tracking.runs
                   (run_id, project, experiment_id, run_name, status, start_time, artifact_uri)
               SELECT gen_random_uuid(), $1, $2, 'crowd', 1, g, '' FROM generate_series(1, $3) g""",
            project,
            int(experiment),
            count,
        )
        await conn.execute(
            """INSERT INTO tracking.run_inputs (run_id, kind, name, uri, digest, context)
               SELECT run_id, 'dataset', 'd', coalesce($3, 's3://crowd/' || run_id), '', 'train'
               FROM tracking.runs WHERE project = $1 AND experiment_id = $2""",
            project,
            int(experiment),
            uri or None,
        )
        await conn.execute("ANALYZE tracking.runs; ANALYZE tracking.run_inputs")


@pytest_asyncio.fixture(scope="module")
async def lineage(server_port: int, pool: asyncpg.Pool) -> Lineage:
    project = await new_project(server_port, f"lineage-{uuid.uuid4().hex[:8]}")
    async with cairn.TrackingClient.insecure_connection(
        "127.0.0.1", server_port, project=project
    ) as client:
        ids = {name: await client.create_experiment(name) for name in "abcd"}
        await _crowd(pool, project, ids["a"], CROWD, "")
        await _crowd(pool, project, ids["b"], COMMON, SHARED)
        train, evaluation = RunInput(WANTED, context="train"), RunInput(WANTED, context="eval")
        users = [
            await _run_using(client, ids["a"], train, evaluation),  # twice: one run
            await _run_using(client, ids["b"], train, RunInput(OTHER)),
            await _run_using(client, ids["b"], train),
            await _run_using(client, ids["c"], evaluation),
            await _run_using(client, ids["d"], train),
        ]
        await _run_using(client, ids["a"], RunInput(OTHER))
        await client.delete_run(users[2])
        await client.delete_experiment(ids["c"])
    return Lineage(project, ids, users)


async def _expected(
    pool: asyncpg.Pool, lineage: Lineage, experiments: list[str], view: ViewType, uris: list[str]
) -> list[str]:
    """The runs that used one of uris, newest first (ties by id), as SQL of its own."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            f"""SELECT r.run_id
                FROM tracking.runs r JOIN tracking.experiments e USING (experiment_id)
                WHERE r.project = $1 AND r.experiment_id = ANY($2::bigint[]) AND {_VIEWS[view]}
                  AND EXISTS (SELECT FROM tracking.run_inputs i
                              WHERE i.run_id = r.run_id AND i.uri = ANY($3::text[]))
                ORDER BY r.start_time DESC, r.run_id""",
            lineage.project,
            [int(lineage.experiments[name]) for name in experiments],
            uris,
        )
    return [r["run_id"].hex for r in rows]


async def _paged(
    client: cairn.TrackingClient, ids: list[str], text: str, view: ViewType, size: int
) -> list:
    found: list[str] = []
    token = None
    while True:
        page = await client.search_runs(ids, text, view, size, page_token=token)
        found += [run.info.run_id for run in page]
        token = page.token
        if token is None:
            return found


@pytest.mark.parametrize("view", [ViewType.ACTIVE_ONLY, ViewType.DELETED_ONLY, ViewType.ALL])
@pytest.mark.parametrize("named", ["abc", "b", "abcd"])
async def test_a_uri_search_answers_as_testing_every_run(
    server_port: int, pool: asyncpg.Pool, lineage: Lineage, view: ViewType, named: str
) -> None:
    ids = [lineage.experiments[name] for name in named]
    async with cairn.TrackingClient.insecure_connection(
        "127.0.0.1", server_port, project=lineage.project
    ) as client:
        for text, uris, size in [
            (f"inputs.uri = '{WANTED}'", [WANTED], 2),
            (f"inputs.uri IN ('{WANTED}', '{OTHER}')", [WANTED, OTHER], 2),
            (f"inputs.uri = '{SHARED}'", [SHARED], 400),  # too common: searched as before
        ]:
            expected = await _expected(pool, lineage, list(named), view, uris)
            assert await _paged(client, ids, text, view, size) == expected, text


async def test_every_term_on_inputs_still_holds(server_port: int, lineage: Lineage) -> None:
    async with cairn.TrackingClient.insecure_connection(
        "127.0.0.1", server_port, project=lineage.project
    ) as client:
        ids = list(lineage.experiments.values())
        text = f"inputs.uri = '{WANTED}' AND inputs.context = 'eval'"
        found = await client.search_runs(ids, text, ViewType.ALL)
    assert sorted(run.info.run_id for run in found) == sorted([lineage.users[0], lineage.users[3]])


async def test_get_runs_using_finds_each_run_once_newest_first(
    server_port: int, pool: asyncpg.Pool, lineage: Lineage
) -> None:
    async with cairn.TrackingClient.insecure_connection(
        "127.0.0.1", server_port, project=lineage.project
    ) as client:
        found = await client.get_runs_using(WANTED)
        active = await client.get_runs_using(WANTED, run_view_type=ViewType.ACTIVE_ONLY)
    assert sorted(run.info.run_id for run in found) == sorted(lineage.users)
    assert [run.info.run_id for run in found] == await _expected(
        pool, lineage, list("abcd"), ViewType.ALL, [WANTED]
    )
    assert [run.info.run_id for run in active] == await _expected(
        pool, lineage, list("abcd"), ViewType.ACTIVE_ONLY, [WANTED]
    )


async def test_a_uri_search_reads_the_runs_that_used_it_alone(
    pool: asyncpg.Pool, lineage: Lineage
) -> None:
    experiments = [int(i) for i in lineage.experiments.values()]
    query = search.RunQuery(
        lineage.project, experiments, f"inputs.uri = '{WANTED}'", [], StoreViewType.ALL, 100, ""
    )
    recording = RecordingPool(pool)
    page, _ = await search.search_page(recording, query)
    assert len(page.runs()) == len(lineage.users)
    # Six inputs of five runs, each looked up once or twice (finding, then loading them).
    assert await rows_read(pool, recording.statements, "run_inputs") <= 30
    assert await rows_read(pool, recording.statements, "runs") <= 30
