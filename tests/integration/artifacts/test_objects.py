"""Artifacts end to end, on the filesystem and on S3: round trips, ranges, listing,
deletes, overwrite protection, checksums and interrupted uploads."""

import asyncio
import hashlib
import io
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

import cairn
from cairn import _headers
from cairn._clients import _uploads
from cairn._clients._direct_transfers import DirectTransfers
from cairn._clients.run_operations import _WriteQueue
from cairn.artifacts.v1 import artifacts_service_pb2 as api
from cairn.exceptions import (
    AlreadyExistsError,
    CairnError,
    DataLossError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from cairn.types import Pager
from cairn_server.artifacts import s3, streams
from cairn_server.common import messages as request_messages
from cairn_server.common.config import Config
from tests.conftest import BUCKET, eventually, new_project, serving
from tests.integration.artifacts.conftest import s3_client

BIG = os.urandom(3 * 1024 * 1024 + 123)  # several chunks, not a whole number of them


async def test_round_trip_of_bytes_files_and_streams(store: cairn.ArtifactClient, tmp_path) -> None:
    info = await store.upload("models/a.bin", BIG, content_type="application/x-test")
    assert (info.size, info.sha256) == (len(BIG), hashlib.sha256(BIG).hexdigest())
    assert info.content_type == "application/x-test"
    assert await store.read("models/a.bin") == BIG
    local = tmp_path / "b.bin"
    local.write_bytes(BIG[:1000])
    await store.upload("models/b.bin", local)
    await store.upload("models/c.bin", io.BytesIO(b"streamed"))
    assert await store.read("models/b.bin") == BIG[:1000]
    assert await store.read("models/c.bin") == b"streamed"
    assert (await store.stat("models/c.bin")).size == 8
    await store.upload("empty.txt", b"")
    assert await store.read("empty.txt") == b""


async def test_uris_name_where_the_bytes_are_stored(store: cairn.ArtifactClient, s3_config) -> None:
    info = await store.upload("models/weights.onnx", b"onnx")
    location = urlsplit(info.uri)
    if store.backend == "s3":  # type: ignore[attr-defined]
        assert (location.scheme, location.netloc) == ("s3", "cairn-test")
        assert location.path.startswith(f"/store/_objects/{store.project}/")
        stored = s3_client(s3_config).get_object("cairn-test", location.path[1:]).read()
    else:
        assert location.scheme == "file" and f"/_objects/{store.project}/" in location.path
        stored = Path(location.path).read_bytes()
    assert stored == b"onnx"
    replaced = await store.upload("models/weights.onnx", b"onnx v2", overwrite=True)
    assert replaced.uri != info.uri  # an overwrite is stored under a key of its own
    assert (await store.stat("models/weights.onnx")).uri == replaced.uri


async def test_ranges(store: cairn.ArtifactClient) -> None:
    await store.upload("r.bin", BIG)
    assert await store.read("r.bin", offset=10, length=100) == BIG[10:110]
    assert await store.read("r.bin", offset=len(BIG) - 5) == BIG[-5:]
    assert await store.read("r.bin", offset=len(BIG)) == b""
    with pytest.raises(cairn.exceptions.OutOfRangeError) as past:
        await store.read("r.bin", offset=len(BIG) + 1)
    assert past.value.reason == "OFFSET_PAST_END"


async def test_download_of_a_file_and_a_directory_tree(
    store: cairn.ArtifactClient, tmp_path
) -> None:
    for name in ("run/model/weights.bin", "run/model/config.json", "run/metrics.csv", "other/x"):
        await store.upload(name, name.encode())
    written = await store.download("run/model/config.json", tmp_path)
    assert written == tmp_path / "config.json" and written.read_bytes() == b"run/model/config.json"
    tree = await store.download("run", tmp_path / "tree")
    files = sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file())
    assert files == ["metrics.csv", "model/config.json", "model/weights.bin"]
    with pytest.raises(NotFoundError):
        await store.download("missing", tmp_path / "none")
    # A directory written as one ("run/": INVALID_PATH, the name of no object), and the
    # whole project ("": INVALID_PATH too).
    slashed = await store.download("run/", tmp_path / "slashed")
    assert sorted(str(p.relative_to(slashed)) for p in slashed.rglob("*") if p.is_file()) == files
    for absolute in ("/", "//", "/run/"):  # a typo of an absolute path, not the project
        with pytest.raises(InvalidArgumentError):
            await store.download(absolute, tmp_path / "absolute")
    everything = await store.download("", tmp_path / "all")
    every = sorted(str(p.relative_to(everything)) for p in everything.rglob("*") if p.is_file())
    assert every == ["other/x", *(f"run/{file}" for file in files)]


