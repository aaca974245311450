"""What a registry write writes to, whose writes take turns for the pool's connections
(common/write_slots.py): writes to one model wait for each other in PostgreSQL (a new
version's number, its tags and aliases), and for a transaction that holds the model;
while a model was held, thirty new versions of it took every connection, and every
other call of the server waited, then was UNAVAILABLE (DATABASE_BUSY)."""

from __future__ import annotations

from collections.abc import Hashable

from google.protobuf.message import Message

from ..common.validation import DEFAULT_PROJECT

# Each write's request type to what its fields name: a model or a version, by the path of
# its id. A version's transition and its delete by id wait for its model's row as well,
# but their requests name no model: they take the version's turn.
_BY_ID = {
    "UpdateRegisteredModelRequest": ("model", "registered_model.id"),
    "RenameRegisteredModelRequest": ("model", "id"),
    "DeleteRegisteredModelRequest": ("model", "id"),
    "SetRegisteredModelTagRequest": ("model", "registered_model_id"),
    "DeleteRegisteredModelTagRequest": ("model", "registered_model_id"),
    "SetRegisteredModelAliasRequest": ("model", "registered_model_id"),
    "DeleteRegisteredModelAliasRequest": ("model", "registered_model_id"),
    "CreateModelVersionRequest": ("model", "model_version.registered_model_id"),
    "UpdateModelVersionRequest": ("version", "model_version.id"),
    "DeleteModelVersionRequest": ("version", "id"),
    "TransitionModelVersionStageRequest": ("version", "id"),
    "SetModelVersionTagRequest": ("version", "model_version_id"),
    "DeleteModelVersionTagRequest": ("version", "model_version_id"),
}
# Writes that may name their model by name instead: the paths of the name and of its
# project. A new version of an artifact is numbered under its name's row, as a model's.
_BY_NAME = {
    "RenameRegisteredModelRequest": ("model", "name", "project"),
    "DeleteRegisteredModelRequest": ("model", "name", "project"),
    "DeleteModelVersionRequest": ("model", "registered_model_name", "project"),
    "CreateArtifactRequest": ("artifact", "artifact.name", "artifact.project"),
}


def written_to(request: Message) -> Hashable | None:
    """The model, version or versioned artifact a write names, by its id or else by its
    name; None for a write naming none (a new model, an artifact of no versions)."""
    kind = request.DESCRIPTOR.name
    if kind in _BY_ID:
        what, path = _BY_ID[kind]
        if found := _at(request, path):
            return ("registry", what, found)
    if kind in _BY_NAME and getattr(request, "new_version", True):
        what, name_path, project_path = _BY_NAME[kind]
        if name := _at(request, name_path):
            project = _at(request, project_path) or DEFAULT_PROJECT
            return ("registry", f"{what} named", project, name)
    return None


def _at(message: Message, path: str) -> str:
    """The text at a dotted path of fields ("" when unset)."""
    value: object = message
    for field in path.split("."):
        value = getattr(value, field)
    return str(value)
