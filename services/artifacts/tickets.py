"""Direct-transfer tickets: what the gRPC service allows one request of the byte
endpoint (`direct.py`) to do.

A ticket is its claims, as JSON, and an HMAC-SHA256 of them under a key made when the
process starts: it can be neither altered nor forged, it works on the process that
issued it only, and it carries everything the transfer may do (one upload to one path
with the checks of the call that issued it, or the bytes of one stored key), so it
never grants more than its call did. It expires a minute after it was issued: a
transfer must begin by then (one that began runs to its end). An upload's ticket is
used once (TICKET_USED after): the process remembers the PUT tickets it accepted until
they expire (it alone can verify them, so its memory is the whole record). A download's
ticket may be used again within its minute, for the same bytes.
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
from dataclasses import dataclass

from ..common.errors import PermissionDenied
from ..common.idempotency import RequestId

TICKET_SECONDS = 60.0


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
        self._used: set[str] = set()  # the signatures of PUT tickets accepted
        self._expiries: list[tuple[float, str]] = []  # theirs, a heap: soonest first
        self._lock = threading.Lock()

    def issue(self, **claims: object) -> str:
        ticket = Ticket(expires=time.time() + TICKET_SECONDS, **claims)  # type: ignore[arg-type]
        payload = _encode(json.dumps(dataclasses.asdict(ticket)).encode())
        return f"{payload}.{self._sign(payload)}"

    def verify(self, token: str, method: str) -> Ticket:
        """The ticket's claims, if it is intact, for this method, and not expired.

        Raises:
            PermissionDenied: TICKET_INVALID, TICKET_EXPIRED, or TICKET_USED (an
                upload's ticket presented again).
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
        if method == "PUT":
            self._use_once(signature, ticket.expires)
        return ticket

    def _use_once(self, signature: str, expires: float) -> None:
        now = time.time()
        with self._lock:
            # Expired tickets are refused as such from now on: only those are forgotten,
            # each once, so a PUT costs a few heap steps, not a scan of every ticket.
            while self._expiries and self._expiries[0][0] < now:
                self._used.discard(heapq.heappop(self._expiries)[1])
            if signature in self._used:
                raise PermissionDenied("TICKET_USED", "the upload's ticket was used already")
            self._used.add(signature)
            heapq.heappush(self._expiries, (expires, signature))

    def _sign(self, payload: str) -> str:
        return _encode(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())


def _invalid(message: str) -> PermissionDenied:
    return PermissionDenied("TICKET_INVALID", message)


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
