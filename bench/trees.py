"""`make bench-trees`: a tree of many small files up and down through the service.

`upload_tree` sends a tree's small files in batches, one `UploadFiles` call each
(`_file_batches`), several at once (`_many_files.UPLOADS_AT_ONCE`); a directory's
`download` brings them down in batches too, one `DownloadFiles` call each, several at
once (`DOWNLOADS_AT_ONCE`). Each row is measured beside the same tree moved as the client
moved it before, in the same run and on the same server: file by file, several at once,
and one file at a time. On the filesystem backend and on S3 (moto on loopback).

`python -m bench.trees [files] [at once]` moves another number of files (2,000 by
default), another number at once.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

import cairn
from cairn._clients import _file_batches, _many_files
from cairn._clients._file_batches import BATCH_FILES

from .artifacts import moto_store
from .harness import Server, Stopwatch, postgres, report, serve

FILES = 2000  # `python -m bench.trees [files]` sets another before main runs
FILE_BYTES = 4096


def _make_tree(root: Path) -> None:
    for number in range(FILES):
        file = root / f"part-{number % 20:02}" / f"{number:06}.bin"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(os.urandom(FILE_BYTES))


# How a tree moves: uploads at once, downloads at once, and files a batch.
Way = tuple[int, int, int]
# As the client moves it (`python -m bench.trees [files] [at once]` sets both widths).
BATCHED: Way = (_many_files.UPLOADS_AT_ONCE, _many_files.DOWNLOADS_AT_ONCE, BATCH_FILES)
# File by file, several at once (a batch of one file is an upload or download of its own).
FILE_BY_FILE: Way = (BATCHED[0], BATCHED[1], 1)
ONE_AT_A_TIME: Way = (1, 1, 1)


async def _rates(
    server: Server, tree: Path, work: Path, way: Way, attempt: str
) -> tuple[float, float]:
    """Files per second up and down, moved that way, to places of their own (the backends
    share one database)."""
    _many_files.UPLOADS_AT_ONCE, _many_files.DOWNLOADS_AT_ONCE, _file_batches.BATCH_FILES = way
    place = f"{attempt}-{'-'.join(map(str, way))}"
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", server.port, timeout=None
    ) as client:
        with Stopwatch() as up:
            await client.upload_tree(f"bench/{place}", tree)
        with Stopwatch() as down:
            await client.download(f"bench/{place}/", work / f"down-{place}")
    return FILES / up.seconds, FILES / down.seconds


async def _every_way(
    server: Server, backend: str, tree: Path, work: Path
) -> dict[Way, tuple[float, float]]:
    """Rates up and down each way, each the better of two tries, the first try of each
    way in one order, the second in the reverse: none gains from what another warmed
    (the database's caches, the page cache)."""
    ways = [BATCHED, FILE_BY_FILE, ONE_AT_A_TIME]
    tries: dict[Way, list[tuple[float, float]]] = {way: [] for way in ways}
    for attempt, order in enumerate((ways, ways[::-1])):
        for way in order:
            tries[way].append(await _rates(server, tree, work, way, f"{backend}-{attempt}"))
    _many_files.UPLOADS_AT_ONCE, _many_files.DOWNLOADS_AT_ONCE, _file_batches.BATCH_FILES = BATCHED
    return {
        way: (max(up for up, _ in rates), max(down for _, down in rates))
        for way, rates in tries.items()
    }


async def _rows(server: Server, backend: str, tree: Path, work: Path) -> list[tuple[str, str, str]]:
    rates = await _every_way(server, backend.split()[0], tree, work)
    batched, file_by_file, alone = rates[BATCHED], rates[FILE_BY_FILE], rates[ONE_AT_A_TIME]
    return [
        (
            f"{backend}: upload_tree, batches {BATCHED[0]} at once",
            f"{batched[0]:,.0f} files/s",
            f"{batched[0] / file_by_file[0]:.2f}x file by file {BATCHED[0]} at once "
            f"({file_by_file[0]:,.0f} files/s), {batched[0] / alone[0]:.2f}x one at a time "
            f"({alone[0]:,.0f} files/s)",
        ),
        (
            f"{backend}: download, batches {BATCHED[1]} at once",
            f"{batched[1]:,.0f} files/s",
            f"{batched[1] / file_by_file[1]:.2f}x file by file {BATCHED[1]} at once "
            f"({file_by_file[1]:,.0f} files/s), {batched[1] / alone[1]:.2f}x one at a time "
            f"({alone[1]:,.0f} files/s)",
        ),
    ]


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="cairn-bench-") as scratch:
        work = Path(scratch)
        tree = work / "tree"
        _make_tree(tree)
        rows = []
        with postgres() as database_url:
            with serve(database_url, "artifacts", "--artifact-root", str(work / "store")) as server:
                rows += await _rows(server, "filesystem", tree, work)
            with moto_store() as (_, flags), serve(database_url, "artifacts", *flags) as server:
                rows += await _rows(server, "S3 (moto)", tree, work)
    print(
        f"cairn trees benchmark: {FILES:,} files of {FILE_BYTES:,} bytes, "
        "server, client and backend on this machine"
    )
    report(rows)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        FILES = int(sys.argv[1])
    if len(sys.argv) > 2:  # another width to try against one at a time
        BATCHED = (int(sys.argv[2]), int(sys.argv[2]), BATCH_FILES)
        FILE_BY_FILE = (*BATCHED[:2], 1)
    asyncio.run(main())
