"""The points an ActiveRun holds until they are stored, in batches whose request ids are
fixed once made: a batch is sent, retried and journaled under one id, so however often
it goes (sent again after a lost answer, replayed from a journal written meanwhile) the
server stores it once."""

from __future__ import annotations

import uuid
from collections import deque

from ..types._tracking import Metric

Batch = tuple[str, list[Metric]]  # a request id, and the points sent under it


class Batches:
    """Points waiting to be stored: batches already made, then points in none yet. A
    batch is made as late as possible, so that it fills up while the one before it is
    sent, and never changes once made."""

    def __init__(self, batch_size: int) -> None:
        self._size = batch_size
        self._made: deque[Batch] = deque()
        self._loose: list[Metric] = []
        self.points = 0  # every point held, in a batch or not

    def add(self, metric: Metric) -> bool:
        """Holds one more point; whether a batch's worth waits in no batch yet."""
        self._loose.append(metric)
        self.points += 1
        return len(self._loose) >= self._size

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
        metrics, self._loose = self._loose[: self._size], self._loose[self._size :]
        self._made.append((uuid.uuid4().hex, metrics))
