"""Auth types: projects, API keys, project roles."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..auth.v1 import auth_pb2 as pb
from ._answers import known
from ._arguments import member, named


class ProjectRole(enum.StrEnum):
    """A member's role in a project; each includes the ones before it.

    ML cube's names (PROJECT_VIEW, PROJECT_EDIT, PROJECT_ADMIN) are aliases. Wherever a
    role is taken, a string names it too, in any case: "viewer", "PROJECT_VIEW",
    "Viewer" and ProjectRole.VIEWER are one role.
    """

    VIEWER = "VIEWER"
    EDITOR = "EDITOR"
    ADMIN = "ADMIN"
    PROJECT_VIEW = "VIEWER"
    PROJECT_EDIT = "EDITOR"
    PROJECT_ADMIN = "ADMIN"

    @classmethod
    def _missing_(cls, value: object) -> ProjectRole | None:
        # The enum's values are the upper-case names; its aliases are member names only.
        if isinstance(value, str):
            name = value.strip().upper()
            return cls.__members__.get(name) or cls._value2member_map_.get(name)  # type: ignore[return-value]
        return None


class ApiKeyExpirationTime(enum.Enum):
    """How long a new API key stays valid."""

    THIRTY_DAYS = pb.API_KEY_EXPIRATION_30_DAYS
    NINETY_DAYS = pb.API_KEY_EXPIRATION_90_DAYS
    ONE_YEAR = pb.API_KEY_EXPIRATION_1_YEAR
    NEVER = pb.API_KEY_EXPIRATION_NEVER

    @classmethod
    def _missing_(cls, value: object) -> ApiKeyExpirationTime | None:
        return named(cls, value)  # "THIRTY_DAYS", "never": its values are the wire's numbers


@dataclass(frozen=True)
class Project:
    """A project (workspace). Its name is its id: the `project=` of a connection.

    `role` is the caller's role in it (from `get_project`/`get_projects`), or that of
    the user asked about (from `get_user_projects`); None for a global admin who is not
    a member.
    """

    name: str
    description: str = ""
    create_time: int | None = None
    role: ProjectRole | None = None

    @property
    def project_id(self) -> str:
        return self.name


@dataclass(frozen=True)
class ApiKey:
    """An API key as listed; the key itself is only returned when it is created.

    Times are milliseconds since the epoch; expire_time None means it never expires.
    """

    prefix: str
    name: str
    user_id: str
    create_time: int | None = None
    expire_time: int | None = None
    revoke_time: int | None = None

    @property
    def revoked(self) -> bool:
        return self.revoke_time is not None


@dataclass(frozen=True)
class ProjectMember:
    project: str
    user_id: str
    role: ProjectRole


_ROLES = {
    pb.PROJECT_ROLE_VIEWER: ProjectRole.VIEWER,
    pb.PROJECT_ROLE_EDITOR: ProjectRole.EDITOR,
    pb.PROJECT_ROLE_ADMIN: ProjectRole.ADMIN,
}
_ROLE_NUMBERS = {role: number for number, role in _ROLES.items()}


def role_to_proto(role: ProjectRole | str, argument: str = "project_role") -> pb.ProjectRole:
    """The wire role of a ProjectRole or a role's name (see ProjectRole).

    Raises:
        InvalidArgumentError: for a name that is no role.
    """
    return _ROLE_NUMBERS[member(ProjectRole, role, argument)]


def project_from_proto(message: pb.Project) -> Project:
    return Project(
        name=message.name,
        description=message.description,
        create_time=message.create_time.ToMilliseconds() or None,
        # Unset: a global admin who is no member; a role unknown here is no such thing.
        role=None
        if message.caller_role == pb.PROJECT_ROLE_UNSPECIFIED
        else known(_ROLES, message.caller_role, "project role"),
    )


def api_key_from_proto(message: pb.ApiKey) -> ApiKey:
    return ApiKey(
        prefix=message.prefix,
        name=message.name,
        user_id=message.user_id,
        create_time=message.create_time.ToMilliseconds() or None,
        expire_time=message.expire_time.ToMilliseconds()
        if message.HasField("expire_time")
        else None,
        revoke_time=message.revoke_time.ToMilliseconds()
        if message.HasField("revoke_time")
        else None,
    )


def member_from_proto(message: pb.ProjectMember) -> ProjectMember:
    return ProjectMember(
        message.project, message.user_id, known(_ROLES, message.role, "project role")
    )
