"""Direct transfer on the filesystem backend: bytes over the byte endpoint, tickets
that cannot be altered or outlive their minute, nothing published that does not match
its checksum, and the streamed path when the endpoint cannot be reached."""

import asyncio
import collections
import contextlib
import hashlib
import http.client
import io
import json
import os
import socket
import ssl
import threading
import time
import types
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

import cairn
from cairn import _backoff, _headers
from cairn._clients import _direct
from cairn._direct_io import DirectWriter
from cairn.artifacts.v1 import artifacts_pb2 as pb
from cairn.artifacts.v1 import artifacts_service_pb2 as api
from cairn.artifacts.v1 import artifacts_service_pb2_grpc as rpc
from cairn.exceptions import AbortedError, DataLossError, InvalidArgumentError, NotFoundError
from cairn.types import ApiKeyExpirationTime, ProjectRole
from cairn_server import catalog
from cairn_server.artifacts import backends, tickets
from cairn_server.artifacts.filesystem import FilesystemBackend
from cairn_server.artifacts.http_requests import ChunkedReader
from cairn_server.artifacts.janitor import Janitor
from cairn_server.artifacts.store import ObjectStore
from cairn_server.artifacts.tickets import TicketSigner
from cairn_server.common.config import Config
from cairn_server.common.server import CairnServer
from tests.conftest import eventually, new_project, serving, with_overrides
from tests.integration.artifacts.conftest import count_calls
from tests.integration.auth.conftest import populated, serve
from tests.integration.test_tls import pki  # noqa: F401 (a fixture)

SMALL_THRESHOLD = 1024 * 1024
DATA = os.urandom(3 * SMALL_THRESHOLD + 5)  # several HTTP chunks, not a whole number


@pytest.fixture
async def direct(server_port: int, unique: str) -> AsyncIterator[cairn.ArtifactClient]:
    project = await new_project(server_port, f"d-{unique}")
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", server_port, project=project, timeout=None
    ) as client:
        client.direct_threshold = SMALL_THRESHOLD
        yield client


@pytest.fixture
def moved(monkeypatch: pytest.MonkeyPatch) -> collections.Counter[str]:
    """Transfers over the byte endpoint: "upload" and "download" count those that went
    through, "upload tried" and "download tried" every attempt."""
    counts: collections.Counter[str] = collections.Counter()

    def counting(name: str) -> Any:
        original = getattr(_direct, name)

        def counted(*args: Any) -> Any:
            counts[f"{name} tried"] += 1
            result = original(*args)
            counts[name] += 1
            return result

        return counted

    for name in ("upload", "download"):
        monkeypatch.setattr(_direct, name, counting(name))
    return counts


async def _request(
    ticket: api.DirectTicket, method: str, token: str, body: bytes | None = None
) -> tuple[int, bytes]:
    """One request to the byte endpoint, in a thread: the server's loop is this one."""
    return await asyncio.to_thread(_blocking_request, ticket, method, token, body)


