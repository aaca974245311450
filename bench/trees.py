"""`make bench-trees`: a tree of many small files up and down through the service.

`upload_tree` and a directory's `download` move a tree's small files several at once
(`_many_files.UPLOADS_AT_ONCE`, `DOWNLOADS_AT_ONCE`); each row is measured beside the
same tree moved one file at a time, as they did before, in the same run and on the same
server. On the filesystem backend and on S3 (moto on loopback).

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
from cairn._clients import _many_files

from .artifacts import moto_store
from .harness import Server, Stopwatch, postgres, report, serve

FILES = 2000  # `python -m bench.trees [files]` sets another before main runs
FILE_BYTES = 4096


def _make_tree(root: Path) -> None:
    for number in range(FILES):
        file = root / f"part-{number % 20:02}" / f"{number:06}.bin"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(os.urandom(FILE_BYTES))


# The client's widths, up and down (`python -m bench.trees [files] [at once]` sets both).
WIDTHS = (_many_files.UPLOADS_AT_ONCE, _many_files.DOWNLOADS_AT_ONCE)


async def _rates(
    server: Server, tree: Path, work: Path, widths: tuple[int, int], attempt: str
) -> tuple[float, float]:
    """Files per second up and down, widths files at a time, to places of their own
    (the backends share one database)."""
    _many_files.UPLOADS_AT_ONCE, _many_files.DOWNLOADS_AT_ONCE = widths
    place = f"{attempt}-{widths[0]}-{widths[1]}"
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", server.port, timeout=None
    ) as client:
        with Stopwatch() as up:
            await client.upload_tree(f"bench/{place}", tree)
        with Stopwatch() as down:
            await client.download(f"bench/{place}/", work / f"down-{place}")
    return FILES / up.seconds, FILES / down.seconds


async def _both_ways(
    server: Server, backend: str, tree: Path, work: Path
) -> dict[tuple[int, int], tuple[float, float]]:
    """Rates up and down one file at a time and as the client moves them, each the better
    of two tries, the first try of each way before the other's, then after: neither gains
    from what the other warmed (the database's caches, the page cache)."""
    alone = (1, 1)
    tries: dict[tuple[int, int], list[tuple[float, float]]] = {alone: [], WIDTHS: []}
    for attempt, order in enumerate(((alone, WIDTHS), (WIDTHS, alone))):
        for widths in order:
            place = f"{backend}-{attempt}"
            tries[widths].append(await _rates(server, tree, work, widths, place))
    _many_files.UPLOADS_AT_ONCE, _many_files.DOWNLOADS_AT_ONCE = WIDTHS
    return {
        widths: (max(up for up, _ in rates), max(down for _, down in rates))
        for widths, rates in tries.items()
    }


async def _rows(server: Server, backend: str, tree: Path, work: Path) -> list[tuple[str, str, str]]:
    rates = await _both_ways(server, backend.split()[0], tree, work)
    together, alone = rates[WIDTHS], rates[(1, 1)]
    return [
        (
            f"{backend}: {direction}, {WIDTHS[index]} files at once",
            f"{together[index]:,.0f} files/s",
            f"{together[index] / alone[index]:.2f}x one at a time ({alone[index]:,.0f} files/s)",
        )
        for index, direction in enumerate(("upload_tree", "download"))
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
        WIDTHS = (int(sys.argv[2]), int(sys.argv[2]))
    asyncio.run(main())
