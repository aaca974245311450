"""Journeys of several calls that an outage stops part-way (the database stopped for
real, just before one of the registry writes): the same call run again, as a user's
program does, completes what the first left, and never makes it twice."""

import asyncio
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

import cairn
from cairn.exceptions import UnavailableError
from cairn_server import catalog
from cairn_server.common import database
from cairn_server.common.server import CairnServer, migrate
from tests.conftest import eventually, stop_postgres, with_overrides

Registry = cairn.ModelRegistryAPIClient


@pytest.fixture
async def port(own_postgres, config) -> AsyncIterator[int]:
    settings = with_overrides(config, database_url=own_postgres.get_uri())
    pool = await database.create_pool(settings.database_url, settings)
    await migrate(pool, catalog.select([]))
    server = CairnServer(settings, catalog.select([]), pool)
    try:
        yield await server.start()
    finally:
        await asyncio.to_thread(own_postgres.ensure_postgres_running)
        await server.stop(grace=1.0)
        await database.close_pool(pool)


class Outage:
    """Stops the database just before the next call of one registry method, once."""

    def __init__(self, own_postgres, monkeypatch: pytest.MonkeyPatch) -> None:
        self._postgres, self._monkeypatch = own_postgres, monkeypatch

    def before(self, method: str) -> None:
        original = getattr(Registry, method)

        async def stopped_first(registry: Registry, *args: Any, **kwargs: Any) -> Any:
            self._monkeypatch.setattr(Registry, method, original)
            await asyncio.to_thread(stop_postgres, self._postgres)
            return await original(registry, *args, **kwargs)

        self._monkeypatch.setattr(Registry, method, stopped_first)

    async def fails(self, call: Callable[[], Any]) -> None:
        """call() fails UNAVAILABLE; then the database comes back and answers again."""
        with pytest.raises(UnavailableError):
            await call()
        await asyncio.to_thread(self._postgres.ensure_postgres_running)


@pytest.fixture
def outage(own_postgres, monkeypatch: pytest.MonkeyPatch) -> Outage:
    return Outage(own_postgres, monkeypatch)


async def _again(call: Callable[[], Any]) -> Any:
    """call()'s answer, once the server answers again after the outage."""
    answers: list[Any] = []

    async def answered() -> bool:
        try:
            answers.append(await call())
        except UnavailableError:
            return False
        return True

    await eventually(answered, timeout=30, what="an answer after the outage")
    return answers[0]


@pytest.mark.parametrize("method", ["create_model_version", "upsert_model_artifact"])
async def test_log_model_run_again_registers_what_it_stored(
    port: int, outage: Outage, tmp_path: Path, unique: str, method: str
) -> None:
    (tmp_path / "m.txt").write_text("hello")
    name = f"churn-{unique}"
    async with (
        cairn.TrackingClient.insecure_connection("127.0.0.1", port, timeout=10) as tracking,
        Registry.insecure_connection("127.0.0.1", port, timeout=10) as registry,
    ):
        run_id = (await tracking.create_run(await tracking.create_experiment(name))).info.run_id

        def log() -> Any:
            return tracking.log_model(run_id, tmp_path / "m.txt", registered_model_name=name)

        outage.before(method)
        await outage.fails(log)
        info = await _again(log)  # was "a model is logged there already", for ever
        assert info.registered_model_version == 1
        again = await log()  # and again: the same version, not a second
        assert again.registered_model_version == 1
        versions = await registry.search_model_versions(f"name = '{name}'")
        assert [v.version for v in versions] == [1]
        artifacts = await registry.get_model_artifacts(versions[0].id)
        assert [(a.uri, a.model_format_name) for a in artifacts] == [(info.artifact_uri, "files")]
        loaded = await tracking.load_model(f"models:/{name}/1", cache_dir=tmp_path / "cache")
        assert Path(loaded).read_text() == "hello"


async def test_log_model_of_other_files_where_one_is_logged_is_refused(
    port: int, tmp_path: Path, unique: str
) -> None:
    (tmp_path / "m.txt").write_text("hello")
    (tmp_path / "other.txt").write_text("other")
    name = f"other-{unique}"
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", port) as tracking:
        run_id = (await tracking.create_run(await tracking.create_experiment(name))).info.run_id
        await tracking.log_model(run_id, tmp_path / "m.txt", "model")
        for registered in (None, name):
            with pytest.raises(cairn.exceptions.AlreadyExistsError) as raised:
                await tracking.log_model(
                    run_id, tmp_path / "other.txt", "model", registered_model_name=registered
                )
            assert raised.value.reason == "OBJECT_ALREADY_EXISTS"


async def test_an_add_model_run_again_completes_the_version_it_made(
    port: int, outage: Outage, tmp_path: Path, unique: str
) -> None:
    (tmp_path / "pokemon.onnx").write_bytes(b"onnx v1")
    name = f"pokemon-{unique}"
    async with Registry.insecure_connection("127.0.0.1", port, timeout=10) as registry:
        manager = cairn.ModelManager(registry, tmp_path / "dl", cache_dir=tmp_path / "cache")

        def add() -> Any:
            return manager.add_model(name, "ONNX", tmp_path / "pokemon.onnx")

        outage.before("upsert_model_artifact")  # the version made, its engine not
        await outage.fails(add)
        added = await _again(add)  # was ModelAlreadyExists, for a model without its engine
        assert (added.version, added.engine) == (1, "ONNX")
        with pytest.raises(cairn.exceptions.AlreadyExistsError):
            await add()  # whole now: taken
        found = await manager.get_model(name, download_file=True)
        assert (found.version, found.engine) == (1, "ONNX")
        assert Path(found.path or "").read_bytes() == b"onnx v1"


