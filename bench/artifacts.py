"""`make bench-artifacts`: a 1 GiB file through the service and straight to the backend.

For each backend, in one run: upload and download through the artifact service, and
the same transfer done directly (a copy on disk; the minio SDK against the S3 server),
with the server's resident memory sampled while the service moves the file. On each
backend, the service moves it both ways: by direct transfer (the client's default for
large objects: the byte endpoint on the filesystem, presigned URLs of the store on S3)
and streamed through gRPC; on S3 also with one connection to the store (moto reads a
whole object to serve any range of it, which parallel ranges pay once each).

`python -m bench.artifacts [MiB]` moves another size (a multiple of 64 MiB).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
from minio import Minio

import cairn
from cairn._clients import _direct, _presigned
from cairn.artifacts.v1 import artifacts_service_pb2, artifacts_service_pb2_grpc

from .harness import BIN, RssSampler, Server, Stopwatch, _free_port, postgres, report, serve

MIB = 1024**2
SIZE = 1024**3  # `python -m bench.artifacts [MiB]` sets another before main runs


def _make_file(path: Path) -> None:
    block = os.urandom(64 * MIB)
    with path.open("wb") as out:
        for _ in range(SIZE // len(block)):
            out.write(block)


def _moto() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    process = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process, f"127.0.0.1:{port}"
        time.sleep(0.05)
    raise RuntimeError("moto did not start")


@contextlib.contextmanager
def moto_store(*buckets: str) -> Iterator[tuple[str, list[str]]]:
    """moto on loopback holding the bucket "cairn" and buckets: its address, and the
    flags of `cairn serve` storing artifacts in "cairn" there."""
    moto, endpoint = _moto()
    try:
        s3 = Minio(
            endpoint, access_key="bench", secret_key="bench", secure=False, region="us-east-1"
        )
        for bucket in (*buckets, "cairn"):
            s3.make_bucket(bucket)
        yield (
            endpoint,
            [
                *("--artifact-backend", "s3", "--s3-endpoint", endpoint),
                *("--s3-bucket", "cairn", "--s3-access-key", "bench"),
                *("--s3-secret-key", "bench", "--no-s3-secure", "--s3-region", "us-east-1"),
            ],
        )
    finally:
        moto.terminate()
        moto.wait()


# The functions that move a direct transfer's bytes, and what each one counts as.
_DIRECT_MOVERS = [
    (_direct, "upload", "upload"),
    (_direct, "download", "download"),
    (_presigned, "upload_source", "upload"),
    (_presigned, "download", "download"),
]


@contextlib.contextmanager
def _direct_transfers() -> Iterator[list[str]]:
    """The transfers that went around gRPC meanwhile ("upload", "download"), over the
    byte endpoint or the store's presigned URLs, so that a row named direct transfer is
    one, not a silent fallback to the stream."""
    moved: list[str] = []
    originals = [(module, name, getattr(module, name)) for module, name, _ in _DIRECT_MOVERS]

    def counting(original: Any, counted_as: str) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            moved.append(counted_as)
            return result

        return counted

    for (module, name, original), (_, _, counted_as) in zip(originals, _DIRECT_MOVERS, strict=True):
        setattr(module, name, counting(original, counted_as))
    try:
        yield moved
    finally:
        for module, name, original in originals:
            setattr(module, name, original)


async def _through_service(
    server: Server, source: Path, work: Path, direct: bool = True, connections: int = 0
) -> tuple[float, float, float, float]:
    """Upload and download rates and RSS growths; direct: as the client does by default,
    and both must have taken it (False: streamed); connections: the client's
    direct_connections, when not its default."""
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", server.port, timeout=None
    ) as client:
        if not direct:
            client.direct_threshold = None
        if connections:
            client.direct_connections = connections
        with _direct_transfers() as moved:
            async with RssSampler(server) as up_rss:
                with Stopwatch() as up:
                    await client.upload("bench/big.bin", source, overwrite=True)
            async with RssSampler(server) as down_rss:
                with Stopwatch() as down:
                    await client.download("bench/big.bin", work / "through-service.bin")
    if moved != (["upload", "download"] if direct else []):
        raise RuntimeError(f"expected direct={direct}, but moved directly: {moved}")
    return (
        SIZE / MIB / up.seconds,
        SIZE / MIB / down.seconds,
        up_rss.growth_mib,
        down_rss.growth_mib,
    )


def _direct_disk(source: Path, work: Path) -> tuple[float, float]:
    # The service syncs an upload to disk before it reports it stored; so does this.
    with Stopwatch() as up:
        shutil.copyfile(source, work / "direct-up.bin")
        descriptor = os.open(work / "direct-up.bin", os.O_RDONLY)
        os.fsync(descriptor)
        os.close(descriptor)
    with Stopwatch() as down:
        shutil.copyfile(work / "direct-up.bin", work / "direct-down.bin")
    return SIZE / MIB / up.seconds, SIZE / MIB / down.seconds


def _direct_s3(endpoint: str, source: Path, work: Path) -> tuple[float, float]:
    client = Minio(
        endpoint, access_key="bench", secret_key="bench", secure=False, region="us-east-1"
    )
    with Stopwatch() as up:
        client.fput_object("direct", "big.bin", str(source), part_size=16 * MIB)
    with Stopwatch() as down:
        client.fget_object("direct", "big.bin", str(work / "direct-s3.bin"))
    return SIZE / MIB / up.seconds, SIZE / MIB / down.seconds


def _grpc_sink() -> tuple[subprocess.Popen[str], int]:
    sink = subprocess.Popen(
        [str(BIN / "python"), "-m", "bench.grpc_sink"], stdout=subprocess.PIPE, text=True
    )
    assert sink.stdout is not None
    return sink, int(sink.stdout.readline())


async def _grpc_ceiling() -> tuple[float, float]:
    """The file's size up and down through a bare grpc.aio server in its own process, in the
    client's 1 MiB messages: the most any gRPC service in Python moves here."""
    sink, port = _grpc_sink()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = artifacts_service_pb2_grpc.ArtifactServiceStub(channel)
            chunk = os.urandom(MIB)

            async def chunks() -> AsyncIterator[artifacts_service_pb2.UploadRequest]:
                for _ in range(SIZE // MIB):
                    yield artifacts_service_pb2.UploadRequest(chunk=chunk)

            with Stopwatch() as up:
                await stub.Upload(chunks())
            with Stopwatch() as down:
                async for _ in stub.Download(artifacts_service_pb2.DownloadRequest(length=SIZE)):
                    pass
    finally:
        sink.terminate()
        sink.wait()
    return SIZE / MIB / up.seconds, SIZE / MIB / down.seconds


def _row(
    name: str,
    service: tuple[float, float, float, float],
    direct: tuple[float, float],
    ceiling: tuple[float, float] | None = None,
) -> list[tuple[str, str, str]]:
    up, down, up_rss, down_rss = service
    ceiling_note = down_note = ""
    if ceiling is not None:
        ceiling_note = f", {up / ceiling[0]:.0%} of gRPC"
        down_note = f", {down / ceiling[1]:.0%} of gRPC"
    return [
        (f"{name}: upload direct", f"{direct[0]:,.0f} MiB/s", "baseline"),
        (
            f"{name}: upload via service",
            f"{up:,.0f} MiB/s",
            f"{up / direct[0]:.0%} of direct{ceiling_note}; RSS +{up_rss:.0f} MiB",
        ),
        (f"{name}: download direct", f"{direct[1]:,.0f} MiB/s", "baseline"),
        (
            f"{name}: download via service",
            f"{down:,.0f} MiB/s",
            f"{down / direct[1]:.0%} of direct{down_note}; RSS +{down_rss:.0f} MiB",
        ),
    ]


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="cairn-bench-") as scratch:
        work = Path(scratch)
        source = work / "source.bin"
        _make_file(source)
        rows = []
        with postgres() as database_url:
            with serve(database_url, "artifacts", "--artifact-root", str(work / "store")) as server:
                streamed = await _through_service(server, source, work, direct=False)
                service = await _through_service(server, source, work)
            ceiling = await _grpc_ceiling()
            rows += [
                ("gRPC alone: upload", f"{ceiling[0]:,.0f} MiB/s", "ceiling: no hash, no disk"),
                ("gRPC alone: download", f"{ceiling[1]:,.0f} MiB/s", "ceiling: no hash, no disk"),
            ]
            on_disk = _direct_disk(source, work)
            rows += _row("filesystem, streamed", streamed, on_disk, ceiling)
            rows += _row("filesystem, direct transfer", service, on_disk, ceiling)
            with moto_store("direct") as (endpoint, flags):
                with serve(database_url, "artifacts", *flags) as server:
                    streamed = await _through_service(server, source, work, direct=False)
                    service = await _through_service(server, source, work)
                    single = await _through_service(server, source, work, connections=1)
                on_s3 = _direct_s3(endpoint, source, work)
                rows += _row("S3 (moto), streamed", streamed, on_s3, ceiling)
                rows += _row("S3 (moto), direct transfer", service, on_s3, ceiling)
                rows += _row("S3 (moto), direct, 1 connection", single, on_s3, ceiling)
    print(
        f"cairn artifacts benchmark: {SIZE // MIB} MiB, server, client and backend on this machine"
    )
    report(rows)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        SIZE = int(sys.argv[1]) * MIB
    asyncio.run(main())
