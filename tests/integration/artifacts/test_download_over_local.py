"""A directory download into a folder that holds files already: what stands in the way
(an earlier download of another version, say) is refused before anything is written,
and a write the file system refuses part-way is a typed error, not a raw OSError."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import cairn
from cairn.exceptions import FailedPreconditionError
from tests.conftest import disk_full_after, new_project


@pytest.fixture
async def store(server_port: int, unique: str) -> AsyncIterator[cairn.ArtifactClient]:
    project = await new_project(server_port, f"l-{unique}")
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", server_port, project=project, timeout=None
    ) as client:
        await client.upload("d/0.txt", b"listed first")
        await client.upload("d/a/b", b"nested")
        yield client


def _tree(root: Path) -> dict[str, bytes | None]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() else None
        for p in root.rglob("*")
    }


@pytest.mark.parametrize("in_the_way", ["a file where a folder goes", "a folder where a file goes"])
async def test_what_the_destination_holds_in_the_way_is_refused_first(
    store: cairn.ArtifactClient, tmp_path: Path, in_the_way: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    if in_the_way == "a file where a folder goes":
        (out / "a").write_bytes(b"from an earlier download")
        path, local = "d/a/b", out / "a"
    else:
        (out / "0.txt").mkdir()
        path, local = "d/0.txt", out / "0.txt"
    before = _tree(out)

    with pytest.raises(FailedPreconditionError) as refused:
        await store.download("d", out)

    assert refused.value.reason == "LOCAL_PATH_CONFLICT"
    assert refused.value.metadata == {"path": path, "local_path": str(local)}
    assert _tree(out) == before


async def test_a_file_where_the_destination_needs_a_folder_is_refused_first(
    store: cairn.ArtifactClient, tmp_path: Path
) -> None:
    """A destination under a file (`cairn artifacts download -d afile`) passed the check,
    whose looks at a path under a file find nothing there, and the first write failed
    LOCAL_WRITE_FAILED 'Not a directory', saying that download again would finish."""
    afile = tmp_path / "afile"
    afile.write_bytes(b"mine")

    for path in ("d", "d/0.txt"):  # a directory, a file
        with pytest.raises(FailedPreconditionError) as refused:
            await store.download(path, afile / "d")

        assert refused.value.reason == "LOCAL_PATH_CONFLICT"
        assert refused.value.metadata == {"path": "d/0.txt", "local_path": str(afile)}
    assert afile.read_bytes() == b"mine"


async def test_a_write_refused_part_way_is_typed_and_leaves_whole_files(
    store: cairn.ArtifactClient, tmp_path: Path
) -> None:
    await store.upload("d/c", b"c" * 200_000)
    with pytest.raises(FailedPreconditionError) as refused, disk_full_after(100_000):
        await store.download("d", tmp_path / "out")

    assert refused.value.reason == "LOCAL_WRITE_FAILED"
    assert refused.value.metadata["errno"] == "EFBIG"
    assert _tree(tmp_path / "out") == {"0.txt": b"listed first", "a": None, "a/b": b"nested"}