async def test_a_destination_ending_in_a_slash_is_a_directory_made_for_the_file(
    store: cairn.ArtifactClient, tmp_path
) -> None:
    await store.upload("models/x.bin", b"x")
    written = await store.download("models/x.bin", f"{tmp_path}/newdir/")
    assert written == tmp_path / "newdir" / "x.bin" and written.read_bytes() == b"x"


async def test_listing_one_level_recursive_and_paged(store: cairn.ArtifactClient) -> None:
    for name in ("d/a.txt", "d/b.txt", "d/sub/c.txt", "d/sub/deeper/e.txt", "d2/f.txt"):
        await store.upload(name, b"x")
    level = await store.list("d/")
    assert [(e.path, e.is_dir) for e in level] == [
        ("d/a.txt", False),
        ("d/b.txt", False),
        ("d/sub/", True),
    ]
    everything = await store.list("d/", recursive=True)
    assert [e.path for e in everything] == [
        "d/a.txt",
        "d/b.txt",
        "d/sub/c.txt",
        "d/sub/deeper/e.txt",
    ]
    top = await store.list()
    assert [(e.path, e.is_dir) for e in top] == [("d/", True), ("d2/", True)]
    paged = [
        e.path async for e in Pager(lambda o: store.list("d/", recursive=True, options=o)).limit(3)
    ]
    assert paged == [e.path for e in everything]
    assert await store.list("nothing/") == []


async def test_overwrite_protection(store: cairn.ArtifactClient) -> None:
    await store.upload("once.txt", b"first")
    with pytest.raises(AlreadyExistsError) as raised:
        await store.upload("once.txt", b"second")
    assert raised.value.reason == "OBJECT_ALREADY_EXISTS"
    assert await store.read("once.txt") == b"first"
    await store.upload("once.txt", b"second", overwrite=True)
    assert await store.read("once.txt") == b"second"


async def test_delete_one_object_and_a_directory(store: cairn.ArtifactClient) -> None:
    for name in ("run1/a", "run1/b/c", "run10/d", "keep"):
        await store.upload(name, b"x")
    assert await store.delete("keep") == 1
    assert await store.delete("run1", recursive=True) == 2
    assert [e.path for e in await store.list(recursive=True)] == ["run10/d"]
    with pytest.raises(NotFoundError):
        await store.delete("keep")
    with pytest.raises(NotFoundError):
        await store.read("run1/a")
    # No call deletes a whole project: it answered 0, as if the project were empty.
    with pytest.raises(InvalidArgumentError) as refused:
        await store.delete("", recursive=True)
    assert refused.value.reason == "INVALID_PATH"
    assert [e.path for e in await store.list(recursive=True)] == ["run10/d"]


async def test_a_raw_prefix_may_end_in_the_start_of_a_dotted_name(
    store: cairn.ArtifactClient,
) -> None:
    """Listing takes a raw prefix as S3 does: "." and "a/." find ".hidden" and "a/.env",
    and were refused as '.' segments."""
    for name in (".hidden", "a/.env", "a/..x", "a/b"):
        await store.upload(name, b"x")
    found = {
        prefix: [e.path for e in await store.list(prefix, recursive=True)]
        for prefix in (".", "a/.", "a/..")
    }
    assert found == {".": [".hidden"], "a/.": ["a/..x", "a/.env"], "a/..": ["a/..x"]}
    for refused in ("./a", "a/../b", "a//"):
        with pytest.raises(InvalidArgumentError):
            await store.list(refused)


async def _raw_upload(store: cairn.ArtifactClient, messages: list[api.UploadRequest]) -> None:
    async def requests():
        for message in messages:
            yield message

    await store._transport.client_stream(store._stub.Upload, requests())


def _header(store: cairn.ArtifactClient, path: str, **fields) -> api.UploadRequest:
    return api.UploadRequest(header=api.UploadHeader(project=store.project, path=path, **fields))


FINISH = api.UploadRequest(finish=api.UploadFinish())


