"""Direct-transfer tickets: what the gRPC service allows one request of the byte
endpoint (`direct.py`) to do.

A ticket is its claims, as JSON, and an HMAC-SHA256 of them under a key made when the
process starts: it can be neither altered nor forged, it works on the process that
issued it only, and it carries everything the transfer may do (one upload to one path
with the checks of the call that issued it, or the bytes of one stored key), so it
never grants more than its call did. It expires a minute after it was issued, or when
the key of that call expires if sooner: a transfer must begin by then (one that began
runs to its end). An upload's ticket is used once (TICKET_USED after): the process
remembers the PUT tickets whose request it took in (`spend`) until they expire (it
alone can verify them, so its memory is the whole record); one refused before that (a
body not chunked, the endpoint busy or stopping) may be sent again. A download's ticket
may be used again until it expires, for the same bytes.

With authentication on, a PUT ticket names the caller it was issued to (user and key
prefix), and the process keeps that call's admission by the gate (`Admissions`): the
upload is admitted again when it begins and just before it publishes, as a streamed
upload is, for however long it ran. The admission stays in the process because it
holds the key the caller presented, which a ticket, readable by whoever sees it, must
not carry; the ticket works on this process only anyway.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import heapq
import hmac
import json
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..common import access
from ..common.errors import PermissionDenied
from ..common.idempotency import RequestId

TICKET_SECONDS = 60.0
Admit = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class Ticket:
    method: str  # "PUT": one upload; "GET": one stored key's bytes
    project: str
    path: str
    expires: float  # seconds since the epoch
    key: str = ""  # GET: the storage key served
    size: int = 0  # GET: its size; PUT: the expected size (0: unknown)
    sha256: str = ""  # PUT: the expected sha256 (empty: the client's trailer says)
    overwrite: bool = False
    content_type: str = ""
    request_id: str = ""  # PUT: that of the call, kept on the object it publishes
    user: str = ""  # PUT: whose request id it is, with authentication on
    key_prefix: str = ""  # PUT: the key of the call that issued it, with authentication on

    @staticmethod
    def request_claims(request_id: RequestId | None) -> dict[str, str]:
        """The claims of a PUT ticket issued to a call of this request id."""
        if request_id is None:
            return {}
        return {"request_id": request_id.sent, "user": request_id.user or ""}

    @property
    def request(self) -> RequestId | None:
        """The request id of the call that issued the ticket, if any, as its caller's."""
        return RequestId(self.request_id, self.user or None) if self.request_id else None


class TicketSigner:
    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or os.urandom(32)
        self._used: set[str] = set()  # the signatures of PUT tickets spent
        self._expiries: list[tuple[float, str]] = []  # theirs, a heap: soonest first
        self._lock = threading.Lock()

    def issue(self, **claims: object) -> str:
        """A ticket for the claims (Ticket's fields), issued to the call being handled:
        it expires TICKET_SECONDS from now, or when the call's key does if sooner."""
        expires = time.time() + TICKET_SECONDS
        if (key_expires := access.key_expire_time()) is not None:
            expires = min(expires, key_expires.timestamp())
        ticket = Ticket(expires=expires, **claims)  # type: ignore[arg-type]
        payload = _encode(json.dumps(dataclasses.asdict(ticket)).encode())
        return f"{payload}.{self._sign(payload)}"

    def verify(self, token: str, method: str) -> Ticket:
        """The ticket's claims, if it is intact, for this method, and not expired.

        Raises:
            PermissionDenied: TICKET_INVALID, TICKET_EXPIRED, or TICKET_USED (an
                upload's ticket spent already).
        """
        payload, _, signature = token.partition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            raise _invalid("the ticket is not one this server issued")
        try:
            ticket = Ticket(**json.loads(_decode(payload)))
        except (ValueError, TypeError, binascii.Error):
            raise _invalid("the ticket is malformed") from None
        if ticket.method != method:
            raise _invalid(f"the ticket is for {ticket.method}, not {method}")
        if ticket.expires < time.time():
            raise PermissionDenied(
                "TICKET_EXPIRED", "the ticket expired; ask the service for a new one"
            )
        if method == "PUT" and self._spent(signature):
            raise _used()
        return ticket

    def spend(self, token: str, ticket: Ticket) -> None:
        """Marks an upload's ticket (verified) used, once the endpoint takes its request
        in: not before, so that a request refused first (411, 503) leaves the ticket
        to a request sent right.

        Raises:
            PermissionDenied: TICKET_USED, another request spent it since it verified.
        """
        signature = token.partition(".")[2]
        now = time.time()
        with self._lock:
            # Expired tickets are refused as such from now on: only those are forgotten,
            # each once, so a PUT costs a few heap steps, not a scan of every ticket.
            while self._expiries and self._expiries[0][0] < now:
                self._used.discard(heapq.heappop(self._expiries)[1])
            if signature in self._used:
                raise _used()
            self._used.add(signature)
            heapq.heappush(self._expiries, (ticket.expires, signature))

    def _spent(self, signature: str) -> bool:
        with self._lock:
            return signature in self._used

    def _sign(self, payload: str) -> str:
        return _encode(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())


