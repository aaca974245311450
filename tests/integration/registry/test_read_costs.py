"""What a registry read costs does not grow with what the project stores.

Each read runs through its store on a connection that logs its statements; each statement
is then run again under EXPLAIN ANALYZE, and the rows it read from the version and
artifact tables are counted (no timing: a count of rows is the same on any machine).
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import asyncpg
import pytest

from cairn_server.registry.store.artifacts import ArtifactStore
from cairn_server.registry.store.models import ModelStore
from cairn_server.registry.store.versions import VersionStore

# Versions of the one big model, beside MODELS models of PER versions each.
BIG = 20_000
MODELS = 100
PER = 50
ARTIFACTS = 20_000
PAGE = 5
RUN = "5d" * 16  # the run of model m050's versions
# Rows a read of PAGE items may take from the big tables: a few per item, and the
# versions of a model whose name orders the page (PER).
MOST_ROWS = 120
_COUNTED = {"model_versions", "artifacts"}


class _OneConnection:
    """A pool for the stores that hands out one connection, whose statements it logs
    as they are sent (not through asyncpg's query logger, which reports each one later,
    from a callback of the event loop)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.logged: list[tuple[str, tuple[Any, ...]]] = []

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        yield _Logging(self)


class _Logging:
    """The connection, its queries logged into its _OneConnection before they run."""

    def __init__(self, one: _OneConnection) -> None:
        self._one = one

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._one.conn, name)
        if name not in ("fetch", "fetchrow", "fetchval", "execute"):
            return method

        def logged(query: str, *args: Any, **kwargs: Any) -> Any:
            self._one.logged.append((query, args))
            return method(query, *args, **kwargs)

        return logged


def _rows_read(plan: dict[str, Any]) -> int:
    """Rows the plan node and those below it read from the counted tables, filtered
    out ones included."""
    own = 0
    if plan.get("Relation Name") in _COUNTED:
        seen = (
            plan["Actual Rows"]
            + plan.get("Rows Removed by Filter", 0)
            + plan.get("Rows Removed by Index Recheck", 0)
        )
        own = seen * plan["Actual Loops"]
    return own + sum(_rows_read(p) for p in plan.get("Plans", []))


async def _cost(one: _OneConnection, read: Callable[[], Awaitable[Any]]) -> tuple[int, str]:
    """The rows all statements of the read took from the counted tables, and their plans."""
    one.logged.clear()
    await read()
    statements = list(one.logged)
    assert statements, "the read ran no statement that was logged"
    total, plans = 0, []
    for query, args in statements:
        if not query.lstrip().upper().startswith("SELECT"):
            continue
        explained = await one.conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {query}", *args)
        plan = (json.loads(explained) if isinstance(explained, str) else explained)[0]["Plan"]
        total += _rows_read(plan)
        plans.append(json.dumps(plan, indent=1)[:4000])
    return total, "\n".join(plans)


