"""The gate every call passes: who is calling (API key), and may they (role table)."""

from __future__ import annotations

import datetime

from ..common import logs, metrics, validation
from ..common.access import PROJECT_ROLES, Caller, CallInfo, Role, lacks_role
from ..common.config import Config
from ..common.errors import (
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
)
from ..common.peers import client_address
from . import keys
from .cache import KeyCache
from .limiter import FailureLimiter
from .store import AuthStore, KeyCheck

ANONYMOUS = "anonymous"
API_KEY_HEADER = "x-api-key"
_log = logs.get("cairn.auth")


class ApiKeyGate:
    """Admits calls that carry a valid API key of a user with the role they need."""

    def __init__(self, store: AuthStore, cache: KeyCache, config: Config) -> None:
        self._store = store
        self._cache = cache
        cache.attach()
        self._limiter = FailureLimiter(
            config.auth_failure_limit, config.auth_failure_window_seconds
        )

    async def admit(
        self, call: CallInfo, role: Role, project: str | None, *, again: bool = False
    ) -> Caller:
        address = client_address(call.peer)
        # A call admitted before presents the key verified then: no guess, neither
        # refused for its address nor counted against it when the key is gone since.
        # Refused, a stranger's bad keys from the address (behind a proxy all clients
        # share it) ended every upload and download under way there; counted, a key
        # revoked under 20 downloads refused the address to everyone behind it.
        if not again and self._limiter.blocked(address):
            metrics.AUTH_REFUSALS.inc()
            _log.warning("authentication refused", address=address, method=call.method)
            raise ResourceExhausted(
                "TOO_MANY_FAILED_ATTEMPTS",
                "too many failed authentications from this address; try again later",
            )
        key = presented_key(call.metadata)
        prefix = keys.prefix_of(key)
        # Who is calling comes first: a stranger learns nothing, not even that the
        # project name is malformed.
        project, bad_project = _scope(role, project)
        check = None if prefix is None else await self._check(prefix, project)
        try:
            verified = _verify(key, check)
        except Unauthenticated as failure:
            self._fail(address, call.method, prefix, failure.reason, guess=not again)
            raise
        if bad_project is not None:
            raise bad_project
        caller = Caller(verified.user_id, verified.global_admin, prefix or "", verified.expire_time)
        _authorize(caller, role, project, verified.role, verified.project_exists)
        return caller

    async def close(self) -> None:
        await self._cache.close()

    async def _check(self, prefix: str, project: str | None) -> KeyCheck | None:
        """The stored facts of a key for a project, cached while nothing changes."""
        await self._cache.listen()
        check = self._cache.get(prefix, project)
        if check is None:
            generation = self._cache.generation
            check = await self._store.check_key(prefix, project)
            if check is not None:
                self._cache.put(prefix, project, check, generation)
        return check

    def _fail(
        self, address: str, method: str, prefix: str | None, reason: str, *, guess: bool
    ) -> None:
        """Counts and logs a presented key that failed (a missing key is no guess and
        never gets here); one that may be a guess counts against its address."""
        metrics.AUTH_FAILURES.labels(reason).inc()
        failures = self._limiter.record_failure(address) if guess else None
        # The prefix only: the rest of what was presented may be a real secret.
        _log.warning(
            "authentication failed",
            address=address,
            method=method,
            reason=reason,
            key_prefix=prefix,
            failures=failures,
        )


class OpenGate:
    """auth=none: every caller is an anonymous global admin; projects must still exist."""

    def __init__(self, store: AuthStore) -> None:
        self._store = store
        # Projects are never deleted, so a project seen once stays known.
        self._known = {validation.DEFAULT_PROJECT}

    async def close(self) -> None:
        pass

    async def admit(
        self, call: CallInfo, role: Role, project: str | None, *, again: bool = False
    ) -> Caller:
        caller = Caller(ANONYMOUS, global_admin=True)
        if role in PROJECT_ROLES:
            project = validation.project(project or "")
            if project not in self._known:
                if not await self._store.project_exists(project):
                    raise _project_not_found(project)
                self._known.add(project)
        return caller


def presented_key(metadata: object) -> str:
    """The key of `authorization: Bearer <key>` or `x-api-key: <key>`; both must agree."""
    found = set()
    for name, value in metadata:  # type: ignore[attr-defined]
        if not isinstance(value, str):
            continue
        if name == "authorization":
            scheme, _, credentials = value.partition(" ")
            found.add(credentials.strip() if scheme.lower() == "bearer" else value)
        elif name == API_KEY_HEADER:
            found.add(value.strip())
    if not found:
        raise Unauthenticated(
            "API_KEY_MISSING",
            "this server needs an API key: send 'authorization: Bearer <key>' or 'x-api-key'",
        )
    if len(found) > 1:
        return ""  # two different keys: malformed
    return found.pop()


def _scope(role: Role, project: str | None) -> tuple[str | None, InvalidArgument | None]:
    """The project a role is checked in ("default" when the request names none), or
    None with the error when the name is malformed."""
    if role not in PROJECT_ROLES:
        return None, None
    try:
        return validation.project(project or ""), None
    except InvalidArgument as error:
        return None, error


def _verify(key: str, check: KeyCheck | None) -> KeyCheck:
    """The stored row of a presented key, or Unauthenticated with the reason."""
    if not keys.matches(key, None if check is None else check.key_hash) or check is None:
        raise Unauthenticated("API_KEY_INVALID", "the API key is not valid")
    if check.revoke_time is not None:
        raise Unauthenticated("API_KEY_REVOKED", "the API key has been revoked")
    now = datetime.datetime.now(datetime.UTC)
    if check.expire_time is not None and check.expire_time <= now:
        raise Unauthenticated("API_KEY_EXPIRED", "the API key has expired")
    return check


def _authorize(
    caller: Caller, needed: Role, project: str | None, role: int | None, project_exists: bool
) -> None:
    if needed is Role.AUTHENTICATED:
        return
    if caller.global_admin:
        if project is not None and needed in PROJECT_ROLES and not project_exists:
            raise _project_not_found(project)
        return
    if needed in PROJECT_ROLES and role is not None and role >= needed:
        return
    raise lacks_role(needed, project)


def _project_not_found(project: str) -> NotFound:
    return NotFound("PROJECT_NOT_FOUND", f"project {project!r} not found", metadata={"id": project})