class Admissions:
    """The gate's admissions of the calls that issued PUT tickets, to ask again.

    One per key and project, the latest (a caller asking for many tickets holds one,
    whatever their number: each holds the key presented and the call it came with),
    kept a minute past the expiry of the last ticket issued with it, so a ticket that
    verified still finds it. An upload takes its own when it begins (`pin`) and holds
    it for as long as it runs, which may be hours. Used on the event loop only."""

    def __init__(self, authenticated: bool) -> None:
        self._authenticated = authenticated
        self._kept: dict[tuple[str, str], tuple[float, Admit]] = {}
        self._pinned: weakref.WeakKeyDictionary[Ticket, Admit] = weakref.WeakKeyDictionary()
        self._next_sweep = 0.0

    def keep(self, key_prefix: str, project: str, admit: Admit) -> None:
        """Keeps admit for the tickets of key_prefix in project issued from now on."""
        now = time.time()
        if now >= self._next_sweep:  # a scan a minute, of the callers of two minutes
            self._kept = {k: v for k, v in self._kept.items() if v[0] >= now}
            self._next_sweep = now + TICKET_SECONDS
        self._kept[key_prefix, project] = (now + 2 * TICKET_SECONDS, admit)

    def pin(self, ticket: Ticket) -> Admit | None:
        """The admission to ask again for the upload of ticket (verified just now), kept
        with the ticket from now on; None when authentication is off.

        Raises:
            PermissionDenied: TICKET_INVALID, a ticket that names no caller on a server
                with authentication on.
        """
        if not self._authenticated:
            return None
        # With authentication on, every PUT ticket this process issues names its key. One
        # naming none is of an older release, before tickets did: refused, not let through
        # unchecked, since nothing says whose it is (and the client streams instead, as
        # for any invalid ticket). None reaches here today: the key signing tickets is
        # each process's own, so an older process's fail their signature first.
        kept = self._kept.get((ticket.key_prefix, ticket.project)) if ticket.key_prefix else None
        if kept is None:
            raise _invalid("the ticket names no caller this server can check again")
        self._pinned[ticket] = kept[1]
        return kept[1]

    def pinned(self, ticket: Ticket) -> Admit | None:
        """What `pin` gave for ticket."""
        admit = self._pinned.get(ticket)
        if admit is None and self._authenticated:
            raise _invalid("the ticket's upload was not admitted when it began")
        return admit


def _used() -> PermissionDenied:
    return PermissionDenied("TICKET_USED", "the upload's ticket was used already")


def _invalid(message: str) -> PermissionDenied:
    return PermissionDenied("TICKET_INVALID", message)


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
