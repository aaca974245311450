"""Types of the model journey: versioned artifacts (ML Aide), managed models (Devo) and
a model version's lineage."""

from __future__ import annotations

from dataclasses import dataclass, field

from .._argument_error import invalid_argument
from .._names import MAX_KEY_LENGTH
from ..registry.v1 import registry_pb2 as pb
from ._arguments import proto
from ._registry import ModelVersion, PropertyValue, properties_from_proto, properties_to_proto
from ._tracking import Run, RunInput


@dataclass(frozen=True)
class VersionedArtifact:
    """One version of a named artifact, as ML Aide's `Artifact`.

    Attributes:
        name: the artifact's name, unique among the project's standalone artifacts.
        version: 1, 2, 3 ... per name, without gaps.
        type: free-form: "dataset", "model", "report", ...
        metadata: what was given at creation (str, int, float or bool values).
        uri: "cairn-artifacts://<project>/<directory>": where the version's files are.
        run_id: the run that made it, if one did.
        description: a description, if any.
        id: the registry's id of the version (a standalone registry artifact).
        create_time_since_epoch: milliseconds since the epoch.
    """

    name: str
    version: int
    type: str
    metadata: dict[str, PropertyValue] = field(default_factory=dict)
    uri: str = ""
    run_id: str | None = None
    description: str | None = None
    id: str | None = None
    create_time_since_epoch: int | None = None

    def as_input(self, context: str = "") -> RunInput:
        """This version as a run's input (`TrackingClient.log_inputs`, or start_run's
        used_artifacts): its URI names the version, its kind is the artifact's type.

        Raises:
            InvalidArgumentError: the type is longer than a kind may be (250 characters
                and 250 bytes in UTF-8), as one stored before the registry held types
                to it may be; log a `RunInput` of the version's `uri` with a kind of
                your own instead.
        """
        if problem := kind_problem(self.type):
            raise invalid_argument(
                "type",
                f"version {self.version} of artifact {self.name!r} has a type of {problem}: "
                "log RunInput(artifact.uri, kind=..., name=artifact.name) instead",
            )
        return RunInput(uri=self.uri, kind=self.type or "artifact", name=self.name, context=context)


def kind_problem(artifact_type: str) -> str | None:
    """What keeps artifact_type from being a run input's kind by its length (None when
    nothing does). The tracking service holds a kind to MAX_KEY_LENGTH characters and as
    many bytes in UTF-8 (it is in the inputs' primary key), and the registry a new
    artifact's type to the same, so that as_input of every version can be logged."""
    size = len(artifact_type.encode())
    if len(artifact_type) <= MAX_KEY_LENGTH and size <= MAX_KEY_LENGTH:
        return None
    return (
        f"{len(artifact_type)} characters ({size} bytes in UTF-8); a run input's kind "
        f"holds {MAX_KEY_LENGTH} characters and {MAX_KEY_LENGTH} bytes"
    )


@dataclass(frozen=True)
class ManagedModel:
    """A model as Devo's Model Manager shows one: the latest version of a registered model.

    Attributes:
        id: the registered model's id.
        name: its name.
        engine: the latest version's model format ("ONNX", "H2O", "sklearn", ...), None
            when that version has no model artifact.
        description: the registered model's description.
        version: the latest version's number (None when the model has no version).
        file_name: the model file's name (None when unknown).
        uri: the latest version's download URI.
        path: where get_model/find_model downloaded the file (None otherwise).
        create_time_since_epoch / last_update_time_since_epoch: milliseconds since the epoch.
    """

    id: str
    name: str
    engine: str | None = None
    description: str | None = None
    version: int | None = None
    file_name: str | None = None
    uri: str | None = None
    path: str | None = None
    create_time_since_epoch: int | None = None
    last_update_time_since_epoch: int | None = None


@dataclass(frozen=True)
class ModelVersionLineage:
    """What produced a model version: the version, its run, and what the run used.

    Attributes:
        model_version: the version.
        run: its source run, None when the version names none.
        inputs: the run's inputs (what it used); empty without a run.
        params: the run's params; empty without a run.
    """

    model_version: ModelVersion
    run: Run | None
    inputs: list[RunInput] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)


def versioned_artifact_from_proto(message: pb.Artifact) -> VersionedArtifact:
    stamp = message.create_time
    return VersionedArtifact(
        name=message.name,
        version=message.version,
        type=message.type,
        metadata=properties_from_proto(message.custom_properties),
        uri=message.uri,
        run_id=message.source_run_id or None,
        description=message.description or None,
        id=message.id,
        create_time_since_epoch=stamp.ToMilliseconds() if stamp.seconds or stamp.nanos else None,
    )


def versioned_artifact_to_proto(
    project: str,
    name: str,
    artifact_type: str,
    metadata: dict[str, PropertyValue],
    uri: str,
    run_id: str | None,
    description: str | None,
) -> pb.Artifact:
    """A new version's message; type "model" makes a model artifact, any other a doc one
    (the registry's two kinds), so Kubeflow's lists show it as one or the other."""
    message = proto(
        pb.Artifact,
        project=project,
        name=name,
        type=artifact_type,
        custom_properties=properties_to_proto(metadata, "metadata"),
        uri=uri,
        source_run_id=run_id or "",
        description=description or "",
        state=pb.ARTIFACT_STATE_LIVE,
    )
    if artifact_type == "model":
        message.model.SetInParent()
    else:
        message.doc.SetInParent()
    return message