def _blocking_request(
    ticket: api.DirectTicket, method: str, token: str, body: bytes | None
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(ticket.host or "127.0.0.1", ticket.port, timeout=10)
    connection.request(
        method, f"/v1/transfers/{token}", body=iter([body]) if body else None, encode_chunked=True
    )
    response = connection.getresponse()
    return response.status, response.read()


async def test_round_trip_over_the_byte_endpoint(
    direct: cairn.ArtifactClient, tmp_path: Path, moved: collections.Counter[str]
):
    source = tmp_path / "data.bin"
    source.write_bytes(DATA)
    info = await direct.upload("big/data.bin", source)
    assert info.sha256 == hashlib.sha256(DATA).hexdigest() and info.size == len(DATA)
    again = await direct.upload("big/data.bin", DATA, overwrite=True)  # bytes, too
    assert again.sha256 == info.sha256
    fetched = await direct.download("big/data.bin", tmp_path / "out.bin")
    assert fetched.read_bytes() == DATA
    assert (moved["upload"], moved["download"]) == (2, 1)


async def test_the_threshold_set_on_client_artifacts_holds_for_a_runs_artifacts(
    server_port: int, unique: str, tmp_path: Path, moved: collections.Counter[str]
):
    """The run methods make an ArtifactClient of their own: before, it kept the default
    threshold whatever `client.artifacts` was given, and this 3 MiB file was streamed."""
    source = tmp_path / "data.bin"
    source.write_bytes(DATA)
    project = await new_project(server_port, f"runs-{unique}")
    async with cairn.Client(f"http://127.0.0.1:{server_port}", project=project) as client:
        experiment_id = await client.tracking.create_experiment(f"direct-{unique}")
        run_id = (await client.tracking.create_run(experiment_id)).info.run_id
        client.artifacts.direct_threshold = SMALL_THRESHOLD
        await client.tracking.log_artifact(run_id, source)
        fetched = await client.tracking.download_artifacts(run_id, "data.bin", tmp_path / "out")
        assert Path(fetched).read_bytes() == DATA
        assert (moved["upload"], moved["download"]) == (1, 1)
        client.artifacts.direct_threshold = None
        await client.tracking.log_artifact(run_id, source, "again")
        assert moved["upload tried"] == 1


async def test_an_altered_or_misused_ticket_is_refused(direct: cairn.ArtifactClient):
    await direct.upload("t/one.bin", DATA)
    reply = await direct._stub.CreateDownloadTicket(
        api.CreateDownloadTicketRequest(project=direct.project, path="t/one.bin")
    )
    token = reply.ticket.ticket
    payload, _, signature = token.partition(".")
    forged = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1] + "." + signature
    for method, bad in (("GET", forged), ("PUT", token)):  # altered; a GET's for a PUT
        status, body = await _request(reply.ticket, method, bad)
        assert status == 403 and json.loads(body)["reason"] == "TICKET_INVALID"
    status, body = await _request(reply.ticket, "GET", token)
    assert status == 200 and body == DATA


def test_a_ticket_expires_after_its_minute():
    signer = TicketSigner()
    token = signer.issue(method="GET", project="p", path="a", key="k", size=1)
    assert signer.verify(token, "GET").path == "a"
    later = time.time() + 61
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(time, "time", lambda: later)
        with pytest.raises(Exception) as refused:
            signer.verify(token, "GET")
    assert getattr(refused.value, "reason", None) == "TICKET_EXPIRED"
    with pytest.raises(Exception) as other:  # another process's key
        TicketSigner().verify(token, "GET")
    assert getattr(other.value, "reason", None) == "TICKET_INVALID"


async def test_bytes_that_differ_from_the_checksum_publish_nothing(
    direct: cairn.ArtifactClient,
):
    header = api.UploadHeader(
        project=direct.project,
        path="t/corrupt.bin",
        expected_size=len(DATA),
        expected_sha256=hashlib.sha256(b"other content").hexdigest(),
    )
    reply = await direct._stub.CreateUploadTicket(api.CreateUploadTicketRequest(header=header))
    status, body = await _request(reply.ticket, "PUT", reply.ticket.ticket, DATA)
    error = json.loads(body)
    # Not 500: the server did no wrong (and a proxy may retry a 5xx).
    assert (status, error["code"], error["reason"]) == (422, "DATA_LOSS", "CHECKSUM_MISMATCH")
    with pytest.raises(NotFoundError):
        await direct.stat("t/corrupt.bin")


async def test_a_streamed_upload_longer_than_announced_is_refused_at_once(
    direct: cairn.ArtifactClient,
):
    header = api.UploadHeader(project=direct.project, path="t/long.bin", expected_size=10)

    async def requests() -> AsyncIterator[api.UploadRequest]:
        yield api.UploadRequest(header=header)
        yield api.UploadRequest(chunk=b"x" * 20)
        yield api.UploadRequest(finish=api.UploadFinish())

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await direct._stub.Upload(requests())
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "more than the 10 bytes" in (refused.value.details() or "")


