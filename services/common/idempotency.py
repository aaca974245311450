"""Exactly-once writes: a write repeated with its request id gets the first answer.

A client sends a fresh request id (metadata `x-cairn-request-id`) with every call and
the same id with every retry of it. For a write of a service that records request ids,
the interceptor runs the handler inside one transaction on one connection, which
every store of the call shares (`database.BoundedPool` hands it out; a store's own
transaction becomes a savepoint in it): it first claims the id in `<schema>.requests`,
then runs the handler, then stores the answer, then commits. A repeat finds the claim
and gets the stored answer; a repeat racing the first waits for its commit. With
authentication on, request ids are each user's own: a write whose id another user
claimed claims it under a key of its own (RequestId), never refused for the other's. An answer
larger than MAX_REMEMBERED_ANSWER_BYTES is stored as a stub naming its object, which
the repeat reads again (Reread). A handler that fails rolls the claim back with the
write, so a retry applies it afresh. A handler that needs work done on another
connection first raises Outside: the call then runs again after that work, never
holding two connections at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

from . import sql
from .access import Caller, current_caller, metadata_of
from .errors import InvalidArgument

REQUEST_ID_HEADER = "x-cairn-request-id"
MAX_REQUEST_ID_LENGTH = 128
# Methods that only read; every other method of a recording service is a write.
READS = ("Get", "Search", "List", "Find", "Stat", "Download", "Wait")
# The most bytes of an answer a request id keeps. A larger one holds a stored object (a
# registered model with its latest versions' tags, say), which a request of a few
# hundred bytes could otherwise have PostgreSQL keep for the retention, megabytes a
# call: its write's repeat reads the object again instead (Reread).
MAX_REMEMBERED_ANSWER_BYTES = 64 * 1024
# The connection of the write being run, which the pool hands to every store of the call.
CALL_CONNECTION: ContextVar[asyncpg.Connection | None] = ContextVar(
    "cairn_call_connection", default=None
)
# What the write being run leaves for after its commit (removing replaced bytes, say).
_AFTER_COMMIT: ContextVar[list[Callable[[], Awaitable[None]]] | None] = ContextVar(
    "cairn_after_commit", default=None
)


# Whether the write being run is run again, after an action it asked for outside its
# call's transaction (Outside).
_AFTER_OUTSIDE: ContextVar[bool] = ContextVar("cairn_after_outside", default=False)


class Outside(Exception):
    """Raised by a write run in its call's transaction that needs action done on a
    connection of its own first. Taking one there would hold two of the pool's
    connections: as many such calls as the pool holds would wait for each other's until
    the pool's wait ran out. The call's transaction rolls back and gives back its
    connection, action runs, and the call runs once more (`after_outside()` true)."""

    def __init__(self, action: Callable[[], Awaitable[None]]) -> None:
        super().__init__("a write asked for work outside its call's transaction")
        self.action = action


def _no_turn(method: str, request: Message) -> contextlib.AbstractAsyncContextManager[None]:
    return contextlib.nullcontext()


def in_call_transaction() -> bool:
    """Whether the write being run holds its call's connection (Outside is then how it
    gets work done on another)."""
    return CALL_CONNECTION.get() is not None


def after_outside() -> bool:
    """Whether this run of the call comes after the action its first run asked for."""
    return _AFTER_OUTSIDE.get()


async def _run_all(actions: list[Callable[[], Awaitable[None]]]) -> None:
    for action in actions:
        await action()


async def after_commit(action: Callable[[], Awaitable[None]]) -> None:
    """Runs action once the current call's writes are committed: at once, unless the
    call is a write run once per request id, whose transaction commits after the
    handler returns; then after that commit, and not at all if it rolls back."""
    pending = _AFTER_COMMIT.get()
    if pending is None:
        await action()
    else:
        pending.append(action)


# A service's own read of one object, as its servicer serves it.
Read = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Message]]


@dataclass(frozen=True)
class Reread:
    """How a write's repeat is answered when its answer was larger than a request id
    keeps (MAX_REMEMBERED_ANSWER_BYTES).

    The id keeps a stub instead: the answer with only the fields at `names` set
    ("experiment.project", "experiment.experiment_id"), which name its object. The
    repeat asks the service's read `get` for the object by those fields, each under its
    last name (GetExperimentRequest's project and experiment_id), and answers with it in
    the write's answer (get's answer holds it in a field of the same name): the object
    as it is then, not as the first call left it; get's NOT_FOUND once it was deleted.
    """

    get: str
    names: tuple[str, ...]


@dataclass(frozen=True)
class _Rereading:
    """A write's Reread, with the service's read it names and the messages it reads."""

    reread: Reread
    get: Read
    get_request: type[Message]
    answer: type[Message]

    def stub(self, answer: Message) -> Message:
        """What a request id keeps of answer, too large to keep: answer without its
        lists and maps (tags, properties, latest versions, aliases), which validation
        leaves well under the bound; or, past it still, the fields naming its object
        alone. A server of the release before hands the stub out as the repeat's
        answer (during an update, after a rollback): a whole object to its clients, if
        one without its tags, where the fields alone failed their conversions."""
        trimmed = self.answer()
        trimmed.CopyFrom(answer)
        _clear_lists(trimmed)
        if trimmed.ByteSize() <= MAX_REMEMBERED_ANSWER_BYTES:
            return trimmed
        named = self.answer()
        for path in self.reread.names:
            *outer, name = path.split(".")
            setattr(_field(named, outer), name, getattr(_field(answer, outer), name))
        return named

    async def answered(self, stub: bytes, context: grpc.aio.ServicerContext) -> Message:
        kept = self.answer.FromString(stub)
        naming = {
            path.rpartition(".")[2]: _field(kept, path.split(".")) for path in self.reread.names
        }
        found = await self.get(self.get_request(**naming), context)
        return self.answer(**{field.name: value for field, value in found.ListFields()})


@dataclass(frozen=True)
class _Stub:
    """A stub a request id kept instead of its answer (Reread)."""

    answer: bytes


class Idempotency:
    """Runs writes once per request id.

    Args:
        pool: the database pool.
        schemas: full service name ("cairn.tracking.v1.TrackingService") to the schema
            whose `requests` table records its writes; services not listed record none.
        exempt: writes not recorded (`ServiceSpec.not_recorded` of each service).
        turn: the turn a write (its method and request) takes before its call's
            connection (write_slots.py); none by default.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        schemas: dict[str, str],
        exempt: set[str],
        turn: Callable[[str, Message], contextlib.AbstractAsyncContextManager[None]] | None = None,
    ) -> None:
        self._pool = pool
        self._schemas = schemas
        self._exempt = exempt
        self._turn = turn or _no_turn
        self._rereads: dict[str, _Rereading] = {}

    def reread(self, method: str, reread: Reread, get: Read) -> None:
        """Has the repeats of method ("/package.Service/Name") whose answer was too large
        to keep answered by get, the service's read reread.get."""
        service_name, _, name = method.lstrip("/").partition("/")
        service = descriptor_pool.Default().FindServiceByName(service_name)
        self._rereads[method] = _Rereading(
            reread,
            get,
            message_factory.GetMessageClass(service.FindMethodByName(reread.get).input_type),
            message_factory.GetMessageClass(service.FindMethodByName(name).output_type),
        )

    def schema_of(self, method: str) -> str | None:
        """The schema recording method ("/package.Service/Name"), if it is such a write."""
        service, _, name = method.lstrip("/").partition("/")
        if name.startswith(READS) or name in self._exempt:
            return None
        return self._schemas.get(service)

    async def run(
        self,
        schema: str,
        method: str,
        context: grpc.aio.ServicerContext,
        request: Message,
        handler: Callable[[], Awaitable[Message]],
    ) -> Message | bytes:
        """The handler's answer, or the serialized answer of the call with the same id."""
        request_id = request_id_of(context)
        if request_id is None:  # a raw call's: applied as often as it is sent
            async with self._turn(method, request):
                return await handler()
        claim = Claim.of(method, request_id, request, current_caller())
        once = functools.partial(self._run_once, schema, claim, handler)
        async with self._turn(method, request):
            answer = await _after_any_outside(once)
        if isinstance(answer, _Stub):  # read outside the claim's transaction: one connection
            return await self._rereads[method].answered(answer.answer, context)
        return answer

    async def _run_once(
        self, schema: str, claim: Claim, handler: Callable[[], Awaitable[Message]]
    ) -> Message | bytes | _Stub:
        """The handler's answer, run in one transaction with its request id's claim, or
        what is recorded under that id."""
        pending: list[Callable[[], Awaitable[None]]] = []
        async with self._pool.acquire() as conn:
            async with conn.transaction():
                key = await _claimed(conn, schema, claim)
                if not isinstance(key, str):
                    return key  # the answer of the call this one repeats
                connection, later = CALL_CONNECTION.set(conn), _AFTER_COMMIT.set(pending)
                try:
                    response = await handler()
                finally:
                    CALL_CONNECTION.reset(connection)
                    _AFTER_COMMIT.reset(later)
                await conn.execute(
                    f"""UPDATE {schema}.requests SET response = $3, reread = $4
                        WHERE method = $1 AND request_id = $2""",
                    claim.method,
                    key,
                    *self._kept(claim.method, response),
                )
            # Committed, its actions run to their end even if the caller gives up now,
            # as the connection goes back (skipped, an operation stored would wait
            # unlaunched, a revoked key stay cached). A caller giving up during the
            # COMMIT itself cannot know whether it happened, nor can this call.
            await asyncio.shield(_run_all(pending))
        return response

    def _kept(self, method: str, response: Message) -> tuple[bytes, bool]:
        """What a request id keeps of a write's answer, and whether it is a stub: the
        answer, or its Reread's stub for one larger than MAX_REMEMBERED_ANSWER_BYTES."""
        rereading = self._rereads.get(method)
        if rereading is None or response.ByteSize() <= MAX_REMEMBERED_ANSWER_BYTES:
            return response.SerializeToString(), False
        return rereading.stub(response).SerializeToString(), True

    async def prune(self, retention_seconds: float) -> int:
        """Forgets request ids older than the retention; returns how many."""
        pruned = 0
        async with self._pool.acquire() as conn, conn.transaction():
            await sql.unguarded(conn)
            for schema in sorted(set(self._schemas.values())):
                # Claims a call holds (`_rows`) wait for the next prune: this one neither
                # waits out the call's handler nor deadlocks with it.
                status = await conn.execute(
                    f"""DELETE FROM {schema}.requests WHERE (method, request_id) IN (
                            SELECT method, request_id FROM {schema}.requests
                            WHERE create_time < clock_timestamp() - $1 * interval '1 second'
                            FOR UPDATE SKIP LOCKED
                        )""",
                    retention_seconds,
                )
                pruned += int(status.split()[-1])
        return pruned


