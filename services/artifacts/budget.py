"""The memory streamed uploads to S3 hold together, reserved before each is accepted.

A streamed upload to S3 holds its part (up to S3_MAX_STREAMED_PART, filled as the bytes
arrive) and, whatever the part, about 70 MiB more: the chunks in its queue, what gRPC
holds of the messages on their way (each received, parsed and taken out of its message),
and what the allocator keeps of them. Measured as the server's peak resident size per
upload, 6 to 20 uploads at once sending 4 MiB chunks: 96 MiB with 32 MiB parts, 79 MiB
with 8 MiB parts. So 64 writers at once could hold about 6 GiB, past the Kubernetes
base's limit (4 GiB). An upload reserves its cost here before it takes a writer, and
waits while the uploads at work hold the budget: not its header alone, but what of its
chunks gRPC's flow control lets its client send before the verdict (about 14 MiB on a
fast link), so at most slots.MAX_WAITING_UPLOADS wait, one more refused UPLOADS_BUSY.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

from ..common.errors import Unavailable

MIB = 1024 * 1024
# The memory of the artifact server's streamed uploads to S3: the base's 4 GiB limit
# less the other budgets (direct transfer, downloads, cut downloads: about 0.75 GiB)
# and the process itself (about 100 MiB).
UPLOAD_BYTES = 3 * 1024 * MIB
# What an upload holds besides its part (see above).
WRITER_OVERHEAD = 72 * MIB


def cost(part_size: int, announced: int = 0, message_bytes: int = 0) -> int:
    """The memory a streamed upload to S3 holds with parts of part_size. One that
    announced fewer bytes (0: none announced) holds no more than them, and two messages
    of message_bytes as gRPC takes them in: the first byte past what it announced is
    refused (streams.check_growth). So small files are not held to the budget of large
    ones, which let 39 uploads of a byte each in at once and kept the rest waiting."""
    most = part_size + WRITER_OVERHEAD
    return min(most, announced + 2 * message_bytes) if announced else most


class ByteBudget:
    """Bytes taken and given back by calls, granted in the order they were asked for:
    a large reservation is not passed over for ever by small ones."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._free = total
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def waiting(self) -> int:
        return sum(not granted.done() for _, granted in self._waiting)

    def free_for(self, size: int) -> bool:
        """Whether size bytes would be granted at once, nobody waiting before them."""
        return not self._waiting and min(size, self.total) <= self._free

    @contextlib.asynccontextmanager
    async def held(self, size: int, stopping: asyncio.Event) -> AsyncIterator[None]:
        """size bytes (the whole budget at most), held for the body.

        Raises:
            Unavailable: SHUTTING_DOWN, the server began to stop while the call waited.
        """
        size = min(size, self.total)
        await self._taken(size, stopping)
        try:
            yield
        finally:
            self._give_back(size)

    async def _taken(self, size: int, stopping: asyncio.Event) -> None:
        if not self._waiting and size <= self._free:  # no wait: the common case
            self._free -= size
            return
        granted = asyncio.get_running_loop().create_future()
        self._waiting.append((size, granted))
        stopped = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait((granted, stopped), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # the call was cancelled (its client left) as it waited
            self._leave(size, granted)
            raise
        finally:
            stopped.cancel()
        if granted.done():  # granted, even if the stop began at the same time
            return
        self._leave(size, granted)
        raise Unavailable(
            "SHUTTING_DOWN", "the server began to stop while the call waited its turn; call again"
        )

    def _leave(self, size: int, granted: asyncio.Future[None]) -> None:
        if granted.done():
            self._give_back(size)
        else:
            granted.cancel()
            self._grant()  # those behind it may fit now

    def _give_back(self, size: int) -> None:
        self._free += size
        self._grant()

    def _grant(self) -> None:
        while self._waiting:
            size, granted = self._waiting[0]
            if not granted.done() and size > self._free:
                return
            self._waiting.popleft()
            if not granted.done():
                self._free -= size
                granted.set_result(None)