@pytest.fixture
async def unreachable_port(config: Config, pool: asyncpg.Pool) -> AsyncIterator[int]:
    """A server that advertises its byte endpoint where nothing listens."""
    async with serving(config, pool, ["artifacts"], artifact_direct_host="127.0.0.2") as port:
        yield port


async def test_an_unreachable_endpoint_falls_back_to_streaming(
    unreachable_port: int,
    server_port: int,
    unique: str,
    tmp_path: Path,
    moved: collections.Counter[str],
):
    project = await new_project(server_port, f"u-{unique}")
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", unreachable_port, project=project, timeout=None
    ) as client:
        client.direct_threshold = SMALL_THRESHOLD
        info = await client.upload("f/data.bin", DATA)
        assert info.sha256 == hashlib.sha256(DATA).hexdigest()
        fetched = await client.download("f/data.bin", tmp_path / "out.bin")
        assert fetched.read_bytes() == DATA
    # Streamed both ways; the download did not try the endpoint the upload could not reach.
    assert moved == {"upload tried": 1}


async def test_a_ticket_the_endpoint_does_not_know_is_streamed_around(
    direct: cairn.ArtifactClient,
):
    """Behind a load balancer, a ticket may reach a replica that did not issue it."""
    header = api.UploadHeader(project=direct.project, path="t/lb.bin")
    reply = await direct._stub.CreateUploadTicket(api.CreateUploadTicketRequest(header=header))
    other = TicketSigner().issue(method="PUT", project=direct.project, path="t/lb.bin")
    endpoint = _direct.Endpoint("127.0.0.1", reply.ticket.port, other, None)
    with pytest.raises(_direct.Unreachable) as refused:
        await asyncio.to_thread(
            _direct.upload, endpoint, io.BytesIO(DATA), lambda done: None, _direct.Cut()
        )
    assert refused.value.lasting


async def test_a_stopping_server_is_streamed_to_without_turning_direct_transfer_off(
    config: Config, pool: asyncpg.Pool, unique: str, moved: collections.Counter[str]
):
    server = CairnServer(config, catalog.select(["artifacts"]), pool)
    port = await server.start()
    try:
        project = await new_project(port, f"st-{unique}")
        async with cairn.ArtifactClient.insecure_connection(
            "127.0.0.1", port, project=project, timeout=None
        ) as client:
            client.direct_threshold = SMALL_THRESHOLD
            server._resources.stopping.set()  # as stop() does before gRPC stops its calls
            info = await client.upload("s/data.bin", DATA)
            assert info.sha256 == hashlib.sha256(DATA).hexdigest()
            assert client._direct_offered and not moved  # told SHUTTING_DOWN, not off
    finally:
        await server.stop(grace=1.0)


async def test_a_stop_waits_for_a_direct_upload_under_way(
    config: Config,
    pool: asyncpg.Pool,
    unique: str,
    moved: collections.Counter[str],
    monkeypatch: pytest.MonkeyPatch,
):
    reading, release = threading.Event(), threading.Event()
    read = ChunkedReader.read

    def held(self: ChunkedReader, n: int = -1) -> bytes:
        """The endpoint's reads of a body past its first wait for release: the upload
        stays under way, mid-body, for as long as the test needs."""
        if self.size > 0:
            reading.set()
            release.wait(60)
        return read(self, n)

    monkeypatch.setattr(ChunkedReader, "read", held)
    server = CairnServer(
        with_overrides(config, shutdown_grace_seconds=60), catalog.select(["artifacts"]), pool
    )
    port = await server.start()
    try:
        project = await new_project(port, f"hold-{unique}")
        async with cairn.ArtifactClient.insecure_connection(
            "127.0.0.1", port, project=project, timeout=None
        ) as client:
            client.direct_threshold = SMALL_THRESHOLD
            upload = asyncio.create_task(client.upload("held.bin", DATA))
            assert await asyncio.to_thread(reading.wait, 30)  # under way, mid-body
            stopping = asyncio.create_task(server.stop())
            # No gRPC call is in flight: the stop used to end here at once, and close
            # the pool under the transfer, which then failed INTERNAL.
            done, _ = await asyncio.wait({stopping}, timeout=1.0)
            assert not done
            release.set()
            info = await upload
            await stopping
        assert info.sha256 == hashlib.sha256(DATA).hexdigest() and moved["upload"] == 1
    finally:
        release.set()
        await server.stop(grace=0)