def fingerprint_of(request: Message, caller: Caller | None = None) -> bytes:
    """What tells a repeat of a call from another call under the same request id: the
    request, and the caller if given with authentication on."""
    digest = hashlib.sha256()
    if caller is not None and (user_id := user_of(caller)) is not None:
        user = user_id.encode()
        digest.update(len(user).to_bytes(4, "big") + user)
    digest.update(request.SerializeToString(deterministic=True))
    return digest.digest()


def request_id_reused(request_id: str) -> InvalidArgument:
    """The error of a request id sent again with another request."""
    return InvalidArgument(
        "REQUEST_ID_REUSED",
        f"request id {request_id!r} was used before with another request; "
        "send a new id with every new call",
        metadata={"request_id": request_id},
    )


def request_id_of(context: grpc.aio.ServicerContext) -> str | None:
    """The request id a call carries, if any (checked: 1 to 128 printable ASCII
    characters, as gRPC clients send headers; RequestId.own_key relies on it)."""
    for key, value in metadata_of(context):
        if key == REQUEST_ID_HEADER:
            if not (isinstance(value, str) and _is_request_id(value)):
                raise InvalidArgument(
                    "INVALID_ARGUMENT",
                    f"{REQUEST_ID_HEADER} must be 1 to {MAX_REQUEST_ID_LENGTH} "
                    "printable ASCII characters",
                )
            return value
    return None


