"""gRPC servicer of AuthService: projects, API keys and project roles.

The interceptor has already admitted the caller with the role the role table names;
what a table cannot say (whose keys a caller may see or revoke) is checked here: a
user's keys are theirs and the global admins' to manage, nobody else's. A project role,
admin included, reaches no key, because a key is the user's in every project at once.
"""

from __future__ import annotations

from typing import TypeAlias

import grpc

from cairn.auth.v1 import auth_service_pb2 as api
from cairn.auth.v1 import auth_service_pb2_grpc

from ..common import paging
from ..common import validation as common
from ..common.access import Caller, current_caller
from ..common.errors import NotFound, PermissionDenied, invalid_field
from ..common.idempotency import after_commit, fingerprint_of, request_id_of, user_of
from ..common.service import Resources
from . import convert, keys, validation
from .cache import key_cache
from .store import AuthStore

Context: TypeAlias = grpc.aio.ServicerContext

# Names are bounded (validation: a key's name 256 characters and a user id 128, each
# character at most 4 bytes of UTF-8; a project 63 ASCII ones), so a page is bounded by
# its length: an ApiKey takes at most 1,601 bytes and a ProjectMember 582, and 500 keys
# (806 KB) or 1,000 members (589 KB) with the longest page token (4 KiB) fit the least
# CAIRN_MAX_MESSAGE_BYTES, 1 MiB. tests/unit/test_auth_pages.py checks it. A request
# without a page size gets the largest page: callers written before these lists paged
# read no token, and so get as many as a page holds.
MAX_KEYS_PAGE_SIZE = 500
MAX_MEMBERS_PAGE_SIZE = 1000
# A project's description may be 10,000 characters (40 kB): a page of projects is cut
# shorter where it would not fit the largest message the server sends.
MAX_PROJECTS_PAGE_SIZE = 1000


