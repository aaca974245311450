"""Model and doc artifacts, standalone or attached to a model version."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg

from ...common import paging
from ...common.errors import AlreadyExists, FailedPrecondition, NotFound, invalid_field
from ...common.sql import Params
from ..model import Artifact, ArtifactKind
from ..validation import own_files, uri
from .common import (
    clash,
    clashing_value,
    decode_properties,
    delete_row,
    encode_properties,
    fetch_one,
    id_or_none,
    not_found,
    take_turn_for_external_id,
    update_row,
    updating,
)
from .listing import Listing

COLUMNS = """a.id, a.project, a.model_version_id, a.kind, a.name, a.description, a.uri, a.state,
    a.external_id, a.custom_properties, a.model_format_name, a.model_format_version,
    a.storage_key, a.storage_path, a.service_account_name, a.version, a.type, a.source_run_id,
    a.text_bytes, a.entries, a.create_time, a.update_time"""
_LISTING = Listing(
    "a",
    {
        "name": ("a.name", "text"),
        "uri": ("a.uri", "text"),
        "description": ("a.description", "text"),
        "external_id": ("a.external_id", "text"),
        "model_format_name": ("a.model_format_name", "text"),
        "model_version_id": ("a.model_version_id", "bigint"),
        "version": ("coalesce(a.version, 0)", "bigint"),
        "type": ("a.type", "text"),
        "source_run_id": ("a.source_run_id", "text"),
        "run_id": ("a.source_run_id", "text"),
        "id": ("a.id", "bigint"),
    },
    tagged=False,
    empty_is_unset=("a.uri", "a.description", "a.model_format_name", "a.type", "a.source_run_id"),
    run_ids=("a.source_run_id",),
    quoted_numbers=("a.id", "a.model_version_id", "coalesce(a.version, 0)"),
)
UPDATABLE = (
    "description",
    "uri",
    "state",
    "external_id",
    "custom_properties",
    "model_format_name",
    "model_format_version",
    "storage_key",
    "storage_path",
    "service_account_name",
)
_INSERTED = (
    "project",
    "model_version_id",
    "kind",
    "name",
    "description",
    "uri",
    "state",
    "external_id",
    "custom_properties",
    "model_format_name",
    "model_format_version",
    "storage_key",
    "storage_path",
    "service_account_name",
    "version",
    "type",
    "source_run_id",
)


class ArtifactStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, artifact: Artifact) -> Artifact:
        async with self._pool.acquire() as conn, conn.transaction():
            version = None
            if artifact.model_version_id:
                version = await conn.fetchval(
                    """SELECT id FROM registry.model_versions WHERE project = $1 AND id = $2
                       FOR SHARE""",
                    artifact.project,
                    id_or_none(artifact.model_version_id),
                )
                if version is None:
                    raise not_found(
                        "MODEL_VERSION_NOT_FOUND", "model version", artifact.model_version_id
                    )
            else:
                await _lock_name(conn, artifact)
                if await conn.fetchval(
                    "SELECT 1 FROM registry.artifact_names WHERE project = $1 AND name = $2",
                    artifact.project,
                    artifact.name,
                ):
                    raise _taken(artifact.name, "a versioned artifact")
            return await _insert(conn, artifact, version, None)

    async def create_version(self, artifact: Artifact) -> Artifact:
        """The next version of the standalone artifact `artifact.name`.

        Takes the name's next number under its row lock (made on the name's first
        version): numbers are gapless and never reused, concurrent creations queue on
        the lock, and a failed creation rolls its number back.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            await _lock_name(conn, artifact)
            number = await conn.fetchval(
                """INSERT INTO registry.artifact_names AS n (project, name, next_version)
                   VALUES ($1, $2, 2)
                   ON CONFLICT (project, name) DO UPDATE SET next_version = n.next_version + 1
                   RETURNING n.next_version - 1""",
                artifact.project,
                artifact.name,
            )
            if number == 1 and await conn.fetchval(
                """SELECT 1 FROM registry.artifacts WHERE project = $1
                   AND model_version_id IS NULL AND name = $2 AND version IS NULL""",
                artifact.project,
                artifact.name,
            ):
                raise _taken(artifact.name, "an unversioned artifact")
            return await _insert(conn, artifact, None, number)

    async def get(self, project: str, artifact_id: str) -> Artifact:
        return await self._one(project, "a.id = $2", [id_or_none(artifact_id)], artifact_id)

    async def find(
        self,
        project: str,
        *,
        model_version_id: str = "",
        name: str = "",
        external_id: str = "",
        version: int = 0,
    ) -> Artifact:
        """By external id, by name in a model version, or by standalone name: version n,
        or (version 0) the unversioned artifact of the name, else its highest version."""
        if external_id:
            return await self._one(project, "a.external_id = $2", [external_id], external_id)
        if model_version_id:
            return await self._one(
                project,
                "a.model_version_id = $2 AND a.name = $3",
                [id_or_none(model_version_id), name],
                name,
            )
        if version:
            return await self._one(
                project,
                "a.model_version_id IS NULL AND a.name = $2 AND a.version = $3",
                [name, version],
                f"{name} version {version}",
            )
        return await self._one(
            project,
            """a.model_version_id IS NULL AND a.name = $2
               ORDER BY a.version DESC NULLS FIRST LIMIT 1""",
            [name],
            name,
        )

    async def list_page(
        self,
        project: str,
        model_version_id: str,
        kind: ArtifactKind | None,
        filter_text: str,
        order_by: str,
        page_size: int,
        page_token: str,
    ) -> paging.ListPage[Artifact]:
        params = Params(project)
        where = ["a.project = $1", _LISTING.where(filter_text, params)]
        if model_version_id:
            where.append(f"a.model_version_id = {params.add(id_or_none(model_version_id) or -1)}")
        if kind is not None:
            where.append(f"a.kind = {params.add(int(kind))}")
        scope = ["artifacts", project, model_version_id, int(kind or 0), filter_text]
        async with self._pool.acquire() as conn:
            page = await _LISTING.page(
                conn,
                f"SELECT {COLUMNS} FROM registry.artifacts a",
                where,
                params,
                order_by,
                page_size,
                page_token,
                scope,
            )
        return page.of([_artifact(r) for r in page.items])

    async def update(self, project: str, artifact_id: str, changes: Mapping[str, Any]) -> Artifact:
        async def update(conn: asyncpg.Connection, surely: bool) -> Artifact:
            row_id = id_or_none(artifact_id)
            await take_turn_for_external_id(conn, "artifacts", project, row_id, changes, surely)
            current = await self._one(project, "a.id = $2", [row_id], artifact_id, conn, lock=True)
            for field, stored in (
                ("name", current.name),
                ("model_version_id", current.model_version_id),
            ):
                if changes.get(field, stored) != stored:
                    raise invalid_field(
                        f"artifact.{field}",
                        f"is {stored!r}: an artifact keeps its name and its version; "
                        "create another one",
                    )
            if changes.get("kind", current.kind) != current.kind:
                raise invalid_field(
                    "artifact.kind",
                    f"is {current.kind.name.lower()!r}: an artifact keeps its kind, "
                    "a model artifact or a doc artifact; create another one",
                )
            if current.version and changes.get("uri", current.uri) != current.uri:
                raise FailedPrecondition(
                    "ARTIFACT_URI_IMMUTABLE",
                    f"version {current.version} of artifact {current.name!r} keeps its URI "
                    f"{current.uri!r}: its files are what the version is; create a new version",
                    metadata={"value": current.uri},
                )
            if changes.get("uri", current.uri) != current.uri:  # as versions.update
                uri(changes["uri"], "artifact.uri")
                own_files(changes["uri"], project, "artifact.uri")
            await update_row(
                conn,
                "artifacts",
                project,
                int(artifact_id),
                changes,
                UPDATABLE,
                current.external_id,
            )
            return await self._one(project, "a.id = $2", [int(artifact_id)], artifact_id, conn)

        return await updating(self._pool, update)

    async def delete(self, project: str, artifact_id: str) -> None:
        if not await delete_row(self._pool, "artifacts", project, artifact_id):
            raise _missing(artifact_id)

    async def _one(
        self,
        project: str,
        condition: str,
        values: list[Any],
        shown: str,
        conn: asyncpg.Connection | None = None,
        lock: bool = False,
    ) -> Artifact:
        if conn is None:
            async with self._pool.acquire() as own:
                return await self._one(project, condition, values, shown, own, lock)
        row = await fetch_one(conn, "artifacts", "a", COLUMNS, condition, [project, *values], lock)
        if row is None:
            raise _missing(shown)
        return _artifact(row)


