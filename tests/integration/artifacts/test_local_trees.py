"""What `upload_tree` (and so `log_artifacts`) reads of a local tree: a folder or a
file it may not read refuses the whole tree before anything is sent, one removed or
made unreadable once the upload began fails it after the files under way, and the
client's own temporary files are left out."""

import asyncio
import json
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import cairn
from cairn._clients import _file_batches
from tests.conftest import new_project

REPOSITORY = Path(__file__).resolve().parents[3]
NOBODY = 65534
# Uploads the tree as a user who is refused what the test made unreadable: root reads
# any file and lists any folder, so as root (in CI too) it drops to nobody first.
UPLOAD_AS_ANOTHER_USER = """
import asyncio, json, os, sys
import cairn

async def main(port, project, tree, user, midway, threshold):
    def progress(done, total):
        # Made unreadable once the tree's first bytes went, or, when its files go at once
        # (streamed), as it begins.
        if midway and (done or not threshold):
            os.chmod(midway, 0)

    async with cairn.ArtifactClient.insecure_connection("127.0.0.1", port, project=project) as c:
        c.direct_threshold = int(threshold) if threshold else c.direct_threshold
        # The same upload first, as root, of a tree it may read: what it loads is loaded
        # from wherever Python lives, which the other user may not read.
        await c.upload_tree("warm", sys.argv[5])
        if os.geteuid() == 0:
            os.setgroups([])
            os.setgid(user)
            os.setuid(user)
        try:
            stored = await c.upload_tree("t", tree, progress=progress)
        except cairn.exceptions.CairnError as error:
            return {"error": type(error).__name__, "reason": error.reason,
                    "metadata": dict(error.metadata), "message": str(error)}
        except OSError as error:
            return {"error": type(error).__name__, "message": str(error)}
        return {"stored": [o.path for o in stored]}

arguments = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), *sys.argv[6:8]
print(json.dumps(asyncio.run(main(*arguments))))
"""
# Copies a model's file as log_model's files flavor does, and hashes it as add_model
# does, as a user who may not read it.
COPY_AS_ANOTHER_USER = """
import json, os, sys, tempfile
from pathlib import Path
from cairn._clients.model_manager import _files_of
from cairn.exceptions import CairnError
from cairn.models._flavors import FilesFlavor

model, user = Path(sys.argv[1]), int(sys.argv[2])
if os.geteuid() == 0:
    os.setgroups([])
    os.setgid(user)
    os.setuid(user)
outcomes = []
for read in (lambda: FilesFlavor().save(model, Path(tempfile.mkdtemp())), lambda: _files_of(model)):
    try:
        read()
        outcomes.append({"read": True})
    except CairnError as error:
        outcomes.append({"error": type(error).__name__, "reason": error.reason,
                         "metadata": dict(error.metadata), "message": str(error)})
    except OSError as error:
        outcomes.append({"error": type(error).__name__, "message": str(error)})
print(json.dumps(outcomes))
"""


@pytest.fixture
async def artifacts(server_port: int, unique: str) -> AsyncIterator[cairn.ArtifactClient]:
    project = await new_project(server_port, f"lt-{unique}")
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", server_port, project=project, timeout=None
    ) as client:
        yield client


@pytest.fixture
def shared_tree() -> Iterator[Path]:
    """A folder another user may enter (pytest's own temporary folders are the
    owner's alone), holding files a, b/2, c and d; removed after the test."""
    root = Path(tempfile.mkdtemp(prefix="cairn-tree-", dir="/tmp"))  # whatever TMPDIR is
    root.chmod(0o755)
    tree = root / "t"
    (tree / "b").mkdir(parents=True)
    for name in ("a", "b/2", "c", "d"):
        (tree / name).write_bytes(name.encode())
    modes = {tree: 0o755, tree / "b": 0o755}
    modes |= {tree / name: 0o644 for name in ("a", "b/2", "c", "d")}
    for made, mode in modes.items():
        made.chmod(mode)
    try:
        yield tree
    finally:
        for made, mode in modes.items():  # what a test took away, so a user may remove it
            made.chmod(mode)
        shutil.rmtree(root)