class AuthServicer(auth_service_pb2_grpc.AuthServiceServicer):
    def __init__(self, resources: Resources) -> None:
        self._store = AuthStore(resources.pool)
        # Changes reach this server's cached key checks before the call answers.
        self._cache = key_cache(resources.pool)
        self._page_bytes = resources.config.max_message_bytes - paging.RESPONSE_RESERVE
        self._retention_seconds = resources.config.request_id_retention_seconds

    # Projects

    async def CreateProject(
        self, request: api.CreateProjectRequest, context: Context
    ) -> api.CreateProjectResponse:
        record = await self._store.create_project(
            validation.new_project_name(request.name), validation.description(request.description)
        )
        await after_commit(self._forget)
        return api.CreateProjectResponse(project=convert.project(record))

    async def _forget(self) -> None:
        """Forgets cached key checks; after the change commits, or a check racing the
        commit would cache the state before it."""
        self._cache.forget()

    async def GetProject(
        self, request: api.GetProjectRequest, context: Context
    ) -> api.GetProjectResponse:
        record = await self._store.get_project(
            common.project(request.project), current_caller().user_id
        )
        return api.GetProjectResponse(project=convert.project(record))

    async def GetProjects(
        self, request: api.GetProjectsRequest, context: Context
    ) -> api.GetProjectsResponse:
        caller = current_caller()
        if request.user_id:
            # ML cube's get_user_projects: the user's memberships, whoever asks (a global
            # admin's own included), so the answer depends on the user alone.
            user_id = validation.user_id(request.user_id)
            if user_id != caller.user_id and not caller.global_admin:
                raise PermissionDenied(
                    "PERMISSION_DENIED", "another user's projects are listed by global admins only"
                )
        else:
            user_id = caller.user_id
        size = paging.page_size(request.page_size, MAX_PROJECTS_PAGE_SIZE, MAX_PROJECTS_PAGE_SIZE)
        records, token = await self._store.projects(
            user_id,
            size,
            request.page_token,
            every=not request.user_id and caller.global_admin,
            budget=self._page_bytes,
        )
        projects = [convert.project(record) for record in records]
        return api.GetProjectsResponse(projects=projects, next_page_token=token)

    async def UpdateProject(
        self, request: api.UpdateProjectRequest, context: Context
    ) -> api.UpdateProjectResponse:
        project = common.project(request.project)
        if request.HasField("name") and request.name != project:
            raise invalid_field(
                "name", "a project's name is its id in every service and cannot change"
            )
        description = (
            validation.description(request.description) if request.HasField("description") else None
        )
        record = await self._store.update_project(project, description, current_caller().user_id)
        return api.UpdateProjectResponse(project=convert.project(record))

    # API keys

    async def CreateApiKey(
        self, request: api.CreateApiKeyRequest, context: Context
    ) -> api.CreateApiKeyResponse:
        caller = current_caller()
        name = validation.key_name(request.name)
        lifetime = validation.lifetime(request.expiration)
        # The caller's own id too: one given before the id rules keeps its keys, and
        # gets no new one by not naming itself.
        user_id = validation.new_user_id(request.user_id or caller.user_id)
        _check_manages_keys_of(caller, user_id, "created")
        key, record = await self._store.create_key(
            user_id,
            name,
            lifetime,
            request_id=request_id_of(context),
            sender=user_of(caller),
            fingerprint=fingerprint_of(request, caller),
            # The caller's key, so the new one neither outlives nor survives it.
            parent=caller.key_prefix or None,
            retention_seconds=self._retention_seconds,
        )
        await after_commit(self._forget)  # a key of the lost answer may be revoked
        return api.CreateApiKeyResponse(api_key=key, info=convert.api_key(record))

    async def GetApiKeys(
        self, request: api.GetApiKeysRequest, context: Context
    ) -> api.GetApiKeysResponse:
        caller = current_caller()
        user_id = validation.user_id(request.user_id) if request.user_id else caller.user_id
        _check_manages_keys_of(caller, user_id, "listed")
        size = paging.page_size(request.page_size, MAX_KEYS_PAGE_SIZE, MAX_KEYS_PAGE_SIZE)
        page = await self._store.keys_of(user_id, size, request.page_token)
        return api.GetApiKeysResponse(
            api_keys=[convert.api_key(r) for r in page.items],
            next_page_token=page.next_page_token,
        )

    async def DeleteApiKey(
        self, request: api.DeleteApiKeyRequest, context: Context
    ) -> api.DeleteApiKeyResponse:
        prefix = validation.key_prefix(request.api_key)
        caller = current_caller()
        # A whole key given must be that key: one mistyped in its secret revoked it.
        whole = request.api_key if keys.prefix_of(request.api_key) else None
        owner = await self._store.key_owner(prefix, whole)
        # A prefix nobody has is refused like another user's: that a key exists is for
        # its owner and the global admins to learn.
        _check_manages_keys_of(caller, owner, "revoked")
        if owner is None:
            raise NotFound("API_KEY_NOT_FOUND", f"no API key has the prefix {prefix}")
        # And the keys created with it; refused when the caller's key is one of them.
        await self._store.revoke_key(prefix, asked_with=caller.key_prefix or None)
        await after_commit(self._forget)
        return api.DeleteApiKeyResponse()

    # Project roles

    async def AddUserProjectRole(
        self, request: api.AddUserProjectRoleRequest, context: Context
    ) -> api.AddUserProjectRoleResponse:
        await self._store.set_role(
            common.project(request.project),
            validation.new_user_id(request.user_id),
            validation.role(request.role),
            current_caller(),
        )
        await after_commit(self._forget)
        return api.AddUserProjectRoleResponse()

    async def DeleteProjectRole(
        self, request: api.DeleteProjectRoleRequest, context: Context
    ) -> api.DeleteProjectRoleResponse:
        await self._store.delete_role(
            common.project(request.project),
            validation.user_id(request.user_id),
            current_caller(),
        )
        await after_commit(self._forget)
        return api.DeleteProjectRoleResponse()

    async def GetProjectMembers(
        self, request: api.GetProjectMembersRequest, context: Context
    ) -> api.GetProjectMembersResponse:
        size = paging.page_size(request.page_size, MAX_MEMBERS_PAGE_SIZE, MAX_MEMBERS_PAGE_SIZE)
        page = await self._store.members(common.project(request.project), size, request.page_token)
        return api.GetProjectMembersResponse(
            members=[convert.member(r) for r in page.items],
            next_page_token=page.next_page_token,
        )


def _check_manages_keys_of(caller: Caller, user_id: str | None, verb: str) -> None:
    """Refuses all but the owner of the keys (None: nobody) and global admins."""
    if user_id != caller.user_id and not caller.global_admin:
        raise PermissionDenied(
            "PERMISSION_DENIED", f"a user's API keys are {verb} by that user or a global admin only"
        )