async def test_a_direct_upload_the_janitor_expires_meanwhile_is_upload_expired(
    direct: cairn.ArtifactClient,
    config: Config,
    pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
):
    """Its file's folder pruned under the writer, the byte endpoint answered 500
    INTERNAL, where docs/artifacts.md promises ABORTED UPLOAD_EXPIRED."""
    reading, release = threading.Event(), threading.Event()
    read = ChunkedReader.read

    def held(self: ChunkedReader, n: int = -1) -> bytes:
        if self.size > 0:  # the file is made, and its first bytes written
            reading.set()
            release.wait(60)
        return read(self, n)

    monkeypatch.setattr(ChunkedReader, "read", held)
    try:
        upload = asyncio.create_task(direct.upload("long.bin", DATA))
        assert await asyncio.to_thread(reading.wait, 30)
        janitor = Janitor(ObjectStore(pool), backends.from_config(config), timedelta(0))
        assert (await janitor.sweep()).expired_uploads == 1
        release.set()
        with pytest.raises(AbortedError) as raised:
            await upload
    finally:
        release.set()
    assert raised.value.reason == "UPLOAD_EXPIRED"
    with pytest.raises(NotFoundError):
        await direct.stat("long.bin")


@pytest.mark.parametrize("cut", [1000, len(DATA) - 1])
async def test_a_stored_file_cut_short_is_missing_bytes_not_a_connection_ended_early(
    direct: cairn.ArtifactClient,
    config: Config,
    tmp_path: Path,
    moved: collections.Counter[str],
    cut: int,
):
    """The file cut short behind the service's back: the endpoint announced the recorded
    size and sent what the file held, and the client raised UNAVAILABLE with no reason
    ("the download's connection ended early") on every attempt. The streamed path says
    DATA_LOSS OBJECT_BYTES_MISSING; so does the endpoint now, before any byte."""
    await direct.upload("cut.bin", DATA)
    stored = config.artifact_dir / "_objects" / direct.project
    (file,) = (path for path in stored.rglob("*") if path.is_file())
    os.truncate(file, cut)
    with pytest.raises(DataLossError) as missing:
        await direct.download("cut.bin", tmp_path / "out.bin")
    assert missing.value.reason == "OBJECT_BYTES_MISSING"
    assert missing.value.metadata == {"path": "cut.bin"}
    assert (moved["download tried"], moved["download"]) == (1, 0)  # the endpoint's answer


@pytest.mark.parametrize("left", ["a folder", "a link to itself"])
async def test_a_stored_file_replaced_by_no_file_is_missing_bytes_not_internal(
    direct: cairn.ArtifactClient, config: Config, tmp_path: Path, left: str
):
    """As a restore by hand may leave it: both the endpoint and the streamed read
    answered INTERNAL, where a file deleted is DATA_LOSS."""
    await direct.upload("gone.bin", DATA)
    stored = config.artifact_dir / "_objects" / direct.project
    (file,) = (path for path in stored.rglob("*") if path.is_file())
    file.unlink()
    if left == "a folder":
        file.mkdir()
    else:
        file.symlink_to(file)
    try:
        with pytest.raises(DataLossError) as missing:
            await direct.download("gone.bin", tmp_path / "out.bin")
        assert missing.value.reason == "OBJECT_BYTES_MISSING"
        with pytest.raises(DataLossError) as streamed:
            await direct.read("gone.bin")
        assert streamed.value.reason == "OBJECT_BYTES_MISSING"
    finally:  # the store is the session's: a janitor's sweep must not meet them later
        if left == "a folder":
            file.rmdir()
        else:
            file.unlink()


