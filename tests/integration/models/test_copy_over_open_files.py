"""A model's download over an earlier one whose file some program holds open (Windows
refuses to rename such a file; simulated here): the earlier download is put back as it
was, or, when even that is refused, left without its manifest and said to be
incomplete."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from cairn.exceptions import FailedPreconditionError
from cairn.models import MANIFEST
from tests.integration.models.conftest import World


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _model(root: Path, content: bytes) -> Path:
    root.mkdir(parents=True)
    for name in ("a.bin", "b.bin", "z.bin"):  # copied in this order
        (root / name).write_bytes(content + name.encode())
    return root


async def test_a_download_over_a_file_held_open_leaves_the_earlier_one(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await world.tracking.log_model(
        world.run_id, _model(tmp_path / "1" / "model", b"1"), "m"
    )
    second = await world.tracking.log_model(
        await world.new_run(), _model(tmp_path / "2" / "model", b"2"), "m"
    )
    dst, cache = tmp_path / "dst", world.cache
    earlier = Path(await world.tracking.download_artifacts(first.model_uri, dst, cache_dir=cache))
    await world.tracking.load_model(second.model_uri, cache_dir=cache)  # no download below
    before = _files(earlier)
    replace = os.replace
    refused = {earlier / "model" / "z.bin"}  # held open: it cannot be moved, nor be replaced

    def windows_replace(source: Any, destination: Any) -> None:
        if {Path(source), Path(destination)} & refused:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(source))
        replace(source, destination)

    monkeypatch.setattr(os, "replace", windows_replace)
    with pytest.raises(FailedPreconditionError) as put_back:
        await world.tracking.download_artifacts(second.model_uri, dst, cache_dir=cache)
    assert put_back.value.reason == "LOCAL_WRITE_FAILED"
    assert _files(earlier) == before
    assert sorted(p.name for p in dst.iterdir()) == [earlier.name]

    # Now a.bin is opened once its replacement is in: it cannot be put back.
    moves_of_a = []

    def held_after_the_first_move(source: Any, destination: Any) -> None:
        if earlier / "model" / "a.bin" in {Path(source), Path(destination)}:
            moves_of_a.append(source)
            if len(moves_of_a) > 2:  # set aside, replaced; then held
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(source))
        windows_replace(source, destination)

    monkeypatch.setattr(os, "replace", held_after_the_first_move)
    with pytest.raises(FailedPreconditionError) as incomplete:
        await world.tracking.download_artifacts(second.model_uri, dst, cache_dir=cache)
    assert incomplete.value.reason == "LOCAL_WRITE_FAILED"
    assert "incomplete, without a manifest" in incomplete.value.message
    assert MANIFEST not in _files(earlier)


async def test_a_copy_left_incomplete_takes_the_download_again(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file of the new model that could not go in was named by its temporary copy,
    removed by then; and when a file of the earlier model could not be put back either,
    the folders made again for it stayed, empty, and the same download, run again as
    the error says, was refused LOCAL_PATH_CONFLICT: a folder where the new model's file
    `old` goes."""
    deep = tmp_path / "1" / "model" / "old" / "deep"
    deep.mkdir(parents=True)
    (deep / "x.bin").write_bytes(b"x")
    (tmp_path / "1" / "model" / "a.bin").write_bytes(b"a1")
    newer = _model(tmp_path / "2" / "model", b"2")
    (newer / "old").write_bytes(b"a file where a folder was")
    first = await world.tracking.log_model(world.run_id, tmp_path / "1" / "model", "m")
    second = await world.tracking.log_model(await world.new_run(), newer, "m")
    dst, cache = tmp_path / "dst", world.cache
    earlier = Path(await world.tracking.download_artifacts(first.model_uri, dst, cache_dir=cache))
    await world.tracking.load_model(second.model_uri, cache_dir=cache)  # no download below
    replace = os.replace
    going_in, put_back = earlier / "model" / "z.bin", earlier / "model" / "old" / "deep" / "x.bin"

    def refusing(source: Any, destination: Any) -> None:
        if Path(destination) in (going_in, put_back) and Path(source) != going_in:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(source))
        replace(source, destination)

    monkeypatch.setattr(os, "replace", refusing)
    with pytest.raises(FailedPreconditionError) as incomplete:
        await world.tracking.download_artifacts(second.model_uri, dst, cache_dir=cache)
    assert "incomplete, without a manifest" in incomplete.value.message
    assert incomplete.value.metadata["path"] == str(going_in)

    monkeypatch.setattr(os, "replace", replace)
    again = Path(await world.tracking.download_artifacts(second.model_uri, dst, cache_dir=cache))
    assert _files(again) == {
        **{f"model/{name}": b"2" + name.encode() for name in ("a.bin", "b.bin", "z.bin")},
        "model/old": b"a file where a folder was",
        MANIFEST: (again / MANIFEST).read_bytes(),
    }