async def _fill(conn: asyncpg.Connection, project: str) -> int:
    """BIG versions of model "zz-big" (last by name) and MODELS models of PER versions
    (m050's registered from run RUN), all in stage None: the planner then expects any
    stage to hold most versions, and may look for a model's highest in Staging by
    reading its versions from the highest number down (all of them, as none is staged)
    unless the lookup leaves it no such plan. ARTIFACTS standalone artifacts. Returns
    the big model's id."""
    await conn.execute("SET statement_timeout = 0")
    big = await conn.fetchval(
        """INSERT INTO registry.registered_models (project, name, next_version)
           VALUES ($1, 'zz-big', $2 + 1) RETURNING id""",
        project,
        BIG,
    )
    await conn.execute(
        """INSERT INTO registry.model_versions (project, registered_model_id, name, version, stage)
           SELECT $1, $2, g::text, g, 0::smallint
           FROM generate_series(1, $3) g""",
        project,
        big,
        BIG,
    )
    await conn.execute(
        """INSERT INTO registry.registered_models (project, name)
           SELECT $1, 'm' || lpad(g::text, 3, '0') FROM generate_series(1, $2) g""",
        project,
        MODELS,
    )
    await conn.execute(
        """INSERT INTO registry.model_versions (project, registered_model_id, name, version, stage)
           SELECT $1, m.id, g::text, g, 0::smallint
           FROM registry.registered_models m, generate_series(1, $2) g
           WHERE m.project = $1 AND m.id <> $3""",
        project,
        PER,
        big,
    )
    await conn.execute(
        """UPDATE registry.model_versions v SET source_run_id = $2
           FROM registry.registered_models m
           WHERE m.id = v.registered_model_id AND m.project = $1 AND m.name = 'm050'""",
        project,
        RUN,
    )
    await conn.execute(
        """INSERT INTO registry.artifacts (project, kind, name)
           SELECT $1, 1, 'a' || g FROM generate_series(1, $2) g""",
        project,
        ARTIFACTS,
    )
    await conn.execute(
        "ANALYZE registry.registered_models; ANALYZE registry.model_versions; "
        "ANALYZE registry.artifacts"
    )
    return int(big)


@pytest.fixture
async def filled(pool: asyncpg.Pool, unique: str) -> AsyncIterator[tuple[str, str]]:
    """A project filled by _fill, and its big model's id; deleted afterwards."""
    project = f"cost-{unique}"
    async with pool.acquire() as conn:
        big = await _fill(conn, project)
    yield project, str(big)
    async with pool.acquire() as conn:
        await conn.execute("SET statement_timeout = 0")
        await conn.execute("DELETE FROM registry.artifacts WHERE project = $1", project)
        await conn.execute("DELETE FROM registry.registered_models WHERE project = $1", project)


async def test_reading_a_model_reads_a_few_versions_whatever_its_version_count(
    pool: asyncpg.Pool, filled: tuple[str, str]
) -> None:
    project, big = filled
    async with pool.acquire() as conn:
        one = _OneConnection(conn)
        as_pool = cast(asyncpg.Pool, one)
        models, versions = ModelStore(as_pool), VersionStore(as_pool)
        reads: dict[str, Callable[[], Awaitable[Any]]] = {
            "get": lambda: models.get(project, big),
            "find": lambda: models.find(project, name="zz-big"),
            "latest": lambda: versions.latest(project, big, []),
            "list models by update time": lambda: models.list_page(
                project, "", "update_time desc", PAGE, ""
            ),
            "list models by name desc": lambda: models.list_page(
                project, "", "name desc", PAGE, ""
            ),
        }
        for name, read in reads.items():
            rows, plans = await _cost(one, read)
            assert rows <= MOST_ROWS, f"{name} read {rows} rows of versions\n{plans}"
        latest = (await models.get(project, big)).latest_versions
        assert [(v.stage, v.version) for v in latest] == [(0, BIG)]


@pytest.mark.parametrize(
    ("filter_text", "order_by"),
    [
        ("name = 'm050'", ""),
        ("name IN ('m050', 'm051')", "version desc"),
        ("model_name = 'm050'", "update_time desc"),
        ("", "name"),
        ("", "update_time desc"),
        ("", "update_time"),
        ("", "version desc"),
        ("", "id desc"),
        ("", "create_time desc"),
        # MLflow's search_model_versions("run_id = '...'"): every version was read.
        (f"run_id = '{RUN}'", ""),
        (f"run_id = '{RUN}'", "version desc"),
    ],
)
async def test_a_page_of_versions_reads_about_its_size(
    pool: asyncpg.Pool, filled: tuple[str, str], filter_text: str, order_by: str
) -> None:
    project = filled[0]
    async with pool.acquire() as conn:
        one = _OneConnection(conn)
        versions = VersionStore(cast(asyncpg.Pool, one))
        await _pages_read_about_their_size(
            one,
            lambda token: versions.list_page(project, "", filter_text, order_by, PAGE, token),
        )


