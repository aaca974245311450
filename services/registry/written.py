"""What a registry write writes to, whose writes take turns for the pool's connections
(common/write_slots.py): writes to one model wait for each other in PostgreSQL (a new
version's number, its tags and aliases), and for a transaction that holds the model;
while a model was held, thirty new versions of it took every connection, and every
other call of the server waited, then was UNAVAILABLE (DATABASE_BUSY)."""

from __future__ import annotations

from collections.abc import Hashable

from google.protobuf.message import Message

# Each write's request type to what its fields name: a model or a version, by the path of
# its id, and a model by the path of its name (within the request's project).
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
_BY_NAME = {
    "RenameRegisteredModelRequest": ("name", "project"),
    "DeleteRegisteredModelRequest": ("name", "project"),
    "DeleteModelVersionRequest": ("registered_model_name", "project"),
    "CreateModelVersionRequest": (
        "model_version.registered_model_name",
        "model_version.project",
    ),
}


def written_to(request: Message) -> Hashable | None:
    """The model or version a write names, by its id or else by its model's name; None
    for a write naming neither (a new model, an artifact)."""
    kind = request.DESCRIPTOR.name
    if kind in _BY_ID:
        what, path = _BY_ID[kind]
        if found := _at(request, path):
            return ("registry", what, found)
    if kind in _BY_NAME:
        name_path, project_path = _BY_NAME[kind]
        if name := _at(request, name_path):
            return ("registry", "named", _at(request, project_path), name)
    return None


def _at(message: Message, path: str) -> str:
    """The text at a dotted path of fields ("" when unset)."""
    value: object = message
    for field in path.split("."):
        value = getattr(value, field)
    return str(value)
