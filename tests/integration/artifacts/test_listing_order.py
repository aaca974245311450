"""ListObjects pages through every entry once, in byte order, for names that sort next
to "/" ("b.txt", "b0"), wildcards of LIKE, and characters of every UTF-8 length; an
object whose path is the prefix comes first. The
listing reads each page from the (project, path) index (a range, or one probe per
entry for one level), so this checks it against the entries worked out here."""

import grpc
import pytest

from cairn.artifacts.v1 import artifacts_service_pb2 as api
from cairn.artifacts.v1 import artifacts_service_pb2_grpc as rpc
from tests.conftest import new_project

PATHS = [
    "d",
    "d/a.txt",
    "d/b.txt",
    "d/b.d/x",
    "d/b/c",
    "d/b/c/deeper",
    "d/b0",
    "d/%_/x",
    "d/é",
    "d/é/z",
    "d/\U0001f600/q",
    "d/\uffff/x",
    "d2/f",
    "e",
    "é/a",
]


def _expected(prefix: str, recursive: bool) -> list[str]:
    entries = set()
    for path in PATHS:
        rest = path[len(prefix) :]
        if not path.startswith(prefix):
            continue  # the object at the prefix itself is listed, as S3 lists it
        folded = not recursive and "/" in rest
        entries.add(prefix + (rest[: rest.index("/") + 1] if folded else rest))
    return sorted(entries, key=str.encode)


@pytest.mark.parametrize("recursive", [False, True])
async def test_every_entry_once_in_byte_order_whatever_the_page_size(
    server_port: int, pool, unique: str, recursive: bool
) -> None:
    project = await new_project(server_port, f"listing-{unique}")
    await pool.executemany(
        """INSERT INTO artifacts.objects (project, path, size, sha256, content_type, storage_key)
           VALUES ($1, $2, 0, '', 'x', $3)""",
        [(project, path, f"{project}/{n}") for n, path in enumerate(PATHS)],
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server_port}") as channel:
        stub = rpc.ArtifactServiceStub(channel)
        for prefix in ("", "d/", "d", "d/b", "d/b/", "d/é", "e", "é/", "d/\U0001f600", "x/"):
            for page_size in (1, 2, 5):
                listed, token = [], ""
                while True:
                    page = await stub.ListObjects(
                        api.ListObjectsRequest(
                            project=project,
                            prefix=prefix,
                            recursive=recursive,
                            page_size=page_size,
                            page_token=token,
                        )
                    )
                    entries = [o.path for o in page.objects] + list(page.prefixes)
                    listed += sorted(entries, key=str.encode)
                    token = page.next_page_token
                    if not token:
                        break
                assert listed == _expected(prefix, recursive), (prefix, page_size)