def user_of(caller: Caller) -> str | None:
    """Whose request ids the caller's are: their user id with authentication on; else
    None, one space for all."""
    return caller.user_id if caller.key_prefix else None


@dataclass(frozen=True)
class RequestId:
    """A request id as sent, and the user who sent it (`user_of`).

    A write claims the id as sent, where every server, of this release or the one
    before, looks for it. With authentication on, a user finding it claimed by another
    user claims it under their own key instead (`own_key`: their user id and the id, a
    key no id sent can spell, as ids are printable), looked for first on every later
    claim: so another user's id never refuses theirs, nor tells them it was used, and
    their retry finds their claim even once the other's is pruned.
    """

    sent: str
    user: str | None = None

    @classmethod
    def of(cls, context: grpc.aio.ServicerContext) -> RequestId | None:
        """The request id the call carries, if any, as its caller's."""
        sent = request_id_of(context)
        return None if sent is None else cls(sent, user_of(current_caller()))

    @property
    def own_key(self) -> str | None:
        return None if self.user is None else f"{self.user}\n{self.sent}"

    @property
    def keys(self) -> list[str]:
        """The keys a claim of this id may be under: as sent, and the user's own."""
        return [self.sent] if self.own_key is None else [self.sent, self.own_key]

    def repeated(self, rows: Iterable[asyncpg.Record]) -> asyncpg.Record | None:
        """Of rows recorded under this id's keys (each with its `request_id` and
        `caller`), the one a call under this id repeats: under the user's own key, else
        as sent by this user or by one unknown (authentication off, or a server before
        callers were kept); None when only another user's is there."""
        by_key = {row["request_id"]: row for row in rows}
        if (own := by_key.get(self.own_key or "")) is not None:
            return own
        sent = by_key.get(self.sent)
        if sent is not None and (self.user is None or sent["caller"] in (None, self.user)):
            return sent
        return None


