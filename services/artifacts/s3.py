"""The S3 backend: each key is an object in a bucket, under an optional prefix."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar
from xml.etree import ElementTree

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.datatypes import CompleteMultipartUploadResult, Part
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error
from minio.helpers import DictType, ObjectWriteResult
from urllib3.exceptions import HTTPError
from urllib3.util import Retry, Timeout

from ..common.config import Config
from ..common.errors import Unavailable
from .blobs import CHUNK, KEY_ROOT, MissingBytes, Readable, RefusedParts, Unfinished

MIB = 1024 * 1024
S3_MIN_PART = 5 * MIB  # S3's smallest part
S3_MAX_PARTS = 9_000  # below S3's limit of 10,000 parts, with room to spare
S3_UNKNOWN_SIZE_PART = 8 * MIB  # when the size is not known: objects up to ~70 GiB
# The largest part a streamed upload holds (a whole part is in memory before it is
# sent, filled as the bytes arrive): a size a client announces may ask for no more.
# So an object streamed through the service is at most S3_MAX_PARTS of these
# (~281 GiB); larger ones go by direct transfer, their parts sent by the client to
# the store.
S3_MAX_STREAMED_PART = 32 * MIB
MAX_STREAMED_BYTES = S3_MAX_PARTS * S3_MAX_STREAMED_PART
_ABSENT = frozenset({"NoSuchKey", "NoSuchObject"})
# What S3 answers a completion whose parts are not the ones uploaded, or too small.
_BAD_PARTS = frozenset({"InvalidPart", "InvalidPartOrder", "EntityTooSmall", "MalformedXML"})


class NoResult(Exception):
    """The store answered a write OK without its result, and the object is not there:
    S3 may answer a multipart completion 200 with an <Error> body, which the SDK reads
    as a success without an ETag. (A store that leaves out a single PUT's ETag header
    but holds the object has written it.)"""


# What the store, or the way to it, fails with (the minio SDK's errors, urllib3's,
# sockets', an answer that is no XML or no result): an outage, not a verdict on what
# was sent.
_STORE_FAILURES = (MinioException, HTTPError, OSError, ElementTree.ParseError, NoResult)
# A store that does not take a connection within this is out of reach (a store that
# answers takes one in milliseconds); CAIRN_S3_TIMEOUT_SECONDS when that is shorter.
CONNECT_SECONDS = 5.0
_P = ParamSpec("_P")
_T = TypeVar("_T")


def unavailable(error: Exception) -> Unavailable:
    """The one error a failure of the store becomes, whichever call met it: nothing
    was decided about what was being moved, and the call may be made again."""
    detail = (error.code if isinstance(error, S3Error) else None) or type(error).__name__
    return Unavailable(
        "OBJECT_STORE_UNAVAILABLE",
        f"the object store failed ({detail}); call again",
        metadata={"error": detail},
    )


def _answered_another_size(reported: int, read: int) -> Unavailable:
    """A read of an object that brought more or fewer bytes than the store's own
    metadata gives it: nothing is known of the object, and reading it again may agree."""
    more = f"more than {reported}" if read > reported else f"{read} of {reported}"
    return Unavailable(
        "OBJECT_STORE_UNAVAILABLE",
        f"the object store sent {more} bytes of an object it holds {reported} of; call again",
        metadata={"error": "SizeDisagreed", "size": str(reported)},
    )


def _in_store(method: Callable[_P, _T]) -> Callable[_P, _T]:
    @functools.wraps(method)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return method(*args, **kwargs)
        except _STORE_FAILURES as error:
            raise unavailable(error) from error
        except ValueError as error:
            if not _raised_by_the_sdk(error):
                raise
            raise unavailable(error) from error  # an answer without what it must hold

    return call


def _raised_by_the_sdk(error: BaseException) -> bool:
    """Whether the SDK raised error itself: it raises ValueError for an answer that lacks
    an element it must hold ("XML element <ETag> not found"); one raised elsewhere (by a
    source being read) is no answer of the store's."""
    trace = error.__traceback__
    while trace is not None and trace.tb_next is not None:
        trace = trace.tb_next
    return trace is not None and trace.tb_frame.f_globals.get("__name__", "").startswith("minio.")