@pytest.mark.parametrize("size", [0, 4095, 4096, 4 * 1024 * 1024 + 4097])
def test_files_written_around_the_page_cache_hold_what_was_written(tmp_path: Path, size: int):
    data = os.urandom(size)
    with DirectWriter.create(tmp_path / "f.bin") as out:
        for start in range(0, size, 1_000_003):  # pieces that straddle its buffer
            out.write(data[start : start + 1_000_003])
    assert (tmp_path / "f.bin").read_bytes() == data


@pytest.fixture
async def tls_port(
    config: Config,
    pool: asyncpg.Pool,
    pki: dict[str, Path],  # noqa: F811 (the fixture imported above)
) -> AsyncIterator[int]:
    tls = with_overrides(
        config, tls_cert_file=str(pki["server_cert"]), tls_key_file=str(pki["server_key"])
    )
    server = CairnServer(tls, catalog.select(["artifacts"]), pool)
    port = await server.start()
    yield port
    await server.stop(grace=0)


async def test_the_byte_endpoint_speaks_tls_when_the_grpc_port_does(
    moved: collections.Counter[str],
    tls_port: int,
    pki: dict[str, Path],  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
):
    async with cairn.ArtifactClient.secure_connection(
        "localhost", tls_port, user_token="t", custom_ca=str(pki["ca"]), timeout=None
    ) as client:
        client.direct_threshold = SMALL_THRESHOLD
        await client.upload("tls/data.bin", DATA, overwrite=True)
        fetched = await client.download("tls/data.bin", tmp_path / "out.bin")
        assert fetched.read_bytes() == DATA
        assert (moved["upload"], moved["download"]) == (1, 1)
        reply = await client._stub.CreateDownloadTicket(
            api.CreateDownloadTicketRequest(project=client.project, path="tls/data.bin")
        )
    assert reply.ticket.tls
    context = ssl.create_default_context(cafile=str(pki["ca"]))

    def fetch() -> bytes:
        https = http.client.HTTPSConnection("localhost", reply.ticket.port, context=context)
        https.request("GET", f"/v1/transfers/{reply.ticket.ticket}")
        return https.getresponse().read()

    assert await asyncio.to_thread(fetch) == DATA


async def test_a_ca_given_as_a_pipe_is_read_once_and_trusted_by_both_paths(
    moved: collections.Counter[str],
    tls_port: int,
    pki: dict[str, Path],  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
):
    """A pipe (`custom_ca=/dev/stdin`, process substitution) can be read once. The client
    read it twice, for gRPC and for the byte endpoint's TLS; the second read found it
    empty, so the endpoint trusted the system roots, refused the server's certificate,
    and every transfer went over gRPC."""
    fifo, made = tmp_path / "ca.fifo", threading.Event()
    os.mkfifo(fifo)

    def write_once() -> None:
        fifo.write_bytes(pki["ca"].read_bytes())
        if not made.wait(30):  # a second open waits for a writer: give it the end
            with contextlib.suppress(OSError):  # ENXIO: no second open waits
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    writer = threading.Thread(target=write_once)
    writer.start()
    try:
        client = cairn.ArtifactClient.secure_connection(
            "localhost", tls_port, user_token="t", custom_ca=str(fifo), timeout=None
        )
    finally:
        made.set()
        writer.join()
    async with client:
        client.direct_threshold = SMALL_THRESHOLD
        await client.upload("pipe/data.bin", DATA, overwrite=True)
        fetched = await client.download("pipe/data.bin", tmp_path / "out.bin")
    assert fetched.read_bytes() == DATA
    assert (moved["upload"], moved["download"]) == (1, 1)


