"""What `log_model` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelInfo:
    """A logged model, as MLflow's `ModelInfo` describes one.

    Attributes:
        run_id: the run whose artifacts hold the model.
        artifact_path: the model directory's path within the run's artifacts.
        model_uri: "runs:/<run_id>/<artifact_path>".
        artifact_uri: "cairn-artifacts://<project>/<path>", the directory in the artifact
            service (a registered version's source).
        flavor: the flavor's name.
        files: the model's files (relative paths) with their sha256.
        manifest_sha256: the sha256 of the manifest, which names the model's content
            (and its entry in the local cache).
        registered_model_name: the model registered, if any.
        registered_model_version: the version number created, if any.
    """

    run_id: str
    artifact_path: str
    model_uri: str
    artifact_uri: str
    flavor: str
    files: dict[str, str]
    manifest_sha256: str
    metadata: dict[str, Any] = field(default_factory=dict)
    signature: dict[str, Any] | None = None
    registered_model_name: str | None = None
    registered_model_version: int | None = None