@pytest.mark.parametrize(
    "asked",
    [{"offset": 0, "length": 500_000}, {"offset": 10}, {"offset": 2_000}, {}],
    ids=["range", "to-the-end", "past-the-bytes", "whole"],
)
async def test_bytes_cut_short_in_the_store_are_missing_not_a_short_read(
    store: cairn.ArtifactClient, raw_objects, config: Config, s3_config: Config, asked
) -> None:
    """A stored file cut to 1,000 bytes behind the service's back: a range ended OK
    with what was there (1,000 bytes of 500,000, or none past them on the filesystem;
    S3's InvalidRange was OBJECT_STORE_UNAVAILABLE, "call again"; the client's check of
    a whole object's sha256 said CHECKSUM_MISMATCH)."""
    await store.upload("cut.bin", BIG)
    (key,) = raw_objects()
    if store.backend == "s3":  # type: ignore[attr-defined]
        s3_client(s3_config).put_object(BUCKET, key, io.BytesIO(BIG[:1000]), 1000)
    else:
        os.truncate(config.artifact_dir / key, 1000)
    with pytest.raises(DataLossError) as missing:
        await store.read("cut.bin", **asked)
    assert missing.value.reason == "OBJECT_BYTES_MISSING"  # a whole read: CHECKSUM_MISMATCH


async def test_a_checksum_mismatch_publishes_nothing(
    store: cairn.ArtifactClient, raw_objects
) -> None:
    chunk = api.UploadRequest(chunk=BIG)
    for messages in (
        [_header(store, "bad.bin", expected_sha256="0" * 64), chunk, FINISH],
        [
            _header(store, "bad.bin"),
            chunk,
            api.UploadRequest(finish=api.UploadFinish(sha256="1" * 64)),
        ],
    ):
        with pytest.raises(DataLossError) as raised:
            await _raw_upload(store, messages)
        assert raised.value.reason == "CHECKSUM_MISMATCH"
    for announced in (10, 2):  # fewer bytes than announced, and more
        with pytest.raises(InvalidArgumentError) as refused:
            await _raw_upload(
                store,
                [
                    _header(store, "sized.bin", expected_size=announced),
                    api.UploadRequest(chunk=b"abc"),
                    FINISH,
                ],
            )
        assert refused.value.reason == "SIZE_MISMATCH"
    assert await store.list(recursive=True) == []
    with pytest.raises(NotFoundError):
        await store.stat("bad.bin")
    assert raw_objects() == []


async def test_an_upload_larger_than_streams_through_s3_is_refused_at_its_header(
    s3_store: cairn.ArtifactClient,
) -> None:
    """The server holds each S3 part in memory, with a bound (32 MiB: at most about
    281 GiB in 9,000 parts); a larger announced size is refused before a byte."""
    huge = s3.MAX_STREAMED_BYTES + 1
    with pytest.raises(FailedPreconditionError) as raised:
        await _raw_upload(s3_store, [_header(s3_store, "huge.bin", expected_size=huge), FINISH])
    assert raised.value.reason == "TOO_LARGE_TO_STREAM"
    assert raised.value.metadata["max_size"] == str(s3.MAX_STREAMED_BYTES)
    assert await s3_store.list(recursive=True) == []


