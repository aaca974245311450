"""Plain records the registry store reads and writes; no protobuf, no SQL.

Enum numbers equal those of the cairn.registry.v1 enums.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

PropertyValue = bool | int | float | str


class State(enum.IntEnum):
    LIVE = 1
    ARCHIVED = 2


class Stage(enum.IntEnum):
    NONE = 0
    STAGING = 1
    PRODUCTION = 2
    ARCHIVED = 3


class ArtifactKind(enum.IntEnum):
    MODEL = 1
    DOC = 2


@dataclass
class RegisteredModel:
    project: str
    name: str
    id: str = ""
    description: str = ""
    owner: str = ""
    state: State = State.LIVE
    external_id: str = ""
    custom_properties: dict[str, PropertyValue] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)
    create_time: datetime | None = None
    update_time: datetime | None = None
    latest_versions: list[ModelVersion] = field(default_factory=list)


@dataclass
class ModelVersion:
    project: str
    registered_model_id: str
    name: str
    id: str = ""
    version: int = 0
    author: str = ""
    description: str = ""
    state: State = State.LIVE
    stage: Stage = Stage.NONE
    source_run_id: str = ""
    source_uri: str = ""
    external_id: str = ""
    custom_properties: dict[str, PropertyValue] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)
    create_time: datetime | None = None
    update_time: datetime | None = None
    registered_model_name: str = ""


@dataclass
class Artifact:
    project: str
    kind: ArtifactKind
    name: str
    id: str = ""
    model_version_id: str = ""
    description: str = ""
    uri: str = ""
    state: int = 0
    external_id: str = ""
    custom_properties: dict[str, PropertyValue] = field(default_factory=dict)
    model_format_name: str = ""
    model_format_version: str = ""
    storage_key: str = ""
    storage_path: str = ""
    service_account_name: str = ""
    version: int = 0
    type: str = ""
    source_run_id: str = ""
    create_time: datetime | None = None
    update_time: datetime | None = None
