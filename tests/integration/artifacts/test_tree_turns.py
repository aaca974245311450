"""A tree's files move several at once (docs/artifacts.md, "Trees"): one held up by the
server does not hold up the others, and what arrives is each file whole, the tree's
progress counting every byte once."""

import asyncio
import functools
import itertools
import os
from pathlib import Path

import asyncpg
import pytest

import cairn
from cairn._clients import _file_batches
from tests.conftest import eventually, holds_up_another


async def _is_stored(client: cairn.ArtifactClient, path: str) -> bool:
    return bool(await client.list(path))


async def test_a_batch_held_up_holds_up_none_of_the_others(
    store: cairn.ArtifactClient,
    pool: asyncpg.Pool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One after another, the tree's files waited for t/a, whose publication another
    transaction held: nothing after it was stored until t/a was. Small files now go in
    batches (here of two), each stored whole: t/b waits with t/a, t/c and t/d do not."""
    client = store
    monkeypatch.setattr(_file_batches, "BATCH_FILES", 2)
    for name in ("a", "b", "c", "d"):
        (tmp_path / name).write_bytes(name.encode())
    await client.upload("t/a", b"before")
    async with pool.acquire() as holder:
        publishing = holder.transaction()
        await publishing.start()
        await holder.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"{client.project}/t/a"
        )
        uploading = asyncio.ensure_future(client.upload_tree("t", tmp_path, overwrite=True))
        await eventually(lambda: holds_up_another(holder), what="t/a's publication")
        for name in ("t/c", "t/d"):
            await eventually(functools.partial(_is_stored, client, name), what=f"{name} stored")
        assert not uploading.done()
        assert not await _is_stored(client, "t/b")  # its batch's, with t/a
        await publishing.rollback()
    stored = await uploading
    assert [info.path for info in stored] == ["t/a", "t/b", "t/c", "t/d"]
    assert await client.read("t/a") == b"a"


async def test_a_tree_of_small_and_large_files_arrives_whole(
    store: cairn.ArtifactClient, tmp_path: Path
) -> None:
    """Small files go at once, large ones (the direct threshold or more) one at a time
    after them: each lands whole, and progress counts each byte once."""
    client = store
    client.direct_threshold = 64 * 1024
    sizes = {f"s{number}": 1000 + number for number in range(9)}
    sizes |= {f"large/l{number}": 200_000 + number for number in range(3)}
    source = tmp_path / "source"
    for name, size in sizes.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(os.urandom(size))
    await client.upload_tree("mixed", source)
    shown: list[tuple[int, int]] = []

    await client.download(
        "mixed/", tmp_path / "copy", progress=lambda done, total: shown.append((done, total))
    )

    for name in sizes:
        assert (tmp_path / "copy" / name).read_bytes() == (source / name).read_bytes(), name
    total = sum(sizes.values())
    assert shown[-1] == (total, total)
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(shown))
