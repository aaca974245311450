"""Store records to cairn.auth.v1 messages."""

from __future__ import annotations

from cairn.auth.v1 import auth_pb2 as pb

from ..common.timestamps import to_proto
from .api_keys import ApiKeyInfo
from .projects import Project
from .roles import Member


def project(record: Project) -> pb.Project:
    return pb.Project(
        name=record.name,
        description=record.description,
        create_time=to_proto(record.create_time),
        caller_role=record.caller_role or pb.PROJECT_ROLE_UNSPECIFIED,  # type: ignore[arg-type]
    )


def api_key(record: ApiKeyInfo) -> pb.ApiKey:
    message = pb.ApiKey(
        prefix=record.prefix,
        name=record.name,
        user_id=record.user_id,
        create_time=to_proto(record.create_time),
    )
    if record.expire_time is not None:
        message.expire_time.CopyFrom(to_proto(record.expire_time))
    if record.revoke_time is not None:
        message.revoke_time.CopyFrom(to_proto(record.revoke_time))
    return message


def member(record: Member) -> pb.ProjectMember:
    return pb.ProjectMember(
        project=record.project,
        user_id=record.user_id,
        role=record.role,  # type: ignore[arg-type]
    )