@pytest.mark.parametrize(
    ("by", "order_by"),
    [
        *(
            (by, order_by)
            for by in ("model id", "name filter")
            # "update_time desc": MLflow's search_model_versions("name = 'm'") by default.
            for order_by in ("name", "name DESC", "version desc", "update_time desc")
        ),
        ("name filter", "id desc"),
        # The model is most of the project: its versions are met early in the project's.
        ("model id", ""),
    ],
)
async def test_a_page_of_one_models_versions_reads_about_its_size_anywhere(
    pool: asyncpg.Pool, filled: tuple[str, str], by: str, order_by: str
) -> None:
    """MLflow's search_model_versions("name='m'") orders by name, as `cairn models
    versions` lists a model's versions: within one model, by version. The pages at the
    start, and those deep in the big model's versions (through a token of a walk that
    got there), each read about their size, not the model's versions."""
    project, big = filled
    model_id, filter_text = (big, "") if by == "model id" else ("", "name = 'zz-big'")
    async with pool.acquire() as conn:
        one = _OneConnection(conn)
        versions = VersionStore(cast(asyncpg.Pool, one))

        def list_page(token: str, size: int = PAGE) -> Awaitable[Any]:
            return versions.list_page(project, model_id, filter_text, order_by, size, token)

        await _pages_read_about_their_size(one, list_page)
        deep = (await list_page("", BIG // 2)).next_page_token
        await _pages_read_about_their_size(one, list_page, deep)
        if order_by.split()[:1] in (["name"], ["version"]):  # newest first
            page = await list_page(deep)
            assert [v.version for v in page.items] == list(range(BIG // 2, BIG // 2 - PAGE, -1))


@pytest.mark.parametrize("condition", ["current_stage = 'None'", "state != 'ARCHIVED'"])
async def test_a_named_models_page_on_a_stage_or_state_reads_about_its_size(
    pool: asyncpg.Pool, filled: tuple[str, str], condition: str
) -> None:
    """`search_model_versions("name = 'm' AND current_stage = 'None'")`, ordered by its
    default, last updated first. Compared as names (a CASE), the stage was taken for a
    rare one, and the first page read and sorted all 20,000 versions of the model once
    their update times differed (a uniform fill hid it)."""
    project = filled[0]
    async with pool.acquire() as conn:
        await conn.execute(
            """UPDATE registry.model_versions
               SET update_time = create_time + version * interval '1 s' WHERE project = $1""",
            project,
        )
        await conn.execute("ANALYZE registry.model_versions")
        one = _OneConnection(conn)
        versions = VersionStore(cast(asyncpg.Pool, one))
        await _pages_read_about_their_size(
            one,
            lambda token: versions.list_page(
                project, "", f"name = 'zz-big' AND {condition}", "update_time desc", PAGE, token
            ),
        )


@pytest.mark.parametrize("order_by", ["", "create_time desc", "update_time", "id desc"])
async def test_a_page_of_artifacts_reads_about_its_size(
    pool: asyncpg.Pool, filled: tuple[str, str], order_by: str
) -> None:
    project = filled[0]
    async with pool.acquire() as conn:
        one = _OneConnection(conn)
        artifacts = ArtifactStore(cast(asyncpg.Pool, one))
        await _pages_read_about_their_size(
            one, lambda token: artifacts.list_page(project, "", None, "", order_by, PAGE, token)
        )


async def _pages_read_about_their_size(
    one: _OneConnection, list_page: Callable[[str], Awaitable[Any]], token: str = ""
) -> None:
    """Three pages from token's (the first's) each read at most MOST_ROWS rows, and each
    has a next."""
    for page in range(3):
        rows, plans = await _cost(one, functools.partial(list_page, token))
        assert rows <= MOST_ROWS, f"page {page} read {rows} rows\n{plans}"
        token = (await list_page(token)).next_page_token
        assert token
