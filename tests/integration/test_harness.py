"""The harness's own stateful parts answer as the later suites rely on."""

import io
import subprocess
import sys
from pathlib import Path

import asyncpg
from minio import Minio

from tests.conftest import repo_root


async def test_postgres_is_real_and_current(pool: asyncpg.Pool) -> None:
    version = await pool.fetchval("SHOW server_version_num")
    assert int(version) >= 160000


def test_s3_server_speaks_the_protocol_through_minio(s3_endpoint: str, unique: str) -> None:
    s3 = Minio(s3_endpoint, access_key="test", secret_key="test", secure=False, region="us-east-1")
    bucket = f"harness-{unique}"
    s3.make_bucket(bucket)
    s3.put_object(bucket, "a/b.txt", io.BytesIO(b"hello world"), length=11)
    ranged = s3.get_object(bucket, "a/b.txt", offset=6, length=5)
    try:
        assert ranged.read() == b"world"
    finally:
        ranged.close()
        ranged.release_conn()
    assert [o.object_name for o in s3.list_objects(bucket, prefix="a/")] == ["a/b.txt"]


_HANGS = """
import asyncio
import contextlib

import pytest


async def waits_for_ever() -> None:
    await asyncio.Event().wait()


@contextlib.asynccontextmanager
async def stopped_for_ever():
    yield
    await waits_for_ever()


@pytest.mark.timeout(2)
async def test_hangs() -> None:
    async with stopped_for_ever():
        pass


async def test_after() -> None:
    pass
"""


def test_a_hung_test_fails_saying_where_its_tasks_wait_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    """A test that never ends fails at its timeout, naming the coroutine each asyncio
    task waits in, and the tests after it run: one hang stopped a whole CI run."""
    (tmp_path / "test_hangs.py").write_text(_HANGS)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.conftest",
            "-p",
            "no:cacheprovider",
            "-c",
            "pyproject.toml",
            "-q",
            str(tmp_path / "test_hangs.py"),
        ],
        cwd=repo_root(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "1 failed, 1 passed" in run.stdout, run.stdout + run.stderr
    assert "Timeout (>2.0s) from pytest-timeout" in run.stdout
    tasks = run.stdout.partition("asyncio tasks at the timeout")[2]
    assert "in stopped_for_ever" in tasks and "in waits_for_ever" in tasks, run.stdout
