"""What the three clients share: constructors, `async with`, close."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

from ._clients.run_operations import write_queue
from ._transport import DEFAULT_PROJECT, DEFAULT_TIMEOUT, Transport


class BaseClient:
    """A client over one long-lived channel.

    Build one with `insecure_connection` or `secure_connection`, use it in
    `async with` or call `close()` when done.
    """

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._bind(transport.channel)

    def _bind(self, channel: Any) -> None:
        """Creates the generated stub(s) of the client on the channel."""

    @classmethod
    def insecure_connection(
        cls,
        server_address: str,
        port: int | str | None = None,
        user_token: str | None = None,
        *,
        project: str = DEFAULT_PROJECT,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> Self:
        """Connects without TLS, e.g. to a local `make run` server.

        Args:
            server_address: any address `cairn.Client` takes (`host`, `host:port`,
                `[v6::addr]:port`, `http://host[:port]`, `dns:///name[:port]`,
                `ipv4:addr[:port],...`, `unix:path`); docs/client.md lists them.
            port: the TCP port when server_address names none (None: 50051); an
                address naming another is refused.
            user_token: an API key, sent as `authorization: Bearer <key>`.
            project: the project every call of this client works in.
            timeout: default deadline of each call in seconds (None: no deadline).
        """
        return cls(
            Transport.insecure(
                server_address, port, project=project, user_token=user_token, timeout=timeout
            )
        )

    @classmethod
    def secure_connection(
        cls,
        server_address: str,
        port: int | str | None = None,
        *,
        user_token: str,
        custom_ca: str | bytes | None = None,
        project: str = DEFAULT_PROJECT,
        timeout: float | None = DEFAULT_TIMEOUT,
        client_cert: str | bytes | None = None,
        client_key: str | bytes | None = None,
    ) -> Self:
        """Connects over TLS.

        Args:
            server_address: any address `cairn.Client` takes (`host`, `host:port`,
                `[v6::addr]:port`, `https://host[:port]`, `dns:///name[:port]`,
                `ipv4:addr[:port],...`); its host is the name the server
                certificate must be valid for. docs/client.md lists the forms.
            port: the TCP port when server_address names none (None: 443); an
                address naming another is refused.
            user_token: an API key, sent as `authorization: Bearer <key>`.
            custom_ca: path to (or bytes of) a PEM root certificate; the system roots if None.
            project: the project every call of this client works in.
            timeout: default deadline of each call in seconds (None: no deadline).
            client_cert: path to (or bytes of) a PEM client certificate, for mTLS.
            client_key: path to (or bytes of) its PEM private key.
        """
        return cls(
            Transport.secure(
                server_address,
                port,
                custom_ca=custom_ca,
                client_cert=client_cert,
                client_key=client_key,
                project=project,
                user_token=user_token,
                timeout=timeout,
            )
        )

    @property
    def project(self) -> str:
        return self._transport.project

    async def close(self) -> None:
        """Waits for the writes started with synchronous=False before it was called,
        then closes the channel; other calls in flight are cancelled, and a write
        started with synchronous=False from now on raises ClientClosedError.

        Raises:
            CairnError: the first error of such a write not yet reported by a flush;
                the client is closed all the same.
        """
        # The writes any client of the channel queued (run_operations.BackgroundWrites):
        # sent while the channel is still open, and no more taken, or a thread logging
        # on would keep the close waiting for ever.
        queued = write_queue(self._transport)
        queued.refuse()
        try:
            await queued.flush()
        finally:
            queued.give_up()  # what a close cut short (a timeout, Ctrl-C) left unsent
            await self._transport.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
