"""Direct transfer on the S3 backend (docs/artifacts.md): clients move the bytes to and
from the object store through presigned URLs, and the service only signs and publishes.

An upload is an S3 multipart upload under a fresh key, recorded in `artifacts.uploads`
like any other before its URLs exist (so the janitor finds it if it is never finished).
The client PUTs the parts, then `complete` finishes the multipart upload (after which
no part URL can change the object), reads the object back, and publishes it only when
its size and sha256 are the ones the client claimed: the sha256 recorded is that of the
bytes in the store, computed here. Everything a completion needs is in the database and
the store, not in the process: any replica can complete an upload another began.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from cairn.artifacts.v1 import artifacts_service_pb2 as api

from ..common import access, validation
from ..common.config import Config
from ..common.errors import (
    Aborted,
    AlreadyExists,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    invalid_field,
)
from ..common.idempotency import RequestId
from . import backends, threads
from .blobs import MissingBytes, RefusedParts, Unfinished
from .completions import Caller, Completions
from .janitor import Janitor
from .leases import CompletionLeases, CompletionSlots
from .objects import StoredObject
from .s3 import MIB, S3Backend
from .store import ObjectStore
from .streams import verify
from .uploads import PendingUpload, being_completed, upload_expired

# Parts of 16 MiB unless the object needs larger ones to keep within MAX_PARTS.
PART_SIZE = 16 * MIB
# Within S3's 10,000, and few enough that the answer's URLs (about 600 bytes each) stay
# near 1 MB; 2,000 parts of at most 2.6 GiB cover the largest object, 5 TiB. Fewer when
# the URLs would not fit in one of the server's messages (PARTS_RESERVE beside them).
MAX_PARTS = 2000
PARTS_RESERVE = 64 * 1024
S3_MAX_PART = 5 * 1024 * MIB
# The longest part number S3 takes: its URL is the longest of an upload's.
_LONGEST_PART_NUMBER = "10000"
# A URL lives long enough to start its last part (or range) at this rate, and at least
# MIN_URL_SECONDS; never longer than CAIRN_PRESIGN_MAX_SECONDS, nor than the key that
# asked for it.
SLOWEST_BYTES_PER_SECOND = MIB
MIN_URL_SECONDS = 300
# Failures that judge what was sent: the upload is spent (anything else, an outage or
# a timeout, or another completion holding the upload, leaves it to be completed again).
_VERDICTS = (DataLoss, InvalidArgument, AlreadyExists, FailedPrecondition, Aborted)
_NO_VERDICT = "UPLOAD_BEING_COMPLETED"
_T = TypeVar("_T")


class PresignedTransfers:
    def __init__(
        self,
        config: Config,
        backend: backends.Backend,
        objects: ObjectStore,
        leases: CompletionLeases,
        janitor: Janitor,
        completions: Completions,
    ) -> None:
        on = config.artifact_direct and isinstance(backend, S3Backend)
        self._s3 = backend if on and isinstance(backend, S3Backend) else None
        self._max_seconds = config.presign_max_seconds
        self._urls_bytes = config.max_message_bytes - PARTS_RESERVE
        self._objects = objects
        self._leases = leases
        self.slots = CompletionSlots(config.artifact_max_completions)
        self._janitor = janitor
        self._completions = completions

    def offered(self, accepted: bool) -> bool:
        """Whether this transfer goes through presigned URLs: the client can take them
        and the server offers them (S3 backend, CAIRN_ARTIFACT_DIRECT)."""
        return accepted and self._s3 is not None

    def _store(self) -> S3Backend:
        if self._s3 is None:
            raise FailedPrecondition(
                "DIRECT_TRANSFER_UNAVAILABLE",
                "this server offers no presigned direct transfer (S3 backend and "
                "CAIRN_ARTIFACT_DIRECT only); upload through Upload",
            )
        return self._s3

    def lifetime(self, size: int) -> timedelta:
        """How long the URLs of an object of size bytes work, for the call being
        handled: never past its key's expiry, however slow the transfer may be."""
        seconds = max(MIN_URL_SECONDS, size // SLOWEST_BYTES_PER_SECOND)
        return access.within_key(timedelta(seconds=min(seconds, self._max_seconds)))

    async def begin(
        self,
        project: str,
        path: str,
        overwrite: bool,
        content_type: str,
        size: int,
        sha256: str,
    ) -> api.PresignedParts:
        """Records an upload, with the size and sha256 (when given) its completion is
        held to, and begins its multipart upload; the URLs of its parts."""
        store = self._store()
        if not size:
            raise invalid_field("header.expected_size", "needed to upload in presigned parts")
        expires = self.lifetime(size)
        upload = await self._objects.begin(
            project,
            path,
            overwrite,
            content_type,
            url_expires=expires,
            expected_size=size,
            expected_sha256=sha256,
        )
        try:
            upload, part_size = await self._begin_parts(store, upload, size, expires)
            urls = await threads.in_store(
                store.presign_parts,
                upload.storage_key,
                _write_id(upload),
                -(-size // part_size),
                access.within_key(expires),  # again: the key's time ran on meanwhile
            )
        except BaseException:
            await self._spend(upload)
            raise
        return api.PresignedParts(upload=upload.upload_id.hex, part_size=part_size, part_urls=urls)

    async def _begin_parts(
        self, store: S3Backend, upload: PendingUpload, size: int, expires: timedelta
    ) -> tuple[PendingUpload, int]:
        """Begins the upload's multipart upload and records its id, and the size of its
        parts, on the upload: as many parts as their URLs fit in one answer."""
        write_id = await threads.in_store(
            store.begin_parts, upload.storage_key, upload.content_type
        )
        try:
            longest = await threads.in_store(
                store.presign,
                upload.storage_key,
                "PUT",
                expires,
                {"uploadId": write_id, "partNumber": _LONGEST_PART_NUMBER},
            )
            held = self._urls_bytes // (len(longest) + 6)  # each with its tag and length
            part_size = _part_size(size, min(MAX_PARTS, held))
            return await self._objects.record_parts(upload, write_id, part_size), part_size
        except BaseException:
            with contextlib.suppress(Exception):
                await threads.in_store(store.abort, _unfinished(upload.storage_key, write_id))
            raise

    async def _spend(self, upload: PendingUpload, lease: uuid.UUID | None = None) -> None:
        """Gives up an upload: its row and bytes, and its multipart upload's parts now
        rather than after the janitor's threshold. With a lease, only while that lease
        holds the upload: a completion whose lease lapsed leaves the upload, and its
        parts, to the lease's new holder. When the database cannot say whether the row
        went, nothing is removed here: the janitor decides later."""
        try:
            garbage = await self._objects.abandon(upload, lease)
        except Exception:
            return
        if garbage:  # the row went here, not in another call
            await self._janitor.collect(garbage)
            await self._abort_parts(upload)

    async def complete(
        self,
        project: str,
        path: str,
        request: api.CompleteUploadTicketRequest,
        sha256: str,
        request_id: RequestId | None,
    ) -> StoredObject:
        """Completes, checks and publishes an upload begun by `begin`; sha256 is the
        request's, checked and lowercased.

        Raises:
            NotFound: no such upload is waiting (UPLOAD_NOT_FOUND).
            ResourceExhausted: this process ran as many completions as it may
                throughout `leases.SLOT_WAIT` (COMPLETIONS_BUSY); nothing was done.
            Aborted: another call is completing the upload, or the store ended its
                multipart upload without an object, or another completion took this
                one's lease over after it lapsed (UPLOAD_BEING_COMPLETED; the upload
                is left as it is), or it is gone (UPLOAD_EXPIRED: it expired, or
                another completion took it over after this one's lease lapsed).
            Unavailable: the server is stopping (SHUTTING_DOWN): nothing was done, or
                the completion was cut at the end of the grace period, the upload left
                as it is; or the store failed, or read back another size than it
                reported (OBJECT_STORE_UNAVAILABLE), the upload left as it is.
            InvalidArgument: the ETags are not the parts', or the size or sha256 claimed
                is not the one announced, or the store holds another size.
            DataLoss: the sha256 of what the store holds differs (CHECKSUM_MISMATCH).
        """
        store = self._store()
        upload_id = upload_of(request.upload)
        if not 1 <= len(request.etags) <= MAX_PARTS:
            raise invalid_field("etags", f"one per part, 1 to {MAX_PARTS}")
        if not sha256 or request.size <= 0:
            field = "sha256" if not sha256 else "size"
            raise invalid_field(field, "required: the object is checked against it")
        # The read-back's thread cannot be stopped: a completion whose caller left
        # (its deadline passed) runs to its end, holding its slot and its lease until
        # then, so the cap counts every read-back under way and a repeat of the call
        # waits for the object rather than reading it back a second time.
        return await self._completions.run(
            lambda caller: self._completion(
                store, project, path, upload_id, request, sha256, request_id, caller
            )
        )

    async def _completion(
        self,
        store: S3Backend,
        project: str,
        path: str,
        upload_id: uuid.UUID,
        request: api.CompleteUploadTicketRequest,
        sha256: str,
        request_id: RequestId | None,
        caller: Caller,
    ) -> StoredObject:
        async with (
            self.slots.taken(),
            self._leases.holding(project, path, upload_id) as held,
        ):
            upload = held.upload
            _check_claim(upload, request.size, sha256, len(request.etags))
            try:
                await threads.in_store(_complete, store, upload, list(request.etags))
                found, size = await self._read_back(store, upload, request.size)
                verify(size, found, request.size, sha256)
                await access.admit_again()  # its caller's key or role may be gone since
                held.publishing.set()
                stored, replaced = await self._objects.publish(
                    upload,
                    request.size,
                    found,
                    upload.content_type,
                    request_id=request_id,
                    lease=held.token,
                )
            except MissingBytes:
                # Not a verdict on the claim: the upload is left as it is.
                raise await self._ended(upload) from None
            except BaseException as error:
                # A verdict spends the upload only for a caller still there to hear
                # it: once it left, the upload is left to its repeat, which judges
                # it again and hears the verdict (the janitor discards an upload
                # whose repeat never comes).
                if _is_verdict(error) and caller.waiting:
                    await self._spend(upload, held.token)
                raise
        await self._janitor.collect([replaced] if replaced else [])
        return stored

    async def abort(self, project: str, path: str, upload: str) -> None:
        """Gives up an upload of parts no completion holds: its row goes, its key's
        bytes are collected and its multipart upload is aborted with its parts. An
        upload that is not waiting (given up, published, expired, never begun) is left
        as it is: nothing of it remains to give up. What the store fails to remove
        now, the janitor removes later: the upload is spent once its row is gone.

        Raises:
            Aborted: a completion holds the upload (UPLOAD_BEING_COMPLETED).
        """
        self._store()
        spent = await self._leases.withdraw(project, path, upload_of(upload))
        if spent is not None:
            await self._janitor.collect([spent.storage_key])
            await self._abort_parts(spent)

    async def _abort_parts(self, upload: PendingUpload) -> None:
        """Aborts the upload's multipart upload now rather than after the janitor's
        threshold; a failure is left to the janitor."""
        if self._s3 is not None and upload.multipart_id:
            with contextlib.suppress(Exception):
                await threads.in_store(
                    self._s3.abort, _unfinished(upload.storage_key, upload.multipart_id)
                )

    async def _ended(self, upload: PendingUpload) -> Aborted:
        """What a completion answers when the store has neither the upload's multipart
        upload nor its object: UPLOAD_EXPIRED once its row is gone, else call again."""
        try:
            await self._objects.upload(upload.project, upload.path, upload.upload_id, "parts")
        except NotFound:
            return upload_expired(upload)
        return being_completed(upload.upload_id, "the store holds no multipart upload for it")

    async def _read_back(
        self, store: S3Backend, upload: PendingUpload, size: int
    ) -> tuple[str, int]:
        """The sha256 and size of the object the store completed, read once its size
        is size (a part URL takes up to 5 GiB: checked before any byte is read), and
        read no further than that size.

        Raises:
            InvalidArgument: the object has another size.
            MissingBytes: the object is gone (it expired, say).
            Unavailable: the read brought another size than the store reported
                (OBJECT_STORE_UNAVAILABLE): no verdict, the upload is left as it is.
        """
        verify(await threads.in_store(store.size, upload.storage_key), "", size, "")
        return await threads.in_store(store.digest, upload.storage_key)

    async def download_url(self, stored: StoredObject) -> str:
        store = self._store()
        expires = self.lifetime(stored.size)
        return await threads.in_store(store.presign, stored.storage_key, "GET", expires)


def _is_verdict(error: BaseException) -> bool:
    return isinstance(error, _VERDICTS) and error.reason != _NO_VERDICT


def _part_size(size: int, most_parts: int = MAX_PARTS) -> int:
    """The least part size, of whole MiB, PART_SIZE at least, that cuts size into at
    most most_parts parts.

    Raises:
        FailedPrecondition: DIRECT_TRANSFER_UNAVAILABLE, when that takes parts larger
            than S3's: the URLs of fewer parts would not fit in one of the server's
            messages (the client then streams the object).
    """
    needed = -(-size // max(most_parts, 1))
    part_size = max(PART_SIZE, -(-needed // MIB) * MIB)
    if part_size > S3_MAX_PART:
        raise FailedPrecondition(
            "DIRECT_TRANSFER_UNAVAILABLE",
            f"the object would need parts larger than S3 takes ({S3_MAX_PART} bytes) for "
            "their URLs to fit in one message; raise CAIRN_MAX_MESSAGE_BYTES, or upload "
            "through Upload",
        )
    return part_size


def _complete(store: S3Backend, upload: PendingUpload, etags: list[str]) -> None:
    """Completes the upload's multipart upload, the one recorded when it began."""
    try:
        store.complete_parts(upload.storage_key, _write_id(upload), etags)
    except RefusedParts as error:
        raise invalid_field("etags", f"the store refused the parts: {error}") from None


def _check_claim(upload: PendingUpload, size: int, sha256: str, parts: int) -> None:
    """Holds a completion to what its upload announced when it began."""
    if size != upload.expected_size:
        raise invalid_field(
            "size", f"the upload announced {upload.expected_size} bytes (header.expected_size)"
        )
    if upload.expected_sha256 and sha256 != upload.expected_sha256:
        raise invalid_field("sha256", "differs from the upload's header.expected_sha256")
    # The part size recorded when the URLs were made, whatever PART_SIZE is now.
    if not upload.part_size or parts != -(-size // upload.part_size):
        raise invalid_field("etags", "one per part URL the upload was given")


def _write_id(upload: PendingUpload) -> str:
    if upload.multipart_id is None:
        raise ValueError(f"upload {upload.upload_id} has no multipart upload")
    return upload.multipart_id


def _unfinished(key: str, write_id: str) -> Unfinished:
    return Unfinished(key, write_id, datetime.now(UTC))


def upload_of(value: str) -> uuid.UUID:
    """The upload's id, as `begin` answered it."""
    return validation.uuid_field(value, "upload", "the upload CreateUploadTicket answered")