async def test_an_add_model_stopped_before_its_version_says_to_force_it(
    port: int, outage: Outage, tmp_path: Path, unique: str
) -> None:
    """A model without a version may be another caller's: it is taken, and the error
    says how to add this file as its first version."""
    (tmp_path / "pokemon.onnx").write_bytes(b"onnx v1")
    name = f"empty-{unique}"
    async with Registry.insecure_connection("127.0.0.1", port, timeout=10) as registry:
        manager = cairn.ModelManager(registry, tmp_path / "dl", cache_dir=tmp_path / "cache")
        outage.before("upsert_model_version")
        await outage.fails(lambda: manager.add_model(name, "ONNX", tmp_path / "pokemon.onnx"))
        with pytest.raises(cairn.exceptions.AlreadyExistsError, match="force=True") as taken:
            await _again(lambda: manager.add_model(name, "ONNX", tmp_path / "pokemon.onnx"))
        assert "no version yet" in taken.value.message
        added = await manager.add_model(name, "ONNX", tmp_path / "pokemon.onnx", force=True)
        assert (added.version, added.engine) == (1, "ONNX")


async def test_an_unfinished_add_is_completed_only_by_an_add_of_its_files(
    port: int, outage: Outage, tmp_path: Path, unique: str
) -> None:
    """Never by another file (which would be registered as the first one's bytes), nor
    by an add without force past a whole version (ModelAlreadyExists, as ever)."""
    (tmp_path / "v1.onnx").write_bytes(b"version one")
    (tmp_path / "v2.onnx").write_bytes(b"version two")
    (tmp_path / "other.pt").write_bytes(b"another file")
    name = f"guarded-{unique}"
    async with Registry.insecure_connection("127.0.0.1", port, timeout=10) as registry:
        manager = cairn.ModelManager(registry, tmp_path / "dl", cache_dir=tmp_path / "cache")
        await manager.add_model(name, "ONNX", tmp_path / "v1.onnx")
        outage.before("upsert_model_artifact")  # a forced add stops after version 2
        await outage.fails(
            lambda: manager.add_model(name, "ONNX", tmp_path / "v2.onnx", force=True)
        )
        # Without force, past the whole version 1: taken, whatever the file.
        for source in ("other.pt", "v2.onnx"):
            with pytest.raises(cairn.exceptions.AlreadyExistsError):
                await _again(partial(manager.add_model, name, "H2O", tmp_path / source))
        # Another file, forced: a version of its own, not version 2 under its name.
        version_two = await registry.get_model_version(name, 2)
        added = await manager.add_model(name, "TORCH", tmp_path / "other.pt", force=True)
        assert (added.version, added.file_name, added.engine) == (3, "other.pt", "TORCH")
        assert await registry.get_model_artifacts(version_two.id) == []  # never mislabelled


async def test_a_forced_add_run_again_completes_its_version(
    port: int, outage: Outage, tmp_path: Path, unique: str
) -> None:
    (tmp_path / "v1.onnx").write_bytes(b"version one")
    (tmp_path / "v2.onnx").write_bytes(b"version two")
    name = f"forced-{unique}"
    async with Registry.insecure_connection("127.0.0.1", port, timeout=10) as registry:
        manager = cairn.ModelManager(registry, tmp_path / "dl", cache_dir=tmp_path / "cache")
        await manager.add_model(name, "ONNX", tmp_path / "v1.onnx")

        def add_again() -> Any:
            return manager.add_model(name, "ONNX", tmp_path / "v2.onnx", force=True)

        outage.before("upsert_model_artifact")
        await outage.fails(add_again)
        added = await _again(add_again)
        assert (added.version, added.file_name, added.engine) == (2, "v2.onnx", "ONNX")
        versions = await registry.search_model_versions(f"name='{name}'")
        # version 2 completed, no third
        assert sorted(v.version for v in versions) == [1, 2]  # type: ignore[type-var]


async def test_an_add_model_of_a_directory_run_again_completes_its_version(
    port: int, outage: Outage, tmp_path: Path, unique: str
) -> None:
    model = tmp_path / "hf-model"
    (model / "tokenizer").mkdir(parents=True)
    (model / "weights.bin").write_bytes(b"weights")
    (model / "tokenizer" / "vocab.txt").write_text("a b c")
    name = f"dir-{unique}"
    async with Registry.insecure_connection("127.0.0.1", port, timeout=10) as registry:
        manager = cairn.ModelManager(registry, tmp_path / "dl", cache_dir=tmp_path / "cache")

        def add() -> Any:
            return manager.add_model(name, "HF", model)

        outage.before("upsert_model_artifact")
        await outage.fails(add)
        added = await _again(add)
        assert (added.version, added.engine) == (1, "HF")
