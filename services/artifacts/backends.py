"""Where artifact bytes live: the local filesystem or an S3-compatible object store.

Keys are "<prefix>/<project>/<path>" on both, so an S3 URI of a stored model can be read
by other tools directly. Every method blocks; the servicer runs them in worker threads
(the minio SDK is synchronous).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Generator
from datetime import timedelta
from pathlib import Path
from typing import Protocol

from minio import Minio
from minio.error import S3Error

from ..common.config import Config
from ..common.errors import FailedPrecondition

CHUNK = 4 * 1024 * 1024
MIB = 1024 * 1024
S3_MIN_PART = 5 * MIB  # S3's smallest part
S3_MAX_PARTS = 9_000  # below S3's limit of 10,000 parts, with room to spare
S3_UNKNOWN_SIZE_PART = 8 * MIB  # when the size is not known: objects up to ~70 GiB


class Readable(Protocol):
    def read(self, n: int = -1) -> bytes: ...


class Backend(Protocol):
    def key(self, project: str, path: str) -> str: ...
    def uri(self, key: str) -> str: ...
    def write(self, key: str, source: Readable, content_type: str, size: int) -> None: ...
    def read(self, key: str, offset: int, length: int) -> Generator[bytes, None, None]: ...
    def delete(self, keys: list[str]) -> None: ...
    def presign(self, key: str, method: str, expires: timedelta, content_type: str) -> str: ...
    def hash_and_size(self, key: str) -> tuple[str, int] | None: ...


def from_config(config: Config) -> Backend:
    if config.artifact_backend == "s3":
        return S3Backend(config)
    return FilesystemBackend(config.artifact_dir)


class FilesystemBackend:
    """Files under a root; an upload is written beside its target and renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def key(self, project: str, path: str) -> str:
        return f"{project}/{path}"

    def uri(self, key: str) -> str:
        return (self.root / key).as_uri()

    def write(self, key: str, source: Readable, content_type: str, size: int) -> None:
        target = self._file(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.parent / f".upload-{uuid.uuid4().hex}"
        try:
            with temporary.open("wb") as out:
                while chunk := source.read(CHUNK):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()

    def read(self, key: str, offset: int, length: int) -> Generator[bytes, None, None]:
        with self._file(key).open("rb") as source:
            source.seek(offset)
            remaining = length
            while remaining > 0 and (chunk := source.read(min(CHUNK, remaining))):
                remaining -= len(chunk)
                yield chunk

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            with contextlib.suppress(FileNotFoundError):
                self._file(key).unlink()

    def presign(self, key: str, method: str, expires: timedelta, content_type: str) -> str:
        raise FailedPrecondition(
            "PRESIGN_UNSUPPORTED",
            "presigned URLs need the S3 backend; this server stores files locally",
        )

    def hash_and_size(self, key: str) -> tuple[str, int] | None:
        raise FailedPrecondition("PRESIGN_UNSUPPORTED", "presigned uploads need the S3 backend")

    def _file(self, key: str) -> Path:
        target = (self.root / key).resolve()
        # Paths were validated already; this guards the invariant anyway.
        if not target.is_relative_to(self.root):
            raise ValueError(f"key {key!r} escapes the artifact root")
        return target


class S3Backend:
    """An S3 bucket through the minio SDK; multipart uploads complete only at the end."""

    def __init__(self, config: Config) -> None:
        self.bucket = config.s3_bucket
        self.prefix = config.s3_prefix.strip("/")
        self.client = Minio(
            config.s3_endpoint,
            access_key=config.s3_access_key or None,
            secret_key=config.s3_secret_key or None,
            secure=config.s3_secure,
            region=config.s3_region or None,
        )
        self._bucket_ready = False

    def key(self, project: str, path: str) -> str:
        return "/".join(part for part in (self.prefix, project, path) if part)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def write(self, key: str, source: Readable, content_type: str, size: int) -> None:
        """size is the expected size, or 0 when unknown; it only picks the part size.

        length=-1: the SDK reads part after part, and an error raised by source (a
        checksum mismatch, a client gone) aborts the multipart upload.
        """
        self._ensure_bucket()
        self.client.put_object(
            self.bucket,
            key,
            source,  # type: ignore[arg-type]
            length=-1,
            part_size=_part_size(size),
            content_type=content_type,
            # One part in flight: memory stays near two parts whatever the object's size.
            num_parallel_uploads=1,
        )

    def _ensure_bucket(self) -> None:
        """Creates the bucket on the first write if it is missing (a fresh MinIO, say).
        Credentials that may not create buckets still work with an existing one."""
        if not self._bucket_ready:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
            self._bucket_ready = True

    def read(self, key: str, offset: int, length: int) -> Generator[bytes, None, None]:
        response = self.client.get_object(self.bucket, key, offset=offset, length=length)
        try:
            yield from response.stream(CHUNK)
        finally:
            response.close()
            response.release_conn()

    def delete(self, keys: list[str]) -> None:
        from minio.deleteobjects import DeleteObject

        for start in range(0, len(keys), 1000):
            errors = self.client.remove_objects(
                self.bucket, [DeleteObject(k) for k in keys[start : start + 1000]]
            )
            for error in errors:
                raise RuntimeError(f"could not delete {error.name}: {error.message}")

    def presign(self, key: str, method: str, expires: timedelta, content_type: str) -> str:
        if method == "PUT":
            return str(self.client.presigned_put_object(self.bucket, key, expires=expires))
        return str(self.client.presigned_get_object(self.bucket, key, expires=expires))

    def hash_and_size(self, key: str) -> tuple[str, int] | None:
        """Reads an object through once to learn its sha256; None when it is absent."""
        import hashlib

        digest, size = hashlib.sha256(), 0
        try:
            for chunk in self.read(key, 0, 0):
                digest.update(chunk)
                size += len(chunk)
        except S3Error as error:
            if error.code == "NoSuchKey":
                return None
            raise
        return digest.hexdigest(), size


def _part_size(size: int) -> int:
    """The smallest part (so the least memory) that keeps the part count under the limit."""
    if not size:
        return S3_UNKNOWN_SIZE_PART
    needed = -(-size // S3_MAX_PARTS)
    return max(S3_MIN_PART, -(-needed // MIB) * MIB)
