"""No N+1: a page costs the same number of SQL statements whatever its size."""

import asyncpg

from cairn_server.common import database
from cairn_server.common.config import Config
from cairn_server.registry.model import ModelVersion, RegisteredModel
from cairn_server.registry.store.models import ModelStore
from cairn_server.registry.store.versions import VersionStore


async def test_pages_of_models_and_versions_take_a_fixed_number_of_statements(
    config: Config, pool: asyncpg.Pool, unique: str
) -> None:
    project = f"n1-{unique}"
    models, versions = ModelStore(pool), VersionStore(pool)
    for n in range(30):
        model = await models.create(RegisteredModel(project, f"m{n}", custom_properties={"n": n}))
        version = await versions.create(ModelVersion(project, model.id, ""))
        await models.set_alias(project, model.id, "a", version.version)
    statements: list[str] = []

    async def count(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda record: statements.append(record.query))

    counted = await database.create_pool(config.database_url, config)
    try:
        async with counted.acquire() as conn:
            await count(conn)
        counting_models, counting_versions = ModelStore(counted), VersionStore(counted)
        for store, scope in ((counting_models, ()), (counting_versions, ("",))):
            # type introspection, once (mypy cannot pair each store with its scope)
            await store.list_page(project, *scope, "", "", 1, "")  # type: ignore[call-arg]
            sizes = {}
            for size in (2, 25):
                statements.clear()
                page = (await store.list_page(project, *scope, "", "", size, "")).items  # type: ignore[call-arg]
                assert len(page) == size
                sizes[size] = len(statements)
            assert sizes[2] == sizes[25] <= 2
    finally:
        await database.close_pool(counted)
