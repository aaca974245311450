"""The registry's cheaper reads answer exactly what the statements before them answered.

The latest versions of models, what a model brings to a page, and every list paged
through with tokens are compared with the former SQL (kept here as the reference) on
generated data: models with and without versions, versions in every stage, archived
ones, numbers with gaps, aliases, and many equal create and update times.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from cairn_server.common.sql import Params
from cairn_server.registry.model import Stage
from cairn_server.registry.store import models as model_store
from cairn_server.registry.store import version_listing
from cairn_server.registry.store.artifacts import ArtifactStore
from cairn_server.registry.store.listing import Listing
from cairn_server.registry.store.models import ModelStore
from cairn_server.registry.store.version_rows import COLUMNS, with_aliases
from cairn_server.registry.store.version_stages import latest_of
from cairn_server.registry.store.versions import VersionStore

_OLD_MODEL_NAME = (
    "(SELECT m.name FROM registry.registered_models m WHERE m.id = v.registered_model_id)"
)
# The version listing as it was: the model's name by a subquery per version.
_OLD_LISTING = Listing(
    "v",
    {
        **version_listing._LISTING.attributes,
        "name": (_OLD_MODEL_NAME, "text"),
        "model_name": (_OLD_MODEL_NAME, "text"),
    },
    orders={"version": "bigint", "name": (_OLD_MODEL_NAME, "text", "model_name")},
    ties=version_listing._LISTING.ties,  # the order as it is now: what it answers is compared
)
_OLD_LATEST_OF = f"""SELECT DISTINCT ON (v.registered_model_id, v.stage) {COLUMNS}
    FROM registry.model_versions v WHERE v.registered_model_id = ANY($1::bigint[])
    ORDER BY v.registered_model_id, v.stage, v.version DESC"""
_OLD_LATEST = f"""SELECT DISTINCT ON (v.stage) {COLUMNS} FROM registry.model_versions v
    WHERE v.registered_model_id = $1
      AND (cardinality($2::smallint[]) = 0 OR v.stage = ANY($2::smallint[]))
    ORDER BY v.stage, v.version DESC"""
_OLD_BRINGS = """(SELECT coalesce(sum(x.text_bytes), 0) FROM (
    SELECT DISTINCT ON (v.stage) v.text_bytes FROM registry.model_versions v
    WHERE v.registered_model_id = q.id ORDER BY v.stage, v.version DESC) x)
    + 2 * (SELECT coalesce(sum(octet_length(a.alias)), 0) FROM registry.aliases a
           WHERE a.registered_model_id = q.id)"""

MODELS = 12
# Every listing is read in pages this small, so tokens cross many ties.
PAGE = 7
ALL = 100_000
FILTERS = [
    "",
    "name = 'm03'",
    "name IN ('m01', 'm03', 'none-such')",
    "model_name = 'm02' AND stage = 'Production'",
    "stage = 'Staging' AND name IN ('m04', 'm05')",
    "name = 'm01' OR stage = 'Archived'",
    "state = 'ARCHIVED'",
    "name LIKE 'm0%'",
    "name != 'm01'",
    "name NOT IN ('m01', 'm02')",
    "name = 'none-such'",
    "tags.t = 'x' AND name = 'm06'",
]
ORDERS = [
    "",
    "name",
    "name desc",
    "update_time",
    "update_time desc",
    "create_time desc",
    "version",
    "version desc",
    "id desc",
]


@pytest.fixture
async def project(pool: asyncpg.Pool, unique: str) -> AsyncIterator[str]:
    """MODELS models: m00 without versions, m01 with versions in one stage only, the
    others with 10-40 versions in every stage, some archived and some deleted (gaps in
    the numbers), tagged and aliased, on three create and update times."""
    project = f"same-{unique}"
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO registry.registered_models (project, name, next_version)
               SELECT $1, 'm' || lpad(g::text, 2, '0'), 100 FROM generate_series(0, $2 - 1) g""",
            project,
            MODELS,
        )
        await conn.execute(
            """INSERT INTO registry.model_versions
                   (project, registered_model_id, name, version, stage, state, tags)
               SELECT $1, m.id, g::text, g,
                      (CASE WHEN m.name = 'm01' THEN 2 ELSE (g * 7 + m.id) % 4 END)::smallint,
                      (CASE WHEN g % 5 = 0 THEN 2 ELSE 1 END)::smallint,
                      CASE WHEN g % 3 = 0 THEN '{"t": "x"}'::jsonb ELSE '{}'::jsonb END
               FROM registry.registered_models m,
                    generate_series(1, 10 + (m.id % 4) * 10) g
               WHERE m.project = $1 AND m.name <> 'm00'""",
            project,
        )
        await conn.execute(
            """DELETE FROM registry.model_versions WHERE project = $1 AND version % 7 = 3""",
            project,
        )
        await conn.execute(
            """INSERT INTO registry.aliases (registered_model_id, alias, model_version_id)
               SELECT v.registered_model_id, 'a' || v.version, v.id
               FROM registry.model_versions v WHERE v.project = $1 AND v.version % 4 = 1""",
            project,
        )
        for table in ("registered_models", "model_versions"):
            await conn.execute(
                f"""UPDATE registry.{table}
                    SET create_time = '2026-01-01'::timestamptz + (id % 3) * interval '1 s',
                        update_time = '2026-02-01'::timestamptz + (id % 2) * interval '1 s'
                    WHERE project = $1""",
                project,
            )
        await conn.execute(
            """INSERT INTO registry.artifacts (project, kind, name, create_time, update_time)
               SELECT $1, 1 + g % 2, 'a' || g,
                      '2026-01-01'::timestamptz + (g % 3) * interval '1 s',
                      '2026-02-01'::timestamptz + (g % 2) * interval '1 s'
               FROM generate_series(1, 60) g""",
            project,
        )
    yield project
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM registry.artifacts WHERE project = $1", project)
        await conn.execute("DELETE FROM registry.registered_models WHERE project = $1", project)