async def test_an_upload_of_unknown_size_past_what_streams_through_s3_stores_nothing(
    s3_store: cairn.ArtifactClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counted as it arrives: it would fail at the store past its parts, after hours."""
    monkeypatch.setattr(s3.S3Backend, "write_limit", lambda backend, size: 10)
    chunk = api.UploadRequest(chunk=b"x" * 6)
    with pytest.raises(FailedPreconditionError) as raised:
        await _raw_upload(s3_store, [_header(s3_store, "growing.bin"), chunk, chunk, FINISH])
    assert raised.value.reason == "TOO_LARGE_TO_STREAM"
    assert raised.value.metadata["max_size"] == "10"
    assert await s3_store.list(recursive=True) == []


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [api.UploadRequest(chunk=b"no header")],
        ["HEADER", "HEADER"],
        ["HEADER", api.UploadRequest(chunk=b"x"), "HEADER"],
        ["HEADER", api.UploadRequest(chunk=b"x")],
        ["HEADER", FINISH, api.UploadRequest(chunk=b"x")],
        ["HEADER", FINISH, FINISH],
    ],
    ids=[
        "empty",
        "no-header",
        "two-headers",
        "header-later",
        "no-finish",
        "chunk-after-finish",
        "two-finishes",
    ],
)
async def test_a_missing_or_repeated_header_or_finish_is_invalid(
    store: cairn.ArtifactClient, messages
) -> None:
    resolved = [_header(store, "h.bin") if m == "HEADER" else m for m in messages]
    with pytest.raises(InvalidArgumentError):
        await _raw_upload(store, resolved)
    assert await store.list(recursive=True) == []


async def test_an_interrupted_upload_leaves_nothing_visible(
    store: cairn.ArtifactClient, raw_objects
) -> None:
    sent = asyncio.Event()

    async def requests():
        yield _header(store, "cut.bin")
        for _ in range(40):  # beyond an S3 part, so a multipart upload is under way
            yield api.UploadRequest(chunk=BIG[: 1024 * 1024])
        sent.set()
        await asyncio.sleep(30)

    call = store._stub.Upload(requests())
    await sent.wait()
    await eventually(lambda: raw_objects() != [], what="bytes arriving in the backend")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    # Nor in the backend: no object, no partial file, no multipart upload left open.
    await eventually(lambda: raw_objects() == [], what="the cut upload's bytes removed")
    assert await store.list(recursive=True) == []
    with pytest.raises(NotFoundError):
        await store.stat("cut.bin")


@pytest.mark.parametrize(
    "path",
    [
        "../escape",
        "/absolute",
        "a//b",
        "a/./b",
        "back\\slash",
        "nul\x00byte",
        "ctrl\x07",
        "a/",
        "",
        "x" * 1025,
        # Over 1,024 bytes in UTF-8 though not in characters (the third was INTERNAL:
        # too long for the btree of the objects' primary key).
        "é" * 513,
        "語" * 342,
        "語" * 1000,
    ],
)
async def test_bad_paths_are_refused(store: cairn.ArtifactClient, path: str) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        await store.upload(path, b"x")
    # A NUL is refused for every string of every request, before the path rules.
    expected = "INVALID_STRING" if "\x00" in path else "INVALID_PATH"
    assert raised.value.reason in (expected, "INVALID_ARGUMENT")
    with pytest.raises(InvalidArgumentError):
        await store.stat(path)


# A right-to-left override alone, a byte-order mark a file read left, a zero-width space
# pasted along, a left-to-right mark ending a folder, a word joiner ending a path.
INVISIBLE_AT_AN_END = ["\u202e", "\ufeffdata.csv", "data.csv\u200b", "dir\u200e/a", "a/\u2060"]


@pytest.mark.parametrize("path", INVISIBLE_AT_AN_END)
async def test_a_segment_starting_or_ending_with_an_invisible_character_is_refused(
    store: cairn.ArtifactClient, path: str
) -> None:
    """Such paths were stored, though tracking's names and keys and the registry's ids
    refuse an invisible character at an end: "data.csv" after a byte-order mark cannot
    be told from "data.csv". Reading such a path finds nothing, as no object can have it."""
    header = api.UploadHeader(project=store.project, path=path)
    writes = {
        "upload": lambda: store.upload(path, b"x"),
        "ticket": lambda: store._transport.unary(
            store._stub.CreateUploadTicket,
            api.CreateUploadTicketRequest(header=header),
            timeout=10,
            metadata=None,
        ),
        "presigned PUT": lambda: store.presigned_url(path, "PUT"),
    }
    for name, write in writes.items():
        with pytest.raises(InvalidArgumentError) as refused:
            await write()
        assert refused.value.reason == "INVALID_PATH", name
        assert refused.value.message == (
            "path: must not have a segment that starts or ends with an invisible character"
        ), name
    assert await store.list(recursive=True) == []
    with pytest.raises(NotFoundError):
        await store.stat(path)


@pytest.mark.parametrize("path", ["c1\x85next-line", "csi\x9b31m", "line\u2028sep", "p\u2029"])
async def test_a_path_with_a_c1_control_or_a_line_separator_is_refused(
    store: cairn.ArtifactClient, path: str
) -> None:
    """Only the C0 controls and DEL were refused: U+0085 breaks lines as a newline does,
    U+009B starts a terminal's escape sequence as ESC [ does, and both were stored."""
    for write in (lambda: store.upload(path, b"x"), lambda: store.presigned_url(path, "PUT")):
        with pytest.raises(InvalidArgumentError) as refused:
            await write()
        assert refused.value.reason == "INVALID_PATH"
    assert await store.list(recursive=True) == []


async def test_a_source_no_upload_can_read_is_refused_naming_it(
    store: cairn.ArtifactClient, tmp_path: Path
) -> None:
    """5 raised AttributeError, and a file opened in text mode hashlib's TypeError
    ("Strings must be encoded before hashing"): no CairnError, no argument named."""
    (tmp_path / "notes.txt").write_text("notes")
    with (tmp_path / "notes.txt").open() as text:
        for source in (5, None, text):
            with pytest.raises(InvalidArgumentError) as refused:
                await store.upload("notes.txt", source)  # type: ignore[arg-type]
            assert [field for field, _ in refused.value.field_violations] == ["source"]
    assert await store.list(recursive=True) == []


async def test_a_directory_is_refused_as_a_source_naming_it(
    store: cairn.ArtifactClient, tmp_path: Path
) -> None:
    """It raised a bare IsADirectoryError once the upload had begun, where the docs
    promise InvalidArgumentError naming `source` before anything is sent."""
    with pytest.raises(InvalidArgumentError) as refused:
        await store.upload("a-directory", tmp_path)
    assert [field for field, _ in refused.value.field_violations] == ["source"]
    assert "upload_tree" in refused.value.message
    assert await store.list(recursive=True) == []


async def test_a_pipe_or_a_device_is_refused_as_a_source_before_it_is_opened(
    store: cairn.ArtifactClient, tmp_path: Path
) -> None:
    """A pipe no one wrote to held the upload (and `cairn artifacts upload`) for ever,
    past its timeout, and /dev/null was stored as an empty object."""
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    for source in (pipe, Path(os.devnull)):
        with pytest.raises(InvalidArgumentError) as refused:
            await asyncio.wait_for(store.upload("special", source), 30)
        assert [field for field, _ in refused.value.field_violations] == ["source"]
    assert await store.list(recursive=True) == []


async def test_a_path_that_is_no_text_is_refused_as_a_path(
    store: cairn.ArtifactClient, tmp_path: Path
) -> None:
    """A name's bytes that are not UTF-8, as Python reads them (lone surrogates), went
    to protobuf, whose UnicodeEncodeError reached the caller: no CairnError."""
    path = "a/\udcff"
    (tmp_path / "f.txt").write_text("x")
    calls = {
        "upload": lambda: store.upload(path, b"x"),
        "upload_tree": lambda: store.upload_tree(path, tmp_path),
        "stat": lambda: store.stat(path),
        "read": lambda: store.read(path),
        "download": lambda: store.download(path, tmp_path / "out"),
        "list": lambda: store.list(path),  # its argument is the prefix
        "delete": lambda: store.delete(path),
        "presigned_url": lambda: store.presigned_url(path),
        "confirm_upload": lambda: store.confirm_upload(path, upload_id="u"),
    }
    for name, call in calls.items():
        with pytest.raises(InvalidArgumentError) as refused:
            await call()
        assert refused.value.reason == "INVALID_PATH", name
        field = "prefix" if name == "list" else "path"
        assert [field for field, _ in refused.value.field_violations] == [field], name


@pytest.mark.parametrize(
    "path", [" leading space", "trailing space /a", "notes v2 .txt", "👩\u200d💻/a\u200bb"]
)
async def test_spaces_at_a_segments_ends_and_invisible_characters_within_are_stored(
    store: cairn.ArtifactClient, path: str
) -> None:
    """File systems hold such names, and uploads of them worked before invisible
    characters at a segment's ends were refused."""
    assert (await store.upload(path, b"x")).path == path
    assert await store.read(path) == b"x"


async def test_a_path_of_1024_bytes_in_utf8_is_stored(store: cairn.ArtifactClient) -> None:
    path = "語" * 341 + "a"  # the limit counts bytes, as S3 does for its keys
    assert len(path.encode()) == 1024
    assert (await store.upload(path, b"x")).path == path
    assert await store.read(path) == b"x"


async def test_projects_do_not_see_each_other(
    store: cairn.ArtifactClient, server_port: int, unique: str
) -> None:
    await store.upload("secret.txt", b"mine")
    channel = store._transport.channel
    other_project = await new_project(server_port, f"other-{unique}")
    other = cairn.ArtifactClient(type(store._transport)(channel, project=other_project))
    with pytest.raises(NotFoundError):
        await other.stat("secret.txt")
    assert await other.list("", recursive=True) == []


async def test_the_s3_backend_creates_a_missing_bucket(s3_config, unique: str) -> None:
    from minio import Minio

    from cairn_server.artifacts.s3 import S3Backend
    from tests.conftest import with_overrides

    backend = S3Backend(with_overrides(s3_config, s3_bucket=f"fresh-{unique}"))
    await asyncio.to_thread(backend.write, "p/x", io.BytesIO(b"hello"), "text/plain", 5)
    client = Minio(
        s3_config.s3_endpoint,
        access_key="test",
        secret_key="test",
        secure=False,
        region="us-east-1",
    )
    assert client.bucket_exists(f"fresh-{unique}")


async def test_an_upload_under_the_id_of_another_is_refused_not_taken_for_its_repeat(
    store: cairn.ArtifactClient, unique: str
) -> None:
    """A repeat of an upload that published is answered with its object without
    storing anything; it used to be recognized by the request id alone, so another
    upload under that id (other bytes, another content type) was answered OK and
    never stored."""
    same_id = [(_headers.REQUEST_ID_HEADER, f"upload-{unique}")]
    first = await store.upload("again/x.txt", b"one", metadata=same_id)
    # Bytes name their sha256 in the header; a file object only once read, at the end.
    for source in (b"one", io.BytesIO(b"one")):
        assert await store.upload("again/x.txt", source, metadata=same_id) == first
    others: list[dict[str, Any]] = [
        {"source": b"two, and longer", "overwrite": True},
        {"source": b"two", "overwrite": True},  # the same size
        {"source": io.BytesIO(b"two"), "overwrite": True},
        {"source": io.BytesIO(b"one, and more"), "overwrite": True},
        {"source": b"one", "overwrite": True, "content_type": "text/plain"},
    ]
    for other in others:
        with pytest.raises(InvalidArgumentError) as raised:
            await store.upload("again/x.txt", metadata=same_id, **other)
        assert raised.value.reason == "REQUEST_ID_REUSED", other
    assert await store.read("again/x.txt") == b"one"


async def test_a_download_from_another_project_keeps_the_clients_transfer_settings(
    server_port: int, unique: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given an artifact_uri of another project, download made a client of its own with
    the class's defaults: direct transfer, switched off on the caller's, went on."""
    tried: list[str] = []
    direct_download = DirectTransfers.download

    async def recorded(self: DirectTransfers, info: Any, *args: Any) -> bool:
        tried.append(info.path)
        return await direct_download(self, info, *args)

    monkeypatch.setattr(DirectTransfers, "download", recorded)
    home, away = [await new_project(server_port, f"{side}-{unique}") for side in ("home", "away")]
    async with (
        cairn.ArtifactClient.insecure_connection("127.0.0.1", server_port, project=away) as owner,
        cairn.ArtifactClient.insecure_connection("127.0.0.1", server_port, project=home) as reader,
    ):
        uri = (await owner.upload("weights.bin", b"w" * 1024)).artifact_uri
        for threshold, expected in ((None, []), (1, ["weights.bin"])):
            tried.clear()
            reader.direct_threshold = threshold
            written = await reader.download(uri, tmp_path / f"{threshold}.bin")
            assert written.read_bytes() == b"w" * 1024
            assert tried == expected


async def test_a_path_that_starts_like_an_artifact_uri_is_read_back(
    store: cairn.ArtifactClient,
) -> None:
    """The store takes "cairn-artifacts:/z" as a path; the client read it as a URI, which
    it then refused, so the object could be written and never read."""
    await store.upload("cairn-artifacts:/z", b"z")
    assert await store.read("cairn-artifacts:/z") == b"z"
    assert (await store.stat("cairn-artifacts:/z")).size == 1


async def test_a_chunk_larger_than_the_bound_is_refused_and_publishes_nothing(
    store: cairn.ArtifactClient,
) -> None:
    """Chunks as large as a message (16 MiB) were taken, four of them queued at once:
    64 MiB an upload, where docs/artifacts.md counts about 50 at most."""
    largest = streams.MAX_CHUNK_BYTES
    body = os.urandom(largest + 1)
    whole = api.UploadRequest(finish=api.UploadFinish(sha256=hashlib.sha256(body).hexdigest()))
    with pytest.raises(InvalidArgumentError) as refused:
        await _raw_upload(store, [_header(store, "big.bin"), api.UploadRequest(chunk=body), whole])
    assert refused.value.field_violations[0][0] == "chunk"
    with pytest.raises(NotFoundError):
        await store.stat("big.bin")
    exact = body[:largest]
    await _raw_upload(
        store,
        [
            _header(store, "exact.bin"),
            api.UploadRequest(chunk=exact),
            api.UploadRequest(finish=api.UploadFinish(sha256=hashlib.sha256(exact).hexdigest())),
        ],
    )
    assert (await store.stat("exact.bin")).size == largest


async def test_objects_stream_both_ways_through_a_server_taking_the_least_message(
    config: Config, pool: asyncpg.Pool, unique: str, tmp_path
) -> None:
    """At CAIRN_MAX_MESSAGE_BYTES's least, 1 MiB, the client's 1 MiB chunks (with their
    framing) were refused, and the server's 4 MiB ones could not be sent: no upload or
    download streamed at all."""
    body = os.urandom(3 * 1024 * 1024 + 5)
    async with (
        serving(config, pool, ["artifacts"], max_message_bytes=1024 * 1024) as port,
        cairn.ArtifactClient.insecure_connection(
            "127.0.0.1", port, project=await new_project(port, f"least-{unique}")
        ) as store,
    ):
        store.direct_threshold = None  # the streams themselves
        assert (await store.upload("big.bin", body)).size == len(body)
        assert await store.read("big.bin") == body
        written = await store.download("big.bin", tmp_path / "big.bin")
        assert written.read_bytes() == body


async def test_a_page_of_the_longest_paths_fits_a_server_taking_the_least_message(
    config: Config, pool: asyncpg.Pool, unique: str
) -> None:
    """A page of 1,000 objects whose paths are near the 1 KiB most came to about 1.3 MB:
    through a 1 MiB server, listing them (one level or all) failed outright."""
    stem = "deep/" + "p" * 1000
    async with (
        serving(config, pool, ["artifacts"], max_message_bytes=1024 * 1024) as port,
        cairn.ArtifactClient.insecure_connection(
            "127.0.0.1", port, project=await new_project(port, f"long-{unique}")
        ) as store,
    ):
        names = [f"{stem}{i:04}" for i in range(1000)]
        folders = [f"{stem[:-5]}/{i:04}/x" for i in range(1000)]
        uploads = asyncio.Semaphore(16)

        async def upload(path: str) -> None:
            async with uploads:
                await store.upload(path, b"x", content_type="application/" + "t" * 200)

        await asyncio.gather(*(upload(p) for p in names + folders))
        everything = [
            e.path async for e in Pager(lambda o: store.list("deep/", recursive=True, options=o))
        ]
        assert everything == sorted(names + folders)
        level = [e.path async for e in Pager(lambda o: store.list(stem[:-5] + "/", options=o))]
        assert level == [f"{stem[:-5]}/{i:04}/" for i in range(1000)]


async def test_an_upload_refused_midway_is_answered_with_its_reason(
    store: cairn.ArtifactClient,
) -> None:
    """The server answered an upload it refused midway (SIZE_MISMATCH, or
    OBJECT_STORE_UNAVAILABLE) while the client was still sending: the client's next
    write failed with a bare INTERNAL, its answer lost, and it raised UNAVAILABLE with
    no reason, which its retries then sent whole again, four times."""
    header = api.UploadHeader(project=store.project, path="t/long.bin", expected_size=10)
    chunk = b"x" * (1023 * 1024)

    async def requests() -> AsyncIterator[api.UploadRequest]:
        yield api.UploadRequest(header=header)
        for _ in range(40):
            yield api.UploadRequest(chunk=chunk)
        yield api.UploadRequest(finish=api.UploadFinish())

    with pytest.raises(InvalidArgumentError) as refused:
        await store._transport.client_stream(store._stub.Upload, requests())
    assert "more than the 10 bytes" in refused.value.message


async def test_an_upload_cut_midway_closes_its_file_after_its_last_read(
    store: cairn.ArtifactClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read of the next chunk runs in a thread while the last one is sent: a call
    cut midway closed the file under it ("read of closed file", raised in a task that
    no one awaited)."""
    misread: list[str] = []

    class SlowDisk:
        def __init__(self, inner: Any) -> None:
            self.inner, self.reading = inner, False

        def read(self, size: int) -> bytes:
            if self.inner.closed:
                misread.append("a read after the close")
            self.reading = True
            time.sleep(0.05)  # a slow disk, which the close meets mid-read
            self.reading = False
            return bytes(self.inner.read(size))

        def close(self) -> None:
            if self.reading:
                misread.append("a close during a read")
            self.inner.close()

    def slowly(source: Any) -> tuple[Any, ...]:
        stream, *rest = opened(source)
        return (SlowDisk(stream), *rest)

    opened = _uploads.open_source
    monkeypatch.setattr(_uploads, "open_source", slowly)
    source = tmp_path / "slow.bin"
    source.write_bytes(BIG[: 8 * 1024 * 1024])
    store.direct_threshold = None

    def cut(done: int, total: int | None) -> None:
        if done >= 2 * _uploads.CHUNK:
            upload.cancel()

    upload = asyncio.ensure_future(store.upload("slow.bin", source, progress=cut))
    with pytest.raises(asyncio.CancelledError):
        await upload
    assert misread == []


async def test_writes_queued_behind_an_upload_cut_midway_are_sent(
    store: cairn.ArtifactClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that answers an upload before reading the rest (one past its drain's
    seconds) breaks the client's next write: that came back UNAVAILABLE with no reason,
    as when no server answers at all, and the writes queued behind it with
    synchronous=False were failed unsent."""
    monkeypatch.setattr(request_messages, "REFUSED_DRAIN_SECONDS", 0)
    header = api.UploadHeader(project=store.project, path="t/long.bin", expected_size=10)

    async def requests() -> AsyncIterator[api.UploadRequest]:
        yield api.UploadRequest(header=header)
        for _ in range(40):
            yield api.UploadRequest(chunk=b"x" * (1023 * 1024))

    queue = _WriteQueue()
    cut = queue.put(store._transport.client_stream(store._stub.Upload, requests()))
    behind = queue.put(store.upload("t/behind.bin", b"kept"))
    await asyncio.wait([cut, behind])
    assert behind.result().size == 4
    # Its answer arrives when it overtakes the write that breaks; else the break says so.
    error = cut.exception()
    assert isinstance(error, CairnError)
    assert error.reason in ("SIZE_MISMATCH", "CONNECTION_BROKEN"), error
    queue._take_errors()


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda store: _read(store, offset=2**63), "offset"),
        (lambda store: _read(store, length=2**63), "length"),
        (lambda store: _read(store, offset=1.5), "offset"),
        (lambda store: store.presigned_url("a.bin", "DELETE"), "method"),
    ],
    ids=["offset-past-int64", "length-past-int64", "offset-float", "method"],
)
async def test_a_bad_argument_of_a_read_or_a_url_is_an_invalid_argument_error_naming_it(
    store: cairn.ArtifactClient, call: Any, argument: str
) -> None:
    """docs/client.md: a number that does not fit its field, or a name that is none of its
    values, is InvalidArgumentError naming the argument. These raised protobuf's bare
    ValueError ('Value out of range', 'unknown enum label') or TypeError."""
    with pytest.raises(InvalidArgumentError) as raised:
        await call(store)
    assert [field for field, _ in raised.value.field_violations] == [argument]


async def _read(store: cairn.ArtifactClient, **window: Any) -> bytes:
    return b"".join([chunk async for chunk in store.open("a.bin", **window)])


@pytest.mark.parametrize("path", ["/", "//", "/trees"])
async def test_a_tree_uploaded_under_an_absolute_path_is_refused(
    store: cairn.ArtifactClient, tmp_path: Path, path: str
) -> None:
    """ "/" and "//" were taken for the project's root, where the tree was stored: a typo
    of an absolute path, which an upload of one file is refused for."""
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(InvalidArgumentError) as refused:
        await store.upload_tree(path, tmp_path)
    assert refused.value.reason == "INVALID_PATH"
    assert refused.value.field_violations == [("path", "must be relative (no leading '/')")]
    assert await store.list(recursive=True) == []