@pytest.fixture
async def undirected_s3_port(s3_config: Config, pool: asyncpg.Pool) -> AsyncIterator[int]:
    """An S3 server with direct transfer turned off (CAIRN_ARTIFACT_DIRECT=false)."""
    async with serving(s3_config, pool, ["artifacts"], artifact_direct=False) as port:
        yield port


async def test_a_server_without_direct_transfer_is_streamed_to(
    undirected_s3_port: int, unique: str, tmp_path: Path
):
    project = await new_project(undirected_s3_port, f"n-{unique}")
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", undirected_s3_port, project=project, timeout=None
    ) as s3_store:
        s3_store.direct_threshold = SMALL_THRESHOLD
        info = await s3_store.upload("s3/data.bin", DATA)
        assert info.sha256 == hashlib.sha256(DATA).hexdigest()
        assert not s3_store._direct_offered  # told once (DIRECT_TRANSFER_UNAVAILABLE)
        fetched = await s3_store.download("s3/data.bin", tmp_path / "out.bin")
        assert fetched.read_bytes() == DATA


async def test_a_client_told_there_is_no_direct_transfer_asks_again_later(
    undirected_s3_port: int, unique: str, monkeypatch: pytest.MonkeyPatch
):
    """A server restarted with direct transfer on, or the next replica of a rolling
    update, may offer it: a client told DIRECT_TRANSFER_UNAVAILABLE streams for
    NOT_OFFERED_SECONDS, then asks for a ticket again, where it used to stream for as
    long as it lived."""
    project = await new_project(undirected_s3_port, f"a-{unique}")
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", undirected_s3_port, project=project, timeout=None
    ) as s3_store:
        s3_store.direct_threshold = SMALL_THRESHOLD
        tickets = count_calls(s3_store._direct, "CreateUploadTicket")
        await s3_store.upload("s3/first.bin", DATA)
        await s3_store.upload("s3/soon.bin", DATA)
        assert tickets.calls == 1  # told once, then streamed without asking

        later = _backoff.monotonic() + _backoff.NOT_OFFERED_SECONDS
        monkeypatch.setattr(_backoff, "monotonic", lambda: later)
        assert s3_store._direct_offered
        info = await s3_store.upload("s3/later.bin", DATA)

        assert tickets.calls == 2  # asked again, told again, streamed
        assert not s3_store._direct_offered
        assert info.sha256 == hashlib.sha256(DATA).hexdigest()


async def test_a_file_under_the_id_of_another_upload_is_refused_not_taken_for_its_repeat(
    direct: cairn.ArtifactClient, tmp_path: Path, unique: str
) -> None:
    """A file's sha256 is not known when its ticket is asked for, so the service can
    tell a repeat from another upload of the same size only by the bytes, which the
    client then checks."""
    first, other = tmp_path / "first.bin", tmp_path / "other.bin"
    first.write_bytes(DATA)
    other.write_bytes(DATA[::-1])  # the same size
    same_id = [(_headers.REQUEST_ID_HEADER, f"ticket-{unique}")]
    stored = await direct.upload("t/model.bin", first, metadata=same_id)
    assert await direct.upload("t/model.bin", first, metadata=same_id) == stored
    with pytest.raises(InvalidArgumentError) as raised:
        await direct.upload("t/model.bin", other, overwrite=True, metadata=same_id)
    assert raised.value.reason == "REQUEST_ID_REUSED"
    assert await direct.read("t/model.bin") == DATA


def _put_with_trailer(ticket: api.DirectTicket, body: bytes) -> tuple[int, bytes]:
    """A PUT as a client of another language sends it: one chunk, then the bytes'
    sha256 in the trailer."""
    connection = http.client.HTTPConnection(ticket.host or "127.0.0.1", ticket.port, timeout=10)
    connection.putrequest("PUT", f"/v1/transfers/{ticket.ticket}")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    sha256 = hashlib.sha256(body).hexdigest()
    connection.send(
        b"%x\r\n%s\r\n0\r\nX-Cairn-Sha256: %s\r\n\r\n" % (len(body), body, sha256.encode())
    )
    response = connection.getresponse()
    return response.status, response.read()