async def _upload_as_another_user(
    client: cairn.ArtifactClient,
    port: int,
    tree: Path,
    midway: Path | None = None,
    threshold: int | None = None,
) -> dict:
    """The upload's outcome; midway, a file the user owns, made unreadable once the
    first bytes went; threshold, the client's direct_threshold (its default without)."""
    warm = tree.parent / "warm"
    warm.mkdir()
    (warm / "w").write_bytes(b"w")
    outcome: dict = await _as_another_user(
        UPLOAD_AS_ANOTHER_USER,
        str(port),
        client.project,
        str(tree),
        str(NOBODY),
        str(warm),
        str(midway or ""),
        "" if threshold is None else str(threshold),
    )
    return outcome


async def _as_another_user(script: str, *arguments: str) -> Any:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        *arguments,
        cwd=REPOSITORY,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 120)
    finally:
        if process.returncode is None:
            process.kill()
    assert process.returncode == 0, err.decode()
    return json.loads(out)


async def _stored(client: cairn.ArtifactClient) -> list[str]:
    """What the tree t stored (the warm-up's aside)."""
    return [info.path for info in await client.list("", recursive=True) if info.path[:2] == "t/"]


@pytest.mark.parametrize(("mode", "refused"), [(0, "b"), (0o644, "b/2")])
async def test_a_folder_that_cannot_be_listed_refuses_the_tree(
    artifacts: cairn.ArtifactClient, server_port: int, shared_tree: Path, mode: int, refused: str
) -> None:
    """pathlib's rglob passed over a folder it may not list without a word: the tree
    a, b/2 (b unreadable), c, d stored t/a, t/c and t/d and reported success. A folder
    that may be listed but not entered (644) hid its files as dangling links."""
    (shared_tree / "b").chmod(mode)

    outcome = await _upload_as_another_user(artifacts, server_port, shared_tree)

    assert outcome.get("error") == "FailedPreconditionError", outcome
    assert outcome["reason"] == "LOCAL_READ_FAILED"
    assert outcome["metadata"] == {"path": str(shared_tree / refused), "errno": "EACCES"}
    assert "nothing of the tree was sent" in outcome["message"]
    assert await _stored(artifacts) == []


async def test_a_file_that_cannot_be_read_refuses_the_tree(
    artifacts: cairn.ArtifactClient, server_port: int, shared_tree: Path
) -> None:
    """A file it may not read failed half-way: t/a and t/b/2 were stored, then a bare
    PermissionError for c reached the caller."""
    (shared_tree / "c").chmod(0)

    outcome = await _upload_as_another_user(artifacts, server_port, shared_tree)

    assert outcome.get("error") == "FailedPreconditionError", outcome
    assert outcome["reason"] == "LOCAL_READ_FAILED"
    assert outcome["metadata"] == {"path": str(shared_tree / "c"), "errno": "EACCES"}
    assert await _stored(artifacts) == []


