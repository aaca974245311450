"""The points an ActiveRun holds until they are stored, in batches whose request ids are
fixed once made: a batch is sent, retried and journaled under one id, so however often
it goes (sent again after a lost answer, replayed from a journal written meanwhile) the
server stores it once."""

from __future__ import annotations

import uuid
from collections import deque

from ..types._tracking import Metric

Batch = tuple[str, list[Metric]]  # a request id, and the points sent under it

# What a batch's points may take in its message: well under 1 MiB, the least message a
# server may be given (CAIRN_MAX_MESSAGE_BYTES), beside the rest of the request. A batch
# no server could take would be retried, then journaled, then replayed, for ever.
MAX_BATCH_BYTES = 768 * 1024
# The most one point takes in the metric columns: a double, a step and a time as
# varints of 64 bits, and the index of its key.
POINT_BYTES = 8 + 10 + 10 + 5
KEY_OVERHEAD_BYTES = 5  # a key's tag and length


def _key_bytes(key: str) -> int:
    return len(key.encode()) + KEY_OVERHEAD_BYTES


class Batches:
    """Points waiting to be stored: batches already made, then points in none yet. A
    batch is made as late as possible, so that it fills up while the one before it is
    sent, and never changes once made."""

    def __init__(self, batch_size: int) -> None:
        self._size = batch_size
        self._made: deque[Batch] = deque()
        self._loose: list[Metric] = []
        # The keys of the loose points (and maybe of points made into batches since:
        # emptied only with the loose points), and what they take in a message: with
        # POINT_BYTES a point, a bound of what the loose points take.
        self._keys: set[str] = set()
        self._key_bytes = 0
        self.points = 0  # every point held, in a batch or not

    def add(self, metric: Metric) -> bool:
        """Holds one more point; whether a batch's worth (in points or in bytes) waits
        in no batch yet."""
        self._loose.append(metric)
        self.points += 1
        if metric.key not in self._keys:
            self._keys.add(metric.key)
            self._key_bytes += _key_bytes(metric.key)
        loose = len(self._loose)
        return loose >= self._size or loose * POINT_BYTES + self._key_bytes >= MAX_BATCH_BYTES

    def next(self) -> Batch | None:
        """The batch to send: the oldest made, or one made now of the oldest points."""
        if not self._made and self._loose:
            self._make()
        return self._made[0] if self._made else None

    def stored(self) -> None:
        """The batch `next` gave is stored: forgets it."""
        _, metrics = self._made.popleft()
        self.points -= len(metrics)

    def all(self) -> list[Batch]:
        """Every point held, in batches: those made, then the rest made into batches
        now (a journal of them must replay with the ids they will be sent with)."""
        while self._loose:
            self._make()
        return list(self._made)

    def _make(self) -> None:
        """A batch of the oldest loose points: batch_size of them, or fewer when more
        would take past MAX_BATCH_BYTES (always one at least)."""
        taken = min(self._size, len(self._loose))
        if taken * POINT_BYTES + self._key_bytes > MAX_BATCH_BYTES:  # else all fit
            taken = _fitting(self._loose[:taken])
        metrics, self._loose = self._loose[:taken], self._loose[taken:]
        self._made.append((uuid.uuid4().hex, metrics))
        if not self._loose:
            self._keys.clear()
            self._key_bytes = 0


def _fitting(metrics: list[Metric]) -> int:
    """How many of the first metrics fit MAX_BATCH_BYTES together (one at least)."""
    taken, size, keys = 0, 0, set[str]()
    for metric in metrics:
        more = POINT_BYTES + (0 if metric.key in keys else _key_bytes(metric.key))
        if taken and size + more > MAX_BATCH_BYTES:
            break
        taken, size = taken + 1, size + more
        keys.add(metric.key)
    return taken
