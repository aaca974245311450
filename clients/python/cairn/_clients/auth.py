"""`AuthClient`: projects, API keys and project roles, with ML cube's method names."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import IO, Any, TypeVar

from google.protobuf.message import Message

from .._api_keys import as_prefix
from .._argument_error import invalid_argument
from .._base import BaseClient
from .._headers import Metadata
from .._tables import millis, print_table
from ..auth.v1 import auth_service_pb2 as api
from ..auth.v1 import auth_service_pb2_grpc
from ..exceptions import NotFoundError
from ..types import ListOptions, PagedList, Pager
from ..types._arguments import member, proto
from ..types._auth import (
    ApiKey,
    ApiKeyExpirationTime,
    Project,
    ProjectMember,
    ProjectRole,
    api_key_from_proto,
    member_from_proto,
    project_from_proto,
    role_to_proto,
)
from ..types._paging import page_size_of

T = TypeVar("T")

# The server's largest pages: the fewest calls for a whole listing.
_KEYS_PAGE_SIZE = 500
_MEMBERS_PAGE_SIZE = 1000
_PROJECTS_PAGE_SIZE = 1000


class AuthClient(BaseClient):
    """Async client of `cairn.auth.v1.AuthService`, which every Cairn server hosts.

    Projects are named by their name (`project_id` in ML cube's signatures). Every
    method also takes keyword-only `timeout=` and `metadata=`.
    """

    def _bind(self, channel: Any) -> None:
        self._stub = auth_service_pb2_grpc.AuthServiceStub(channel)

    # Projects

    async def create_project(
        self,
        name: str,
        description: str | None = None,
        default_storage_policy: Any = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> str:
        """Creates a project (global admins only); returns its id, which is its name.

        A name is 1-63 lowercase letters, digits, '-' or '_', starting and ending with a
        letter or digit (ML cube's "my project" is not one). default_storage_policy (ML
        cube's) is not Cairn's and must stay None.

        Raises:
            InvalidArgumentError: for a name that breaks the rule, or a storage policy.
            AlreadyExistsError: when a project has the name.
        """
        _check_no_storage_policy(default_storage_policy)
        request = proto(api.CreateProjectRequest, name=name, description=description or "")
        response = await self._transport.unary(
            self._stub.CreateProject, request, timeout=timeout, metadata=metadata
        )
        return str(response.project.name)

    async def get_project(
        self, project_id: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> Project:
        response = await self._transport.unary(
            self._stub.GetProject,
            proto(api.GetProjectRequest, project=project_id),
            timeout=timeout,
            metadata=metadata,
        )
        return project_from_proto(response.project)

    async def get_projects(
        self, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> list[Project]:
        """The projects the caller is a member of (every project for a global admin), in
        order of name; read a page at a time."""
        return await self._every_project(proto(api.GetProjectsRequest), timeout, metadata)

    async def get_user_projects(
        self, user_id: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> list[Project]:
        """The projects user_id is a member of, with user_id's role in each.

        The caller's own, or anybody's for a global admin (ML cube's company admins).
        """
        return await self._every_project(
            proto(api.GetProjectsRequest, user_id=user_id), timeout, metadata
        )

    def list_projects(self, user_id: str = "") -> Pager[Project]:
        """get_projects (or, with user_id, get_user_projects) as a Pager, a page at a
        time: `async for project in client.auth.list_projects()`."""
        return self._pager(
            self._stub.GetProjects,
            proto(api.GetProjectsRequest, user_id=user_id),
            lambda reply: [project_from_proto(p) for p in reply.projects],
            _PROJECTS_PAGE_SIZE,
        )

    async def _every_project(
        self, request: api.GetProjectsRequest, timeout: float | None, metadata: Metadata | None
    ) -> list[Project]:
        return await self._transport.every_page(
            self._stub.GetProjects,
            request,
            lambda reply: [project_from_proto(p) for p in reply.projects],
            timeout=timeout,
            metadata=metadata,
        )

    async def update_project(
        self,
        project_id: str,
        name: str | None = None,
        description: str | None = None,
        default_storage_policy: Any = None,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> Project:
        """Changes a project's description (editors of the project); returns the project.

        As in ML cube, an empty value ("" or None) leaves it unchanged. A project's name
        is its id in every service, so name may only repeat it; default_storage_policy
        (ML cube's) is not Cairn's and must stay None.

        Raises:
            InvalidArgumentError: for a new name, or a storage policy.
            NotFoundError: when the project does not exist.
        """
        _check_no_storage_policy(default_storage_policy)
        request = proto(
            api.UpdateProjectRequest,
            project=project_id,
            name=name or None,
            description=description or None,
        )
        response = await self._transport.unary(
            self._stub.UpdateProject, request, timeout=timeout, metadata=metadata
        )
        return project_from_proto(response.project)

    async def show_projects(
        self,
        *,
        file: IO[str] | None = None,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        """Prints the caller's projects as a table (to stdout, or file)."""
        projects = await self.get_projects(timeout=timeout, metadata=metadata)
        _print_projects(projects, "Your role", file)

    async def show_user_projects(
        self,
        user_id: str,
        *,
        file: IO[str] | None = None,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        """ML cube's: prints the projects user_id is a member of, with user_id's role in
        each, as a table (to stdout, or file). Another user's are a global admin's to see."""
        projects = await self.get_user_projects(user_id, timeout=timeout, metadata=metadata)
        _print_projects(projects, "Role", file)

    # API keys

    async def create_api_key(
        self,
        name: str,
        expiration_time: ApiKeyExpirationTime | str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> str:
        """Creates an API key for the caller and returns it. It is shown this once only."""
        return await self._create_key("", name, expiration_time, timeout, metadata)

    async def create_user_api_key(
        self,
        user_id: str,
        name: str,
        expiration_time: ApiKeyExpirationTime | str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> str:
        """Creates an API key for another user (global admins only) and returns it."""
        return await self._create_key(user_id, name, expiration_time, timeout, metadata)

    async def _create_key(
        self,
        user_id: str,
        name: str,
        expiration_time: ApiKeyExpirationTime | str,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> str:
        request = proto(
            api.CreateApiKeyRequest,
            name=name,
            expiration=member(ApiKeyExpirationTime, expiration_time, "expiration_time").value,
            user_id=user_id,
        )
        response = await self._transport.unary(
            self._stub.CreateApiKey, request, timeout=timeout, metadata=metadata
        )
        return str(response.api_key)

    async def get_api_keys(
        self, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> list[ApiKey]:
        """The caller's API keys, revoked and expired ones included."""
        return await self.get_user_api_keys("", timeout=timeout, metadata=metadata)

    async def get_user_api_keys(
        self, user_id: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> list[ApiKey]:
        """A user's API keys: the user's own, or anybody's for a global admin.

        Every key, revoked and expired ones included, in order of creation; read a page
        (of up to 500) at a time.
        """
        return await self._transport.every_page(
            self._stub.GetApiKeys,
            proto(api.GetApiKeysRequest, user_id=user_id, page_size=_KEYS_PAGE_SIZE),
            lambda reply: [api_key_from_proto(k) for k in reply.api_keys],
            timeout=timeout,
            metadata=metadata,
        )

    def list_user_api_keys(self, user_id: str = "") -> Pager[ApiKey]:
        """A user's API keys (the caller's for ""), a page of up to 500 at a time:
        `async for key in client.auth.list_user_api_keys()`."""
        return self._pager(
            self._stub.GetApiKeys,
            proto(api.GetApiKeysRequest, user_id=user_id),
            lambda reply: [api_key_from_proto(k) for k in reply.api_keys],
            _KEYS_PAGE_SIZE,
        )

    async def show_api_keys(
        self,
        *,
        file: IO[str] | None = None,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        """Prints the caller's API keys as a table (to stdout, or file); never a secret."""
        await self.show_user_api_keys("", file=file, timeout=timeout, metadata=metadata)

    async def show_user_api_keys(
        self,
        user_id: str,
        *,
        file: IO[str] | None = None,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        """ML cube's: prints a user's API keys as a table (to stdout, or file); never a
        secret. Another user's are a global admin's to see."""
        keys = await self.get_user_api_keys(user_id, timeout=timeout, metadata=metadata)
        now = time.time() * 1000
        rows = [
            (
                k.prefix,
                k.name,
                millis(k.create_time),
                millis(k.expire_time) or "never",
                _status(k, now),
            )
            for k in keys
        ]
        columns = ["Prefix", "Name", "Created (UTC)", "Expires (UTC)", "Status"]
        print_table("API keys", columns, rows, file)

    async def delete_api_key(
        self, api_key: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> None:
        """Revokes a key, given whole or by its prefix, and the keys made with it; they stop
        working at once.

        Raises:
            FailedPreconditionError: the calling key was made with it, and would be
                revoked too (REVOKES_CALLING_KEY; docs/auth.md, "Rotating a key").
        """
        await self._transport.unary(
            self._stub.DeleteApiKey,
            proto(api.DeleteApiKeyRequest, api_key=api_key),
            timeout=timeout,
            metadata=metadata,
        )

    async def delete_user_api_key(
        self,
        user_id: str,
        api_key: str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        """ML cube's: revokes a key of user_id ("" for the caller, as in
        `get_user_api_keys`), given whole or by its prefix (bare or as the key begins,
        `cairn_<prefix>`), as `delete_api_key` takes it.

        Raises:
            InvalidArgumentError: api_key is none of those forms.
            NotFoundError: user_id has no such key (API_KEY_NOT_FOUND); nothing is
                revoked, whoever's the key is.
            PermissionDeniedError: another user's keys are a global admin's to manage.
        """
        prefix = _prefix_of(api_key)
        keys = await self.get_user_api_keys(user_id, timeout=timeout, metadata=metadata)
        if not any(key.prefix == prefix for key in keys):
            raise NotFoundError(
                f"user {user_id!r} has no API key {prefix!r}", reason="API_KEY_NOT_FOUND"
            )
        await self.delete_api_key(api_key, timeout=timeout, metadata=metadata)

    # Project roles

    async def add_user_project_role(
        self,
        user_id: str,
        project_id: str,
        project_role: ProjectRole | str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        """Gives a user a role in a project, replacing any role they had there."""
        request = proto(
            api.AddUserProjectRoleRequest,
            project=project_id,
            user_id=user_id,
            role=role_to_proto(project_role),
        )
        await self._transport.unary(
            self._stub.AddUserProjectRole, request, timeout=timeout, metadata=metadata
        )

    async def delete_project_role(
        self,
        user_id: str,
        project_id: str,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        await self._transport.unary(
            self._stub.DeleteProjectRole,
            proto(api.DeleteProjectRoleRequest, project=project_id, user_id=user_id),
            timeout=timeout,
            metadata=metadata,
        )

    async def get_project_members(
        self, project_id: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> list[ProjectMember]:
        """Every member of a project, in order of user id; read a page (of up to 1,000)
        at a time."""
        return await self._transport.every_page(
            self._stub.GetProjectMembers,
            proto(api.GetProjectMembersRequest, project=project_id, page_size=_MEMBERS_PAGE_SIZE),
            lambda reply: [member_from_proto(m) for m in reply.members],
            timeout=timeout,
            metadata=metadata,
        )

    def list_project_members(self, project_id: str) -> Pager[ProjectMember]:
        """get_project_members as a Pager, a page of up to 1,000 at a time."""
        return self._pager(
            self._stub.GetProjectMembers,
            proto(api.GetProjectMembersRequest, project=project_id),
            lambda reply: [member_from_proto(m) for m in reply.members],
            _MEMBERS_PAGE_SIZE,
        )

    def _pager(
        self, method: Any, request: Message, items: Callable[[Any], list[T]], most: int
    ) -> Pager[T]:
        """The listing of request, a page at a time, of up to most items each."""
        # A partial, not a lambda: the sync facade knows the page function is async.
        return Pager(functools.partial(self._page, method, request, items, most))

    async def _page(
        self,
        method: Any,
        request: Message,
        items: Callable[[Any], list[T]],
        most: int,
        options: ListOptions,
    ) -> PagedList[T]:
        page = type(request)()
        page.CopyFrom(request)
        page.page_size = _page_size(options, most)
        page.page_token = options.next_page_token or ""
        reply = await self._transport.unary(method, page)
        return PagedList(items(reply), reply.next_page_token)


def _page_size(options: ListOptions, most: int) -> int:
    """The page size a Pager's limit asks for (ListOptions.limit), up to the listing's
    most, which is also its default. These listings have one order each: another is
    InvalidArgumentError."""
    if options.order_by is not None or not options.is_asc:
        raise invalid_argument("order_by", "this listing has one order (see its docs)")
    size = page_size_of(options)
    if size > most:
        raise invalid_argument("limit", f"must be at most {most}, got {size}")
    return size or most


def _check_no_storage_policy(default_storage_policy: Any) -> None:
    """Refuses ML cube's default_storage_policy, which Cairn projects do not have, unless
    None."""
    if default_storage_policy is not None:
        raise invalid_argument(
            "default_storage_policy", "Cairn projects have no storage policy; leave it None"
        )


def _print_projects(projects: list[Project], role_column: str, file: IO[str] | None) -> None:
    rows = [(p.project_id, p.description, p.role and p.role.lower()) for p in projects]
    print_table("Projects", ["Project ID", "Description", role_column], rows, file)


def _status(key: ApiKey, now: float) -> str:
    """A listed key's Status: revoked, expired (by now, in milliseconds), or nothing."""
    if key.revoked:
        return "revoked"
    expired = key.expire_time is not None and key.expire_time <= now
    return "expired" if expired else ""


def _prefix_of(api_key: str) -> str:
    """A key's prefix, from the key whole or its prefix (bare or as the key begins,
    `cairn_<prefix>`), the forms DeleteApiKey takes."""
    prefix = as_prefix(api_key)
    if prefix is None:
        raise invalid_argument("api_key", "must be an API key or its 12-character prefix")
    return prefix