@dataclass(frozen=True)
class Claim:
    """A write's claim of its request id (see RequestId)."""

    method: str
    request_id: RequestId
    # What tells a repeat from another request under the id: an answer recorded under
    # a claim of another fingerprint is not this call's (`_answer`).
    fingerprint: bytes

    @classmethod
    def of(cls, method: str, request_id: str, request: Message, caller: Caller) -> Claim:
        return cls(method, RequestId(request_id, user_of(caller)), fingerprint_of(request, caller))


async def _claimed(conn: asyncpg.Connection, schema: str, claim: Claim) -> str | bytes | _Stub:
    """The key under which this call claimed its request id, or the answer recorded for
    the call it repeats. Raises REQUEST_ID_REUSED when the id is the caller's, or of a
    caller unknown, with another request."""
    found = await claim_key(conn, schema, claim)
    return found if isinstance(found, str) else _answer(found, claim)


async def claim_key(conn: asyncpg.Connection, schema: str, claim: Claim) -> str | asyncpg.Record:
    """The key under which this call claimed its request id in `<schema>.requests`, or
    the row of the claim before it that it repeats (RequestId.repeated), which may be of
    another request: a repeat racing that call waits for its commit, in the INSERT."""
    request_id = claim.request_id
    while True:
        if await _insert(conn, schema, claim, request_id.sent, unless=request_id.own_key):
            return request_id.sent
        rows = await _rows(conn, schema, claim)
        if (repeated := request_id.repeated(rows)) is not None:
            return repeated
        own_key = request_id.own_key
        if rows and own_key and await _insert(conn, schema, claim, own_key):
            return own_key  # where another user's claim of it alone was
        # else pruned, or its write rolled back, since the claim failed; or another call
        # of this caller's claimed their own key meanwhile: its row answers


async def _insert(
    conn: asyncpg.Connection, schema: str, claim: Claim, key: str, unless: str | None = None
) -> bool:
    """Whether key was claimed for this call: it was free, and so was unless."""
    claimed = await conn.fetchval(
        f"""INSERT INTO {schema}.requests (method, request_id, fingerprint, caller)
            SELECT $1, $2, $3, $4
            WHERE NOT EXISTS (
                SELECT 1 FROM {schema}.requests WHERE method = $1 AND request_id = $5
            )
            ON CONFLICT DO NOTHING RETURNING true""",
        claim.method,
        key,
        claim.fingerprint,
        claim.request_id.user,
        unless,
    )
    return bool(claimed)


async def _rows(conn: asyncpg.Connection, schema: str, claim: Claim) -> list[asyncpg.Record]:
    """The claims of claim's request id, as sent and under the caller's own key, kept
    until this call commits: another user's claim of the id is pruned only after it, so
    a retry racing this call, which cannot see its claim of its own key before the
    commit, never finds the id as sent free meanwhile, to claim it and run the write
    a second time."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""SELECT request_id, fingerprint, caller, response, reread FROM {schema}.requests
            WHERE method = $1 AND request_id = ANY($2::text[]) FOR KEY SHARE""",
        claim.method,
        claim.request_id.keys,
    )
    return rows


def _answer(row: asyncpg.Record, claim: Claim) -> bytes | _Stub:
    """The answer a claim of claim's records, unless it was another request's."""
    if row["fingerprint"] != claim.fingerprint:
        raise request_id_reused(claim.request_id.sent)
    if row["reread"]:
        return _Stub(bytes(row["response"]))
    return bytes(row["response"])


def _is_request_id(value: str) -> bool:
    return 0 < len(value) <= MAX_REQUEST_ID_LENGTH and value.isascii() and value.isprintable()


async def _after_any_outside(
    run_once: Callable[[], Awaitable[Message | bytes | _Stub]],
) -> Message | bytes | _Stub:
    """run_once's outcome, run once more after the action an Outside asks for."""
    try:
        return await run_once()
    except Outside as outside:
        await outside.action()
    again = _AFTER_OUTSIDE.set(True)
    try:
        return await run_once()
    finally:
        _AFTER_OUTSIDE.reset(again)


def _clear_lists(message: Message) -> None:
    """Clears every list and map field of message, at any depth."""
    for field, value in message.ListFields():
        if field.is_repeated:
            message.ClearField(field.name)
        elif field.message_type is not None:
            _clear_lists(value)


def _field(message: Any, path: list[str]) -> Any:
    """The value at path ("run", "info", "run_id") in message."""
    for name in path:
        message = getattr(message, name)
    return message


def passing_bytes(serializer: Callable[[Any], bytes] | None) -> Callable[[Any], bytes]:
    """A response serializer that sends a stored (already serialized) answer as it is."""

    def serialize(response: Any) -> bytes:
        if isinstance(response, bytes):
            return response
        return serializer(response) if serializer else response.SerializeToString()

    return serialize
