"""Which download destinations the model cache refuses: those in an entry, and nothing
else, also where a destination's path cannot be resolved or the cache has no place."""

from __future__ import annotations

from pathlib import Path

import pytest

from cairn.exceptions import FailedPreconditionError
from cairn.models._cache import CACHE_ENV, refuse_download_into

KEY = "ab" * 32


@pytest.mark.parametrize(
    "inside", [KEY, f"{KEY}/model", f".{KEY}.{'c' * 32}.part/x", f".{KEY}.{'d' * 32}.stale"]
)
def test_a_destination_in_an_entry_is_refused(tmp_path: Path, inside: str) -> None:
    with pytest.raises(FailedPreconditionError) as refused:
        refuse_download_into(tmp_path / inside, tmp_path, "models:/m/1")
    assert refused.value.reason == "LOCAL_PATH_CONFLICT"
    assert refused.value.metadata["cache_dir"] == str(tmp_path)


@pytest.mark.parametrize("beside", ["", "mine", "mine/" + KEY, KEY[:-1], KEY.upper() + "x"])
def test_a_destination_beside_the_entries_is_taken(tmp_path: Path, beside: str) -> None:
    refuse_download_into(tmp_path / beside, tmp_path, "models:/m/1")


def test_a_link_into_an_entry_is_followed(tmp_path: Path) -> None:
    (tmp_path / "cache" / KEY).mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "cache" / KEY)
    with pytest.raises(FailedPreconditionError):
        refuse_download_into(tmp_path / "link" / "model", tmp_path / "cache", "models:/m/1")


def test_a_link_loop_is_left_for_the_write_to_refuse(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    refuse_download_into(tmp_path / "loop" / "x", tmp_path / "cache", "runs:/r/x")


def test_without_a_home_directory_the_default_cache_refuses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(Path, "home", no_home)
    refuse_download_into(tmp_path / KEY, None, "runs:/r/x")