async def _ticket(
    direct: cairn.ArtifactClient, path: str, request_id: str, size: int, sha256: str = ""
) -> api.DirectTicket:
    header = api.UploadHeader(
        project=direct.project, path=path, expected_size=size, expected_sha256=sha256
    )
    reply = await direct._stub.CreateUploadTicket(
        api.CreateUploadTicketRequest(header=header),
        metadata=[(_headers.REQUEST_ID_HEADER, request_id)],
    )
    return reply.ticket


@pytest.mark.parametrize("announced", ["size", "size and sha256", "nothing"])
async def test_the_endpoint_refuses_a_ticket_whose_id_published_other_bytes_meanwhile(
    direct: cairn.ArtifactClient, unique: str, announced: str
) -> None:
    """Another upload under the ticket's request id publishes before the PUT: the
    endpoint itself tells a repeat from it, by what the ticket announces or else by
    the body, for clients that do not compare the object they are answered with."""
    request_id = f"endpoint-race-{unique}"
    size = len(DATA) if announced != "nothing" else 0
    sha256 = hashlib.sha256(DATA).hexdigest() if announced == "size and sha256" else ""
    ticket = await _ticket(direct, "t/raced.bin", request_id, size, sha256)
    other = DATA[::-1]  # the same size
    repeat = await _ticket(direct, "t/raced.bin", request_id, size)  # of `other`, below
    metadata = [(_headers.REQUEST_ID_HEADER, request_id)]
    stored = await direct.upload("t/raced.bin", other, metadata=metadata)
    status, body = await asyncio.to_thread(_put_with_trailer, ticket, DATA)
    assert (status, json.loads(body)["reason"]) == (400, "REQUEST_ID_REUSED")
    assert await direct.read("t/raced.bin") == other
    # A true repeat, whose ticket names no sha256, is told by its bytes.
    status, body = await asyncio.to_thread(_put_with_trailer, repeat, other)
    assert status == 200
    assert pb.ObjectInfo.FromString(body).sha256 == stored.sha256


