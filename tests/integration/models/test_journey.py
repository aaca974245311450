"""MLflow's journey through the real services: log a model, register it, point an alias
at it, load it back by its URI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from cairn.exceptions import AlreadyExistsError, InvalidArgumentError
from cairn.models import MANIFEST, parse_uri
from tests.integration.models.conftest import World


def _estimator() -> tuple[LogisticRegression, np.ndarray]:
    rng = np.random.default_rng(7)
    features = rng.normal(size=(60, 3))
    labels = (features @ np.array([1.0, -2.0, 0.5]) > 0).astype(int)
    return LogisticRegression().fit(features, labels), features


async def test_log_register_alias_and_load_an_sklearn_model(world: World, unique: str) -> None:
    estimator, features = _estimator()
    name = f"churn-{unique}"

    info = await world.tracking.log_model(
        world.run_id,
        estimator,
        "model",
        registered_model_name=name,
        metadata={"trained_on": "synthetic"},
        signature={"inputs": [{"type": "double", "shape": [-1, 3]}]},
    )
    assert info.flavor == "sklearn"  # recognised without flavor=
    assert info.registered_model_version == 1
    assert info.model_uri == f"runs:/{world.run_id}/model"
    await world.registry.set_registered_model_alias(name, "champion", 1)

    loaded = await world.tracking.load_model(
        f"models:/{name}@champion", allow_pickle=True, cache_dir=world.cache
    )

    assert type(loaded) is LogisticRegression
    np.testing.assert_array_equal(loaded.coef_, estimator.coef_)
    np.testing.assert_array_equal(loaded.predict(features), estimator.predict(features))


async def test_the_version_points_at_the_run_and_its_directory(world: World, unique: str) -> None:
    name = f"churn-{unique}"
    info = await world.tracking.log_model(
        world.run_id, {"w": [1, 2]}, "nested/model", flavor="pickle", registered_model_name=name
    )

    version = await world.registry.get_model_version(name, 1)
    assert version.source_run_id == world.run_id
    assert version.source_uri == info.artifact_uri
    run_root = (await world.tracking.get_run(world.run_id)).info.artifact_uri
    assert info.artifact_uri == f"{run_root}/nested/model"
    download_uri = await world.registry.get_model_version_download_uri(name, 1)
    assert parse_uri(download_uri) == parse_uri(info.artifact_uri)
    [artifact] = await world.registry.get_model_artifacts(version.id)
    assert (artifact.uri, artifact.model_format_name) == (info.artifact_uri, "pickle")
    listed = await world.tracking.list_artifacts(world.run_id, "nested/model")
    assert sorted(a.path for a in listed) == [f"nested/model/{MANIFEST}", "nested/model/model.pkl"]


async def test_a_second_log_model_registers_version_two(world: World, unique: str) -> None:
    name = f"churn-{unique}"
    first = await world.tracking.log_model(
        world.run_id, [1], "m", flavor="pickle", registered_model_name=name
    )
    second = await world.tracking.log_model(
        await world.new_run(), [2], "m", flavor="pickle", registered_model_name=name
    )
    assert (first.registered_model_version, second.registered_model_version) == (1, 2)
    for number, expected in ((1, [1]), (2, [2])):
        assert (
            await world.tracking.load_model(
                f"models:/{name}/{number}", allow_pickle=True, cache_dir=world.cache
            )
            == expected
        )


async def test_a_model_cannot_be_logged_twice_at_one_path(world: World) -> None:
    from cairn.exceptions import AlreadyExistsError

    await world.tracking.log_model(world.run_id, [1], "m", flavor="pickle")
    with pytest.raises(AlreadyExistsError):
        await world.tracking.log_model(world.run_id, [2], "m", flavor="pickle")
    loaded = await world.tracking.load_model(
        f"runs:/{world.run_id}/m", allow_pickle=True, cache_dir=world.cache
    )
    assert loaded == [1]


_FIRST_CALL: dict[str, Any] = {
    "metadata": {"accuracy": 0.5, "shape": (1, 3)},
    "signature": {"inputs": "a"},
}


@pytest.mark.parametrize(
    "changed", [{"metadata": {"accuracy": 0.9, "shape": (1, 3)}}, {"signature": {"inputs": "b"}}]
)
async def test_logging_again_with_other_facts_is_refused(
    world: World, unique: str, tmp_path: Path, changed: dict[str, Any]
) -> None:
    """A log_model of the same files at the same path with other metadata or another
    signature returned the first call's version, keeping the first call's facts and
    raising nothing: only the flavor and the files were compared."""
    (tmp_path / "w.txt").write_text("weights")
    name = f"again-{unique}"

    async def logged(**facts: Any) -> int | None:
        info = await world.tracking.log_model(
            world.run_id, tmp_path / "w.txt", "model", registered_model_name=name, **facts
        )
        return info.registered_model_version

    assert await logged(**_FIRST_CALL) == 1
    with pytest.raises(AlreadyExistsError) as raised:
        await logged(**{**_FIRST_CALL, **changed})
    assert raised.value.reason == "OBJECT_ALREADY_EXISTS"
    assert await logged(**_FIRST_CALL) == 1  # the same call again is still taken up


async def test_of_two_models_logged_at_once_at_one_path_the_winner_loads(world: World) -> None:
    import asyncio

    from cairn.exceptions import AlreadyExistsError

    models = [list(range(1000)), list(range(2000))]
    results = await asyncio.gather(
        *(world.tracking.log_model(world.run_id, m, "race", flavor="pickle") for m in models),
        return_exceptions=True,
    )

    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(lost) == 1 and isinstance(lost[0], AlreadyExistsError), results
    winner = models[results.index(next(r for r in results if r is not lost[0]))]
    loaded = await world.tracking.load_model(
        f"runs:/{world.run_id}/race", allow_pickle=True, cache_dir=world.cache
    )
    assert loaded == winner


@pytest.mark.parametrize("directory", ["model ", "m" * 300])
async def test_a_directory_of_any_stored_name_registers_whole(
    world: World, unique: str, directory: str
) -> None:
    """The model artifact is named as the registered model, not after the directory,
    whose last part the registry may refuse as a name: the call used to fail after the
    version was made, and a second call found the model logged there already."""
    name = f"odd-dir-{unique}"
    info = await world.tracking.log_model(
        world.run_id, {"v": 1}, directory, flavor="pickle", registered_model_name=name
    )
    assert info.registered_model_version == 1
    version = await world.registry.get_model_version(name, 1)
    [artifact] = await world.registry.get_model_artifacts(version.id)
    assert (artifact.name, artifact.uri) == (name, info.artifact_uri)


@pytest.mark.parametrize(
    ("argument", "given"),
    [
        ("metadata", {"tags": {1, 2}}),
        ("metadata", {(1, 2): "a pair"}),
        ("metadata", {1: "a", "b": 2}),  # keys the manifest's sorted JSON cannot order
        ("signature", [1, 2]),
        ("signature", "x"),
        ("signature", {"inputs": object()}),
    ],
)
async def test_metadata_or_a_signature_json_cannot_hold_is_refused_before_any_call(
    world: World, argument: str, given: Any
) -> None:
    """It was a TypeError or ValueError of json's or dict's, naming neither, raised once
    the run was looked up and the flavor had saved the model."""
    given_as: dict[str, Any] = {argument: given}
    with pytest.raises(InvalidArgumentError) as refused:
        await world.tracking.log_model("0" * 32, {"v": 1}, flavor="pickle", **given_as)
    assert refused.value.field_violations[0][0] == argument


@dataclasses.dataclass
class Column:
    name: str
    type: str


async def test_a_signature_of_dataclasses_is_kept_as_json(world: World, tmp_path: Path) -> None:
    """What the manifest always wrote (a dataclass as a dict) is not refused by the
    check before any call."""
    signature = {"inputs": [Column("x", "double")]}
    info = await world.tracking.log_model(
        world.run_id, {"v": 1}, "typed", flavor="pickle", signature=signature
    )
    got = await world.tracking.download_artifacts(info.model_uri, tmp_path / "got")
    manifest = json.loads((Path(got) / MANIFEST).read_text())
    assert manifest["signature"] == {"inputs": [{"name": "x", "type": "double"}]}
