"""The single presigned URLs of CreatePresignedUrl, and ConfirmUpload, which publishes
what a client PUT through one: how long a URL works, and the confirmation's read-back of
the bytes, sealed under a key no URL names and checked there. Apart from `presigned.py`,
whose uploads go in parts under a ticket and are completed by CompleteUploadTicket,
and from the servicer, which answers the calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.duration_pb2 import Duration

from ..common import access, validation
from ..common.errors import (
    AlreadyExists,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    invalid_field,
)
from ..common.idempotency import RequestId
from . import backends, threads
from .completions import Caller
from .leases import CompletionSlots
from .objects import StoredObject
from .store import ObjectStore
from .upload_fields import DEFAULT_CONTENT_TYPE, MAX_CONTENT_TYPE_LENGTH, content_type_field
from .uploads import PendingUpload

DEFAULT_PRESIGN_SECONDS = 3600


class Confirmations:
    """The confirmations of uploads through presigned URLs, each publishing from a
    sealed copy; those reading back in this process are known by upload, for a repeat
    to wait for (ConfirmUpload)."""

    def __init__(
        self,
        backend: backends.Backend,
        objects: ObjectStore,
        slots: CompletionSlots,
        discard: Callable[[PendingUpload], Coroutine[Any, Any, None]],
    ) -> None:
        self._backend = backend
        self._objects = objects
        self._slots = slots
        self._discard = discard
        self._confirming: dict[uuid.UUID, asyncio.Task[Any]] = {}

    def under_way(self, upload_id: uuid.UUID) -> asyncio.Task[Any] | None:
        """The confirmation of the upload reading back in this process, if any."""
        return self._confirming.get(upload_id)

    async def confirm(
        self,
        upload: PendingUpload,
        expected: str,
        request_id: RequestId | None,
        caller: Caller,
    ) -> tuple[StoredObject, str | None]:
        """The confirmed upload published from a sealed copy, and the key it replaced;
        known to repeats as under way until it ends."""
        # Under way once it has its slot: a repeat does not wait out another's wait.
        async with self._slots.taken(), self._under_way(upload.upload_id):
            sealed = await self._objects.begin(
                upload.project, upload.path, upload.overwrite, upload.content_type
            )
            try:
                stored_type = await self._seal(upload, sealed.storage_key)
                sha256, size = await threads.in_store(self._backend.digest, sealed.storage_key)
                _check_put(upload, expected, sha256, stored_type)
                content_type = upload.content_type or stored_type or DEFAULT_CONTENT_TYPE
                await access.admit_again()  # its caller's key or role may be gone since
                return await self._objects.publish(
                    sealed, size, sha256, content_type, consumes=upload, request_id=request_id
                )
            except BaseException as error:
                await self._discard(sealed)
                # A verdict on what was sent spends the URL's upload, for a caller still
                # there to hear it; anything else (nothing sent yet, a timeout, an
                # outage) leaves it to be confirmed again, as does a verdict no one
                # heard (its repeat hears it).
                verdict = isinstance(error, DataLoss | FailedPrecondition | AlreadyExists)
                if verdict and caller.waiting:
                    await self._discard(upload)
                raise

    @contextlib.asynccontextmanager
    async def _under_way(self, upload_id: uuid.UUID) -> AsyncIterator[None]:
        """The current task known as the confirmation of the upload under way, which a
        repeat waits for (ConfirmUpload), until the block ends."""
        running = asyncio.current_task()
        assert running is not None  # a task of Completions.run
        self._confirming[upload_id] = running
        try:
            yield
        finally:
            if self._confirming.get(upload_id) is running:
                del self._confirming[upload_id]

    async def _seal(self, upload: PendingUpload, key: str) -> str:
        try:
            return await threads.in_store(self._backend.copy, upload.storage_key, key)
        except backends.MissingBytes:
            # Gone with its upload (expired, or its directory collected, under this
            # call), the URL is of no use: told as a confirmation after that is.
            await self._objects.upload(upload.project, upload.path, upload.upload_id, kind="put")
            raise NotFound(
                "OBJECT_NOT_FOUND",
                f"nothing was uploaded to {upload.path!r} yet",
                metadata={"path": upload.path},
            ) from None


def presign_expiry(requested: Duration, limit_seconds: int) -> timedelta:
    """How long a presigned URL works, in whole seconds (S3 signs seconds): as asked,
    rounded up, at most the limit and never past the caller's key; 0 means an hour, or
    less: the limit, or what the key has left."""
    if requested.nanos >= 1_000_000_000:  # no Duration: refused as every call refuses it
        raise invalid_field("expires_in", "nanos must be less than one second")
    seconds = requested.seconds + (requested.nanos > 0)
    if requested.seconds < 0 or requested.nanos < 0 or seconds > limit_seconds:
        raise invalid_field(
            "expires_in",
            f"must be positive and at most {limit_seconds} seconds (CAIRN_PRESIGN_MAX_SECONDS)",
        )
    if not seconds:
        return access.within_key(timedelta(seconds=min(DEFAULT_PRESIGN_SECONDS, limit_seconds)))
    _check_within_key(timedelta(seconds=seconds))
    return timedelta(seconds=seconds)


def _check_within_key(lifetime: timedelta) -> None:
    """Refuses a URL asked to work after the caller's key expires: a URL is a credential
    derived from the key, and, as for a key the key creates (API_KEY_OUTLIVES_PARENT), a
    refusal rather than a silent cap, so nobody finds out when the URL stops working."""
    expires = access.key_expire_time()
    if expires is not None and datetime.now(UTC) + lifetime > expires:
        raise invalid_field(
            "expires_in",
            f"a URL cannot outlive the API key that asks for it, which expires at "
            f"{expires.isoformat(timespec='seconds')}: ask for a shorter lifetime, or "
            "use a longer-lived key",
        )


def upload_id_field(value: str) -> uuid.UUID:
    """The upload id a presigned PUT URL was made for, as ConfirmUpload is given it."""
    return validation.uuid_field(value, "upload_id", "the upload_id CreatePresignedUrl returned")


def _check_put(upload: PendingUpload, expected_sha256: str, sha256: str, content_type: str) -> None:
    if expected_sha256 and sha256 != expected_sha256:
        raise DataLoss(
            "CHECKSUM_MISMATCH",
            f"uploaded content has sha256 {sha256}, not {expected_sha256}",
            metadata={"sha256": sha256, "expected_sha256": expected_sha256},
        )
    if upload.content_type and content_type != upload.content_type:
        raise FailedPrecondition(
            "CONTENT_TYPE_MISMATCH",
            f"the upload was sent as {content_type!r}, but its URL was made for "
            f"{upload.content_type!r}",
            metadata={"content_type": content_type, "expected": upload.content_type},
        )
    if not upload.content_type:  # the PUT's own, held to every upload's rule
        try:
            content_type_field(content_type)
        except InvalidArgument:
            raise FailedPrecondition(
                "CONTENT_TYPE_INVALID",
                "the upload was sent with a Content-Type of other than printable ASCII of "
                f"at most {MAX_CONTENT_TYPE_LENGTH} characters; make a URL again and put "
                "the bytes with another, or make it with content_type",
            ) from None


def presign_unsupported() -> FailedPrecondition:
    """The refusal of a presigned URL by a backend that signs none (a filesystem)."""
    return FailedPrecondition(
        "PRESIGN_UNSUPPORTED",
        "presigned URLs need the S3 backend; this server stores files locally",
    )