async def test_a_file_removed_midway_fails_the_tree_after_the_files_before_it(
    artifacts: cairn.ArtifactClient, tmp_path: Path
) -> None:
    """A file removed after the tree was listed, while the files before it went, ended
    the upload with a bare FileNotFoundError once t/a and t/b/2 were stored. Files of
    the direct threshold or more go one at a time, in path order."""
    artifacts.direct_threshold = 1
    for name in ("a", "b/2", "c", "d"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(name.encode())

    def progress(done: int, total: int) -> None:
        if done and (tmp_path / "c").exists():
            (tmp_path / "c").unlink()

    with pytest.raises(cairn.exceptions.FailedPreconditionError) as raised:
        await artifacts.upload_tree("t", tmp_path, progress=progress)

    assert raised.value.reason == "LOCAL_READ_FAILED"
    assert raised.value.metadata == {"path": str(tmp_path / "c"), "errno": "ENOENT"}
    assert "2 of the tree's 4 files are stored, each whole" in str(raised.value)
    assert await _stored(artifacts) == ["t/a", "t/b/2"]


async def test_a_file_removed_among_those_going_at_once_is_told_with_what_was_stored(
    artifacts: cairn.ArtifactClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small files go several batches at once: when one of their files cannot be read,
    its batch stores nothing, the batches under way end stored, those after them in
    path order too, no more begin, and the error counts what the tree stored."""
    monkeypatch.setattr(_file_batches, "BATCH_FILES", 2)
    names = [f"f{number:02}" for number in range(12)]
    for name in names:
        (tmp_path / name).write_bytes(name.encode())

    def progress(done: int, total: int) -> None:
        (tmp_path / "f01").unlink(missing_ok=True)  # at the start, before a file goes

    with pytest.raises(cairn.exceptions.FailedPreconditionError) as raised:
        await artifacts.upload_tree("t", tmp_path, progress=progress)

    stored = await _stored(artifacts)
    assert raised.value.metadata == {"path": str(tmp_path / "f01"), "errno": "ENOENT"}
    assert "t/f00" not in stored and "t/f01" not in stored, "a batch is stored whole or not"
    assert {"t/f02", "t/f03"} <= set(stored), "begun with f01's batch, they end stored"
    assert f"{len(stored)} of the tree's 12 files are stored" in str(raised.value)
    assert "t/f11" not in stored, "no batch begins after the failure"


async def test_a_first_file_removed_once_under_way_leaves_nothing_sent(
    artifacts: cairn.ArtifactClient, tmp_path: Path
) -> None:
    """The first file removed once the upload began said "nothing of the tree was
    stored", one refused before it began "nothing of the tree was sent": two phrasings
    of one outcome."""
    artifacts.direct_threshold = 1  # one file at a time: none went before a
    for name in ("a", "b"):
        (tmp_path / name).write_bytes(name.encode())

    def progress(done: int, total: int) -> None:
        (tmp_path / "a").unlink(missing_ok=True)  # at the start (done 0), before a goes

    with pytest.raises(cairn.exceptions.FailedPreconditionError) as raised:
        await artifacts.upload_tree("t", tmp_path, progress=progress)

    assert raised.value.metadata == {"path": str(tmp_path / "a"), "errno": "ENOENT"}
    assert str(raised.value).endswith("; nothing of the tree was sent")
    assert await _stored(artifacts) == []


@pytest.mark.parametrize("threshold", [None, 0], ids=["at-once-streamed", "in-turn-direct"])
async def test_a_file_made_unreadable_midway_fails_the_tree_and_says_what_was_stored(
    artifacts: cairn.ArtifactClient,
    server_port: int,
    shared_tree: Path,
    threshold: int | None,
) -> None:
    """A file made unreadable after the tree was listed, while the files before it
    went, ended the upload with a bare PermissionError once t/a and t/b/2 were stored.
    Streamed, the files go at once (in one batch), and c is taken away as the upload
    begins; by direct transfer (the threshold 0), one at a time, once a's bytes went."""
    os.chown(shared_tree / "c", NOBODY, NOBODY)  # theirs to take away from themselves

    outcome = await _upload_as_another_user(
        artifacts, server_port, shared_tree, shared_tree / "c", threshold
    )

    assert outcome.get("error") == "FailedPreconditionError", outcome
    assert outcome["reason"] == "LOCAL_READ_FAILED"
    assert outcome["metadata"] == {"path": str(shared_tree / "c"), "errno": "EACCES"}
    stored = await _stored(artifacts)
    if threshold == 0:
        assert stored == ["t/a", "t/b/2"]
    assert "t/c" not in stored
    # At once, the four files are one batch, stored whole or not at all.
    said = f"{len(stored)} of the tree's 4 files are stored" if stored else "nothing of the tree"
    assert said in outcome["message"]


async def test_a_model_file_that_cannot_be_read_is_refused_before_anything_is_sent(
    shared_tree: Path,
) -> None:
    """A model's file its user may not read was a bare PermissionError, from the files
    flavor's copy (log_model) and from add_model's hash of it."""
    (shared_tree / "c").chmod(0)

    outcomes = await _as_another_user(COPY_AS_ANOTHER_USER, str(shared_tree / "c"), str(NOBODY))

    for outcome in outcomes:
        assert outcome.get("error") == "FailedPreconditionError", outcomes
        assert outcome["reason"] == "LOCAL_READ_FAILED"
        assert outcome["metadata"] == {"path": str(shared_tree / "c"), "errno": "EACCES"}
        assert "nothing of the model was sent" in outcome["message"]


async def test_temporary_files_of_a_killed_download_are_left_out(
    artifacts: cairn.ArtifactClient, tmp_path: Path
) -> None:
    """The `.cairn-<32 hex>.part` a killed download leaves in its destination was
    uploaded with the tree as an artifact of its own."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "model.bin").write_bytes(b"model")
    (tmp_path / "sub" / f".cairn-{'0a' * 16}.part").write_bytes(b"half")
    (tmp_path / ".cairn-notours.part").write_bytes(b"a user's")

    stored = await artifacts.upload_tree("t", tmp_path)

    assert [info.path for info in stored] == ["t/.cairn-notours.part", "t/model.bin"]
