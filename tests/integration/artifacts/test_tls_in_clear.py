"""A client whose channel has TLS moves no bytes in clear: behind a TLS-terminating
proxy the server's byte endpoint is plain, and moto's S3 is http://, so its direct
transfers stream through the channel instead, and it stops asking for tickets it cannot
use."""

import asyncio
import collections
import contextlib
import os
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import cairn
from cairn._clients import _direct, _direct_transfers, _presigned
from tests.conftest import new_project
from tests.integration.test_tls import pki  # noqa: F401 (a fixture)

DATA = os.urandom(2 * 1024 * 1024 + 7)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while chunk := await source.read(65536):
            sink.write(chunk)
            await sink.drain()
    sink.close()


@contextlib.asynccontextmanager
async def tls_terminated(target_port: int, certificates: dict[str, Path]) -> AsyncIterator[int]:
    """The port of a proxy that takes TLS (HTTP/2 by ALPN, as gRPC needs) and passes
    the plain bytes on to target_port, as an ingress before a plain server does."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates["server_cert"], certificates["server_key"])
    context.set_alpn_protocols(["h2"])
    pipes: set[asyncio.Task[Any]] = set()

    async def serve(client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        server_in, server_out = await asyncio.open_connection("127.0.0.1", target_port)
        for pipe in (_pipe(client_in, server_out), _pipe(server_in, client_out)):
            pipes.add(task := asyncio.ensure_future(pipe))
            task.add_done_callback(pipes.discard)

    proxy = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    try:
        yield proxy.sockets[0].getsockname()[1]
    finally:
        proxy.close()
        for task in list(pipes):
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)


@pytest.fixture
def tried(monkeypatch: pytest.MonkeyPatch) -> collections.Counter[str]:
    """Transfers that began outside the channel: over the byte endpoint or through
    presigned URLs."""
    counts: collections.Counter[str] = collections.Counter()

    def counting(module: Any, name: str) -> Callable[..., Any]:
        original = getattr(module, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return original(*args, **kwargs)

        return counted

    for module, name in ((_direct, "upload"), (_direct, "download")):
        monkeypatch.setattr(module, name, counting(module, name))
    for module, name in ((_presigned, "upload_source"), (_presigned, "download")):
        monkeypatch.setattr(module, name, counting(module, name))
    return counts


@pytest.fixture
def tickets(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ticket calls made (each one a round trip, and for an upload a ticket the
    server keeps until it expires)."""
    asked: list[str] = []
    original = _direct_transfers.DirectTransfers._ticket

    async def counted(self: Any, method: Any, request: Any, *args: Any) -> Any:
        asked.append(type(request).__name__)
        return await original(self, method, request, *args)

    monkeypatch.setattr(_direct_transfers.DirectTransfers, "_ticket", counted)
    return asked


@pytest.mark.parametrize("backend", ["filesystem", "s3"])
async def test_a_tls_client_streams_rather_than_move_bytes_in_clear(
    backend: str,
    server_port: int,
    s3_server_port: int,
    pki: dict[str, Path],  # noqa: F811 (the fixture imported above)
    tried: collections.Counter[str],
    tickets: list[str],
    unique: str,
    tmp_path: Path,
):
    port = server_port if backend == "filesystem" else s3_server_port
    project = await new_project(port, f"c-{unique}")
    async with (
        tls_terminated(port, pki) as proxy_port,
        cairn.ArtifactClient.secure_connection(
            "localhost", proxy_port, user_token="t", custom_ca=str(pki["ca"]), project=project
        ) as client,
    ):
        client.direct_threshold = 1024 * 1024
        source = tmp_path / "data.bin"
        source.write_bytes(DATA)
        for name in ("data.bin", "again.bin"):
            await client.upload(f"clear/{name}", source)
            fetched = await client.download(f"clear/{name}", tmp_path / name)
            assert fetched.read_bytes() == DATA
    assert tried == {}
    # The first ticket showed the way is in clear; no transfer after it asks again.
    assert tickets == ["CreateUploadTicketRequest"]
