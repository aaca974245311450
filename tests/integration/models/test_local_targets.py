"""A model copied out of the cache onto a full disk: the refusal names the file being
written, where room is to be made, and the download leaves nothing behind, not even
the folders it made for itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from cairn.exceptions import FailedPreconditionError
from tests.conftest import disk_full_after
from tests.integration.models.conftest import World


async def test_a_full_disk_names_the_copy_and_keeps_no_folder(world: World, tmp_path: Path) -> None:
    """The cache's file was named (the first name the copy's error gives), and the new
    folders the download was given stayed behind, empty, though nothing was kept."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "a.bin").write_bytes(b"a" * 3_000_000)
    logged = await world.tracking.log_model(world.run_id, tmp_path / "model", "m")
    await world.tracking.load_model(logged.model_uri, cache_dir=world.cache)  # cached whole
    dst = tmp_path / "new" / "folders"

    with disk_full_after(1_000_000), pytest.raises(FailedPreconditionError) as refused:
        await world.tracking.download_artifacts(logged.model_uri, dst, cache_dir=world.cache)

    assert refused.value.reason == "LOCAL_WRITE_FAILED"
    assert refused.value.metadata["errno"] == "EFBIG"
    written = Path(refused.value.metadata["path"])
    assert written.is_relative_to(dst), written
    assert written.name == "a.bin"
    assert str(world.cache) not in str(refused.value)
    assert not (tmp_path / "new").exists()
