"""`make bench-trees`: a tree of many small files up and down through the service.

`upload_tree` and a directory's `download` move a tree's small files several at once
(`_many_files.FILES_AT_ONCE`); each row is measured beside the same tree moved one file
at a time, as they did before, in the same run and on the same server. On the
filesystem backend and on S3 (moto on loopback).

`python -m bench.trees [files]` moves another number of files (2,000 by default).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

from minio import Minio

import cairn
from cairn._clients import _many_files

from .artifacts import _moto
from .harness import Server, Stopwatch, postgres, report, serve

FILES = 2000  # `python -m bench.trees [files]` sets another before main runs
FILE_BYTES = 4096


def _make_tree(root: Path) -> None:
    for number in range(FILES):
        file = root / f"part-{number % 20:02}" / f"{number:06}.bin"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(os.urandom(FILE_BYTES))


async def _rates(server: Server, tree: Path, work: Path, at_once: int) -> tuple[float, float]:
    """Files per second up and down, at_once files at a time."""
    _many_files.FILES_AT_ONCE = at_once
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", server.port, timeout=None
    ) as client:
        with Stopwatch() as up:
            await client.upload_tree(f"bench/{at_once}", tree, overwrite=True)
        with Stopwatch() as down:
            await client.download(f"bench/{at_once}/", work / f"down-{at_once}")
    return FILES / up.seconds, FILES / down.seconds


async def _rows(server: Server, backend: str, tree: Path, work: Path) -> list[tuple[str, str, str]]:
    at_once = _many_files.FILES_AT_ONCE
    alone = await _rates(server, tree, work, 1)
    together = await _rates(server, tree, work, at_once)
    _many_files.FILES_AT_ONCE = at_once
    return [
        (
            f"{backend}: {direction}, {at_once} files at once",
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
            moto, endpoint = _moto()
            try:
                Minio(
                    endpoint,
                    access_key="bench",
                    secret_key="bench",
                    secure=False,
                    region="us-east-1",
                ).make_bucket("cairn")
                flags = [
                    *("--artifact-backend", "s3", "--s3-endpoint", endpoint),
                    *("--s3-bucket", "cairn", "--s3-access-key", "bench"),
                    *("--s3-secret-key", "bench", "--no-s3-secure", "--s3-region", "us-east-1"),
                ]
                with serve(database_url, "artifacts", *flags) as server:
                    rows += await _rows(server, "S3 (moto)", tree, work)
            finally:
                moto.terminate()
                moto.wait()
    print(
        f"cairn trees benchmark: {FILES:,} files of {FILE_BYTES:,} bytes, "
        "server, client and backend on this machine"
    )
    report(rows)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        FILES = int(sys.argv[1])
    asyncio.run(main())
