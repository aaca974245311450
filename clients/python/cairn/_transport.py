"""The one place a client makes gRPC calls: metadata, timeouts, resends, errors.

Public client methods build a request, hand it with the stub method to `Transport`,
and convert the response; they never see a raw `grpc.aio.AioRpcError`. The channels it
calls on are made in `_channels`, the headers it adds in `_headers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import ssl
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
    Sequence,
)
from typing import Any, TypeVar

import grpc

from ._backoff import backoff
from ._channels import (
    ATTEMPTS,
    CHANNEL_OPTIONS,
    RETRY_BACKOFF_SECONDS,
    LazyChannel,
    RoutedChannel,
    artifacts_host_of,
    new_channel,
    read_pem,
    resent_after,
    tls_context,
)
from ._headers import (
    REQUEST_ID_HEADER,
    Credentials,
    Metadata,
    check_timeout,
    new_request_id,
    token_header,
    with_id,
)
from ._page_tokens import check_token_is_new
from .exceptions import CairnError, ClientClosedError, UnavailableError, from_grpc_error

DEFAULT_TIMEOUT = 30.0
# After a failed write, how long to wait for the call's own status.
ENDING_WAIT_SECONDS = 2.0
DEFAULT_PROJECT = "default"
# Initial metadata of a client stream: the server's verdict on the first message.
STREAM_VERDICT_HEADER = "x-cairn-stream"

Response = TypeVar("Response")
Item = TypeVar("Item")


class Transport:
    """A long-lived channel plus the metadata and timeout every call carries."""

    def __init__(
        self,
        channel: grpc.aio.Channel | LazyChannel | RoutedChannel,
        *,
        project: str = DEFAULT_PROJECT,
        user_token: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        token_style: str = "bearer",
    ) -> None:
        self.channel = channel
        self.project = project
        self.timeout = check_timeout(timeout)
        self._metadata = token_header(user_token, token_style)
        # For the artifact service's byte endpoint (direct transfer): the host its calls
        # dial (None: a target such as dns:///, whose host is not one) and, over TLS,
        # the context that trusts what the channel trusts (None: cannot be built).
        self.artifacts_host: str | None = None
        self.direct_tls: ssl.SSLContext | None = None
        # Whether the channel has TLS: then artifact bytes never move in clear.
        self.tls = False
        # What the clients of this channel share, whatever their project (the writes
        # queued with synchronous=False, which closing the channel waits for).
        self.shared: dict[str, Any] = {}

    @classmethod
    def insecure(
        cls,
        host: str,
        port: int | str | None,
        *,
        service_addresses: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Transport:
        def opener(where: str) -> Callable[[], grpc.aio.Channel]:
            return lambda: grpc.aio.insecure_channel(where, options=CHANNEL_OPTIONS)

        transport = cls(new_channel(opener, False, host, port, service_addresses), **kwargs)
        transport.artifacts_host = artifacts_host_of(host, service_addresses)
        return transport

    @classmethod
    def secure(
        cls,
        host: str,
        port: int | str | None,
        *,
        custom_ca: str | bytes | None = None,
        client_cert: str | bytes | None = None,
        client_key: str | bytes | None = None,
        service_addresses: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Transport:
        # The files are read now, and once: a missing one fails where the client is
        # made, and a pipe (/dev/stdin) has nothing left for a second read.
        roots = read_pem(custom_ca)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=roots,
            private_key=read_pem(client_key),
            certificate_chain=read_pem(client_cert),
        )

        def opener(where: str) -> Callable[[], grpc.aio.Channel]:
            return lambda: grpc.aio.secure_channel(where, credentials, options=CHANNEL_OPTIONS)

        transport = cls(new_channel(opener, True, host, port, service_addresses), **kwargs)
        transport.artifacts_host = artifacts_host_of(host, service_addresses)
        transport.direct_tls = tls_context(roots, client_cert, client_key)
        transport.tls = True
        return transport

    @property
    def credentials(self) -> tuple[Credentials, ...]:
        """The headers presenting the API key ((): none), for what differs by caller: to
        hash, never to show."""
        return self._metadata

    def for_project(self, project: str, *, timeout: float | None) -> Transport:
        """A transport on the same channel and credentials, for another project."""
        derived = Transport(self.channel, project=project, timeout=timeout)
        derived._metadata = self._metadata
        derived.artifacts_host, derived.direct_tls = self.artifacts_host, self.direct_tls
        derived.tls, derived.shared = self.tls, self.shared
        return derived

    async def unary(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> Any:
        """Calls a unary RPC; raises the matching `CairnError` on failure.

        The call carries a fresh request id unless metadata names one (a caller that
        retries on its own, across processes even, sends the same id each time). After
        UNAVAILABLE, CANCELLED or a transaction conflict (resent_after) the same request
        is sent again under the same id, ATTEMPTS times in all, as long as its deadline
        leaves time for the wait before it: the server applies a write once per id, and
        answers a repeat with the first answer, even one whose reply was lost on its way
        back."""
        if metadata is None:  # most calls: no list to copy and search for an id
            headers = (*self._metadata, (REQUEST_ID_HEADER, new_request_id()))
        else:
            headers = self._with(with_id(metadata))
        once = functools.partial(self._unary_once, method, request, headers=headers)
        return await self._sent_again(once, self._timeout(timeout))

    async def _sent_again(
        self, once: Callable[[float | None], Awaitable[Response]], timeout: float | None
    ) -> Response:
        """once(timeout left), run again after it failed (resent_after) until it is run
        ATTEMPTS times in all, each after a wait that must end before the deadline;
        raises the last failure when none is left. Not on a client closed meanwhile:
        its channels answer CANCELLED at once, and each write still queued (a thread
        logging on as the process exits) would wait out every resend."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            return await once(timeout)
        except CairnError as error:
            if not resent_after(error):
                raise
            failed = error
        for wait in itertools.islice(backoff(*RETRY_BACKOFF_SECONDS), ATTEMPTS - 1):
            if self.channel.closed or (deadline is not None and loop.time() + wait >= deadline):
                break
            await asyncio.sleep(wait)
            try:
                return await once(None if deadline is None else deadline - loop.time())
            except CairnError as error:
                if not resent_after(error):
                    raise
                failed = error
        raise failed

    async def _unary_once(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable,
        request: Any,
        timeout: float | None,
        *,
        headers: Metadata,
    ) -> Any:
        try:
            return await method(request, timeout=timeout, metadata=headers)
        except grpc.RpcError as error:
            raise from_grpc_error(error) from None
        except asyncio.CancelledError:
            self._raise_if_closed()
            raise

    async def every_page(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable,
        request: Any,
        items: Callable[[Any], Sequence[Item]],
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> list[Item]:
        """Every item of a list RPC: calls it page after page, from request's page token
        (request is changed), until a reply has no next_page_token; items(reply) are a
        page's."""
        found: list[Item] = []
        sent: set[str] = set()
        while True:
            reply = await self.unary(method, request, timeout=timeout, metadata=metadata)
            found += items(reply)
            if not reply.next_page_token:
                return found
            sent.add(request.page_token)
            check_token_is_new(reply.next_page_token, sent)
            request.page_token = reply.next_page_token

    async def server_stream(
        self,
        method: grpc.aio.UnaryStreamMultiCallable,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> AsyncIterator[Any]:
        """Iterates the responses of a server-streaming RPC. One failing before its first
        message is sent again as a unary call is (`unary`), under the same id: gRPC's
        own retries stop at the answer's headers, and an artifact's first message of
        4 MiB cut midway failed its download. A failure after it is raised: what came
        before was handed on."""
        headers = self._with(with_id(metadata))

        async def opened(left: float | None) -> tuple[Any, AsyncGenerator[Any, None]]:
            stream = self._stream_once(method, request, left, headers)
            return await anext(stream, None), stream

        first, stream = await self._sent_again(opened, self._timeout(timeout))
        async with contextlib.aclosing(stream):
            if first is not None:
                yield first
                async for response in stream:
                    yield response

    async def every_response(
        self,
        method: grpc.aio.UnaryStreamMultiCallable,
        request: Any,
        converted: Callable[[Any], Item],
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> list[Item]:
        """Every response of a server-streaming read, each converted as it arrives (the
        messages are not held beside what they convert to). A stream that fails
        (resent_after: a connection dropped, a server stopping or refusing) is read again
        from its start as a unary call is sent again (`unary`), wherever it was cut: what
        it answered before is dropped, so the answer is one reading."""
        headers = self._with(with_id(metadata))

        async def once(left: float | None) -> list[Item]:
            return [converted(r) async for r in self._stream_once(method, request, left, headers)]

        return await self._sent_again(once, self._timeout(timeout))

    async def _stream_once(
        self,
        method: grpc.aio.UnaryStreamMultiCallable,
        request: Any,
        timeout: float | None,
        headers: Metadata,
    ) -> AsyncGenerator[Any, None]:
        call = method(request, timeout=timeout, metadata=headers)
        try:
            async for response in call:
                yield response
        except grpc.RpcError as error:
            raise from_grpc_error(error) from None
        except asyncio.CancelledError:
            self._raise_if_closed()
            raise
        finally:
            call.cancel()

    async def client_stream(
        self,
        method: grpc.aio.StreamUnaryMultiCallable,
        requests: AsyncIterable[Any],
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> Any:
        """Sends a stream of requests; returns the single response.

        After the first message it waits for the server's initial metadata, whose
        `x-cairn-stream` header says whether the server accepted that message (an
        upload's header). When it did not, the client half-closes at once and the
        server's status arrives intact; writing into a call the server has ended makes
        grpc report a bare INTERNAL "Internal error from Core" instead.
        """
        call = method(timeout=self._timeout(timeout), metadata=self._with(with_id(metadata)))
        # Cancelled whatever ends it early: a source that raises midway, or the caller's
        # cancellation, left the server's call waiting for the rest (and its buffers
        # held) until the channel closed.
        try:
            try:
                await self._send_all(call, requests)
            except (grpc.RpcError, asyncio.InvalidStateError) as error:
                # A write into a call that already ended fails with a bare INTERNAL
                # ("Internal error from Core") or InvalidStateError; the call's own
                # status says why.
                raise await _ending(call, error) from None
            try:
                return await call
            except grpc.RpcError as error:
                raise from_grpc_error(error) from None
        except asyncio.CancelledError:
            self._raise_if_closed()
            raise
        finally:
            if not call.done():
                call.cancel()

    def _raise_if_closed(self) -> None:
        """Raises ClientClosedError for a call cancelled because the client was closed
        (by another task), not its caller's task: grpc's bare CancelledError passed
        `except CairnError` by and stopped the task as if it had been cancelled."""
        task = asyncio.current_task()
        if self.channel.closed and task is not None and not task.cancelling():
            raise ClientClosedError("this cairn client was closed while the call ran") from None

    @staticmethod
    async def _send_all(call: Any, requests: AsyncIterable[Any]) -> None:
        first = True
        async for request in requests:
            await call.write(request)
            if first:
                first = False
                verdict = dict(await call.initial_metadata() or ()).get(STREAM_VERDICT_HEADER)
                if verdict != "accepted":
                    break
        await call.done_writing()

    async def close(self) -> None:
        await self.channel.close()

    def _timeout(self, timeout: float | None) -> float | None:
        """A call's own timeout, checked as the client's is: one of NaN or -1 failed the
        call at once DEADLINE_EXCEEDED, and, queued with synchronous=False, every write
        behind it, as a write no server answered does."""
        return self.timeout if timeout is None else check_timeout(timeout)

    def _with(self, metadata: Metadata | None) -> tuple[tuple[str, str], ...]:
        return self._metadata + tuple(metadata or ())


async def _ending(call: Any, write_error: BaseException) -> CairnError:
    """How a call ended, once a write into it failed. grpc reports a connection that
    broke under a write (a server killed mid-upload) as a bare INTERNAL, without the
    details every INTERNAL of a Cairn server carries: that is UNAVAILABLE, with reason
    CONNECTION_BROKEN, as a server may have answered it (one that ended the call
    without reading the rest). The queue of synchronous=False writes goes on after it,
    where it gives up on those behind a call no server answered at all."""
    ended = write_error
    try:
        await asyncio.wait_for(call.code(), ENDING_WAIT_SECONDS)
        await call
    except grpc.RpcError as error:
        ended = error
    except TimeoutError:
        pass
    if isinstance(ended, grpc.RpcError) and not (
        ended.code() == grpc.StatusCode.INTERNAL and not _has_details(ended)
    ):
        return from_grpc_error(ended)
    return UnavailableError(
        "the connection to the server broke while sending; call again",
        reason="CONNECTION_BROKEN",
    )


def _has_details(error: grpc.RpcError) -> bool:
    trailing = error.trailing_metadata() or ()
    return any(key == "grpc-status-details-bin" for key, _ in trailing)
