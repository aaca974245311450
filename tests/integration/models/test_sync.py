"""The sync facade runs MLflow's model journey as the async client does.

The servers run on the tests' event loop, so the scenario runs in a worker thread, as a
script's main thread would call a remote server.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from cairn import sync
from cairn.exceptions import ModelAlreadyExists, ModelNotFound
from cairn.models import UntrustedModelError
from tests.conftest import new_project


async def test_the_sync_clients_log_register_and_load(
    server_port: int, unique: str, tmp_path: Path
) -> None:
    project = await new_project(server_port, f"msync-{unique}")
    features = np.arange(12.0).reshape(6, 2)
    estimator = LinearRegression().fit(features, features @ [2.0, -1.0] + 0.5)

    def scenario() -> None:
        connect = {"project": project}
        with (
            sync.TrackingClient.insecure_connection("127.0.0.1", server_port, **connect) as mlflow,
            sync.ModelRegistryAPIClient.insecure_connection(
                "127.0.0.1", server_port, **connect
            ) as registry,
        ):
            experiment_id = mlflow.create_experiment("sync-models")
            with mlflow.start_run(experiment_id) as run:
                info = mlflow.log_model(
                    run.run_id, estimator, "model", registered_model_name="price"
                )
            registry.set_registered_model_alias("price", "champion", info.registered_model_version)
            with pytest.raises(UntrustedModelError):
                mlflow.load_model("models:/price@champion", cache_dir=tmp_path)
            loaded = mlflow.load_model(
                "models:/price@champion", allow_pickle=True, cache_dir=tmp_path
            )
            np.testing.assert_allclose(loaded.predict(features), estimator.predict(features))
            written = mlflow.download_artifacts(
                "models:/price/1", tmp_path / "dst", cache_dir=tmp_path
            )
            assert sorted(p.name for p in Path(written).iterdir()) == [
                "cairn-model.json",
                "model.pkl",
            ]

    await asyncio.to_thread(scenario)


async def test_the_sync_clients_run_the_ml_aide_and_devo_journeys(
    server_port: int, unique: str, tmp_path: Path
) -> None:
    project = await new_project(server_port, f"msync2-{unique}")
    onnx = tmp_path / "net.onnx"
    onnx.write_bytes(b"onnx")

    def scenario() -> None:
        connect = {"project": project}
        with (
            sync.TrackingClient.insecure_connection("127.0.0.1", server_port, **connect) as mlflow,
            sync.ModelRegistryAPIClient.insecure_connection(
                "127.0.0.1", server_port, **connect
            ) as registry,
        ):
            # ML Aide: a versioned dataset used by a run, a model logged and loaded back.
            dataset = registry.create_artifact("rows", "dataset", {"n": 2}, files=b"1\n2\n")
            assert (dataset.version, dataset.type) == (1, "dataset")
            assert registry.create_artifact("rows", "dataset").version == 2
            assert registry.get_artifact("rows", 1).load("data").read() == b"1\n2\n"
            experiment_id = mlflow.create_experiment("sync-journey")
            run_id = mlflow.create_run(experiment_id).info.run_id
            mlflow.log_inputs(run_id, [dataset.as_input("training")])
            mlflow.log_model(run_id, {"w": 1}, "m", flavor="pickle", registered_model_name="aide")
            assert mlflow.load_model("models:/aide/1", allow_pickle=True, cache_dir=tmp_path) == {
                "w": 1
            }
            lineage = registry.get_model_version_lineage("aide", 1)
            assert [i.uri for i in lineage.inputs] == [dataset.uri]
            assert [r.info.run_id for r in mlflow.get_runs_using(dataset.uri)] == [run_id]
            with mlflow.start_run(
                experiment_id, used_artifacts=[dataset], journal_dir=tmp_path / "journal"
            ) as second:
                second.log_metric("loss", 0.5)
            assert len(mlflow.get_runs_using(dataset)) == 2

            # Devo: add a file with its engine, find it, download it.
            manager = sync.ModelManager(registry, tmp_path / "dl", cache_dir=tmp_path)
            manager.add_model("net", "ONNX", onnx, description="d")
            found = manager.find_model("net", download_file=True)
            assert found is not None and found.engine == "ONNX"
            assert Path(found.path).read_bytes() == b"onnx"
            assert manager.find_model("absent") is None
            with pytest.raises(ModelNotFound):
                manager.get_model("absent")
            onnx.write_bytes(b"onnx v2")
            with pytest.raises(ModelAlreadyExists):
                manager.add_model("net", "ONNX", onnx)
            replaced = manager.add_model("net", "TensorRT", onnx, force=True)
            assert (replaced.version, replaced.engine) == (2, "TensorRT")
            again = manager.get_model("net", download_file=True)
            assert (again.version, again.engine) == (2, "TensorRT")
            assert Path(again.path).read_bytes() == b"onnx v2"
            assert {m.name for m in manager.get_models()} == {"aide", "net"}

    await asyncio.to_thread(scenario)
