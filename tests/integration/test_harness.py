"""The harness's own stateful parts answer as the later suites rely on."""

import io

import asyncpg
from minio import Minio


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