class S3Backend:
    """Objects in a bucket through the minio SDK; a multipart upload completes only at
    the end, so an interrupted write leaves no object, only an unfinished upload."""

    supports_presign = True

    def __init__(self, config: Config) -> None:
        self.bucket = config.s3_bucket
        self.prefix = config.s3_prefix.strip("/")
        self._http = _bounded_http(config.s3_timeout_seconds)
        self.client = Minio(
            config.s3_endpoint,
            access_key=config.s3_access_key or None,
            secret_key=config.s3_secret_key or None,
            secure=config.s3_secure,
            region=config.s3_region or None,
            http_client=self._http,
        )
        self._config = config
        self._signer: Minio | None = None
        self._bucket_ready = False

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._name(key)}"

    def write_limit(self, size: int) -> int:
        return S3_MAX_PARTS * _part_size(size)

    def streamed_part(self, size: int) -> int:
        """The part a streamed upload that announced size (0: unknown) holds: no larger
        than what it announced, the most it may send."""
        part = _part_size(size)
        return min(part, size) if size else part

    @_in_store
    def write(self, key: str, source: Readable, content_type: str, size: int) -> None:
        """Sends source a part at a time from one buffer, each part once it is full (see
        `PartBuffer`): a single PUT when the first part holds it all. An error raised by
        source (a checksum mismatch, a client gone) aborts the multipart upload."""
        self._ensure_bucket()
        headers: DictType = {"Content-Type": content_type or "application/octet-stream"}
        parts = PartBuffer(source, self.streamed_part(size))
        first = parts.fill()
        written: ObjectWriteResult | CompleteMultipartUploadResult
        if len(first) < parts.size or parts.ended():
            name = self._name(key)
            written = self.client._put_object(self.bucket, name, first, headers)  # type: ignore[arg-type]
        else:
            written = self._write_parts(key, headers, parts, first)
        if not (written.etag or self._holds(key)):
            raise NoResult(key)

    @_in_store
    def put(self, key: str, content: bytes, content_type: str) -> None:
        """One PUT of content: `write` of an empty source would hold a part of the size an
        unknown size takes (8 MiB) to send nothing."""
        self._ensure_bucket()
        headers: DictType = {"Content-Type": content_type or "application/octet-stream"}
        written = self.client._put_object(self.bucket, self._name(key), content, headers)
        if not (written.etag or self._holds(key)):
            raise NoResult(key)

    def _write_parts(
        self, key: str, headers: DictType, parts: PartBuffer, first: memoryview
    ) -> CompleteMultipartUploadResult:
        """A multipart upload of first and the parts after it, one in flight at a time.
        Not the SDK's put_object: it copies each part twice as it reads it, and holds
        about three times the part size at once."""
        name = self._name(key)
        write_id = self.client._create_multipart_upload(self.bucket, name, headers)
        try:
            etags: list[str] = []
            part = first
            while part:
                etags.append(self._upload_part(name, write_id, len(etags) + 1, part))
                part = parts.fill()
            numbered = [Part(number, etag) for number, etag in enumerate(etags, 1)]
            return self.client._complete_multipart_upload(self.bucket, name, write_id, numbered)
        except BaseException:
            with contextlib.suppress(*_STORE_FAILURES):  # the janitor aborts it later
                self.client._abort_multipart_upload(self.bucket, name, write_id)
            raise

    def _upload_part(self, name: str, write_id: str, number: int, part: memoryview) -> str:
        """urllib3 sends a bytes-like body as it is (socket.sendall), not a copy."""
        return self.client._upload_part(
            bucket_name=self.bucket,
            object_name=name,
            data=part,  # type: ignore[arg-type]
            headers=None,
            upload_id=write_id,
            part_number=number,
        )

    def _ensure_bucket(self) -> None:
        """Creates the bucket on the first write if it is missing (a fresh MinIO, say).
        Credentials that may not create buckets still work with an existing one."""
        if not self._bucket_ready:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
            self._bucket_ready = True

    @_in_store
    def open(self, key: str, offset: int, length: int) -> Generator[bytes, None, None]:
        try:
            response = self.client.get_object(
                self.bucket, self._name(key), offset=offset, length=length
            )
        except S3Error as error:
            # InvalidRange: the range the service checked against the object's recorded
            # size starts past the end of the bytes stored, which are fewer.
            if error.code in _ABSENT or error.code == "InvalidRange":
                raise MissingBytes(key) from None
            raise
        return _chunks(response)

    @_in_store
    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [DeleteObject(self._name(k)) for k in keys[start : start + 1000]]
            for error in self.client.remove_objects(self.bucket, batch):
                if error.code not in _ABSENT:
                    raise RuntimeError(f"could not delete {error.name}: {error.message}")

    @_in_store
    def copy(self, source: str, target: str) -> str:
        try:
            self.client.copy_object(
                self.bucket, self._name(target), CopySource(self.bucket, self._name(source))
            )
        except S3Error as error:
            if error.code in _ABSENT:
                raise MissingBytes(source) from None
            raise
        # Read from the copy: the source may be written again meanwhile.
        return self.client.stat_object(self.bucket, self._name(target)).content_type or ""

    @_in_store
    def presign(
        self, key: str, method: str, expires: timedelta, query: DictType | None = None
    ) -> str:
        """A URL for clients: signed for CAIRN_S3_PUBLIC_ENDPOINT, the store's address
        as they reach it."""
        return str(
            self._public().get_presigned_url(
                method, self.bucket, self._name(key), expires=expires, extra_query_params=query
            )
        )

    def _public(self) -> Minio:
        """A client that only signs, for the address clients reach the store at. Its
        region is set, so signing makes no call (that address may not be reachable from
        the service); when none is configured, it is the bucket's, asked once here."""
        if self._signer is None:
            config = self._config
            self._signer = Minio(
                config.s3_public_endpoint or config.s3_endpoint,
                access_key=config.s3_access_key or None,
                secret_key=config.s3_secret_key or None,
                secure=config.s3_secure,
                region=config.s3_region or self.client._get_region(self.bucket),
                http_client=self._http,
            )
        return self._signer

    @_in_store
    def begin_parts(self, key: str, content_type: str) -> str:
        """Begins a multipart upload whose parts clients PUT through presigned URLs;
        returns its id. Nothing is at the key until `complete_parts`."""
        self._ensure_bucket()
        headers: DictType = {"Content-Type": content_type}
        return self.client._create_multipart_upload(self.bucket, self._name(key), headers)

    def presign_parts(self, key: str, write_id: str, count: int, expires: timedelta) -> list[str]:
        return [
            self.presign(key, "PUT", expires, {"uploadId": write_id, "partNumber": str(number)})
            for number in range(1, count + 1)
        ]

    @_in_store
    def complete_parts(self, key: str, write_id: str, etags: list[str]) -> None:
        """Completes a multipart upload with its parts, in order. After this no part URL
        can change the object. A completion repeated after one that succeeded (its
        answer lost) finds the object in place, and is done.

        Raises:
            RefusedParts: the ETags are not those of the uploaded parts, or a part but
                the last is under 5 MiB.
            MissingBytes: the multipart upload is neither pending nor complete.
        """
        parts = [Part(number, etag) for number, etag in enumerate(etags, 1)]
        try:
            completed = self.client._complete_multipart_upload(
                self.bucket, self._name(key), write_id, parts
            )
        except S3Error as error:
            if error.code == "NoSuchUpload":
                if self._holds(key):
                    return
                # Not a verdict on the parts: another completion may still be joining
                # them, or the upload ended (expired, discarded).
                raise MissingBytes(key) from None
            if error.code in _BAD_PARTS:
                raise RefusedParts(f"{error.code}: {error.message}") from None
            raise
        if not (completed.etag or self._holds(key)):
            raise NoResult(key)

    @_in_store
    def size(self, key: str) -> int:
        """The size of the object at key, from its metadata (no byte is read)."""
        try:
            return int(self.client.stat_object(self.bucket, self._name(key)).size or 0)
        except S3Error as error:
            if error.code in _ABSENT:
                raise MissingBytes(key) from None
            raise

    def _holds(self, key: str) -> bool:
        try:
            self.client.stat_object(self.bucket, self._name(key))
        except S3Error as error:
            if error.code in _ABSENT:
                return False
            raise
        return True

    @_in_store
    def digest(self, key: str) -> tuple[str, int]:
        """Hashes each chunk in a thread of its own while this one reads the next (both
        release the GIL), so the read-back costs the slower of the two. The reads stay
        in this thread, a daemon thread (threads.py): the process does not wait at exit
        for one that a silent store holds, as it would for a pool's.

        The read stops once it passes the object's size as the store reports it (a
        HEAD first, milliseconds): a store that answered with more, or without end,
        would keep a completion reading past any deadline.

        Raises:
            Unavailable: the store answered another number of bytes than the size it
                reported; its fault, not the upload's.
        """
        expected_size = self.size(key)
        digest, size = hashlib.sha256(), 0
        chunks = self.open(key, 0, 0)
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="cairn-digest") as hasher:
                hashed: Future[None] | None = None
                for chunk in chunks:
                    if hashed is not None:
                        hashed.result()
                    hashed = hasher.submit(digest.update, chunk)
                    size += len(chunk)
                    if size > expected_size:
                        break
                if hashed is not None:
                    hashed.result()
        finally:
            chunks.close()
        if size != expected_size:
            raise _answered_another_size(expected_size, size)
        return digest.hexdigest(), size

    def scan(self) -> Iterator[tuple[str, datetime]]:
        """Only the keys new uploads are written under: a bucket may hold more."""
        root = self._name(KEY_ROOT) + "/"
        start = len(self._name(""))
        with _empty_while_no_bucket():
            for found in self.client.list_objects(self.bucket, prefix=root, recursive=True):
                if found.object_name and found.last_modified:
                    yield found.object_name[start:], found.last_modified

    def unfinished(self) -> list[Unfinished]:
        """Every multipart upload under the prefix, Cairn's or left by older versions."""
        start = len(self._name(""))
        return [
            Unfinished(u.object_name[start:], u.upload_id, u.initiated_time)
            for u in self._multipart_uploads()
            if u.object_name and u.upload_id and u.initiated_time
        ]

    def abort(self, write: Unfinished) -> None:
        try:
            self.client._abort_multipart_upload(self.bucket, self._name(write.key), write.write_id)
        except S3Error as error:
            if error.code != "NoSuchUpload":
                raise

    def prune(self, before: datetime) -> int:
        return 0  # an object store has no folders

    def _multipart_uploads(self) -> Iterator[Any]:
        key_marker = upload_id_marker = None
        with _empty_while_no_bucket():
            while True:
                page = self.client._list_multipart_uploads(
                    self.bucket,
                    prefix=self._name(""),
                    key_marker=key_marker,
                    upload_id_marker=upload_id_marker,
                )
                yield from page.uploads
                if not page.is_truncated:
                    return
                key_marker, upload_id_marker = page.next_key_marker, page.next_upload_id_marker

    def _name(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key


def _bounded_http(timeout: float) -> urllib3.PoolManager:
    """The connections to the store, as the SDK makes them (TLS verified against
    SSL_CERT_FILE or certifi's roots, ten kept per host), but bounded: the SDK's own wait
    five minutes for each read and try a request six times, so a store that accepts
    connections and never answers held a call for up to half an hour. A read that times
    out is not tried again (the store had the request; waiting once more would only
    double the bound); a refused connection and a 5xx answer are, twice (at once, then
    after 0.4 s). The client's channel tries the whole call again (UNAVAILABLE)."""
    return urllib3.PoolManager(
        timeout=Timeout(connect=min(CONNECT_SECONDS, timeout), read=timeout),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=Retry(total=2, read=0, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
    )


@contextmanager
def _empty_while_no_bucket() -> Iterator[None]:
    """A listing of a bucket not made yet ends empty: the first write makes it, so on a
    fresh deployment the janitor finds nothing to do rather than an error."""
    try:
        yield
    except S3Error as error:
        if error.code != "NoSuchBucket":
            raise


def _chunks(response: Any) -> Generator[bytes, None, None]:
    try:
        yield from response.stream(CHUNK)
    except _STORE_FAILURES as error:
        raise unavailable(error) from error
    finally:
        response.close()
        response.release_conn()


def _part_size(size: int) -> int:
    """The smallest part (so the least memory) that keeps the part count under the limit,
    and at most S3_MAX_STREAMED_PART: an announced size is only a client's word."""
    if not size:
        return S3_UNKNOWN_SIZE_PART
    needed = -(-size // S3_MAX_PARTS)
    return min(S3_MAX_STREAMED_PART, max(S3_MIN_PART, -(-needed // MIB) * MIB))


class PartBuffer:
    """An upload's bytes, a part at a time, in one buffer that every part reuses: the
    part size and a chunk (CHUNK) read ahead of the first part, at most, and no copy but
    the one each read's bytes make into the buffer."""

    def __init__(self, source: Readable, size: int) -> None:
        self.size = size
        self._source = source
        self._buffer = memoryview(bytearray(size))
        self._ahead = b""  # read past a full first part: the start of the second

    def fill(self) -> memoryview:
        """The next part: full, but at the end (empty there). Valid until the next call,
        which fills the same buffer."""
        filled = len(self._ahead)
        self._buffer[:filled] = self._ahead
        self._ahead = b""
        while filled < self.size:
            # At most a chunk a read: a reader may hand back whole what it was asked for.
            data = self._source.read(min(CHUNK, self.size - filled))
            if not data:
                break
            self._buffer[filled : filled + len(data)] = data
            filled += len(data)
        return self._buffer[:filled]

    def ended(self) -> bool:
        """Whether source ended with a full part: it reads ahead to know (a single PUT
        then, no multipart upload)."""
        self._ahead = self._source.read(CHUNK)
        return not self._ahead
