"""Model version stages: transitions between them, and the latest version in each."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from ..model import ModelVersion, Stage
from .common import id_or_none, not_found, update_row
from .version_rows import COLUMNS, one_version, touch_model, version_of, with_aliases

# Every stage, as an SQL array, for lookups that take each in turn.
STAGES = "'{" + ",".join(str(int(s)) for s in Stage) + "}'::smallint[]"


def highest_in_stage(columns: str, model: str, stage: str) -> str:
    """SQL of `columns` (over `x`) of the highest version of model in stage (none: no row): the
    first entry of model_versions_by_stage at (model, stage). The stage is bounded
    rather than equated, and ordered by: with `stage = s` the planner may instead read
    the model's versions by number from the highest down until one is in the stage,
    which for a stage no version is in reads them all (750,000 rows a stage for a
    model of 1,000,000 versions in stage None, when few versions anywhere are staged)."""
    return f"""SELECT {columns} FROM registry.model_versions x
        WHERE x.registered_model_id = {model} AND x.stage >= {stage} AND x.stage <= {stage}
        ORDER BY x.stage, x.version DESC LIMIT 1"""


# The highest version of each model ($1) in each stage ($2), by model and stage: one
# probe of model_versions_by_stage per pair, whatever the model's version count, and
# COLUMNS (two subqueries a row) on the found rows only. DISTINCT ON over the versions
# read, sorted and evaluated COLUMNS on all of them: 3 s and 63 MiB of temporary files
# for a model of 1,000,000 versions.
_LATEST = f"""SELECT {COLUMNS} FROM registry.model_versions v
    WHERE v.id IN (SELECT top.id FROM unnest($1::bigint[]) AS model (id)
                   CROSS JOIN unnest($2::smallint[]) AS wanted (stage)
                   CROSS JOIN LATERAL ({highest_in_stage("x.id", "model.id", "wanted.stage")}) top)
    ORDER BY v.registered_model_id, v.stage"""


class VersionStages:
    """Moving versions between stages, and finding the highest version in each."""

    _pool: asyncpg.Pool

    async def transition_stage(
        self, project: str, version_id: str, stage: Stage, archive_existing: bool
    ) -> ModelVersion:
        async with self._pool.acquire() as conn, conn.transaction():
            # The model first, as creating a version takes it: one model's transitions
            # follow one another, so each archives what the one before left in its stage.
            # Its update time moves too, as in MLflow: a promotion shows in the models
            # ordered by it.
            await touch_model(conn, project, version_id)
            current = await one_version(
                conn, project, "v.id = $2", [id_or_none(version_id)], version_id, lock=True
            )
            if archive_existing and stage in (Stage.STAGING, Stage.PRODUCTION):
                await conn.execute(
                    """UPDATE registry.model_versions
                       SET stage = $3, update_time = clock_timestamp()
                       WHERE registered_model_id = $1 AND stage = $2 AND id <> $4""",
                    int(current.registered_model_id),
                    stage,
                    Stage.ARCHIVED,
                    int(version_id),
                )
            await update_row(
                conn, "model_versions", project, int(version_id), {"stage": stage}, ("stage",), ""
            )
            return await one_version(conn, project, "v.id = $2", [int(version_id)], version_id)

    async def latest(
        self, project: str, model_id: str, stages: Sequence[Stage]
    ) -> list[ModelVersion]:
        """The highest version in each requested stage (every stage when none)."""
        async with self._pool.acquire() as conn:
            exists = await conn.fetchval(
                "SELECT 1 FROM registry.registered_models WHERE project = $1 AND id = $2",
                project,
                id_or_none(model_id),
            )
            if exists is None:
                raise not_found("REGISTERED_MODEL_NOT_FOUND", "registered model", model_id)
            rows = await conn.fetch(
                _LATEST, [int(model_id)], sorted({int(s) for s in stages or Stage})
            )
            return await with_aliases(conn, rows)


async def latest_of(
    conn: asyncpg.Connection, model_ids: list[int]
) -> dict[int, list[ModelVersion]]:
    """MLflow's latest_versions of several models in one statement: the highest version
    in each stage, by model id, in stage order."""
    latest: dict[int, list[ModelVersion]] = {model_id: [] for model_id in model_ids}
    if model_ids:
        for row in await conn.fetch(_LATEST, model_ids, [int(s) for s in Stage]):
            latest[row["registered_model_id"]].append(version_of(row))
    return latest
