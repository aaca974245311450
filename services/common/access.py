"""Who may call what: the roles RPCs declare, the caller, and the gate that checks them.

Every RPC of every Cairn service declares the least role it needs in its service's
role table (`ServiceSpec.roles`); the one server interceptor asks the `Gate` to admit
each call before the handler runs. Methods outside those tables (health, reflection)
are open. The gate itself (API keys, projects, members) is the auth service's.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime
import enum
import functools
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from .errors import PermissionDenied, Unauthenticated, Unavailable


class Role(enum.IntEnum):
    """The least a caller must be for an RPC. Project roles are ordered; each includes
    the ones below it. A global admin passes every check."""

    AUTHENTICATED = 0  # any valid key; the handler checks ownership itself
    VIEWER = 1  # read the request's project
    EDITOR = 2  # also write in it
    ADMIN = 3  # also manage its members and their keys
    GLOBAL_ADMIN = 4  # manage projects


PROJECT_ROLES = (Role.VIEWER, Role.EDITOR, Role.ADMIN)


def lacks_role(needed: Role, project: str | None) -> PermissionDenied:
    """The refusal of a caller without the role needed (in project, for a project role)."""
    where = f" in project {project!r}" if needed in PROJECT_ROLES else ""
    return PermissionDenied(
        "PERMISSION_DENIED",
        f"this call needs the {needed.name.lower()} role{where}",
        metadata={"required_role": needed.name, **({"project": project} if project else {})},
    )


RoleTable = Mapping[str, Role]
"""Method name (as in the proto, e.g. "GetRun") to the least role it needs."""


@dataclass(frozen=True)
class Caller:
    """The authenticated caller of the current RPC."""

    user_id: str
    global_admin: bool
    key_prefix: str = ""  # empty when authentication is off
    # None for a key that never expires, or with authentication off. What a call hands
    # out in the key's name (a presigned URL, a byte-endpoint ticket) expires by then.
    key_expire_time: datetime.datetime | None = None


class CallInfo:
    """What the gate sees of a call: its method, and its headers and peer, read from the
    call only if the gate asks (with authentication off it never does)."""

    def __init__(self, method: str, context: Any) -> None:
        self.method = method
        self._context = context

    # Both kept once read: an admission kept past its call (a byte-endpoint upload's,
    # transfers.py) is asked again after the call ended, and must not read it then.
    @functools.cached_property
    def metadata(self) -> Sequence[tuple[str, str | bytes]]:
        return metadata_of(self._context)

    @functools.cached_property
    def peer(self) -> str:
        return str(self._context.peer())


class Gate(Protocol):
    async def admit(
        self, call: CallInfo, role: Role, project: str | None, *, again: bool = False
    ) -> Caller:
        """Returns the caller, or raises Unauthenticated, PermissionDenied, NotFound
        (PROJECT_NOT_FOUND, to global admins only) or ResourceExhausted. `again`: the
        call was admitted before (a stream checked once more)."""
        ...

    async def close(self) -> None:
        """Releases what the gate holds (called when the server stops)."""
        ...


_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("cairn_caller")

Metadata = tuple[tuple[str, str | bytes], ...]
# The headers of the call being handled, with the call they are of.
_metadata: contextvars.ContextVar[tuple[Any, Metadata]] = contextvars.ContextVar(
    "cairn_call_metadata"
)


def metadata_of(context: Any) -> Metadata:
    """The headers of a call (its grpc.aio.ServicerContext), read from gRPC once per
    call: each invocation_metadata() converts them anew (2 µs), and the interceptor,
    the gate and the servicer each look for one of them."""
    known = _metadata.get(None)
    if known is not None and known[0] is context:
        return known[1]
    metadata = tuple(context.invocation_metadata() or ())
    _metadata.set((context, metadata))
    return metadata


def current_caller() -> Caller:
    """The caller of the RPC being handled (set by the interceptor before the handler)."""
    return _caller.get()


def set_caller(caller: Caller) -> None:
    _caller.set(caller)


def key_expire_time() -> datetime.datetime | None:
    """When the key of the call being handled expires; None when it never does, with
    authentication off, or outside a call."""
    caller = _caller.get(None)
    return None if caller is None else caller.key_expire_time


def within_key(lifetime: datetime.timedelta) -> datetime.timedelta:
    """lifetime, or the whole seconds the caller's key has left when fewer (S3 signs
    seconds): a URL signed for a call works no longer than the key that asked for it,
    as a key it creates may not (docs/auth.md). For lifetimes the server chooses; one
    the caller asks for past its key is refused instead.

    Raises:
        Unauthenticated: API_KEY_EXPIRED, the key has less than a second left.
    """
    expires = key_expire_time()
    if expires is None:
        return lifetime
    left = expires - datetime.datetime.now(datetime.UTC)
    if left >= lifetime:
        return lifetime
    if left < datetime.timedelta(seconds=1):  # what its next call would hear
        raise Unauthenticated("API_KEY_EXPIRED", "the API key expires within a second")
    return datetime.timedelta(seconds=math.floor(left.total_seconds()))


# A stream runs past its admission: an upload may last hours, and a key revoked or a
# role taken away meanwhile must stop it too, not only the caller's next call. (Not a
# metric history, which holds the database connection a check may need.)
READMIT_SECONDS = 1.0
# A check waits this long at most: a database behind a partition never answers.
READMIT_TIMEOUT_SECONDS = 2.0
_readmission: contextvars.ContextVar[Callable[[], Awaitable[object]]] = contextvars.ContextVar(
    "cairn_readmission"
)
T = TypeVar("T")


def set_readmission(admit: Callable[[], Awaitable[object]]) -> None:
    """How the gate admits the call being handled again (set by the interceptor)."""
    _readmission.set(admit)


def readmission() -> Callable[[], Awaitable[object]] | None:
    """How the gate admits the call being handled again, for work the call leaves to
    run after it ends (a byte-endpoint upload, transfers.py); None for a call no gate
    admits. It checks the call's key, role and project as the gate did, and raises as
    `admit_again` does."""
    return _readmission.get(None)


async def admit_again() -> None:
    """Raises as the gate would now, admitting the call being handled (its key revoked,
    its role taken away since it began); nothing for a call no gate admits."""
    admit = _readmission.get(None)
    if admit is not None:
        await admit()


async def still_admitted(items: AsyncIterator[T]) -> AsyncIterator[T]:
    """items, with the call admitted again every READMIT_SECONDS while they come: a
    stream ends with the refusal its next call would get. A check the gate cannot make
    (its database away, or silent behind a partition) leaves the admission as it was: a
    download needs no database, and outlives its outages."""
    loop = asyncio.get_running_loop()
    admitted_at = loop.time()
    async for item in items:
        if loop.time() - admitted_at >= READMIT_SECONDS:
            with contextlib.suppress(Unavailable, TimeoutError):
                async with asyncio.timeout(READMIT_TIMEOUT_SECONDS):
                    await admit_again()
            admitted_at = loop.time()
        yield item


def role_table(
    *,
    authenticated: Sequence[str] = (),
    viewer: Sequence[str] = (),
    editor: Sequence[str] = (),
    admin: Sequence[str] = (),
    global_admin: Sequence[str] = (),
) -> dict[str, Role]:
    """A service's role table, written as the methods each role opens."""
    table: dict[str, Role] = {}
    for role, methods in (
        (Role.AUTHENTICATED, authenticated),
        (Role.VIEWER, viewer),
        (Role.EDITOR, editor),
        (Role.ADMIN, admin),
        (Role.GLOBAL_ADMIN, global_admin),
    ):
        for method in methods:
            if method in table:
                raise ValueError(f"{method} is listed twice")
            table[method] = role
    return table