@pytest.mark.parametrize("kind", ["file", "bytes"])
async def test_an_upload_whose_id_published_another_meanwhile_is_refused(
    direct: cairn.ArtifactClient,
    tmp_path: Path,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    """Another upload under the same id publishes between the ticket and the PUT: the
    endpoint answers with its object before the bytes are sent, which the client then
    compares with its own (by their sha256, hashing a file), as when the ticket call is
    answered so."""
    mine: Path | bytes = DATA
    if kind == "file":
        mine = tmp_path / "mine.bin"
        mine.write_bytes(DATA)
    same_id = [(_headers.REQUEST_ID_HEADER, f"race-{unique}")]
    loop, put = asyncio.get_running_loop(), _direct.upload

    def after_another(endpoint: _direct.Endpoint, source: Any, sent: Any, cut: Any) -> bytes:
        another = direct.upload("t/raced.bin", b"another upload", metadata=same_id)
        asyncio.run_coroutine_threadsafe(another, loop).result(timeout=30)
        return put(endpoint, source, sent, cut)

    monkeypatch.setattr(_direct, "upload", after_another)
    with pytest.raises(InvalidArgumentError) as raised:
        await direct.upload("t/raced.bin", mine, metadata=same_id)
    assert raised.value.reason == "REQUEST_ID_REUSED"
    assert await direct.read("t/raced.bin") == b"another upload"


def _begin_put(ticket: api.DirectTicket, first: bytes) -> socket.socket:
    """A PUT told `100 Continue` (its upload recorded), its first chunk sent."""
    connection = socket.create_connection((ticket.host or "127.0.0.1", ticket.port), timeout=10)
    connection.sendall(
        f"PUT /v1/transfers/{ticket.ticket} HTTP/1.1\r\nHost: x\r\n"
        "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n".encode()
    )
    assert connection.recv(1024).startswith(b"HTTP/1.1 100"), "not told to continue"
    connection.sendall(b"%x\r\n%s\r\n" % (len(first), first))
    return connection


def _end_put(connection: socket.socket, rest: bytes, sha256: str) -> tuple[int, bytes]:
    with connection, connection.makefile("rb") as answer:
        connection.sendall(
            b"%x\r\n%s\r\n0\r\nX-Cairn-Sha256: %s\r\n\r\n" % (len(rest), rest, sha256.encode())
        )
        status = int(answer.readline().split()[1])
        length = 0
        while line := answer.readline().strip():
            name, _, value = line.decode().partition(":")
            length = int(value) if name.lower() == "content-length" else length
        return status, answer.read(length)


@pytest.mark.parametrize(
    ("meanwhile", "status", "reason"),
    [
        ("key revoked", 401, "API_KEY_REVOKED"),
        ("role taken away", 403, "PERMISSION_DENIED"),
        ("nothing", 200, None),
    ],
)
async def test_a_direct_upload_is_admitted_again_before_it_publishes(
    config: Config,
    pool: asyncpg.Pool,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
    meanwhile: str,
    status: int,
    reason: str | None,
):
    """Its ticket checked only at the request head, an upload whose key was revoked (or
    role taken away) while it was sent published anyway, its ticket expired by then, where
    the streamed one is refused. An upload outlasting its ticket still publishes."""
    server, port = await serve(
        with_overrides(config, auth="api_key", auth_failure_limit=10**6), pool
    )
    try:
        world = await populated(port, pool, f"dr-{unique}")
        user = f"direct-{world.project}"
        async with world.auth("global_admin") as admin:
            await admin.add_user_project_role(user, world.project, ProjectRole.EDITOR)
            key = await admin.create_user_api_key(user, "uploads", ApiKeyExpirationTime.ONE_YEAR)
        header = api.UploadHeader(project=world.project, path="t/x.bin", expected_size=len(DATA))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = await rpc.ArtifactServiceStub(channel).CreateUploadTicket(
                api.CreateUploadTicketRequest(header=header),
                metadata=(("authorization", f"Bearer {key}"),),
            )
        half = len(DATA) // 2
        connection = await asyncio.to_thread(_begin_put, reply.ticket, DATA[:half])
        storage_key = await pool.fetchval(
            "SELECT storage_key FROM artifacts.uploads WHERE project = $1", world.project
        )
        async with world.auth("global_admin") as admin:
            if meanwhile == "key revoked":
                await admin.delete_api_key(key)
            elif meanwhile == "role taken away":
                await admin.delete_project_role(user, world.project)
        later = time.time() + 2 * tickets.TICKET_SECONDS  # the ticket expired meanwhile
        monkeypatch.setattr(tickets, "time", types.SimpleNamespace(time=lambda: later))
        answer = await asyncio.to_thread(
            _end_put, connection, DATA[half:], hashlib.sha256(DATA).hexdigest()
        )
        async with cairn.ArtifactClient.insecure_connection(
            "127.0.0.1", port, world.keys["global_admin"], project=world.project
        ) as artifacts:
            assert answer[0] == status, answer
            if reason is None:
                assert (await artifacts.stat("t/x.bin")).sha256 == hashlib.sha256(DATA).hexdigest()
                return
            assert json.loads(answer[1])["reason"] == reason
            with pytest.raises(NotFoundError):
                await artifacts.stat("t/x.bin")
        assert not await pool.fetchval(
            "SELECT count(*) FROM artifacts.uploads WHERE project = $1", world.project
        )
        backend = backends.from_config(config)
        assert isinstance(backend, FilesystemBackend)
        written = backend.local_file(storage_key)
        await eventually(lambda: not written.exists(), what="the upload's bytes removed")
    finally:
        await server.stop(grace=0)