async def _lock_name(conn: asyncpg.Connection, artifact: Artifact) -> None:
    """Serialises the first unversioned and versioned creations of a standalone name
    until commit, so the check that keeps the two kinds apart cannot race."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 7227))",
        artifact.project,
        artifact.name,
    )


def _taken(name: str, by: str) -> AlreadyExists:
    """Versioned and unversioned standalone artifacts never share a name, so a lookup by
    name alone has one meaning."""
    return AlreadyExists(
        "ARTIFACT_ALREADY_EXISTS",
        f"artifact name {name!r} is taken by {by}",
        metadata={"value": name},
    )


def _missing(shown: str) -> NotFound:
    return not_found("ARTIFACT_NOT_FOUND", "artifact", shown)


def _artifact(row: asyncpg.Record) -> Artifact:
    version = row["model_version_id"]
    return Artifact(
        project=row["project"],
        id=str(row["id"]),
        model_version_id=str(version) if version is not None else "",
        kind=ArtifactKind(row["kind"]),
        name=row["name"],
        description=row["description"],
        uri=row["uri"],
        state=row["state"],
        external_id=row["external_id"] or "",
        custom_properties=decode_properties(row["custom_properties"]),
        model_format_name=row["model_format_name"],
        model_format_version=row["model_format_version"],
        storage_key=row["storage_key"],
        storage_path=row["storage_path"],
        service_account_name=row["service_account_name"],
        version=row["version"] or 0,
        type=row["type"],
        source_run_id=row["source_run_id"],
        create_time=row["create_time"],
        update_time=row["update_time"],
    )


async def _insert(
    conn: asyncpg.Connection, artifact: Artifact, model_version: int | None, number: int | None
) -> Artifact:
    values = [
        artifact.project,
        model_version,
        artifact.kind,
        artifact.name,
        artifact.description,
        artifact.uri,
        artifact.state,
        artifact.external_id or None,
        encode_properties(artifact.custom_properties),
        artifact.model_format_name,
        artifact.model_format_version,
        artifact.storage_key,
        artifact.storage_path,
        artifact.service_account_name,
        number,
        artifact.type,
        artifact.source_run_id,
    ]
    placeholders = ", ".join(f"${n}" for n in range(1, len(values) + 1))
    try:
        row = await conn.fetchrow(
            f"""INSERT INTO registry.artifacts AS a ({", ".join(_INSERTED)})
                VALUES ({placeholders}) RETURNING {COLUMNS}""",
            *values,
        )
    except asyncpg.UniqueViolationError as error:
        raise clash(error, clashing_value(error, artifact.name, artifact.external_id)) from None
    return _artifact(row)