async def _model_ids(conn: asyncpg.Connection, project: str) -> list[int]:
    rows = await conn.fetch(
        "SELECT id FROM registry.registered_models WHERE project = $1 ORDER BY id", project
    )
    return [row["id"] for row in rows]


async def test_latest_versions_are_those_the_former_sql_found(
    pool: asyncpg.Pool, project: str
) -> None:
    versions = VersionStore(pool)
    async with pool.acquire() as conn:
        ids = await _model_ids(conn, project)
        found = await latest_of(conn, [*ids, ids[3], -1])
        old = await with_aliases(conn, await conn.fetch(_OLD_LATEST_OF, [*ids, ids[3], -1]))
        assert [v for m in ids for v in found[m]] == old
        assert found[ids[0]] == [] and len(found[ids[1]]) == 1
        assert any(v.aliases for v in old) and {v.stage for v in old} == set(Stage)
        for model in ids:
            for stages in ([], [Stage.STAGING], [Stage.ARCHIVED, Stage.NONE], [Stage.ARCHIVED] * 2):
                expected = await with_aliases(
                    conn, await conn.fetch(_OLD_LATEST, model, [int(s) for s in stages])
                )
                assert await versions.latest(project, str(model), stages) == expected


async def test_what_a_model_brings_to_a_page_is_counted_as_before(
    pool: asyncpg.Pool, project: str
) -> None:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            f"""SELECT {_OLD_BRINGS} AS old, (SELECT b.bytes FROM ({model_store._BRINGS}) b) AS new
                FROM registry.registered_models q WHERE q.project = $1""",
            project,
        )
    assert len(rows) == MODELS
    assert [row["new"] for row in rows] == [row["old"] for row in rows]
    assert any(row["old"] > 0 for row in rows)


async def _paged(list_page: Any, *args: Any) -> list[str]:
    """The ids of every item of a list, read PAGE at a time."""
    ids: list[str] = []
    token = ""
    while True:
        page = await list_page(*args, PAGE, token)
        ids += [item.id for item in page.items]
        if not page.next_page_token:
            return ids
        token = page.next_page_token


async def _old_versions(
    conn: asyncpg.Connection, project: str, model_id: str, filter_text: str, order_by: str
) -> list[str]:
    """The versions as the former listing SQL ordered them, in one page."""
    params = Params(project)
    where = ["v.project = $1", _OLD_LISTING.where(filter_text, params)]
    if model_id:
        where.append(f"v.registered_model_id = {params.add(int(model_id))}")
    page = await _OLD_LISTING.page(
        conn,
        f"SELECT {COLUMNS} FROM registry.model_versions v",
        where,
        params,
        order_by,
        ALL,
        "",
        ["old"],
    )
    return [str(row["id"]) for row in page.items]


@pytest.mark.parametrize("order_by", ORDERS)
async def test_version_lists_page_through_what_the_former_sql_listed(
    pool: asyncpg.Pool, project: str, order_by: str
) -> None:
    versions = VersionStore(pool)
    async with pool.acquire() as conn:
        model = str((await _model_ids(conn, project))[4])
        for model_id in ("", model):
            for filter_text in FILTERS:
                expected = await _old_versions(conn, project, model_id, filter_text, order_by)
                got = await _paged(versions.list_page, project, model_id, filter_text, order_by)
                assert got == expected, (model_id, filter_text, order_by)
        everything = await _old_versions(conn, project, "", "", order_by)
    assert len(everything) > 100


@pytest.mark.parametrize("order_by", ["", "name desc", "update_time", "update_time desc", "id"])
async def test_model_lists_page_through_every_model_in_order(
    pool: asyncpg.Pool, project: str, order_by: str
) -> None:
    models = ModelStore(pool)
    got = await _paged(models.list_page, project, "", order_by)
    single = await models.list_page(project, "", order_by, ALL, "")
    assert got == [m.id for m in single.items] and len(got) == MODELS


@pytest.mark.parametrize("order_by", ["", "create_time desc", "update_time", "id desc"])
async def test_artifact_lists_page_through_every_artifact_in_order(
    pool: asyncpg.Pool, project: str, order_by: str
) -> None:
    artifacts = ArtifactStore(pool)
    got = await _paged(artifacts.list_page, project, "", None, "", order_by)
    single = await artifacts.list_page(project, "", None, "", order_by, ALL, "")
    assert got == [a.id for a in single.items] and len(got) == 60
